"""Two comfy-star files of one model, their tensors blended: (1 - w) · A + w · B, the rest equal.

For a file trained further from another (e.g. `runs/p9F` from `runs/p9B`), the halfway point is the
"weight-space ensemble" of WiSE-FT (Wortsman et al., 2022): it often keeps what the further round
gained and what it lost. Both files must share the config, the tensor names, shapes and dtypes;
tensors that are equal stay bit-identical (the frozen base, for instance). The output is never an
existing file.

    python scripts/average_checkpoints.py runs/soup.safetensors comfy_star/assets/star-shapes.safetensors \
        runs/p9F/star-shapes.safetensors --weight 0.5
"""
from __future__ import annotations

import argparse

import torch
from safetensors import safe_open

from comfy_star.train.checkpointing import save_file_safely


def read(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def blend(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """(1 - weight) · a + weight · b per tensor, in float32, cast back; equal tensors kept as they are."""
    if a.keys() != b.keys():
        raise ValueError(f"the files hold different tensors: only in the first {sorted(a.keys() - b.keys())[:3]}, "
                         f"only in the second {sorted(b.keys() - a.keys())[:3]}")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            raise ValueError(f"{name}: {tuple(ta.shape)} {ta.dtype} in the first file, {tuple(tb.shape)} {tb.dtype} "
                             "in the second")
        if torch.equal(ta, tb) or not ta.is_floating_point():
            out[name] = ta
        else:
            out[name] = torch.lerp(ta.float(), tb.float(), weight).to(ta.dtype)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--weight", type=float, default=0.5, help="B's share (0: A, 1: B)")
    args = p.parse_args(argv)
    if not 0 <= args.weight <= 1:
        p.error(f"--weight must be between 0 and 1 (got {args.weight})")
    (a, meta_a), (b, meta_b) = read(args.a), read(args.b)
    if meta_a.get("config") != meta_b.get("config"):
        p.error("the two files' configs differ: they are not one model trained further")
    blended = blend(a, b, args.weight)
    changed = sum(not torch.equal(blended[k], a[k]) for k in a)
    save_file_safely(blended, args.out, metadata=meta_a)
    print(f"wrote {args.out}: {changed} of {len(a)} tensors blended, weight {args.weight} of {args.b}")


if __name__ == "__main__":
    main()
