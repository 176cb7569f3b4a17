"""Progress, live previews and cancel for the library's long loops.

The library calls `callback(step, total, preview)` from each loop. Here that becomes ComfyUI's
progress bar (`comfy.utils.ProgressBar`, whose hook also raises when the user cancels) plus an
explicit `throw_exception_if_processing_interrupted()`, so a loop stops within one step of a
cancel even where no progress hook is installed (e.g. a script driving the server headless).
"""
from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.utils

from .convert import star_to_image

log = logging.getLogger("comfy-star")
PREVIEW_SIZE = 512  # the longest side of a live preview sent to the browser


def _pil(x: torch.Tensor):
    """(3, H, W) [-1, 1] → PIL."""
    from PIL import Image
    arr = (star_to_image(x[None])[0].numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


class Progress:
    def __init__(self, total: int):
        self.bar = comfy.utils.ProgressBar(total)
        self.total = total

    def __call__(self, step: int, total: int | None = None, preview=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
        image = None if preview is None else ("JPEG", preview, PREVIEW_SIZE)
        self.bar.update_absolute(step, total or self.total, image)


def token_callback(star):
    """Stacked AR sampling: progress per token; every few rows a preview of the image so far (the
    first of the batch), decoded from the finished rows with the rest greyed out."""
    from comfy_star.pipeline import Tokens
    grid = star.config.grid
    total = grid * grid
    every = max(1, grid // 8)  # ~8 previews per image
    progress = Progress(total)
    shown = {"rows": 0}

    def callback(step: int, total_: int, ids_so_far):
        rows = step // grid
        preview = None
        if ids_so_far is not None and rows > shown["rows"] and (rows % every == 0 or step == total_):
            shown["rows"] = rows
            preview = _partial_preview(star, ids_so_far, rows, grid, Tokens)
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
