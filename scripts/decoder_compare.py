"""Compare diffusion decoders: the three read-backs the training log quotes for each decoder run.

Every decoder run (stage 3 alone, reproduce script § 4) changes only the `diffusion.*` tensors, so
the stack, the VQ decoder and the base are the same in the models compared, and these probes need
no stacked AR: each scene's render is VQ-encoded and its tokens decoded by the diffusion decoder
(given the caption, no source), then the detector reads the image back.

    python scripts/decoder_compare.py selection runs/A/star-shapes.safetensors runs/B/...  # 120 scenes, seed 777, cfg 1 and 2
    python scripts/decoder_compare.py paired runs/A/... runs/B/...   # 240 scenes, seed 555: read back, pixel MSE, scenes only one read
    python scripts/decoder_compare.py eval runs/A/... runs/B/...     # eval's `decoders` section at --n 20 (seed 1234)
    python scripts/decoder_compare.py selection runs/A/... --steps 24  # any of them at another step count
    # (without --steps each file decodes at its own default: 3 in the shipped file, 12 in older runs/)

`selection` is `decoder_roundtrip(star, 120, 777)` with the decoder's cfg set to 1 and to 2; `eval`
is what `python -m comfy_star eval --n 20` prints under `decoders` (the rest of eval does not read the
diffusion decoder). `paired` decodes the same scenes with the same seeds in every model, so "only A"
and "only B" count the scenes one model read back and the other did not.
"""
from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from comfy_star import STAR
from comfy_star.eval.benchmarks import decoder_roundtrip, read_back, roundtrip_images, shapes_eval


def paired_readback(star, n: int, seed: int, cfg: float, steps: int | None = None, batch: int = 20) -> dict:
    """n held-out captions' renders through VQ encode → diffusion decode (`roundtrip_images` at the
    given cfg, its own caption stream "paired:SEED"): which scenes the detector reads back (a list of
    bools, in caption order) and the mean squared pixel error against the render (0-255 scale)."""
    images = roundtrip_images(star, n, random.Random(f"paired:{seed}"), seed, steps, cfg=cfg, batch=batch)
    mse = np.mean([np.mean((np.asarray(a, np.float32) - np.asarray(b, np.float32)) ** 2)
                   for a, b in zip(images["diffusion"], images["renders"])])
    return {"read": read_back(images["diffusion"], images["scenes"]), "mse": float(mse)}


def only_counts(a: list[bool], b: list[bool]) -> tuple[int, int]:
    """Scenes that only a read back, and scenes that only b read back."""
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def selection(models: list[str], n: int, seed: int, steps: int | None) -> None:
    for path in models:
        star = STAR.from_pretrained(path, device="cpu")
        for cfg in (1.0, 2.0):
            star.defaults.diffusion_cfg = cfg
            start = time.time()
            result = decoder_roundtrip(star, n, seed, steps)
            print(json.dumps({"model": path, "cfg": cfg, "steps": steps or star.defaults.diffusion_steps, **result,
                              "seconds": round(time.time() - start)}), flush=True)


def paired(models: list[str], n: int, seed: int, steps: int | None) -> None:
    reads = {}
    for path in models:
        star = STAR.from_pretrained(path, device="cpu")
        for cfg in (1.0, 2.0):
            start = time.time()
            result = paired_readback(star, n, seed, cfg, steps)
            reads[path, cfg] = result["read"]
            print(json.dumps({"model": path, "cfg": cfg, "steps": steps or star.defaults.diffusion_steps,
                              "read_back": sum(result["read"]), "of": n,
                              "mse": round(result["mse"], 1), "seconds": round(time.time() - start)}), flush=True)
    for cfg in (1.0, 2.0):
        for a, b in zip(models, models[1:]):
            only_a, only_b = only_counts(reads[a, cfg], reads[b, cfg])
            print(json.dumps({"cfg": cfg, "only": {a: only_a, b: only_b}}), flush=True)


def eval_section(models: list[str], n: int, seed: int, steps: int | None) -> None:
    for path in models:
        star = STAR.from_pretrained(path, device="cpu")
        if steps:
            star.defaults.diffusion_steps = steps  # shapes_eval decodes with the model's defaults
        roundtrip = decoder_roundtrip(star, 3 * n, seed)
        through_stack = shapes_eval(star, max(2, n // 4), seed, decoder="diffusion")["overall"]
        print(json.dumps({"model": path, "diffusion": through_stack, "roundtrip_vq": roundtrip["vq"],
                          "roundtrip_diffusion": roundtrip["diffusion"]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["selection", "paired", "eval"])
    parser.add_argument("models", nargs="+", help="checkpoints (our safetensors), compared in order")
    parser.add_argument("--n", type=int, default=None,
                        help="scenes (selection 120, paired 240) or eval's prompts per category (20)")
    parser.add_argument("--seed", type=int, default=None, help="default: selection 777, paired 555, eval 1234")
    parser.add_argument("--steps", type=int, default=None,
                        help="the diffusion decoder's sampling steps (default: each file's own: 3 in the shipped "
                             "star-shapes, 12 in files written before that default; pass it when comparing them)")
    args = parser.parse_args()
    n, seed = {"selection": (120, 777), "paired": (240, 555), "eval": (20, 1234)}[args.command]
    run = {"selection": selection, "paired": paired, "eval": eval_section}[args.command]
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    run(args.models, args.n or n, seed if args.seed is None else args.seed, args.steps)


if __name__ == "__main__":
    main()
