"""Fine-tune the stacked layers of a loaded STAR on a small set of examples.

    tuned, losses = finetune_stack(star, examples, steps=50, lr=3e-4, batch_size=4, seed=0)

The same function serves the ComfyUI node (STAR Train Stacked Layers) and the CLI
(`python -m comfy_star train finetune --data DIR`). It never changes `star`: the stacked AR
(stack, adapter, head — and the frozen base it reads from) is copied; the VQ and the diffusion
decoder are shared, as they are not trained. The loss is stage 2/4's next-token cross-entropy
(`stage2_ar.ar_loss`); the loop is the training runner's (`runner.train`).

Examples are caption pairs (image, caption) and/or edit triples (source, instruction, target).
"""
from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..ar.understand import vision_inputs
from . import stage2_ar
from .prefetch import to_device


@dataclass
class Example:
    """One training example: a caption pair, or an edit triple."""
    image: Image.Image | None = None
    caption: str | None = None
    source: Image.Image | None = None
    instruction: str | None = None
    target: Image.Image | None = None

    @property
    def kind(self) -> str:
        return "edit" if self.instruction is not None else "caption"


@dataclass
class Examples:
    """A named dataset (STAR_DATASET on a ComfyUI wire). `items` is any sequence whose elements
    `as_example` accepts: a list of Examples, or a `data.CaptionFolder` / `data.EditFolder`,
    which reads each image only when a batch needs it."""
    items: Sequence
    name: str = "examples"

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        return as_example(self.items[i])

    @property
    def skipped(self) -> list:
        return list(getattr(self.items, "skipped", []))


def as_example(item) -> Example:
    """An Example from an Example, a dict with its field names, or a tuple
    (image, caption) / (source, instruction, target)."""
    if isinstance(item, Example):
        ex = item
    elif isinstance(item, dict):
        ex = Example(**{k: v for k, v in item.items() if k in {f.name for f in dataclasses.fields(Example)}})
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        ex = Example(image=item[0], caption=item[1])
    elif isinstance(item, (tuple, list)) and len(item) == 3:
        ex = Example(source=item[0], instruction=item[1], target=item[2])
    else:
        raise ValueError(f"not a training example: {type(item).__name__}")
    if ex.kind == "caption" and (ex.image is None or not ex.caption):
        raise ValueError("a caption example needs an image and a non-empty caption")
    if ex.kind == "edit" and (ex.source is None or ex.target is None or not ex.instruction):
        raise ValueError("an edit example needs a source image, an instruction and a target image")
    return ex


def make_batch_fn(examples: Sequence, image_proc, image_size: int, batch_size: int, seed: int,
                  drop_prob: float = 0.1):
    """Stage 2's batch layout from a fixed set of examples: a pure function of (step, rank).
    Images are centre-cropped to a square and resized to the model's input size."""
    from ..data.folder import square

    def fit(im):
        im = im.convert("RGB")
        return im if im.size == (image_size, image_size) else square(im, image_size)

    def make_batch(step: int, rank: int = 0, world: int = 1):
        rng = random.Random(f"finetune:{seed}:{step}:{rank}")
        picks = [as_example(examples[rng.randrange(len(examples))]) for _ in range(batch_size)]
        t2i = [e for e in picks if e.kind == "caption"]
        edits = [e for e in picks if e.kind == "edit"]
        batch = {"captions": [e.caption for e in t2i],
                 "images": stage2_ar.pixels([fit(e.image) for e in t2i]) if t2i else None,
                 "instructions": [e.instruction for e in edits],
                 "drop": [rng.random() < drop_prob for _ in range(len(t2i) + len(edits))]}
        if edits:
            sources = [fit(e.source) for e in edits]
            pv, grid, _ = vision_inputs(image_proc, sources)
            batch.update(sources=stage2_ar.pixels(sources), targets=stage2_ar.pixels([fit(e.target) for e in edits]),
                         pixel_values=pv, grid=grid)
        return batch

    return make_batch


