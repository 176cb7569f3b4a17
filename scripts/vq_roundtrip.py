"""Read back a STAR-VQ stage file on the Shapes world: eval's 120 round-trip scenes (seed 1234) through
encode → decode, then the classical detector, with the misses sorted by kind. The same number as
`eval`'s VQ roundtrip_detected, for a stage-1 / 1b file of any `--vq-encoder`, before a whole model exists.

    python scripts/vq_roundtrip.py runs/patch4/stage1.safetensors --vq-encoder patch4
    python scripts/vq_roundtrip.py runs/patch4/stage1/checkpoint.safetensors --vq-encoder patch4  # mid-run
    python scripts/vq_roundtrip.py runs/patch/stage1.safetensors runs/patch/stage1b/checkpoint.safetensors \
        --vq-encoder patch   # stage 1's encoder and codebook, then a 1b checkpoint's decoder over them
"""
from __future__ import annotations

import argparse
import collections
import random

import numpy as np
import torch
from safetensors.torch import load_file

from comfy_star import data
from comfy_star.data import detector
from comfy_star.train.recipe import shapes_config
from comfy_star.vq import STARVQ


def miss_kind(found, truth) -> str:
    if found.background != truth.background:
        return "background"
    if len(found.shapes) != len(truth.shapes):
        return "count"
    want, got = sorted((s.color, s.kind) for s in truth.shapes), sorted((s.color, s.kind) for s in found.shapes)
    if [c for c, _ in want] != [c for c, _ in got]:
        return "colour"
    return ",".join(f"{a[1]}->{b[1]}" for a, b in zip(want, got) if a != b) or "place/size"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", help="stage files (stage1.safetensors) or runner checkpoints of stage 1 / 1b, "
                                             "loaded in order (a later file's tensors replace an earlier one's)")
    ap.add_argument("--vq-encoder", default="vqgan", choices=["vqgan", "patch", "patch4"])
    ap.add_argument("--codebook-size", type=int, default=0, help="as given to `train all` (0: the encoder's default)")
    ap.add_argument("--n", type=int, default=120)
    a = ap.parse_args()
    torch.set_num_threads(1)
    vq = STARVQ(shapes_config(a.vq_encoder, a.codebook_size).vq).eval()
    for path in a.paths:
        state = {k.removeprefix("model."): v for k, v in load_file(path).items()}  # a checkpoint's "model." prefix
        vq.load_state_dict(state, strict=False)
    rng = random.Random("vq-roundtrip:1234")  # = eval.benchmarks.vq_roundtrip(seed=1234)
    scenes = [data.shapes.random_scene(rng) for _ in range(a.n)]
    x = torch.stack([torch.from_numpy(np.array(data.shapes.render(s, 64))).permute(2, 0, 1) for s in scenes])
    x = x.float() / 127.5 - 1  # (N, 3, 64, 64) in [-1, 1]
    with torch.no_grad():
        ids = vq.encode(x)  # (N, h, w)
        y = vq.decode_latent(vq.codebook()[ids].permute(0, 3, 1, 2)).clamp(-1, 1)
    images = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    misses = collections.Counter()
    for im, scene in zip(images, scenes):
        found = detector.detect(im)
        if not detector.scenes_match(found, scene):
            misses[miss_kind(found, scene)] += 1
    print(f"read back {1 - sum(misses.values()) / a.n:.3f}  MSE {float(((y - x) / 2).pow(2).mean()):.2e}  "
          f"grid {ids.shape[1]}x{ids.shape[2]}  codes used {ids.unique().numel()}  misses {dict(misses.most_common())}")


if __name__ == "__main__":
    main()
