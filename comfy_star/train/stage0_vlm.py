"""Stage 0 (small models only): teach a tiny Qwen2.5-VL to understand the Shapes world.

Real STAR starts from a pretrained Qwen2.5-VL; the embedded default has none, so we make one:
visual question answering, captioning, and a little world knowledge ("a shape with three
corners, the colour of grass" → "a green triangle"), plus echoing plain captions so that
implicit reasoning leaves an explicit prompt as it is. After this stage the base is frozen.
"""
from __future__ import annotations

import random

import torch

from ..ar.understand import question_ids, vision_inputs
from .prefetch import to_device

CAPTION_QUESTIONS = ["describe the image", "what is in this picture?", "caption this image", "describe the scene"]


def sample_example(rng: random.Random, size: int):
    """One (image or None, question, answer) from the Shapes world."""
    from .. import data
    r = rng.random()
    if r < 0.5:
        image, q, a = data.sample_vqa(rng, size=size)
        return image, q, a
    if r < 0.65:
        image, caption = data.sample_caption(rng, size=size)
        return image, rng.choice(CAPTION_QUESTIONS), caption
    if r < 0.9:
        prompt, answer = data.sample_knowledge(rng)
        return None, prompt, answer
    caption, _, _ = data.sample_t2i(rng, size=size)
    return None, caption, caption


def build_batch(examples, chat, proc, device="cpu"):
    """Right-padded ids with labels on the answers only, plus the images' patches."""
    images = [im for im, _, _ in examples if im is not None]
    counts = iter([])
    pixel_values = grid = None
    if images:
        pixel_values, grid, n = vision_inputs(proc, images)
        counts = iter(n)
    rows, labels = [], []
    for image, q, a in examples:
        prompt = question_ids(chat, q, next(counts) if image is not None else None)
        target = chat.encode(a) + [chat.ids["<|im_end|>"]]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    L = max(map(len, rows))
    pad = chat.tok.pad_token_id
    ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows], device=device)
    lab = torch.tensor([r + [-100] * (L - len(r)) for r in labels], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows], device=device)
    batch = dict(input_ids=ids, labels=lab, attention_mask=mask,
                 mm_token_type_ids=(ids == chat.ids["<|image_pad|>"]).int())
    if images:
        batch.update(pixel_values=pixel_values.to(device), image_grid_thw=grid.to(device))
    return batch


def make_batch_fn(chat, proc, batch_size: int, image_size: int, seed: int):
    """A pure function of (step, rank) giving CPU tensors, so it can run in data workers."""
    def make_batch(step: int, rank: int = 0, world: int = 1):
        rng = random.Random(f"stage0:{seed}:{step}:{rank}")
        return build_batch([sample_example(rng, image_size) for _ in range(batch_size)], chat, proc)
    return make_batch


def vlm_loss(base, batch):
    out = base(**to_device(batch, base.device))
    return out.loss, {"lm": out.loss.item()}
