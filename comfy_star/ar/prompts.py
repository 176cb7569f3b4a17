"""The rows the stacked AR reads: text-to-image, editing, and their unconditional twins.

Conditional row (release layout):
    [chat prefix ... '<|im_start|>user\\n'] [prompt] ['<|im_end|>\\n<|im_start|>assistant\\n'] [<|vision_start|>]
Unconditional row: the same length; the first token and the assistant header + <|vision_start|> are
kept, everything in between becomes <|fim_pad|> (release: `tokens[i, 1:-1] = fim_pad; tokens[i, -4:] = ...`).
Editing inserts, right after 'user\\n', the source as VQ codes and as ViT features:
    <|vision_start|> codes <|vision_end|> <|vision_start|> vit <|vision_end|> '\\n'
in both rows, so the guidance is on the instruction alone.
"""
from __future__ import annotations

import torch

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


def edit_rows(chat: ChatFormat, instructions: list[str], source_codes: torch.Tensor):
    """source_codes: (B, h*w). Vision(i) refers to the i-th source image's ViT features."""
    cut = len(chat.user_prefix())
    vs, ve = chat.ids["<|vision_start|>"], chat.ids["<|vision_end|>"]
    newline = chat.encode("\n")
    rows = {True: [], False: []}
    for i, text in enumerate(instructions):
        cond = chat_row(chat, text)
        for is_cond, ids in ((True, cond), (False, uncond_row(chat, cond))):
            rows[is_cond].append([Text(ids[:cut] + [vs]), Codes(source_codes[i]), Text([ve, vs]), Vision(i),
                                  Text([ve] + newline + ids[cut:])])
    return rows[True] + rows[False]


def training_row(chat: ChatFormat, prompt: str, drop: bool) -> list[int]:
    """Stage 2/4 input text: conditional, or its unconditional twin (prompt dropout for CFG)."""
    cond = chat_row(chat, prompt)
    return uncond_row(chat, cond) if drop else cond
