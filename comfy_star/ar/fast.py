"""A lean decode path for image tokens (gpt-fast / LlamaGen lineage): `prefill`, `decode_one_token`,
`decode_n_tokens`, tied together by `generate_fast`, which has `sampler.generate`'s signature and results.

    prefill           the transformers path (left padding, M-RoPE 3-D positions for edits, vision
                      features), into DynamicCaches that are then copied once into a preallocated
                      static KV cache: per layer (rows, kv_heads, max_len, head_dim), base and stack.
    decode_one_token  one image token through the model's own weights, with no transformers call:
                      RMSNorm → q/k/v (+bias) → rope → write k, v at the step's column → SDPA over
                      the valid prefix (left-padding mask) → o_proj → residual → RMSNorm → SiLU MLP
                      → residual, for the base layers, the base norm, the stack layers, the stack norm,
                      then the head.

Why it is exact (with EXACT = True): image tokens have text-like positions (the three M-RoPE components are equal),
so decode rope is ordinary 1-D rope at position p. Its cos/sin come from the model's own rotary
modules, called once with a (3, rows, n) position tensor, so transformers' mrope_section handling
is reproduced, not re-derived. Every op is the one transformers' sdpa path runs (same kernels, same
order, same dtypes; rope's rotate_half·sin is computed as roll·signed-sin, equal in IEEE arithmetic),
so on the CPU in float32 the logits are bit-identical to `sampler.generate(fast=False)`, and the
sampler itself (`sampler.guide`, `sampler.pick`) is shared: same seed, same tokens. By default the CPU
runs the projections in MKL's quicker W @ xᵀ layout instead (`_gemv`): the same sums rounded in another
order, logits within ~1e-6, the same tokens unless a draw lands within that of a boundary. That exactness
is what the tests check with EXACT = True; the default is what users run.

`compile=True` wraps the layer step in torch.compile (mode="reduce-overhead", i.e. CUDA graphs, on
CUDA). Compiled, attention runs over the whole static cache with a boolean mask (one shape for
every step, the gpt-fast layout); eager, it runs over the valid prefix only. Default (COMPILE): off.
On the CPU compiling gained ~10% per step for ~1 min of compile; on CUDA it is not yet measured.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sampler import Caches, SampleParams, guide, logits_processors, pick
from .sampler import prefill as _prefill_transformers
from .sequence import Batch

COMPILE = {"cpu": False, "cuda": False}  # compile=None: compile the decode step on this device type?


def supported(model) -> bool:
    """The fast path covers full-attention Qwen2-style layers (every STAR preset)."""
    for text in (model.base_text, model.stack):
        c = text.config
        if any(t != "full_attention" for t in (c.layer_types or [])) or getattr(c, "use_sliding_window", False):
            return False
    return True


class _Part:
    """The layers of one text model (base or stack) and its final norm, as plain references."""

    def __init__(self, text):
        self.layers = list(text.layers)
        self.norm = text.norm
        c = text.config
        a = self.layers[0].self_attn
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(a, "head_dim", c.hidden_size // c.num_attention_heads)
        self.groups = self.heads // self.kv_heads
        self.scaling = getattr(a, "scaling", self.head_dim ** -0.5)
        self.act = F.silu if c.hidden_act == "silu" else self.layers[0].mlp.act_fn
        self.rotary = text.rotary_emb


# On the CPU in float32, run the step as one fused C call per part (kernel/), where it builds.
# COMFY_STAR_KERNEL=0 turns it off (the PyTorch step below, same tokens up to float rounding).
KERNEL = os.environ.get("COMFY_STAR_KERNEL", "1") != "0"
EXACT = False  # True: on the CPU too, projections as x @ Wᵀ, the bits of transformers' own path (see _gemv)


def _mm(x, wt, b=None):
    """x @ Wᵀ (+ b) with Wᵀ (`wt`) a view made once per decode: the very kernel F.linear dispatches to
    for a 2-D input (addmm(b, x, Wᵀ), or matmul → mm(x, Wᵀ)), minus linear's wrapper, its t() and matmul's
    dispatch: three fewer operator calls per projection, the same bits."""
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


def _gemv(x, w, b=None):
    """The same product as (W @ xᵀ)ᵀ, with W as stored (out, in) and b as a column (out, 1): the CPU
    default. For 1-2 rows MKL's sgemm is ~1.3-2x faster in that layout (the x @ Wᵀ call packs the weight
    on every call; measured here: 1.1 vs 2.2 ms for one step's 70 projections at 2 rows with the weights
    out of L2). The rounding differs (~1e-6 on the logits), so tokens match the transformers path except
    where a sampled uniform lands within ~1e-6 of a boundary; EXACT = True keeps the logits bit-identical
    (tests/test_fast_sampler.py checks both)."""
    x = x.contiguous().t()
    y = torch.mm(w, x) if b is None else torch.addmm(b, w, x)
    return y.t()


def _lin(mod):
    """(Wᵀ, b) of an nn.Linear, for _mm."""
    return mod.weight.t(), mod.bias


def _lin_gemv(mod):
    """(W, b as a column) of an nn.Linear, for _gemv."""
    return mod.weight, None if mod.bias is None else mod.bias.unsqueeze(1)


def _layer_weights(layer, lin=_lin) -> tuple:
    """One decoder layer's tensors as a flat tuple (no nn.Module attribute lookups per step):
    norm₁ (weight, eps), q, k, v, o (lin: weight, bias), norm₂ (weight, eps), gate, up, down."""
    a, m = layer.self_attn, layer.mlp
    n1, n2 = layer.input_layernorm, layer.post_attention_layernorm
    return (n1.weight, n1.variance_epsilon, *lin(a.q_proj), *lin(a.k_proj), *lin(a.v_proj), *lin(a.o_proj),
            n2.weight, n2.variance_epsilon, *lin(m.gate_proj), *lin(m.up_proj), *lin(m.down_proj))


def _rms_w(x: torch.Tensor, weight, eps: float) -> torch.Tensor:
    """Qwen2_5_VLRMSNorm.forward, op for op (its .to() calls only where they convert: in float32 they are no-ops)."""
    if x.dtype == torch.float32:
        # in place where the operand is a fresh temporary (same values: a * b == b * a in IEEE arithmetic)
        return (x * x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()).mul_(weight)
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


class StaticKV(nn.Module):
    """Preallocated keys/values, per layer (rows, kv_heads, max_len, head_dim), and the (rows, 1, 1, max_len)
    boolean mask of columns that hold a real token. Buffers, so CUDA graphs may update them in place."""

    def __init__(self, n_layers, rows, kv_heads, max_len, head_dim, dtype, device):
        super().__init__()
        self.n_layers, self.max_len = n_layers, max_len
        for i in range(n_layers):
            # zeros, not empty: masked columns are multiplied by 0 in SDPA, and 0 * NaN would leak
            self.register_buffer(f"k{i}", torch.zeros(rows, kv_heads, max_len, head_dim, dtype=dtype, device=device))
            self.register_buffer(f"v{i}", torch.zeros(rows, kv_heads, max_len, head_dim, dtype=dtype, device=device))

    def kv(self, i):
        return getattr(self, f"k{i}"), getattr(self, f"v{i}")

    def load(self, cache) -> int:
        """Copy a prefilled transformers DynamicCache into columns [0, L). Returns L."""
        n = 0
        for i, layer in enumerate(cache.layers):
            k, v = self.kv(i)
            n = layer.keys.shape[-2]
            k[:, :, :n].copy_(layer.keys)
            v[:, :, :n].copy_(layer.values)
        return n


class Decoder(nn.Module):
    """The static state of one decode (caches, mask, rope tables) and the per-token step."""

    def __init__(self, model, rows: int, max_len: int):
        super().__init__()
        p = model.head.weight
        self.model = [model]  # a plain reference: not a submodule of the decoder
        self.base, self.stack = _Part(model.base_text), _Part(model.stack)
        self.rows, self.max_len = rows, max_len
        self.base_kv = StaticKV(len(self.base.layers), rows, self.base.kv_heads, max_len, self.base.head_dim,
                                p.dtype, p.device)
        self.stack_kv = StaticKV(len(self.stack.layers), rows, self.stack.kv_heads, max_len, self.stack.head_dim,
                                 p.dtype, p.device)
        self.register_buffer("mask", torch.zeros(rows, 1, 1, max_len, dtype=torch.bool, device=p.device))
        self.compiled, self.compile_failed = None, False

    # -- per-generation setup ----------------------------------------------------------
    def rope_tables(self, part: _Part, start: torch.Tensor, n: int):
        """cos, sin: (n, rows, 1, head_dim) for positions start + 0..n-1, from the model's own rotary module
        (fed a (3, rows, n) position tensor, as transformers feeds it); [i] is step i, contiguous."""
        pos = (start.view(-1, 1) + torch.arange(n, device=start.device)).unsqueeze(0).expand(3, -1, -1)
        like = torch.empty(0, dtype=self.model[0].head.weight.dtype, device=start.device)
        cos, sin = part.rotary(like, pos)
        half = sin.shape[-1] // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # signed, for the roll form of rotate_half
        return tuple(t.transpose(0, 1).unsqueeze(2).contiguous() for t in (cos, sin))

    def setup(self, caches: Caches, attention_mask: torch.Tensor, next_position: torch.Tensor, steps: int):
        length = self.base_kv.load(caches.base)
        assert self.stack_kv.load(caches.stack) == length
        self.mask.zero_()
        self.mask[:, 0, 0, :length] = attention_mask.bool()
        self.padded = not bool(attention_mask.all())
        self.prompt_len = length
        n = max(steps, 1)
        self.base_rope = self.rope_tables(self.base, next_position, n)
        self.stack_rope = self.rope_tables(self.stack, next_position, n)
        self.columns = torch.arange(length, length + n, device=next_position.device)
        # Per-step inputs as views made once (one unbind each, not four indexings per step), and every
        # weight as a plain reference (no nn.Module attribute lookups per step). Made here, per decode,
        # so they always point at the parameters' current storage (the manager may move a model).
        self.step_inputs = list(zip(self.columns.split(1), *(t.unbind(0) for t in (*self.base_rope, *self.stack_rope))))
        exact = EXACT or self.mask.device.type != "cpu"
        self.mm, self.lin = (_mm, _lin) if exact else (_gemv, _lin_gemv)
        self.weights = tuple(([_layer_weights(l, self.lin) for l in part.layers], (part.norm.weight, part.norm.variance_epsilon),
                              [kv.kv(i) for i in range(kv.n_layers)])
                             for part, kv in ((self.base, self.base_kv), (self.stack, self.stack_kv)))
        model = self.model[0]
        self.adapter = [(F.gelu, m.approximate) if isinstance(m, nn.GELU) else (_mm, *_lin(m)) for m in model.adapter.layers]
        if not all(isinstance(m, (nn.GELU, nn.Linear)) for m in model.adapter.layers):
            self.adapter = None  # an adapter of other modules: its own forward
        self.head = self.lin(model.head)
        self.kernel = self._bind_kernel(exact)

    def _bind_kernel(self, exact: bool):
        """The fused C step (kernel/decode_step.c) for both parts, where it applies: the CPU, float32,
        SiLU MLPs, not EXACT (its sums round in another order, like _gemv's), the kernel built. Else None."""
        model = self.model[0]
        if (not KERNEL or exact or model.head.weight.dtype != torch.float32
                or any(part.act is not F.silu for part in (self.base, self.stack))):
            return None
        from . import kernel
        lib = kernel.library()
        if lib is None:
            return None
        try:
            steps = [kernel.PartStep(lib, part, kv, self.rows, part.layers[0].mlp.gate_proj.out_features)
                     for part, kv in ((self.base, self.base_kv), (self.stack, self.stack_kv))]
        except ValueError:  # a tensor the kernel cannot read in place (e.g. not contiguous)
            return None
        mask = self.mask.data_ptr() if self.padded else None  # unpadded: every column of the prefix is valid
        # per step: (column, base cos, base sin, stack cos, stack sin) as addresses, made once
        inputs = [(int(c), *(t.data_ptr() for t in rope)) for c, *rope in self.step_inputs]
        head = kernel.LinearStep(lib, model.head)
        adapter = [kernel.LinearStep(lib, m) if isinstance(m, nn.Linear) else kernel.GeluStep(lib)
                   for m in model.adapter.layers]
        if (self.adapter is None or not isinstance(model.adapter.layers[0], nn.Linear)  # GELU runs in place:
                or any(isinstance(m, nn.GELU) and m.approximate != "none" for m in model.adapter.layers)):  # never on the input
            adapter = None  # the adapter's own forward (or the PyTorch one above)
        return (steps, mask, inputs), head, adapter

    def kernel_step(self, embeds: torch.Tensor, i: int) -> torch.Tensor:
        """embeds (rows, D) of token i → (rows, D) stack output, by the fused C step (in place on embeds)."""
        (base, stack), mask, inputs = self.kernel[0]
        column, base_cos, base_sin, stack_cos, stack_sin = inputs[i]
        x = embeds.contiguous()
        base(x, column, base_cos, base_sin, mask)
        return stack(x, column, stack_cos, stack_sin, mask)

    def embed(self, code_vectors):
        """model.embed_codes, op for op (the adapter's Linear / GELU forwards called directly), but for
        the cell embedding, which decode_one_token adds."""
        model = self.model[0]
        x = code_vectors
        dtype = model.head.weight.dtype
        if x.dtype != dtype:
            x = x.to(dtype)
        if self.kernel is not None and self.kernel[2] is not None:  # the fused C path
            x = x.contiguous()
            for f in self.kernel[2]:
                x = f(x)
            return x
        if self.adapter is None:
            return model.adapter(x)
        for f, *args in self.adapter:
            x = f(x, *args) if f is _mm else f(x, approximate=args[0])
        return x

    def logits(self, h):
        """model.head(h).float()."""
        if self.kernel is not None:
            return self.kernel[1](h.contiguous())
        y = self.mm(h, *self.head)
        return y if y.dtype == torch.float32 else y.float()

    # -- the step ----------------------------------------------------------------------
    @staticmethod
    def _layer(w, part: _Part, x, cos, sin, k_cache, v_cache, column, mask, length, mm):
        n1, e1, wq, bq, wk, bk, wv, bv, wo, bo, n2, e2, wg, bg, wu, bu, wd, bd = w
        rows = x.shape[0]
        h = _rms_w(x, n1, e1)
        q = mm(h, wq, bq).view(rows, part.heads, part.head_dim)
        k = mm(h, wk, bk).view(rows, part.kv_heads, part.head_dim)
        v = mm(h, wv, bv).view(rows, part.kv_heads, 1, part.head_dim)
        # rope on q and k at once: x*cos + rotate_half(x)*sin, with rotate_half(x)*sin == roll(x)*signed_sin
        # exactly ((-a)*b == a*(-b) in IEEE arithmetic)
        qk = torch.cat((q, k), dim=1)
        qk = (qk * cos).add_(qk.roll(part.head_dim // 2, -1).mul_(sin))
        q, k = qk[:, :part.heads], qk[:, part.heads:]
        k_cache.index_copy_(2, column, k.unsqueeze(2))
        v_cache.index_copy_(2, column, v)
        if length is not None:  # eager: the valid prefix only
            k_cache, v_cache = k_cache[:, :, :length], v_cache[:, :, :length]
        if mask is None:  # what transformers' sdpa runs without a mask: GQA in the kernel
            o = F.scaled_dot_product_attention(q.unsqueeze(2), k_cache, v_cache, scale=part.scaling,
                                               enable_gqa=part.groups > 1)
        else:  # with a mask, one query: (rows, heads, dim) → (rows, kv_heads, groups, dim), no repeat_kv
            o = F.scaled_dot_product_attention(q.view(rows, part.kv_heads, part.groups, part.head_dim),
                                               k_cache, v_cache, attn_mask=mask, scale=part.scaling)
        x = mm(o.reshape(rows, -1), wo, bo).add_(x)  # x + o·Wₒ: a + b == b + a, in place on the fresh product
        h = _rms_w(x, n2, e2)
        h = part.act(mm(h, wg, bg)).mul_(mm(h, wu, bu))
        return mm(h, wd, bd).add_(x)

    def _run(self, part: _Part, weights, x, rope, column, mask, length, mm):
        cos, sin = rope
        layers, norm, kv = weights
        for w, (k_cache, v_cache) in zip(layers, kv):
            x = self._layer(w, part, x, cos, sin, k_cache, v_cache, column, mask, length, mm)
        return _rms_w(x, *norm)

    def step(self, embeds, base_rope, stack_rope, column, length: int | None = None):
        """embeds (rows, D) → (rows, D) stack output; writes this token's k, v at `column` (a (1,) tensor).
        length None: attention over the whole static cache (one shape: what torch.compile captures)."""
        if length is None or self.padded:  # (eager and unpadded: no mask at all)
            self.mask.index_fill_(-1, column, True)
        mask = self.mask
        if length is not None:
            mask = mask[..., :length] if self.padded else None
        if torch.compiler.is_compiling():  # read through the modules: parameters and buffers stay static inputs
            weights = tuple(([_layer_weights(l, self.lin) for l in part.layers], (part.norm.weight, part.norm.variance_epsilon),
                             [kv.kv(i) for i in range(kv.n_layers)])
                            for part, kv in ((self.base, self.base_kv), (self.stack, self.stack_kv)))
        else:
            weights = self.weights
        h = self._run(self.base, weights[0], embeds, base_rope, column, mask, length, self.mm)
        return self._run(self.stack, weights[1], h, stack_rope, column, mask, length, self.mm)


# -- LlamaGen-style functions -----------------------------------------------------------------

def _decoder(model, rows: int, need: int, compile: bool) -> Decoder:
    """A fresh decoder (eager), or one reused across calls (compiled: its graph is bound to its buffers)."""
    if not compile:
        return Decoder(model, rows, need)
    p = model.head.weight
    pool = model.__dict__.setdefault("_fast_decoders", {})
    key = (rows, p.dtype, p.device)
    dec = pool.get(key)
    if dec is None or dec.max_len < need:
        dec = pool[key] = Decoder(model, rows, -(-need // 256) * 256)  # round up: fewer shapes, fewer compiles
    return dec


def prefill(model, batch: Batch, num_tokens: int, compile: bool = False):
    """The prompt through transformers (DynamicCache), copied into a static cache.
    Returns (rows, K) float32 logits of the last column and the Decoder."""
    caches = Caches(model)
    logits = _prefill_transformers(model, batch, caches)
    rows, length = batch.embeds.shape[:2]
    dec = _decoder(model, rows, length + max(num_tokens - 1, 1), compile)
    dec.setup(caches, batch.attention_mask, batch.next_position, num_tokens - 1)
    return logits, dec


def decode_one_token(model, dec: Decoder, code_vectors: torch.Tensor, i: int) -> torch.Tensor:
    """code_vectors (rows, d) of token i → (rows, K) float32 logits of token i + 1."""
    embeds = dec.embed(code_vectors)
    if model.adapter.cells:  # where token i sits in the grid (model.embed_codes)
        embeds = embeds + model.adapter.cell_embedding(i).to(embeds.dtype)
    column, base_cos, base_sin, stack_cos, stack_sin = dec.step_inputs[i]  # rope: (rows, 1, dim), over heads
    base_rope, stack_rope = (base_cos, base_sin), (stack_cos, stack_sin)
    h = None
    if dec.compiled is not None:
        try:
            h = dec.compiled(embeds, base_rope, stack_rope, column).clone()  # a CUDA graph's output is reused
        except Exception as e:  # a compiler that fails here: the eager step (rewrites the same column)
            warnings.warn(f"torch.compile of the decode step failed, running it eagerly: {e!r}")
            dec.compiled, dec.compile_failed = None, True
    if h is None and dec.kernel is not None:
        h = dec.kernel_step(embeds, i)
    if h is None:
        h = dec.step(embeds, base_rope, stack_rope, column, dec.prompt_len + i + 1)
    return dec.logits(h)


def decode_n_tokens(model, dec: Decoder, codebook, logits, out, params: SampleParams, procs, generator, callback):
    """Sample every token of `out` (B, n) from `logits` onward; feed each back through decode_one_token."""
    b, n = out.shape
    rows = logits.shape[0]
    for i in range(n):
        ids = pick(guide(logits, params.cfg, b), params, procs, generator)  # (B,)
        out[:, i] = ids
        if callback is not None:
            callback(i + 1, n, out[:, : i + 1])
        if i + 1 == n:
            break
        vectors = codebook[ids].repeat(rows // b, 1)  # the same token feeds cond and uncond rows
        logits = decode_one_token(model, dec, vectors, i)
    return out


def _compile(dec: Decoder):
    if dec.compiled is None and not dec.compile_failed:
        cuda = dec.mask.device.type == "cuda"
        dec.compiled = torch.compile(dec.step, mode="reduce-overhead" if cuda else None, fullgraph=True, dynamic=False)
    return dec


@torch.inference_mode()
def generate_fast(model, batch: Batch, codebook: torch.Tensor, num_tokens: int, params: SampleParams,
                  generator: torch.Generator | None = None,
                  callback: Callable[[int, int, torch.Tensor], None] | None = None,
                  compile: bool | None = None) -> torch.Tensor:
    """`sampler.generate`, with the fast decode. compile None: COMPILE[device type]."""
    if compile is None:
        compile = COMPILE.get(model.head.weight.device.type, False)
    rows = batch.embeds.shape[0]
    b = rows // 2
    if params.cfg == 1.0:  # no guidance: drop the unconditional rows
        batch = Batch(batch.embeds[:b], batch.position_ids[:, :b], batch.attention_mask[:b], batch.next_position[:b])
    procs = logits_processors(params)
    logits, dec = prefill(model, batch, num_tokens, compile)
    if compile:
        _compile(dec)
    out = torch.empty(b, num_tokens, dtype=torch.long, device=batch.embeds.device)
    return decode_n_tokens(model, dec, codebook, logits, out, params, procs, generator, callback)
