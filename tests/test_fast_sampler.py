"""The fast decode (static KV cache, the layers' weights run directly) against the transformers loop:
same tokens for the same seed, logits within 1e-4, for left-padded text-to-image, cfg = 1 and editing;
in each of its three CPU modes: "exact" (x @ Wᵀ, bit-identical), "gemv" (the PyTorch step in the W @ xᵀ
layout) and "kernel" (the fused C step of ar/kernel/, on by default; COMFY_STAR_KERNEL=0 turns it off)."""
import os
import shutil
import warnings

import pytest
import torch

from comfy_star.ar import fast, kernel, sampler
from comfy_star.ar.model import StackedAR, build_base
from comfy_star.ar.prompts import edit_rows, t2i_rows
from comfy_star.ar.sampler import Caches, SampleParams, generate
from comfy_star.ar.sequence import assemble
from comfy_star.ar.tokenizer import ChatFormat, byte_tokenizer
from test_ar import D_CODE, K, tiny_ar_config

PROMPTS = ["two blue squares", "a green triangle above a small red circle"]  # different lengths: left padding


@pytest.fixture(scope="module", params=[("sdpa", 0), ("eager", 0), ("sdpa", 4)], ids=["sdpa", "eager", "sdpa-cells"])
def tiny(request):
    """cells 4: image-cell embeddings over a 4 × 4 grid, random as if trained (fast.decode_one_token adds them)."""
    attn, cells = request.param
    torch.manual_seed(0)
    cfg = tiny_ar_config()
    cfg.image_cells = cells
    model = StackedAR(build_base(cfg, attn=attn), cfg, D_CODE, K).eval()
    if cells:
        with torch.no_grad():
            model.adapter.cell_rows.normal_()
            model.adapter.cell_cols.normal_()
    codebook = torch.randn(K, D_CODE)
    return model, codebook, ChatFormat(byte_tokenizer(), None)


def t2i_batch(model, codebook, chat):
    batch = assemble(model, t2i_rows(chat, PROMPTS), codebook)
    assert not bool(batch.attention_mask.all())
    return batch


