"""Stage 4's preference term: DPO (Rafailov et al., 2023) over a caption's render and a near miss.

Next-token cross-entropy teaches the stack what a right image looks like, token by token, each
token given the right ones before it. It never shows the stack the images it gets wrong: the second
object drawn as the first one's kind, colours on the wrong shapes. The Shapes world can draw those
near misses exactly (data.negatives), so each step also scores pairs (caption, right render, near
miss) and asks the stack to raise the right render's log-likelihood over the miss's, each measured
against a frozen copy of the stack from the start of the run (the reference: once the margin is
met, the term lets go, so it moves the stack only so far):

    loss = -log σ(β · [(log π(right) - log π_ref(right)) - (log π(miss) - log π_ref(miss))])

log π is summed over the image's tokens. The near miss shares the right render's tokens wherever
the miss left the image alone (the tokenizer is patch-local), so the term acts where they differ.
"""
from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F

from . import stage2_ar


def add_pairs(make_batch, image_size: int, pairs: int, seed: int):
    """A batch function like `make_batch` whose batches also hold `pairs` preference pairs:
    batch["pairs"] = {"captions": [...], "images": right renders then near misses (2·pairs, H, W, 3) uint8}."""
    from .. import data

    def make_batch_with_pairs(step: int, rank: int = 0, world: int = 1):
        batch = make_batch(step, rank, world)
        rng = random.Random(f"pairs:{seed}:{step}:{rank}")
        drawn = [data.sample_preference(rng, size=image_size) for _ in range(pairs)]
        batch["pairs"] = {"captions": [d[0] for d in drawn],
                          "images": stage2_ar.pixels([d[1] for d in drawn] + [d[2] for d in drawn])}
        return batch
    return make_batch_with_pairs


def reference_of(ar):
    """A frozen copy of the stacked AR (stack, adapter, head) that shares the frozen base, not a copy of it."""
    ref = copy.deepcopy(ar, memo={id(ar.base): ar.base})
    ref.requires_grad_(False).eval()
    return ref


def image_logp(model, parts, captions: list[str], images, device, ar=None) -> torch.Tensor:
    """(B,) log-likelihood of each image's tokens given its caption (never dropped), summed over tokens.
    `model` is parts.ar (maybe DDP-wrapped), or `ar` is another stacked AR (then model is ar too)."""
    batch = {"captions": captions, "images": images, "instructions": [], "drop": [False] * len(captions)}
    logits, targets = stage2_ar.teacher_forced_logits(model, parts, batch, device, ar=ar)
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(1)


def dpo_loss(model, ref, parts, pairs: dict, device, beta: float):
    """The preference term over P pairs → (loss, the right renders' cross-entropy per token, stats);
    pairs as add_pairs makes them."""
    captions = pairs["captions"] * 2  # right renders first, then their near misses
    logp = image_logp(model, parts, captions, pairs["images"], device)  # (2P,)
    with torch.no_grad():
        ref_logp = image_logp(ref, parts, captions, pairs["images"], device, ar=ref)
    gain = (logp - ref_logp).view(2, -1)  # (2, P): [right; miss]
    margin = beta * (gain[0] - gain[1])
    loss = -F.logsigmoid(margin).mean()
    right = logp.view(2, -1)[0]
    right_ce = -right.mean() / parts.config.grid ** 2  # per token, as stage2_ar.token_loss's ce
    with torch.no_grad():
        gap = right - logp.view(2, -1)[1]  # how much likelier the right render is, in nats
    stats = {"dpo": loss.item(), "pref_acc": (gap > 0).float().mean().item(), "pref_gap": gap.mean().item(),
             "right_ce": right_ce.item()}
    return loss, right_ce, stats


def preference_ar_loss(model, ref, parts, batch, device, onset_weight: float, beta: float, weight: float = 1.0):
    """Stage 4's cross-entropy on the usual rows, plus `weight` times the preference term on
    batch["pairs"], plus the right renders' cross-entropy: plain DPO lowers the right render's
    likelihood too while it lowers the miss's faster, and sampling drifts (`runs/p9I` in
    docs/star-shapes-training.md § Preference tuning against near misses); the likelihood term on the
    preferred side holds it (RPO, Pang et al., 2024)."""
    ce, stats = stage2_ar.ar_loss(model, parts, batch, device, onset_weight)
    pref, right_ce, pstats = dpo_loss(model, ref, parts, batch["pairs"], device, beta)
    return ce + right_ce + weight * pref, {**stats, **pstats}
