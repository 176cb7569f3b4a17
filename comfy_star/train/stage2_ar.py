"""Stage 2: stacked-AR text-to-image, and (stage 4) editing, by next-token cross-entropy.

Only the stack, the generation adapter and the head learn; the base and the VQ are frozen.
Prompts are dropped to their unconditional twin 10% of the time, so guidance works.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from ..ar.prompts import chat_row, edit_row, training_row, uncond_row
from ..ar.sequence import Codes, Text, assemble
from ..ar.understand import vision_inputs, vit_features


def pixels(images) -> torch.Tensor:
    """PIL list → (B, H, W, 3) uint8: compact to pass from data workers."""
    import numpy as np
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))


def to_model_range(pixels_u8: torch.Tensor, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float in [-1, 1]."""
    return pixels_u8.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def make_batch_fn(image_proc, image_size: int, batch_size: int, seed: int, drop_prob: float = 0.1,
                  edit_fraction: float = 0.0, vision: bool = True, category_weights: dict | None = None,
                  varied_phrasings: bool = False, raster_order: bool = False, edit_weights: dict | None = None):
    """A pure function of (step, rank): CPU tensors only, so it can run in data workers.
    category_weights: how often each ShapesEval category's captions are drawn (data.sample_t2i);
    edit_weights: how often each edit kind is drawn (data.sample_edit);
    varied_phrasings: captions may use captions.VARIED's phrasings too; raster_order: a pair's
    objects are named in the order they are drawn (captions.in_raster_order)."""
    from .. import data

    def make_batch(step: int, rank: int = 0, world: int = 1):
        rng = random.Random(f"stage2:{seed}:{step}:{rank}")
        n_edit = sum(rng.random() < edit_fraction for _ in range(batch_size))
        t2i = [data.sample_t2i(rng, size=image_size, category_weights=category_weights,
                               varied=varied_phrasings, raster_order=raster_order)[:2] for _ in range(batch_size - n_edit)]
        edits = [data.sample_edit(rng, size=image_size, edit_weights=edit_weights)[:3] for _ in range(n_edit)]
        batch = {"captions": [c for c, _ in t2i], "images": pixels([im for _, im in t2i]) if t2i else None,
                 "instructions": [e[1] for e in edits],
                 "drop": [rng.random() < drop_prob for _ in range(batch_size)]}
        if edits:
            batch.update(sources=pixels([e[0] for e in edits]), targets=pixels([e[2] for e in edits]))
            if vision:  # the VLM's view of the source (the decoder does not need it)
                batch["pixel_values"], batch["grid"], _ = vision_inputs(image_proc, [e[0] for e in edits])
        return batch
    return make_batch


@torch.no_grad()
def encode_ids(vq, pixels_u8, device):
    x = to_model_range(pixels_u8, device).to(next(vq.parameters()).dtype)
    return vq.encode(x).flatten(1)  # (B, h*w)


def build_rows(parts, batch, device):
    """Rows (and vision features) for a mixed t2i/edit batch; targets (B, n) ids."""
    chat, vq = parts.chat, parts.vq
    rows, targets, drops = [], [], iter(batch["drop"])
    if batch["captions"]:
        ids = encode_ids(vq, batch["images"], device)
        for cap, t in zip(batch["captions"], ids):
            rows.append([Text(training_row(chat, cap, next(drops))), Codes(t)])
            targets.append(t)
    vision = None
    if batch["instructions"]:
        src_ids, tgt_ids = encode_ids(vq, batch["sources"], device), encode_ids(vq, batch["targets"], device)
        with torch.no_grad():
            vision = (vit_features(parts.ar.base, batch["pixel_values"], batch["grid"]), batch["grid"])
        layout = parts.config.ar.edit_layout
        for i, (text, s, t) in enumerate(zip(batch["instructions"], src_ids, tgt_ids)):
            cond = chat_row(chat, text)
            ids = uncond_row(chat, cond) if next(drops) else cond
            rows.append(edit_row(chat, ids, s, i, layout) + [Codes(t)])
            targets.append(t)
    return rows, vision, torch.stack(targets)


