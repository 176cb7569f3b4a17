"""Can the model pick the best of N samples? Best-of-N reranking by the model's own understanding
(a diagnostic for issue 3; not shipped, docs/star-shapes-training.md § Best of N, judged by the base
or by the stack).

    python scripts/rerank_probe.py best-of --candidates 4 --n 40 --seed 777
    python scripts/rerank_probe.py best-of --judge stack --beta 0 0.5 1 1.5 --n 40 --seed 777
    python scripts/rerank_probe.py retrieval --n 12

The base's judge (`--judge base`) is its captioning score: log p(prompt | image, "describe the image"),
the likelihood that the base, asked to describe the image, answers with the prompt (summed over the
prompt's tokens). The stack's judge (`--judge stack`) is its own score of the tokens it drew,
log p(tokens | prompt) − β log p(tokens | no prompt): at β = 1 the pointwise mutual information of
image and prompt, the implicit classifier that guidance follows token by token, here over the image.
`best-of` samples N images per ShapesEval prompt (held-out phrasings, seed as given) with the model's
defaults and prints the strict score, per category and overall, of: the first sample; the average
sample ("mean"); the sample the judge ranks first ("rerank"); and any of the N ("oracle", the ceiling a
perfect judge would reach). `retrieval` scores n captions against n renders, each caption's own render
among them, and counts how often the judge ranks a caption's own render first (chance 1/n): for
GenEval-style captions (training and held-out phrasings) and for the base's own `describe()` wording.
"""
from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import numpy as np
import torch

from comfy_star import STAR, data
from comfy_star.ar.prompts import training_row
from comfy_star.ar.sequence import Codes, Text, assemble
from comfy_star.data import detector
from comfy_star.data.qa import describe
from comfy_star.pipeline import to_pil
from comfy_star.train.stage0_vlm import build_batch

QUESTION = "describe the image"  # one of the questions stage 0 teaches captions with


@torch.inference_mode()
def stack_logp(star, prompt: str, ids: torch.Tensor, drop: bool) -> torch.Tensor:
    """log p(ids | prompt) under the stack, teacher-forced, (N,) nats, one per row of ids (N, n);
    drop: the unconditional row guidance uses instead of the prompt's."""
    ar, chat = star.parts.ar, star.parts.chat
    rows = [[Text(training_row(chat, prompt, drop)), Codes(t)] for t in ids]
    b = assemble(ar, rows, star.parts.vq.codebook(), pad_id=chat.tok.pad_token_id)
    n = ids.shape[1]
    # column j predicts column j+1: the n columns before the last predict the n image tokens
    mask = None if bool(b.attention_mask.all()) else b.attention_mask[:, :-1]
    logp = ar(b.embeds[:, :-1], b.position_ids[:, :, :-1], mask)[:, -n:].float().log_softmax(-1)
    return logp.gather(-1, ids[..., None])[..., 0].sum(1)


@torch.inference_mode()
def judge(star, images, text: str) -> torch.Tensor:
    """log p(text | image, QUESTION) under the frozen base, (N,) nats, one per image."""
    base, chat = star.parts.ar.base, star.parts.chat
    batch = build_batch([(im, QUESTION, text) for im in images], chat, star.parts.image_proc)
    labels = batch.pop("labels")[:, 1:]  # column j predicts token j+1
    logp = base(**batch).logits[:, :-1].float().log_softmax(-1)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (picked * (labels != -100)).sum(1)


def best_of(star, candidates: int, n: int, seed: int, by: str = "base", betas=(1.0,)):
    """by: "base" (the captioning score) or "stack" (one pick per β in betas)."""
    prompts = data.captions.eval_prompts(seed, n, held_out=True)
    res = defaultdict(lambda: defaultdict(list))
    picks = ["rerank"] if by == "base" else [f"beta={b:g}" for b in betas]
    start = time.time()
    for i, p in enumerate(prompts):
        tokens = star.sample_tokens([p["prompt"]] * candidates, seed=seed + i)
        images = to_pil(star.decode_vq(tokens))
        ok = [detector.matches_spec(detector.detect(im), p["spec"]) for im in images]
        if by == "base":
            scores = [judge(star, images, p["prompt"])]
        else:
            ids = tokens.ids.flatten(1)
            cond, uncond = (stack_logp(star, p["prompt"], ids, drop) for drop in (False, True))
            scores = [cond - b * uncond for b in betas]
        r = res[p["category"]]
        r["first"].append(ok[0])
        r["mean"].append(float(np.mean(ok)))
        for pick, score in zip(picks, scores):
            r[pick].append(ok[int(score.argmax())])
        r["oracle"].append(any(ok))
    for pick in ["first", "mean"] + picks + ["oracle"]:
        per = {c: round(float(np.mean(r[pick])), 3) for c, r in res.items()}
        print(f"{pick:7s} {np.mean(list(per.values())):.3f} {per}")
    print(f"{len(prompts)} prompts x {candidates} samples in {time.time() - start:.0f} s")


def retrieval(star, n: int):
    size = star.config.image_size
    for held_out in (False, True):
        rng = random.Random(f"rerank-retrieval:{held_out}")
        pairs = [data.captions.random_caption(rng, held_out=held_out) for _ in range(n)]
        images = [data.shapes.render(p[3], size) for p in pairs]
        _report(star, f"GenEval-style, {'held-out' if held_out else 'training'} phrasings", [p[0] for p in pairs], images)
    rng = random.Random("rerank-retrieval:describe")
    scenes = [data.shapes.random_scene(rng) for _ in range(n)]
    _report(star, "the base's own describe() wording", [describe(s) for s in scenes],
            [data.shapes.render(s, size) for s in scenes])


def _report(star, what: str, captions: list[str], images):
    scores = torch.stack([judge(star, images, c) for c in captions])  # (caption, image)
    right = int((scores.argmax(1) == torch.arange(len(captions))).sum())
    print(f"{what}: the caption's own render ranked first {right} of {len(captions)} (chance 1)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("best-of", "retrieval"))
    ap.add_argument("--model", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--judge", choices=("base", "stack"), default="base", help="best-of: who picks")
    ap.add_argument("--beta", type=float, nargs="+", default=[1.0],
                    help="best-of --judge stack: score log p(tokens|prompt) - beta log p(tokens|no prompt)")
    ap.add_argument("--n", type=int, default=40, help="best-of: prompts per category; retrieval: captions")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    star = STAR.from_pretrained(a.model, device="cpu")
    if a.what == "best-of":
        best_of(star, a.candidates, a.n, a.seed, a.judge, a.beta)
    else:
        retrieval(star, a.n)


if __name__ == "__main__":
    main()
