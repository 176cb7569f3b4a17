"""Does a model's stack read the edit source? Teacher-forced, on held-out edit batches (stage 4's
rows, no prompt dropout): next-image-token cross-entropy, and accuracy at the tokens where objects
start (`stage2_ar.onset_mask`), once with each edit's true source and once with another edit's
source codes (the batch rolled by one; the ViT view stays the true source's). A stack that copies the unedited scene is far better with the
true source; one that ignores the source scores the same with both. Then `--sample N` edits are
sampled and read back by the detector, as `eval`'s ShapesEdit does.

    python scripts/edit_source_probe.py                                     # the embedded star-shapes
    python scripts/edit_source_probe.py runs/p8kJ/star-shapes.safetensors runs/p8kL/star-shapes.safetensors
"""
from __future__ import annotations

import argparse

import torch

from comfy_star.eval.benchmarks import shapes_edit
from comfy_star.pipeline import STAR
from comfy_star.train import stage2_ar


@torch.no_grad()
def teacher_forced(star, batch) -> dict:
    logits, targets = stage2_ar.teacher_forced_logits(star.parts.ar, star.parts, batch, star.device)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    onset = stage2_ar.onset_mask(targets)
    return {"ce": ce.mean().item(), "onset_ce": ce[onset].mean().item(),
            "onset_acc": (logits.argmax(-1) == targets)[onset].float().mean().item()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["embedded"], help="star-shapes files ('embedded': the shipped one)")
    ap.add_argument("--batches", type=int, default=2, help="held-out batches of 32 edits")
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--sample", type=int, default=24, help="edits to sample and detect (0: none)")
    a = ap.parse_args()
    for path in a.models:
        star = STAR.from_pretrained(None if path == "embedded" else path, device="cpu")
        make = stage2_ar.make_batch_fn(star.parts.image_proc, star.config.image_size, 32, a.seed,
                                       drop_prob=0.0, edit_fraction=1.0)
        print(f"{path} (edit layout {star.config.ar.edit_layout})")
        for step in range(a.batches):
            batch = make(step)
            wrong = dict(batch, sources=batch["sources"].roll(1, dims=0))  # codes of another edit's source
            for name, b in (("true source", batch), ("another's codes", wrong)):
                r = teacher_forced(star, b)
                print(f"  batch {step} {name:16s} CE {r['ce']:.3f}  at onsets: CE {r['onset_ce']:.2f}, "
                      f"accuracy {r['onset_acc']:.3f}")
        if a.sample:
            print(f"  {a.sample} sampled edits:", shapes_edit(star, a.sample, a.seed))


if __name__ == "__main__":
    main()
