"""Input sequences for the stacked AR, built from segments.

A row is a list of segments:
    Text(ids)          token ids, embedded by the base's table
    Codes(ids)         image-token ids, embedded as adapter(codebook[id])       (text-like positions)
    Vision(index)      the ViT features of image `index`, as Qwen2.5-VL sees it (3-D M-RoPE positions)

Rows are left-padded into one batch, so that every row's next token is at the last column
(what a KV-cached sampler and CFG batching want). Positions come from Qwen2.5-VL's own
`get_rope_index`, with Codes standing in as text (the release does the same with `<|vision_pad|>`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Text:
    ids: list


@dataclass
class Codes:
    ids: torch.Tensor  # (n,) long


@dataclass
class Vision:
    index: int  # into the batch's vision features


@dataclass
class Batch:
    embeds: torch.Tensor  # (B, L, D)
    position_ids: torch.Tensor  # (3, B, L)
    attention_mask: torch.Tensor  # (B, L) 1 = real token
    next_position: torch.Tensor  # (B,) position of the token after the row


def seg_len(seg, vision_lens) -> int:
    if isinstance(seg, Text):
        return len(seg.ids)
    if isinstance(seg, Codes):
        return int(seg.ids.numel())
    return vision_lens[seg.index]


def assemble(model, rows, codebook, vision=None, pad_id: int = 0) -> Batch:
    """rows: list of segment lists. codebook: (K, d). vision: None or (features list[(n_i, D)], grid_thw (N, 3))."""
    feats, grid = vision if vision is not None else ([], None)
    vision_lens = [f.shape[0] for f in feats]
    lengths = [sum(seg_len(s, vision_lens) for s in row) for row in rows]
    L = max(lengths)
    device = model.head.weight.device
    cfg = model.base.config
    embeds, ids_for_pos, types, mask = [], [], [], []
    for row, n in zip(rows, lengths):
        pad = L - n
        e = [model.embed_text(torch.full((pad,), pad_id, device=device))] if pad else []
        p, t = [pad_id] * pad, [0] * pad
        for seg in row:
            if isinstance(seg, Text):
                ids = torch.as_tensor(seg.ids, device=device, dtype=torch.long)
                e.append(model.embed_text(ids))
                p += ids.tolist(); t += [0] * len(ids)
            elif isinstance(seg, Codes):
                ids = seg.ids.to(device)  # (n,): an image's tokens in raster order, from its first
                e.append(model.embed_codes(codebook[ids], torch.arange(ids.numel(), device=device)))
                p += [cfg.video_token_id] * seg.ids.numel(); t += [0] * seg.ids.numel()
            else:
                f = feats[seg.index]
                e.append(f.to(device, model.head.weight.dtype))
                p += [cfg.image_token_id] * f.shape[0]; t += [1] * f.shape[0]
        embeds.append(torch.cat(e, 0))
        ids_for_pos.append(p); types.append(t)
        mask.append([0] * pad + [1] * n)
    attention_mask = torch.tensor(mask, device=device)
    input_ids = torch.tensor(ids_for_pos, device=device)
    mm_types = torch.tensor(types, device=device, dtype=torch.int)
    grids = _grids_in_row_order(rows, grid)
    position_ids, _ = model.base.model.get_rope_index(
        input_ids, mm_types, image_grid_thw=grids, attention_mask=attention_mask)
    next_position = position_ids.amax(dim=(0, 2)) + 1
    return Batch(torch.stack(embeds), position_ids, attention_mask, next_position)


def _grids_in_row_order(rows, grid):
    """get_rope_index walks images in order across rows; give it their grids in that order."""
    if grid is None:
        return None
    order = [seg.index for row in rows for seg in row if isinstance(seg, Vision)]
    return grid[order] if order else None
