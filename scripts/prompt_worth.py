"""What the prompt is worth to a model's stack: its next-image-token cross-entropy on a fixed batch of
text-to-image pairs (held-out phrasings by default), once with each caption and once with the caption dropped (the
unconditional row guidance uses). The gap, in nats per image, is how much of the image the stack takes
from the prompt; a stack that ignores the prompt scores 0. Teacher-forced, so no sampling noise.

    python scripts/prompt_worth.py                                   # the embedded star-shapes
    python scripts/prompt_worth.py runs/s6/star-shapes.safetensors embedded --n 256
    python scripts/prompt_worth.py --phrasings training --template "{} now"   # one word after each caption
"""
from __future__ import annotations

import argparse
import random

import torch

from comfy_star import data
from comfy_star.pipeline import STAR
from comfy_star.train.stage2_ar import ar_loss, pixels


def caption_pairs(n: int, seed: int, size: int, held_out: bool = True):
    rng = random.Random(f"prompt-worth:{seed}")
    pairs = [data.captions.random_caption(rng, held_out=held_out) for _ in range(n)]
    return [p[0] for p in pairs], pixels([data.shapes.render(p[3], size) for p in pairs])


@torch.no_grad()
def cross_entropy(star, captions, images, drop: bool, batch: int = 32):
    """Mean next-token CE (nats/token) and token accuracy over the pairs, prompts kept or dropped."""
    ce, acc = [], []
    for i in range(0, len(captions), batch):
        caps = captions[i:i + batch]
        rows = {"captions": caps, "images": images[i:i + batch], "instructions": [], "drop": [drop] * len(caps)}
        _, stats = ar_loss(star.parts.ar, star.parts, rows, star.device)
        ce.append(stats["ce"] * len(caps))
        acc.append(stats["acc"] * len(caps))
    return sum(ce) / len(captions), sum(acc) / len(captions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["embedded"], help="star-shapes files ('embedded': the shipped one)")
    ap.add_argument("--n", type=int, default=256, help="held-out caption/image pairs")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--phrasings", choices=("held-out", "training"), default="held-out",
                    help="caption templates: the held-out ones (as eval) or those the stack was trained on")
    ap.add_argument("--template", default="{}", help="each caption goes where {} is, e.g. 'ok {}' or '{} now'")
    args = ap.parse_args()
    print("| model | CE with prompt | CE prompt dropped | prompt worth (nats/image) | token acc |")
    print("|---|---|---|---|---|")
    for name in args.models:
        star = STAR.from_pretrained(None if name == "embedded" else name, device="cpu")
        star.parts.ar.eval()
        captions, images = caption_pairs(args.n, args.seed, star.config.image_size, args.phrasings == "held-out")
        captions = [args.template.format(c) for c in captions]
        tokens = star.parts.vq.encode(torch.zeros(1, 3, star.config.image_size, star.config.image_size)).numel()
        with_prompt, acc = cross_entropy(star, captions, images, drop=False)
        dropped, _ = cross_entropy(star, captions, images, drop=True)
        print(f"| {name} | {with_prompt:.3f} | {dropped:.3f} | {(dropped - with_prompt) * tokens:.2f} | {acc:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
