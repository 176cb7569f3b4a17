"""Warm starts for a run that changes one part of a finished star-shapes checkpoint (e.g. its tokenizer):
`<out>/<stage>-init.safetensors` from the parts that still fit, which `train all` starts those stages from
(a fresh optimizer and schedule), and `<out>/stage0.safetensors` (the frozen base, taken as it is).

    python scripts/warm_start_files.py runs/p8k --from embedded stage0 stage1:decoder stage2:stack stage3

How the shipped model was made (docs/star-shapes-training.md; scripts/reproduce_star_shapes.sh replays
it): the previous model's base, its VQ decoder under a new patch-local encoder and 4,096-code
codebook, its stack layers under a new adapter and head (both
sized by the codebook), and its diffusion decoder; then `runs/p8kC`'s stage 2 went on from that model's
whole stack (`stage2`: stack, adapter and head), the other stages taken as they were (`--start-from`):

    python scripts/warm_start_files.py runs/p8kC --from runs/p8k/star-shapes.safetensors stage2

Existing files are never replaced.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from comfy_star.checkpoint import read_tensors
from comfy_star.pipeline import DEFAULT_CHECKPOINT
from comfy_star.train.recipe import unpack_checkpoint

# what each choice takes from the checkpoint, and the prefix its stage's module does not have
PARTS = {"stage1:decoder": (("vq.decoder.", "vq.post_quant_conv."), "vq."),
         "stage2:stack": (("ar.stack.",), "ar."),
         "stage2": (("ar.stack.", "ar.adapter.", "ar.head."), "ar."),  # the whole trained stack, to train it further
         "stage3": (("diffusion.",), "diffusion.")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--from", dest="src", default="embedded", help="a star-shapes checkpoint ('embedded': the shipped one)")
    ap.add_argument("parts", nargs="+", choices=["stage0", *PARTS])
    a = ap.parse_args()
    src = DEFAULT_CHECKPOINT if a.src == "embedded" else a.src
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if "stage0" in a.parts:
        unpack_checkpoint(src, out, ["stage0"])
    tensors = read_tensors(src)
    for part in a.parts:
        if part == "stage0":
            continue
        prefixes, root = PARTS[part]
        path = out / f"{part.split(':')[0]}-init.safetensors"
        if path.exists():
            print(f"{path} exists, kept")
            continue
        state = {k[len(root):]: v.float().contiguous() for k, v in tensors.items() if k.startswith(prefixes)}
        if not state:
            raise SystemExit(f"{src} holds nothing under {prefixes}")
        save_file(state, str(path))
        print(f"{path}: {len(state)} tensors")


if __name__ == "__main__":
    main()
