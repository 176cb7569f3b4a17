"""What the prompt is worth to a model's stack (`comfy_star.eval.benchmarks.prompt_worth`): its
next-image-token cross-entropy on fixed caption/render pairs (held-out phrasings by default), once with
each caption and once with it dropped (the unconditional row guidance uses). The gap, in nats per image,
is how much of the image the stack takes from the prompt; a stack that ignores the prompt scores 0.
Teacher-forced, so no sampling noise.

    python scripts/prompt_worth.py                                   # the embedded star-shapes
    python scripts/prompt_worth.py runs/s6/star-shapes.safetensors embedded --n 256
    python scripts/prompt_worth.py --phrasings training --template "{} now"   # one word after each caption
    python scripts/prompt_worth.py --words --phrasings training     # one colour / shape / background word's worth

--words: what one word is worth (`benchmarks.word_worth`): the same cross-entropy with the true caption and
with one colour, shape or background word swapped for a wrong one; the gap is what the stack takes from it.
"""
from __future__ import annotations

import argparse

from comfy_star.eval.benchmarks import WORDS, prompt_worth, word_worth
from comfy_star.pipeline import STAR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["embedded"], help="star-shapes files ('embedded': the shipped one)")
    ap.add_argument("--n", type=int, default=256, help="caption/render pairs")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--phrasings", choices=("held-out", "training"), default="held-out",
                    help="caption templates: the held-out ones (as eval) or those the stack was trained on")
    ap.add_argument("--template", default="{}", help="each caption goes where {} is, e.g. 'ok {}' or '{} now'")
    ap.add_argument("--words", action="store_true", help="what one colour, shape or background word is worth")
    args = ap.parse_args()
    if args.words:
        return words(args)
    print("| model | CE with prompt | CE prompt dropped | prompt worth (nats/image) | token acc "
          "| onset acc (prompt / dropped) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        star = STAR.from_pretrained(None if name == "embedded" else name, device="cpu")
        r = prompt_worth(star, args.n, args.seed, args.phrasings == "held-out", args.template)
        print(f"| {name} | {r['ce_prompt']:.3f} | {r['ce_dropped']:.3f} | {r['nats_per_image']:.2f} | "
              f"{r['token_acc']:.3f} | {r['onset_acc']:.3f} / {r['onset_acc_dropped']:.3f} |", flush=True)


def words(args):
    print("| model | word swapped | CE true caption | CE word swapped | word worth (nats/image) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        star = STAR.from_pretrained(None if name == "embedded" else name, device="cpu")
        for kind in WORDS:
            r = word_worth(star, args.n, args.seed, kind, args.phrasings == "held-out")
            print(f"| {name} | {kind} | {r['ce_true']:.3f} | {r['ce_swapped']:.3f} | {r['nats_per_image']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
