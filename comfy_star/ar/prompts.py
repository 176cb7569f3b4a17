"""The rows the stacked AR reads: text-to-image, editing, and their unconditional twins.

Conditional row (release layout):
    [chat prefix ... '<|im_start|>user\\n'] [prompt] ['<|im_end|>\\n<|im_start|>assistant\\n'] [<|vision_start|>]
Unconditional row: the same length; the first token and the assistant header + <|vision_start|> are
kept, everything in between becomes <|fim_pad|> (release: `tokens[i, 1:-1] = fim_pad; tokens[i, -4:] = ...`).
Editing adds the source as VQ codes and as ViT features,
    <|vision_start|> codes <|vision_end|> <|vision_start|> vit <|vision_end|>
to both rows, so the guidance is on the instruction alone. Where it goes is the config's
`ar.edit_layout`:
    "release"      right after 'user\\n', then '\\n' and the instruction (the authors' checkpoints)
    "source_last"  after the instruction and a '\\n', just before the assistant header
With "source_last" every source code sits the same number of positions before the output token at
the same raster place, whatever the instruction's length, so copying an unedited region is one
fixed relative offset under RoPE; in the release layout that offset moves with the instruction.
"""
from __future__ import annotations

import torch

from ..config import EDIT_LAYOUTS
from .sequence import Codes, Text, Vision
from .tokenizer import ChatFormat


def chat_row(chat: ChatFormat, prompt: str) -> list[int]:
    prefix, text, suffix = chat.prompt(prompt)
    return prefix + text + suffix + [chat.ids["<|vision_start|>"]]


def uncond_row(chat: ChatFormat, cond: list[int]) -> list[int]:
    keep_tail = len(chat.encode("<|im_start|>assistant\n")) + 1  # + <|vision_start|>
    fim = chat.ids["<|fim_pad|>"]
    return cond[:1] + [fim] * (len(cond) - 1 - keep_tail) + cond[-keep_tail:]


def t2i_rows(chat: ChatFormat, prompts: list[str]):
    """Text-to-image rows: [cond_0 .. cond_B-1, uncond_0 .. uncond_B-1] (LlamaGen's CFG batch)."""
    cond = [chat_row(chat, p) for p in prompts]
    rows = [[Text(r)] for r in cond] + [[Text(uncond_row(chat, r))] for r in cond]
    return rows


def edit_row(chat: ChatFormat, ids: list[int], source_codes: torch.Tensor, index: int,
             layout: str = "release") -> list:
    """One edit row's segments: `ids` is a `chat_row` or its `uncond_row`; source_codes (h*w,);
    Vision(index) is the source's ViT features."""
    vs, ve = chat.ids["<|vision_start|>"], chat.ids["<|vision_end|>"]
    newline = chat.encode("\n")
    if layout == "release":
        cut = len(chat.user_prefix())
        return [Text(ids[:cut] + [vs]), Codes(source_codes), Text([ve, vs]), Vision(index),
                Text([ve] + newline + ids[cut:])]
    if layout == "source_last":
        cut = len(ids) - len(chat.assistant_prefix()) - 1  # the assistant header and <|vision_start|>
        return [Text(ids[:cut] + newline + [vs]), Codes(source_codes), Text([ve, vs]), Vision(index),
                Text([ve] + ids[cut:])]
    raise ValueError(f"edit layout {layout!r}: expected one of {EDIT_LAYOUTS}")


def edit_rows(chat: ChatFormat, instructions: list[str], source_codes: torch.Tensor, layout: str = "release"):
    """source_codes: (B, h*w). Rows: [cond_0 .. cond_B-1, uncond_0 .. uncond_B-1]."""
    cond = [chat_row(chat, text) for text in instructions]
    return ([edit_row(chat, ids, source_codes[i], i, layout) for i, ids in enumerate(cond)]
            + [edit_row(chat, uncond_row(chat, ids), source_codes[i], i, layout) for i, ids in enumerate(cond)])


def training_row(chat: ChatFormat, prompt: str, drop: bool) -> list[int]:
    """Stage 2/4 input text: conditional, or its unconditional twin (prompt dropout for CFG)."""
    cond = chat_row(chat, prompt)
    return uncond_row(chat, cond) if drop else cond
