"""Stage 3 (and the decoder's part of stage 4): the diffusion decoder learns to turn VQ embeddings
(+ text, + an edit's source image) into images, by flow matching; everything else is frozen.

The VQ embeddings arrive detached: the stop-gradient between the stacked AR and the decoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion.pipeline import DiffusionDecoder


def diffusion_loss(decoder: DiffusionDecoder, batch: dict, size: int | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """batch: images (B, 3, H, W) [-1, 1], vq_embeds (B, h, w, d), text_embeds (B, L, cap), text_mask (B, L),
    optional source_images (B, 3, H, W) (all-zero rows: no source) and source_mask (B,) bool.

    size: train at size×size pixels (images and sources resized bilinearly, as the release resizes to
    its diffusion resolution); None keeps the batch's size. Returns (loss, stats).
    """
    images = batch["images"]
    source = batch.get("source_images")
    source_mask = batch.get("source_mask")
    if source is not None and source_mask is None:
        source_mask = source.flatten(1).abs().amax(1) > 0
    if size is not None:
        images = _resize(images, size)
        source = None if source is None else _resize(source, size)
    # through forward, so that a DDP-wrapped decoder syncs its gradients
    loss = decoder(images, batch["vq_embeds"].detach(), batch["text_embeds"].detach(), batch["text_mask"],
                   source_images=source, source_mask=source_mask, generator=generator)
    n_edit = 0 if source_mask is None else int(source_mask.sum())
    return loss, {"loss": loss.item(), "edit_fraction": n_edit / images.shape[0]}


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