def background_codes(targets: torch.Tensor) -> torch.Tensor:
    """(B, n) ids → (B,): each image's most common code, its plain background."""
    return targets.mode(dim=1).values


def onset_mask(targets: torch.Tensor) -> torch.Tensor:
    """(B, n) ids of square images → (B, n) bool: where each object starts in raster order.

    An object token is one whose code differs from its image's most common code (the plain
    background); an onset is an object token with no object token left of it or above it. Only
    there does the prompt alone decide an object's colour and kind: teacher-forced, every later
    token of the object can copy them from its neighbours, so onsets carry the binding signal."""
    b, n = targets.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"onset weighting needs square token grids (got {n} tokens per image)")
    grid = targets.view(b, side, side)
    obj = grid != background_codes(targets)[:, None, None]
    left, up = torch.zeros_like(obj), torch.zeros_like(obj)
    left[:, :, 1:], up[:, 1:, :] = obj[:, :, :-1], obj[:, :-1, :]
    return (obj & ~left & ~up).flatten(1)


def teacher_forced_logits(model, parts, batch, device, ar=None):
    """One teacher-forced forward over a batch → (logits (B, n, V) float, targets (B, n)).

    `model` is `parts.ar`, possibly wrapped by accelerate (DDP): the forward goes through it; or
    another stacked AR `ar` (e.g. a frozen reference copy), passed as both, whose adapter embeds the codes."""
    rows, vision, targets = build_rows(parts, batch, device)
    codebook = parts.vq.codebook().detach()
    b = assemble(ar or parts.ar, rows, codebook, vision=vision, pad_id=parts.chat.tok.pad_token_id)
    n = targets.shape[1]
    # column j predicts column j+1: the n columns before the last predict the n image tokens
    mask = None if bool(b.attention_mask.all()) else b.attention_mask[:, :-1]
    logits = model(b.embeds[:, :-1], b.position_ids[:, :, :-1], mask)[:, -n:].float()
    return logits, targets


def ar_loss(model, parts, batch, device, onset_weight: float = 1.0):
    logits, targets = teacher_forced_logits(model, parts, batch, device)
    return token_loss(logits, targets, onset_weight)


def token_loss(logits: torch.Tensor, targets: torch.Tensor, onset_weight: float = 1.0):
    """Next-image-token cross-entropy: logits (B, n, V), targets (B, n) → (loss, stats).

    onset_weight > 1 adds, at the tokens where objects start (see onset_mask), (onset_weight - 1)
    times the cross-entropy of "given that an object starts here, which code": the background's
    logit masked out, so the extra weight teaches colour and kind without teaching the stack to
    start objects more often than the data does. `ce` stays the plain mean, comparable across runs;
    `onset_acc` is that masked accuracy at onsets (when the token grid is square)."""
    n = targets.shape[1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    ce = ce.view_as(targets)  # (B, n)
    stats = {"ce": ce.mean().item(), "acc": (logits.argmax(-1) == targets).float().mean().item()}
    loss = ce.mean()
    if onset_weight != 1.0 or math.isqrt(n) ** 2 == n:  # a non-square grid is refused only when weighting
        onset = onset_mask(targets)
        if onset.any():
            at = logits[onset]  # (k, V): the rows where objects start (a copy)
            at[torch.arange(len(at)), background_codes(targets)[:, None].expand(-1, n)[onset]] = float("-inf")
            stats["onset_acc"] = (at.argmax(-1) == targets[onset]).float().mean().item()
            if onset_weight != 1.0:
                extra = onset_weight - 1.0
                onset_ce = F.cross_entropy(at, targets[onset], reduction="sum")
                loss = (ce.sum() + extra * onset_ce) / (ce.numel() + extra * len(at))
    return loss, stats
