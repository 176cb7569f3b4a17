"""Image-token sampling speed on star-shapes (random weights: speed needs no training), CPU.

Prints tokens/s of
  ours       one KV cache per model (base, stack), cond+uncond rows batched in one forward
  two-pass   the same caches, but guidance as two separate forwards (cond, then uncond)
  naive      no cache: the whole sequence recomputed for every token
and the ratios between them, the cost of guidance (guided ÷ one unguided row), and the cost of
token k as k grows (it should stay flat with a cache).

    python benchmarks/sampler_speed.py [--tokens 64] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from comfy_star.ar.model import StackedAR, build_base
from comfy_star.ar.prompts import t2i_rows
from comfy_star.ar.sampler import (Caches, SampleParams, decode_one_token, generate, guide, logits_processors,
                                  pick, prefill)
from comfy_star.ar.sequence import Batch, Codes, assemble
from comfy_star.ar.tokenizer import ChatFormat, byte_tokenizer
from comfy_star.config import preset


def build():
    torch.manual_seed(0)
    cfg = preset("star-shapes")
    ar = StackedAR(build_base(cfg.ar), cfg.ar, cfg.vq.codebook_dim, cfg.vq.codebook_size).eval()
    codebook = torch.randn(cfg.vq.codebook_size, cfg.vq.codebook_dim)
    return ar, codebook, ChatFormat(byte_tokenizer(), None), cfg


@torch.inference_mode()
def two_pass(ar, batch: Batch, codebook, n, params, gen):
    """Guidance as two separate forwards, each with its own caches."""
    b = batch.embeds.shape[0] // 2
    halves = [Batch(batch.embeds[s], batch.position_ids[:, s], batch.attention_mask[s], batch.next_position[s])
              for s in (slice(0, b), slice(b, None))]
    caches = [Caches(ar), Caches(ar)]
    logits = [prefill(ar, h, c) for h, c in zip(halves, caches)]
    out = []
    for i in range(n):
        ids = pick(guide(torch.cat(logits), params.cfg, b), params, logits_processors(params), gen)
        out.append(ids)
        vec = codebook[ids]
        logits = [decode_one_token(ar, vec, h.next_position + i, None, c) for h, c in zip(halves, caches)]
    return torch.stack(out, 1)


@torch.inference_mode()
def naive(ar, rows, codebook, n, params, gen):
    out = torch.empty(1, 0, dtype=torch.long)
    for _ in range(n):
        full = [r + [Codes(out[0])] for r in rows]
        b = assemble(ar, full, codebook)
        logits = ar(b.embeds, b.position_ids)[:, -1].float()
        ids = pick(guide(logits, params.cfg, 1), params, logits_processors(params), gen)
        out = torch.cat([out, ids[:, None]], 1)
    return out


def timed(fn, repeats=3):
    fn()  # warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ar, codebook, chat, cfg = build()
    rows = t2i_rows(chat, ["a red circle to the left of a blue square"])
    batch = assemble(ar, rows, codebook)
    params = SampleParams(cfg=3.0, temperature=1.0, top_k=0)
    g = lambda: torch.Generator().manual_seed(0)
    n = a.tokens
    t_ours = timed(lambda: generate(ar, batch, codebook, n, params, g()))
    t_unguided = timed(lambda: generate(ar, batch, codebook, n, SampleParams(cfg=1.0, top_k=0), g()))
    t_two = timed(lambda: two_pass(ar, batch, codebook, n, params, g()))
    t_naive = timed(lambda: naive(ar, rows, codebook, n, params, g()), repeats=1)
    same = torch.equal(generate(ar, batch, codebook, n, params, g()), two_pass(ar, batch, codebook, n, params, g()))

    per_step = []
    with torch.inference_mode():
        caches = Caches(ar)
        logits = prefill(ar, batch, caches)
        for i in range(n):
            ids = guide(logits, 3.0, 1).argmax(-1)
            t = time.perf_counter()
            logits = decode_one_token(ar, codebook[ids].repeat(2, 1), batch.next_position + i, None, caches)
            per_step.append(time.perf_counter() - t)
    q = max(1, n // 4)
    print(f"star-shapes, {n} image tokens, CPU threads={a.threads}")
    print(f"tokens/s   ours {n / t_ours:8.1f}   two-pass {n / t_two:8.1f}   naive {n / t_naive:8.1f}")
    print(f"ratio      ours/naive {t_naive / t_ours:6.2f}x   ours/two-pass {t_two / t_ours:6.2f}x"
          f"   (same tokens as two-pass: {same})")
    print(f"guidance   guided ÷ unguided row {t_ours / t_unguided:6.2f}x")
    first, last = sum(per_step[:q]) / q, sum(per_step[-q:]) / q
    print(f"token cost first {q}: {first * 1e3:.2f} ms   last {q}: {last * 1e3:.2f} ms   ratio {last / first:.2f}")


if __name__ == "__main__":
    main()