def copy_for_training(star, name: str):
    """A new STAR whose stacked AR is a trainable copy; VQ and diffusion decoder are shared.
    Works inside ComfyUI's inference mode too: copies are made as normal (autograd-able) tensors."""
    from ..pipeline import STAR
    parts = star.parts
    with torch.inference_mode(False):
        ar = copy.deepcopy(parts.ar)  # the base too: it is frozen, but gradients flow through it
        for module in (ar.stack, ar.adapter, ar.head):
            module.requires_grad_(True)
    for frozen in (parts.vq, parts.diffusion):  # shared and never trained: no autograd through them
        if frozen is not None:
            frozen.requires_grad_(False)
    new_parts = dataclasses.replace(parts, ar=ar)
    return STAR(new_parts, device=star.device, dtype=star.dtype, key=name)


def finetune_stack(star, examples, steps: int, lr: float, batch_size: int, seed: int,
                   on_step: Callable[[int, int, float], None] | None = None, name: str | None = None,
                   out_dir: str | None = None, drop_prob: float = 0.1,
                   cancel: Callable[[], bool] | None = None):
    """→ (tuned STAR, list of per-step losses). `on_step(step, total, loss)` after each step; an
    exception it raises (e.g. ComfyUI's cancel) stops training and propagates, leaving `star` as
    it was. `out_dir`: where the runner keeps a resumable checkpoint and its log (None: nowhere)."""
    from .runner import TrainArgs, train
    items = examples.items if isinstance(examples, Examples) else examples
    if not len(items):
        raise ValueError("no training examples")
    as_example(items[0])  # a wrong kind of item fails here, not in the middle of training
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0 (got {steps}, {batch_size}, {lr})")
    name = name or f"{star.key}+finetune(steps={steps},lr={lr},seed={seed})"
    from ..manager import MANAGER
    tuned = MANAGER.adopt(copy_for_training(star, name), name)  # placed (and, in ComfyUI, managed) like any model
    parts = tuned.parts

    with torch.inference_mode(False):
        tuned._use("ar", "vq")
        device = next(parts.ar.parameters()).device
        make_batch = make_batch_fn(items, parts.image_proc, tuned.config.image_size, batch_size, seed, drop_prob)

        def loss_fn(model, batch):
            return stage2_ar.ar_loss(model, parts, to_device(batch, device), device)

        def step_hook(step, total, stats):
            if on_step is not None:
                on_step(step, total, float(stats["loss"]))

        args = TrainArgs(out_dir=None if out_dir is None else str(out_dir), steps=steps, lr=lr,
                         batch_size=batch_size, seed=seed, save_every=max(1, steps // 10 or 1),
                         log_every=max(1, steps // 10))
        parts.ar.train()
        try:
            result = train(parts.ar, make_batch, loss_fn, args, on_step=step_hook, cancel=cancel)
        finally:
            parts.ar.eval()
            parts.ar.requires_grad_(False)
    return tuned, list(result.losses)


def save_model(star, path, overwrite: bool = False) -> Path:
    """Write a STAR (e.g. a fine-tuned one) as a comfy-star checkpoint. The base is included when
    the model has no base folder to name (small models), as the embedded default does."""
    from .. import components as comps
    from ..checkpoint import save_star
    include_base = not star.config.ar.base_path
    tensors = comps.state_for_saving(star.parts, include_base=include_base)
    return save_star(path, star.config, tensors, overwrite=overwrite)


def finetune_cli(a) -> Path:
    """`python -m comfy_star train finetune --model M --data DIR --steps N --lr LR --out tuned.safetensors`."""
    from ..pipeline import STAR
    from .. import data
    if not a.data:
        raise SystemExit("--data: name a folder of images with same-named .txt captions")
    star = STAR.from_pretrained(a.model, device=a.device)
    examples = data.CaptionFolder(a.data)
    out = Path(a.out if a.out.endswith(".safetensors") else Path(a.out) / "finetuned.safetensors")

    def report(step, total, loss):
        if step == 1 or step % max(1, total // 20) == 0 or step == total:
            print(f"[finetune] step {step}/{total} loss {loss:.4f}", flush=True)

    tuned, _ = finetune_stack(star, examples, steps=200 if a.steps is None else a.steps, lr=a.lr, batch_size=a.batch, seed=a.seed, on_step=report)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(save_model(tuned, out))
    return out
