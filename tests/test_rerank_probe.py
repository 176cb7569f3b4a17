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