def edit_batch(model, codebook, chat):
    src = torch.randint(0, K, (2, 16), generator=torch.Generator().manual_seed(5))
    rows = edit_rows(chat, ["make it blue", "turn the square into a large circle"], src)
    feats = [torch.randn(4, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    batch = assemble(model, rows, codebook, vision=(feats, torch.tensor([[1, 4, 4], [1, 4, 4]])))
    assert bool((batch.position_ids[1] != batch.position_ids[2]).any())  # 3-D positions in the prompt
    return batch


BATCHES = {"t2i": t2i_batch, "edit": edit_batch}
MODES = ["exact", "gemv", "kernel"]


def set_mode(monkeypatch, mode):
    monkeypatch.setattr(fast, "EXACT", mode == "exact")
    monkeypatch.setattr(fast, "KERNEL", mode == "kernel")
    if mode == "kernel" and kernel.library() is None:
        pytest.skip(f"the fused step did not build here: {kernel._failed}")


def test_kernel_builds_where_there_is_a_compiler():
    """Where a C compiler exists the fused step must build, or every "kernel" test above would skip."""
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler here")
    assert kernel.library() is not None, kernel._failed


def test_kernel_is_bound_when_enabled(tiny, monkeypatch):
    model, codebook, chat = tiny
    batch = t2i_batch(model, codebook, chat)
    if kernel.library() is None:
        pytest.skip("no fused step here")
    monkeypatch.setattr(fast, "KERNEL", True)
    _, dec = fast.prefill(model, batch, 4)
    assert dec.kernel is not None
    monkeypatch.setattr(fast, "KERNEL", False)
    _, dec = fast.prefill(model, batch, 4)
    assert dec.kernel is None


@pytest.mark.parametrize("value, on", [(None, True), ("1", True), ("0", False)])
def test_kernel_default_is_on_and_the_variable_turns_it_off(value, on):
    """What a fresh process decides from the environment alone (the server and the CLI import fast once)."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "COMFY_STAR_KERNEL"}
    if value is not None:
        env["COMFY_STAR_KERNEL"] = value
    out = subprocess.run([sys.executable, "-c", "from comfy_star.ar import fast; print(fast.KERNEL)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == str(on)


def test_a_failed_build_falls_back_with_a_warning(tiny, monkeypatch, tmp_path):
    """No working compiler: one warning naming why, then the PyTorch step (same tokens as the reference);
    nothing half-written is left in the cache."""
    model, codebook, chat = tiny
    monkeypatch.setattr(kernel, "_lib", None)
    monkeypatch.setattr(kernel, "_failed", None)
    monkeypatch.setenv("COMFY_STAR_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(fast, "KERNEL", True)
    batch = t2i_batch(model, codebook, chat)
    p = SampleParams(cfg=3.0, top_k=10)
    with pytest.warns(UserWarning, match="fused CPU decode step is unavailable.*false failed"):
        ours = fast.generate_fast(model, batch, codebook, 6, p, torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as seen:  # warned once, not per call
        warnings.simplefilter("always")
        again = fast.generate_fast(model, batch, codebook, 6, p, torch.Generator().manual_seed(2))
    assert not [w for w in seen if "fused" in str(w.message)]
    ref = generate(model, batch, codebook, 6, p, torch.Generator().manual_seed(2), fast=False)
    assert torch.equal(ours, ref) and torch.equal(again, ref)
    assert list(tmp_path.iterdir()) == []


def test_a_hanging_compiler_is_given_up_on(tiny, monkeypatch, tmp_path):
    """A compiler that never returns costs BUILD_TIMEOUT_S once (no retry), then the PyTorch step."""
    import time
    model, codebook, chat = tiny
    hang = tmp_path / "cc"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")  # exec: the timeout kills the sleep itself
    hang.chmod(0o755)
    monkeypatch.setattr(kernel, "_lib", None)
    monkeypatch.setattr(kernel, "_failed", None)
    monkeypatch.setattr(kernel, "BUILD_TIMEOUT_S", 1)
    monkeypatch.setenv("COMFY_STAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(hang))
    monkeypatch.setattr(fast, "KERNEL", True)
    t = time.perf_counter()
    with pytest.warns(UserWarning, match="took over 1 s"):
        _, dec = fast.prefill(model, t2i_batch(model, codebook, chat), 4)
    assert time.perf_counter() - t < 10 and dec.kernel is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_kernel_can_be_turned_off(tiny, monkeypatch):
    model, codebook, chat = tiny
    monkeypatch.setattr(kernel, "_lib", None)
    monkeypatch.setattr(kernel, "_failed", None)
    monkeypatch.setenv("COMFY_STAR_KERNEL", "0")
    monkeypatch.setattr(fast, "KERNEL", True)
    _, dec = fast.prefill(model, t2i_batch(model, codebook, chat), 4)
    assert dec.kernel is None


@pytest.mark.parametrize("kind", BATCHES)
@pytest.mark.parametrize("params", [SampleParams(cfg=3.0, temperature=0), SampleParams(cfg=3.0, top_k=10),
                                    SampleParams(cfg=4.0, temperature=0.8, top_k=20, top_p=0.9),
                                    SampleParams(cfg=1.0, top_k=10)], ids=["greedy", "topk", "topp", "cfg1"])
@pytest.mark.parametrize("mode", MODES)
def test_same_tokens_as_reference(tiny, kind, params, mode, monkeypatch):
    set_mode(monkeypatch, mode)
    model, codebook, chat = tiny
    batch = BATCHES[kind](model, codebook, chat)
    ref = generate(model, batch, codebook, 12, params, torch.Generator().manual_seed(3), fast=False)
    ours = fast.generate_fast(model, batch, codebook, 12, params, torch.Generator().manual_seed(3))
    assert torch.equal(ref, ours)


@pytest.mark.parametrize("kind", BATCHES)
@pytest.mark.parametrize("static", [False, True], ids=["prefix", "static"])
@pytest.mark.parametrize("mode", MODES)
def test_logits_match_reference(tiny, kind, static, mode, monkeypatch):
    """Step by step, the same tokens fed to both: the fast logits are the reference's within 1e-4.
    static: attention over the whole preallocated cache with the mask (the layout torch.compile captures).
    gemv, kernel: the CPU W @ xᵀ projections, or the fused C step (within tolerance, not bit-identical)."""
    if static and mode == "kernel":
        pytest.skip("the static layout is the compiled step's; the fused step is eager only")
    set_mode(monkeypatch, mode)
    exact = mode == "exact"
    model, codebook, chat = tiny
    batch = BATCHES[kind](model, codebook, chat)
    rows, steps = batch.embeds.shape[0], 8
    feed = torch.randint(0, K, (steps, rows), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        caches = Caches(model)
        ref = [sampler.prefill(model, batch, caches)]
        mask = batch.attention_mask
        for i in range(steps):
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            ref.append(sampler.decode_one_token(model, codebook[feed[i]], batch.next_position + i, mask, caches, i))
        first, dec = fast.prefill(model, batch, steps + 1, compile=static)
        ours = [first]
        for i in range(steps):
            if static:
                embeds = model.embed_codes(codebook[feed[i]], i)
                ropes = [(t[0][i], t[1][i]) for t in (dec.base_rope, dec.stack_rope)]
                ours.append(model.head(dec.step(embeds, *ropes, dec.columns[i:i + 1])).float())
            else:
                ours.append(fast.decode_one_token(model, dec, codebook[feed[i]], i))
    for i, (a, b) in enumerate(zip(ref, ours)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"step {i}")
        if exact and not static and model.base.config._attn_implementation == "sdpa":
            # the same kernels in the same order as transformers' sdpa path: bit-identical on the CPU.
            # (If a transformers upgrade changes its sdpa dispatch this may go, with the tolerance above kept.)
            assert torch.equal(a, b), f"step {i}: not bit-identical, max diff {(a - b).abs().max().item():.3g}"


def test_default_dispatch_and_callback(tiny, monkeypatch):
    model, codebook, chat = tiny
    batch = t2i_batch(model, codebook, chat)
    p = SampleParams(cfg=3.0, top_k=10)
    seen = []
    calls = []
    real = fast.generate_fast
    monkeypatch.setattr(fast, "generate_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
    ours = generate(model, batch, codebook, 5, p, torch.Generator().manual_seed(0),
                    callback=lambda s, n, ids: seen.append((s, n, ids.clone())))
    assert calls and sampler.FAST
    assert [(s, n) for s, n, _ in seen] == [(i, 5) for i in range(1, 6)]
    assert all(torch.equal(ids, ours[:, :s]) for s, _, ids in seen)
    ref = generate(model, batch, codebook, 5, p, torch.Generator().manual_seed(0), fast=False)
    assert len(calls) == 1 and torch.equal(ours, ref)


def test_one_token_and_unpadded(tiny):
    model, codebook, chat = tiny
    batch = assemble(model, t2i_rows(chat, ["a red circle"]), codebook)
    assert bool(batch.attention_mask.all())
    for n in (1, 6):
        p = SampleParams(cfg=2.0, top_k=8)
        ref = generate(model, batch, codebook, n, p, torch.Generator().manual_seed(4), fast=False)
        assert torch.equal(ref, fast.generate_fast(model, batch, codebook, n, p, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("mode", MODES)
def test_odd_number_of_rows(tiny, mode, monkeypatch):
    """Three unguided rows: the fused step's linear pairs rows, and the third runs alone."""
    set_mode(monkeypatch, mode)
    model, codebook, chat = tiny
    batch = assemble(model, t2i_rows(chat, [*PROMPTS, "a yellow square"]), codebook)
    p = SampleParams(cfg=1.0, top_k=10)
    ref = generate(model, batch, codebook, 8, p, torch.Generator().manual_seed(6), fast=False)
    assert ref.shape[0] == 3
    assert torch.equal(ref, fast.generate_fast(model, batch, codebook, 8, p, torch.Generator().manual_seed(6)))
