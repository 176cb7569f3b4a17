"""Image-token sampling speed: the shipped star-shapes model (its trained weights and 4,096-code head),
or star-3b / star-7b with random weights (speed needs no training).

Times, in one run and interleaved round by round (the best round of each is kept), the tokens/s of
  fast       ours: `fast.generate_fast`, static KV cache, the layers' weights run directly,
             cond + uncond rows batched in one forward                         (the default sampler;
             on the CPU its projections run as W @ xᵀ, MKL's quicker layout for 1-2 rows: logits
             within ~1e-6 of the reference)
  fast-torch the same with fast.KERNEL = False: the step as PyTorch operator calls instead of the fused
             C step (ar/kernel/decode_step.c: the library's default where it builds; --no-kernel: off in `fast`)
  fast-exact the same with fast.EXACT = True (CPU only): projections as x @ Wᵀ, logits bit-identical
             to the reference
  unguided   fast with cfg = 1: one row (the guidance cost is fast ÷ unguided)
  reference  `sampler.generate(fast=False)`: the same batching through transformers + DynamicCache
  two-pass   transformers + DynamicCache, guidance as two separate forwards (cond, then uncond)
  naive      no cache: the whole sequence recomputed for every token
and prints the ratios against the issue's targets (fast ≥ 10× naive, ≥ 1.5× two-pass), the cost of
guidance (guided ÷ one unguided row, ≤ 1.3×) and the cost of token k (first vs last quarter of the
steps: flat with a cache). On CUDA it also prints ms per image-token step and the HBM roofline:
the bytes one step must read (base layers + stack + head + adapter weights, and the KV prefix)
over the measured device-copy bandwidth (and the H100 spec 3.35 TB/s).

    python benchmarks/sampler_speed.py [--tokens 64] [--threads 1] [--rounds 3]
    python benchmarks/sampler_speed.py --threads 1 --clock cpu      # a shared, busy machine
    python benchmarks/sampler_speed.py --device cuda --preset star-3b [--compile]

star-3b / star-7b are built with random weights directly on the device (bf16).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from comfy_star.ar import fast
from comfy_star.ar.model import StackedAR, build_base
from comfy_star.ar.prompts import t2i_rows
from comfy_star.ar.sampler import (Caches, SampleParams, decode_one_token, generate, guide, logits_processors,
                                  pick, prefill)
from comfy_star.ar.sequence import Batch, Codes, assemble
from comfy_star.ar.tokenizer import ChatFormat, byte_tokenizer
from comfy_star.config import preset

H100_SPEC_BW = 3.35e12


def log(*a):
    print(*a, flush=True)


def build(name="star-shapes", device="cpu", dtype=None):
    if name == "star-shapes":  # the embedded model as users run it
        from comfy_star.pipeline import STAR
        star = STAR.from_pretrained(device=device)
        ar, chat = star.parts.ar.eval(), star.parts.chat
        return ar, star.parts.vq.codebook().to(device, ar.head.weight.dtype), chat, star.config
    torch.manual_seed(0)
    cfg = preset(name)
    dtype = dtype or (torch.float32 if name == "star-shapes" else torch.bfloat16)
    with torch.device(device):  # random init where the model lives: a 3B build on the CPU takes minutes
        base = build_base(cfg.ar, dtype=dtype)
        ar = StackedAR(base, cfg.ar, cfg.vq.codebook_dim, cfg.vq.codebook_size).eval()
        codebook = torch.randn(cfg.vq.codebook_size, cfg.vq.codebook_dim)
    return ar, codebook, ChatFormat(byte_tokenizer(), None), cfg


@torch.inference_mode()
def two_pass(ar, batch: Batch, codebook, n, params, gen):
    """Guidance as two separate forwards, each with its own DynamicCaches."""
    b = batch.embeds.shape[0] // 2
    halves = [Batch(batch.embeds[s], batch.position_ids[:, s], batch.attention_mask[s], batch.next_position[s])
              for s in (slice(0, b), slice(b, None))]
    caches = [Caches(ar), Caches(ar)]
    logits = [prefill(ar, h, c) for h, c in zip(halves, caches)]
    procs = logits_processors(params)
    out = []
    for i in range(n):
        ids = pick(guide(torch.cat(logits), params.cfg, b), params, procs, gen)
        out.append(ids)
        if i + 1 == n:
            break
        vec = codebook[ids]
        logits = [decode_one_token(ar, vec, h.next_position + i, None, c, i) for h, c in zip(halves, caches)]
    return torch.stack(out, 1)


@torch.inference_mode()
def naive(ar, rows, codebook, n, params, gen):
    """No cache: the whole sequence (prompt + tokens so far) through the model for every token."""
    procs = logits_processors(params)
    out = torch.empty(1, 0, dtype=torch.long, device=codebook.device)
    for _ in range(n):
        full = [r + [Codes(out[0])] for r in rows]
        b = assemble(ar, full, codebook)
        logits = ar.head(ar.hidden(b.embeds, b.position_ids)[:, -1]).float()
        ids = pick(guide(logits, params.cfg, 1), params, procs, gen)
        out = torch.cat([out, ids[:, None]], 1)
    return out


def flagged(name, value, fn):
    """Run fn with fast.<name> set: EXACT (CPU x @ Wᵀ projections, bit-identical to transformers) or
    KERNEL (False: the PyTorch step instead of the fused C step)."""
    saved = getattr(fast, name)
    setattr(fast, name, value)
    try:
        return fn()
    finally:
        setattr(fast, name, saved)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


TIMER = time.perf_counter  # --clock cpu: time.process_time, this process's CPU seconds (use with --threads 1)


def clock(fn, device):
    sync(device)
    t = TIMER()
    out = fn()
    sync(device)
    return TIMER() - t, out


@torch.inference_mode()
def step_costs(ar, batch, codebook, n, device, compile=False):
    """Seconds of each fast decode step (token k = 1 .. n-1), synchronised per step."""
    _, dec = fast.prefill(ar, batch, n, compile)
    if compile:
        fast._compile(dec)
    vec = codebook[torch.zeros(batch.embeds.shape[0], dtype=torch.long, device=codebook.device)]
    costs = []
    for i in range(n - 1):
        t, _ = clock(lambda: fast.decode_one_token(ar, dec, vec, i), device)
        costs.append(t)
    return costs


def copy_bandwidth():
    """Device-to-device copy, bytes read + written per second."""
    x = torch.empty(1 << 29, dtype=torch.bfloat16, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(10):
        y.copy_(x)
    b.record()
    torch.cuda.synchronize()
    bw = 2 * x.numel() * x.element_size() * 10 / (a.elapsed_time(b) / 1e3)
    del x, y
    return bw


def read_bandwidth(nbytes):
    """CPU: bytes per second one thread reads (a sum) over a buffer of nbytes, the best of 20: for a
    star-shapes step (~20 MB) that is the L3-resident rate, the most a decode step could stream."""
    x = torch.ones(max(1, int(nbytes) // 4))
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def step_bytes(ar, rows, avg_len):
    """Bytes one decode step must read: every weight it uses once, and the KV prefix of every layer."""
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
    weights = nbytes(ar.base_text.layers) + nbytes(ar.base_text.norm) + nbytes(ar.stack) + nbytes(ar.head) \
        + nbytes(ar.adapter)
    kv = 0
    for text in (ar.base_text, ar.stack):
        a = text.layers[0].self_attn
        kv += len(text.layers) * 2 * rows * a.num_key_value_heads * avg_len * a.head_dim * ar.head.weight.element_size()
    return weights, kv


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="star-shapes", choices=["star-shapes", "star-3b", "star-7b"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--tokens", type=int, default=None, help="image tokens (default: the preset's grid²)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads. 1 by default: on a busy 2-core machine, with 2 every tiny op can wait "
                        "a scheduler slice for the second thread (seen: 15 ms per 2x64x96 linear), and the "
                        "timings turn bimodal")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per method (default 3 CPU, 1 CUDA)")
    p.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    p.add_argument("--skip", default="", help="comma list of methods not to time: naive,two-pass,reference")
    p.add_argument("--kernel", action=argparse.BooleanOptionalAction, default=True,
                   help="time `fast` with the fused C step (fast.KERNEL, the library's default)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: this process's CPU time, steadier than wall time on a shared machine (with --threads 1)")
    a = p.parse_args()
    global TIMER
    TIMER = time.process_time if a.clock == "cpu" else time.perf_counter
    torch.set_num_threads(a.threads)
    fast.KERNEL = a.kernel
    dev = a.device
    rounds = a.rounds or (3 if dev == "cpu" else 1)
    skip = set(filter(None, a.skip.split(",")))
    t0 = time.perf_counter()
    ar, codebook, chat, cfg = build(a.preset, dev)
    n = a.tokens or cfg.grid ** 2
    rows = t2i_rows(chat, ["a red circle to the left of a blue square"])
    batch = assemble(ar, rows, codebook)
    params = SampleParams(cfg=cfg.sampling.cfg, temperature=1.0, top_k=cfg.sampling.top_k)
    unguided = SampleParams(cfg=1.0, temperature=1.0, top_k=cfg.sampling.top_k)
    where = f"{torch.cuda.get_device_name()}" if dev == "cuda" else f"CPU threads={a.threads}, {a.clock} clock"
    log(f"{a.preset} ({ar.head.weight.dtype}, built in {time.perf_counter() - t0:.0f} s), {n} image tokens, "
        f"prompt {batch.embeds.shape[1]} tokens, cfg {params.cfg}, top_k {params.top_k}, {where}")

    g = lambda: torch.Generator(device=dev).manual_seed(0)
    methods = {
        "fast": lambda k: fast.generate_fast(ar, batch, codebook, k, params, g(), compile=False),
        "unguided": lambda k: fast.generate_fast(ar, batch, codebook, k, unguided, g(), compile=False),
        "fast-torch": lambda k: flagged("KERNEL", False,
                                        lambda: fast.generate_fast(ar, batch, codebook, k, params, g(), compile=False)),
        "fast-exact": lambda k: flagged("EXACT", True,
                                        lambda: fast.generate_fast(ar, batch, codebook, k, params, g(), compile=False)),
        "reference": lambda k: generate(ar, batch, codebook, k, params, g(), fast=False),
        "two-pass": lambda k: two_pass(ar, batch, codebook, k, params, g()),
        "naive": lambda k: naive(ar, rows, codebook, k, params, g()),
    }
    if dev != "cpu":
        del methods["fast-exact"], methods["fast-torch"]  # on CUDA the default is the exact path, no C step
    methods = {k: f for k, f in methods.items() if k not in skip}
    for f in methods.values():  # warm up (allocators, kernels, libraries)
        clock(lambda: f(min(n, 4)), dev)
    best, outs = {k: float("inf") for k in methods}, {}
    for r in range(rounds):  # interleaved: a busy machine slows every method alike
        for k, f in methods.items():
            t, outs[k] = clock(lambda: f(n), dev)
            best[k] = min(best[k], t)
            if r == 0:
                log(f"  {k:10s} {t:8.3f} s   {n / t:9.1f} tok/s   {t / n * 1e3:8.2f} ms/token")
    costs = None
    for _ in range(rounds):  # per-step cost of token k, the best of the rounds at each k
        c = step_costs(ar, batch, codebook, n, dev)
        costs = c if costs is None else [min(x, y) for x, y in zip(costs, c)]

    log(f"\n== {a.preset}, {n} image tokens, {where}, best of {rounds} ==")
    log("tokens/s   " + "   ".join(f"{k} {n / t:.1f}" for k, t in best.items()))
    if "reference" in outs:
        log(f"same tokens as the reference (transformers) sampler: {torch.equal(outs['fast'], outs['reference'])}"
            + "".join(f"; {k}: {torch.equal(outs[k], outs['reference'])}" for k in ("fast-torch", "fast-exact")
                      if k in outs))
    for ours in ("fast", "fast-torch", "fast-exact"):
        for k, target in (("naive", 10.0), ("two-pass", 1.5), ("reference", None)):
            if k in best and ours in best:
                r = best[k] / best[ours]
                goal = f"(target ≥ {target:g}x: {'met' if r >= target else 'NOT met'})" if target else ""
                log(f"ratio      {ours:9s} / {k:9s} {r:7.2f}x  {goal}")
    g_cost = best["fast"] / best["unguided"]
    log(f"guidance   guided ÷ one unguided row {g_cost:.2f}x  (target ≤ 1.3x: {'met' if g_cost <= 1.3 else 'NOT met'})")
    token_cost("fast", costs)
    weights, kv = step_bytes(ar, batch.embeds.shape[0], batch.embeds.shape[1] + n / 2)
    log(f"bytes/step weights {weights / 1e6:.1f} MB + KV (mean prefix) {kv / 1e6:.1f} MB")
    roof = None
    if dev == "cuda":
        bw = copy_bandwidth()
        roof = (weights + kv) / bw
        log(f"HBM roofline: {roof * 1e3:.3f} ms/step at the measured copy {bw / 1e12:.2f} TB/s "
            f"({(weights + kv) / H100_SPEC_BW * 1e3:.3f} ms at the H100 spec 3.35 TB/s)")
        per_step("fast", costs, roof)
        for k, t in best.items():
            log(f"  {k:9s} {t / n * 1e3:.3f} ms per image token end to end (prefill and sampling included)")
    else:
        bw = read_bandwidth(weights + kv)
        roof = (weights + kv) / bw
        log(f"CPU memory roofline: {roof * 1e3:.3f} ms/step reading {(weights + kv) / 1e6:.1f} MB at a measured "
            f"{bw / 1e9:.1f} GB/s (one thread, a buffer that size)")
        per_step("fast", costs, roof)
        roof = None  # the compiled line below is for CUDA

    if a.compile:  # last: the slowest part to start, and the most likely to fail
        t, _ = clock(lambda: fast.generate_fast(ar, batch, codebook, n, params, g(), compile=True), dev)
        log(f"\ncompiled: first call {t:.1f} s (compiles the decode step)")
        tc, out = float("inf"), None
        for _ in range(rounds):
            t, out = clock(lambda: fast.generate_fast(ar, batch, codebook, n, params, g(), compile=True), dev)
            tc = min(tc, t)
        log(f"compiled   {n / tc:.1f} tok/s   compiled / fast {best['fast'] / tc:.2f}x"
            + (f"   same tokens as the reference: {torch.equal(out, outs['reference'])}" if "reference" in outs else ""))
        c = step_costs(ar, batch, codebook, n, dev, compile=True)
        token_cost("compiled", c)
        if roof is not None:
            per_step("compiled", c, roof)
            log(f"  compiled  {tc / n * 1e3:.3f} ms per image token end to end (prefill and sampling included)")


def token_cost(label, c):
    q = max(1, len(c) // 4)
    first, last = statistics.median(c[:q]), statistics.median(c[-q:])
    log(f"token k    {label}: median step, first {q}: {first * 1e3:.3f} ms   last {q}: {last * 1e3:.3f} ms"
        f"   last/first {last / first:.2f}")


def per_step(label, c, roof):
    step = statistics.median(c)
    log(f"  {label:9s} {step * 1e3:.3f} ms per image-token step (median, synchronised) = "
        f"{roof / step * 100:.0f}% of roofline")


if __name__ == "__main__":
    sys.exit(main())
