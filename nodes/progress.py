"""Progress, live previews and cancel for the library's long loops.

The library calls `callback(step, total, preview)` from each loop. Here that becomes ComfyUI's
progress bar (`comfy.utils.ProgressBar`, whose hook also raises when the user cancels) plus an
explicit `throw_exception_if_processing_interrupted()`, so a loop stops within one step of a
cancel even where no progress hook is installed (e.g. a script driving the server headless).
"""
from __future__ import annotations

import logging
import time
import weakref

import torch

import comfy.model_management
import comfy.utils

from .convert import star_to_image

log = logging.getLogger("comfy-star")
PREVIEW_SIZE = 512  # the longest side of a live preview sent to the browser
# Each progress update is a websocket message (and ComfyUI's progress-state bookkeeping): more than
# the eye can follow is pure overhead on a fast model (64 per star-shapes image). None: every step.
UPDATES_PER_SECOND = 10
# Live previews (a VQ decode of the grid so far) may take at most this share of the sampling time:
# a slow model (seconds per image) previews every few rows, a fast one on a CPU rarely or never,
# where the image arrives before a preview would help. None: every few rows, whatever the cost.
PREVIEW_BUDGET = 0.1


def _pil(x: torch.Tensor):
    """(3, H, W) [-1, 1] → PIL."""
    from PIL import Image
    arr = (star_to_image(x[None])[0].numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


class Progress:
    def __init__(self, total: int):
        self.bar = comfy.utils.ProgressBar(total)
        self.total = total
        self.last_update = float("-inf")

    def __call__(self, step: int, total: int | None = None, preview=None):
        comfy.model_management.throw_exception_if_processing_interrupted()  # every step, throttled or not
        total = total or self.total
        now = time.perf_counter()
        if (preview is None and step < total and UPDATES_PER_SECOND
                and now - self.last_update < 1.0 / UPDATES_PER_SECOND):
            return
        self.last_update = now
        image = None if preview is None else ("JPEG", preview, PREVIEW_SIZE)
        self.bar.update_absolute(step, total, image)


class PreviewBudget:
    """Allows a preview when the time since the last one is at least its cost / PREVIEW_BUDGET, so
    previews take at most that share of the loop. The cost is remembered per model across prompts."""
    costs = weakref.WeakKeyDictionary()  # model → seconds of its last preview

    def __init__(self, model):
        self.model = model
        self.since = time.perf_counter()

    def allows(self) -> bool:
        if PREVIEW_BUDGET is None:
            return True
        cost = self.costs.get(self.model, 0.0)
        return (time.perf_counter() - self.since) * PREVIEW_BUDGET >= cost

    def spent(self, started: float) -> None:
        self.since = time.perf_counter()
        self.costs[self.model] = self.since - started


def token_callback(star):
    """Stacked AR sampling: progress per token; every few rows, as the preview budget allows, a
    preview of the image so far (the first of the batch), decoded from the finished rows with the
    rest greyed out."""
    from comfy_star.pipeline import Tokens
    grid = star.config.grid
    total = grid * grid
    every = max(1, grid // 8)  # at most ~8 previews per image
    progress = Progress(total)
    budget = PreviewBudget(star)
    shown = {"rows": 0}

    def callback(step: int, total_: int, ids_so_far):
        rows = step // grid
        preview = None
        if (ids_so_far is not None and rows > shown["rows"] and (rows % every == 0 or step == total_)
                and budget.allows()):
            shown["rows"] = rows
            started = time.perf_counter()
            preview = _partial_preview(star, ids_so_far, rows, grid, Tokens)
            budget.spent(started)
        progress(step, total_, preview)

    return callback


def _partial_preview(star, ids_so_far: torch.Tensor, rows: int, grid: int, Tokens):
    try:
        ids = ids_so_far[:1, : rows * grid]
        pad = ids[:, -1:].expand(1, grid * grid - ids.shape[1])  # pad with the last token
        full = torch.cat([ids, pad], dim=1).view(1, grid, grid)
        img = star.decode_vq(Tokens(full, star.key, [""]))[0]  # (3, H, W) [-1, 1]
        cut = img.shape[1] * rows // grid
        img[:, cut:] = 0.0  # not yet sampled: mid grey
        return _pil(img)
    except comfy.model_management.InterruptProcessingException:
        raise
    except Exception as e:  # a preview must never break sampling
        log.debug("comfy-star: preview failed: %s", e)
        return None


def diffusion_callback(star, steps: int):
    """Diffusion decoding: progress per denoising step, with the library's preview of the current
    estimate when it gives one as an image tensor (B, 3, H, W) in [-1, 1]."""
    progress = Progress(steps)

    def callback(step: int, total: int, preview):
        image = None
        if isinstance(preview, torch.Tensor) and preview.ndim == 4 and preview.shape[1] == 3:
            image = _pil(preview[0].float().cpu())
        progress(step, total, image)

    return callback
