"""Seconds per image of the diffusion decoder at several step counts, taken in one run, interleaved
(this machine is noisy: the ratios mean more than the times).

    python benchmarks/diffusion_steps.py                  # the embedded star-shapes, steps 3 6 12 24
    python benchmarks/diffusion_steps.py --steps 3 12 --model runs/NAME/star-shapes.safetensors

One 64 px image (a rendered scene, VQ-encoded) decoded with guidance at the model's cfg, batch 1,
the first of the rounds dropped as warm-up. How many scenes each count reads back is
`scripts/decoder_compare.py --steps`.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from comfy_star import STAR
from comfy_star.data import shapes
from comfy_star.pipeline import Tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a checkpoint (default: the embedded star-shapes)")
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 6, 12, 24])
    parser.add_argument("--rounds", type=int, default=6, help="timed decodes per step count (after one warm-up)")
    args = parser.parse_args()
    star = STAR.from_pretrained(args.model, device="cpu")
    ids = star.encode([shapes.render(shapes.random_scene(random.Random(1)), star.config.image_size)]).ids
    tokens = Tokens(ids, star.key, ["a red circle"])
    times = {s: [] for s in args.steps}
    for round_ in range(args.rounds + 1):
        for steps in args.steps:  # interleaved, so a slow spell of the machine hits every count alike
            start = time.perf_counter()
            star.decode_diffusion(tokens, steps=steps, seed=round_)
            if round_:
                times[steps].append(time.perf_counter() - start)
    reference = statistics.median(times[max(args.steps)])
    for steps in args.steps:
        median = statistics.median(times[steps])
        print(f"{steps:4d} steps: {median * 1000:7.1f} ms an image (median of {args.rounds}), "
              f"{reference / median:5.2f}x the speed of {max(args.steps)} steps")


if __name__ == "__main__":
    main()
