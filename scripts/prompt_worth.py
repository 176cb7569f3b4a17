"""What the prompt is worth to a model's stack (`comfy_star.eval.benchmarks.prompt_worth`): its
next-image-token cross-entropy on fixed caption/render pairs (held-out phrasings by default), once with
each caption and once with it dropped (the unconditional row guidance uses). The gap, in nats per image,
is how much of the image the stack takes from the prompt; a stack that ignores the prompt scores 0.
Teacher-forced, so no sampling noise.

    python scripts/prompt_worth.py                                   # the embedded star-shapes
    python scripts/prompt_worth.py runs/s6/star-shapes.safetensors embedded --n 256
    python scripts/prompt_worth.py --phrasings training --template "{} now"   # one word after each caption
"""
from __future__ import annotations

import argparse

from comfy_star.eval.benchmarks import prompt_worth
from comfy_star.pipeline import STAR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["embedded"], help="star-shapes files ('embedded': the shipped one)")
    ap.add_argument("--n", type=int, default=256, help="caption/render pairs")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--phrasings", choices=("held-out", "training"), default="held-out",
                    help="caption templates: the held-out ones (as eval) or those the stack was trained on")
    ap.add_argument("--template", default="{}", help="each caption goes where {} is, e.g. 'ok {}' or '{} now'")
    args = ap.parse_args()
    print("| model | CE with prompt | CE prompt dropped | prompt worth (nats/image) | token acc |")
    print("|---|---|---|---|---|")
    for name in args.models:
        star = STAR.from_pretrained(None if name == "embedded" else name, device="cpu")
        r = prompt_worth(star, args.n, args.seed, args.phrasings == "held-out", args.template)
        print(f"| {name} | {r['ce_prompt']:.3f} | {r['ce_dropped']:.3f} | {r['nats_per_image']:.2f} | "
              f"{r['token_acc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
