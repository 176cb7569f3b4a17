"""The frozen base on its own: answering questions about images (VQA) and implicit reasoning.

Both are exactly what the VLM would do alone: transformers' `generate` on the base, greedy.
Implicit reasoning (release `generate_images_reasoning`): the base answers the user's prompt as
text; the answer (+ the release's "magic" suffix) replaces the prompt for the stacked AR.
"""
from __future__ import annotations

import torch
from transformers import Qwen2VLImageProcessor

from .tokenizer import ChatFormat


def image_processor(patch_size: int, merge_size: int, image_size: int) -> Qwen2VLImageProcessor:
    """Qwen2.5-VL's own preprocessing; small models fix the pixel count to their training size."""
    pixels = image_size * image_size
    return Qwen2VLImageProcessor(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2,
                                 min_pixels=pixels, max_pixels=pixels)


def vision_inputs(proc, images):
    """PIL images → (pixel_values (patches, C*T*p*p), grid_thw (N, 3), tokens per image)."""
    out = proc(images=list(images), return_tensors="pt")
    grid = out["image_grid_thw"]
    merge = proc.merge_size
    return out["pixel_values"], grid, (grid.prod(-1) // merge**2).tolist()


def vit_features(base, pixel_values, grid):
    """ViT features per image, [(n_i, D)], as the base's language model sees them."""
    out = base.model.get_image_features(pixel_values.to(base.device, base.model.visual.dtype), grid.to(base.device),
                                        return_dict=True)
    return list(out.pooler_output)


def question_ids(chat: ChatFormat, question: str, n_image_tokens: int | None):
    """Chat ids for one question, with an image block after 'user\\n' when there is an image."""
    prefix, text, suffix = chat.prompt(question)
    image = []
    if n_image_tokens:
        image = [chat.ids["<|vision_start|>"]] + [chat.ids["<|image_pad|>"]] * n_image_tokens + \
                [chat.ids["<|vision_end|>"]]
    return prefix + image + text + suffix


@torch.inference_mode()
def answer(base, chat: ChatFormat, questions: list[str], images=None, proc=None, max_new_tokens: int = 64) -> list[str]:
    """Greedy answers of the frozen base, one per question (and image, if given)."""
    answers = []
    for i, q in enumerate(questions):
        kwargs = {}
        n = None
        if images is not None:
            pixel_values, grid, counts = vision_inputs(proc, [images[i]])
            n = counts[0]
            kwargs = dict(pixel_values=pixel_values.to(base.device), image_grid_thw=grid.to(base.device))
        ids = torch.tensor([question_ids(chat, q, n)], device=base.device)
        kwargs["mm_token_type_ids"] = (ids == chat.ids["<|image_pad|>"]).int()
        out = base.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                            do_sample=False, eos_token_id=chat.ids["<|im_end|>"],
                            pad_token_id=chat.tok.pad_token_id, **kwargs)
        answers.append(chat.decode(out[0, ids.shape[1]:]).strip())
    return answers
