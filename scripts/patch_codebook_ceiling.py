"""How far can a patch-local tokenizer go on the Shapes world, by patch size and codebook size?

No neural network: k-means codebooks of raw pixel patches (P x P x 3) from rendered training scenes,
then held-out renders rebuilt patch by patch from their nearest code (a lookup decoder), read back by
the classical detector. A lookup decoder sees no neighbours, so this is a floor for what a learned
decoder on the same tokens can do; where even the floor is high, the codebook is not the bottleneck.
The held-out scenes are the ones `eval`'s VQ round trip uses (same seed), so the numbers compare.

    python scripts/patch_codebook_ceiling.py                       # P 8, K 1024 4096 16384
    python scripts/patch_codebook_ceiling.py --patch 4 --codes 1024 4096
"""
from __future__ import annotations

import argparse
import collections
import random
import time

import numpy as np
import torch
from einops import rearrange

from comfy_star import data
from comfy_star.data import detector


def patches(images: np.ndarray, p: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 → (N * (S/p)², p·p·3) float in [0, 1]."""
    x = torch.from_numpy(images).float() / 255
    return rearrange(x, "n (h p) (w q) c -> (n h w) (p q c)", p=p, q=p)


def nearest(x: torch.Tensor, codes: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Index of the nearest code (squared L2) for every row of x."""
    c2 = (codes * codes).sum(1)
    return torch.cat([(c2 - 2 * x[i:i + chunk] @ codes.T).argmin(1) for i in range(0, len(x), chunk)])


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means from k distinct data points; an emptied code is re-seeded at a random point."""
    g = torch.Generator().manual_seed(seed)
    codes = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        idx = nearest(x, codes)
        sums = torch.zeros_like(codes).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=k).float()
        empty = counts == 0
        codes = torch.where(empty[:, None], x[torch.randint(len(x), (k,), generator=g)], sums / counts.clamp(min=1)[:, None])
    return codes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--codes", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--train", type=int, default=4000, help="training scenes")
    ap.add_argument("--test", type=int, default=120, help="held-out scenes (eval's VQ round-trip set)")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random("patch-codebook-train")
    train = np.stack([np.asarray(data.shapes.render(data.shapes.random_scene(rng), a.size)) for _ in range(a.train)])
    test_rng = random.Random("vq-roundtrip:1234")  # = eval.benchmarks.vq_roundtrip(seed=1234)
    scenes = [data.shapes.random_scene(test_rng) for _ in range(a.test)]
    test = np.stack([np.asarray(data.shapes.render(s, a.size)) for s in scenes])
    x = torch.unique(patches(train, a.patch), dim=0)  # flat patches repeat by the thousand: k-means on kinds
    print(f"{a.train} scenes at {a.size} px, {a.patch} px patches: {len(x)} distinct training patches", flush=True)
    grid = a.size // a.patch
    for k in a.codes:
        t = time.time()
        codes = kmeans(x, min(k, len(x)), a.iters, seed=k)
        rebuilt = codes[nearest(patches(test, a.patch), codes)]
        images = rearrange(rebuilt, "(n h w) (p q c) -> n (h p) (w q) c", h=grid, w=grid, p=a.patch, q=a.patch)
        images = (images.clamp(0, 1) * 255).round().byte().numpy()
        why = collections.Counter()
        for im, s in zip(images, scenes):
            d = detector.detect(im)
            if not detector.scenes_match(d, s):
                kinds = sorted(x.kind for x in s.shapes) != sorted(x.kind for x in d.shapes)
                why["kind" if kinds and len(d.shapes) == len(s.shapes) else "count/colour/place"] += 1
        ok = 1 - sum(why.values()) / len(scenes)
        mse = float(((images.astype(np.float32) - test.astype(np.float32)) / 255).__pow__(2).mean())
        print(f"P {a.patch}  K {k:6d}  ({grid}x{grid} tokens)  read back {ok:.3f}  MSE {mse:.2e}  "
              f"misses {dict(why)}  {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
