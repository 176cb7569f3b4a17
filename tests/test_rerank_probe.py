"""scripts/rerank_probe.py: its judge is the base's captioning score, log p(caption | image), summed
over the caption's tokens. Checked against the base's own loss, and on what the training log reports:
in its own describe() wording the shipped base picks each caption's render out of the others."""
import random

import torch

from comfy_star import STAR, data
from comfy_star.data.qa import describe
from comfy_star.train.stage0_vlm import build_batch
from scripts_module import load_script

probe = load_script("rerank_probe")


def test_the_judge_is_the_caption_log_likelihood_and_finds_each_scenes_description():
    star = STAR.from_pretrained(device="cpu")
    rng = random.Random("rerank-test")
    scenes = [data.shapes.random_scene(rng) for _ in range(4)]
    images = [data.shapes.render(s, star.config.image_size) for s in scenes]
    captions = [describe(s) for s in scenes]
    scores = torch.stack([probe.judge(star, images, c) for c in captions])  # (caption, image)
    assert scores.argmax(1).tolist() == [0, 1, 2, 3]
    # one image's score is its caption's summed token log-likelihood: the base's mean loss × tokens
    batch = build_batch([(images[0], probe.QUESTION, captions[0])], star.parts.chat, star.parts.image_proc)
    n = int((batch["labels"] != -100).sum())
    with torch.inference_mode():
        loss = star.parts.ar.base(**batch).loss
    assert torch.allclose(scores[0, 0], -loss * n, rtol=1e-4)


def test_the_stack_judge_is_the_stacks_own_token_log_likelihood():
    """stack_logp is what training minimises: minus the teacher-forced cross-entropy, summed over the
    image's tokens, for the prompt and for the unconditional row alike; and the prompt is worth
    something to the stack (a render is likelier under its own caption than with it dropped)."""
    from comfy_star.train.stage2_ar import encode_ids, pixels, teacher_forced_logits, token_loss
    star = STAR.from_pretrained(device="cpu")
    rng = random.Random("stack-judge-test")
    caption, _, _, scene = data.captions.random_caption(rng)
    image = pixels([data.shapes.render(scene, star.config.image_size)])
    ids = encode_ids(star.parts.vq, image, "cpu")
    scores = {}
    for drop in (False, True):
        got = probe.stack_logp(star, caption, ids, drop)
        batch = {"captions": [caption], "images": image, "instructions": [], "drop": [drop]}
        with torch.inference_mode():
            _, stats = token_loss(*teacher_forced_logits(star.parts.ar, star.parts, batch, "cpu"))
        assert got.shape == (1,)
        assert torch.allclose(got, torch.tensor([-stats["ce"] * ids.shape[1]]), rtol=1e-4)
        scores[drop] = float(got)
    assert scores[False] > scores[True]
