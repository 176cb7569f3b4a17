"""The stacked AR model: T_full = T_base ⊕ T_stack (paper §2.2, release `STARMultiModal`).

    text / image-token embeddings ─► frozen base (Qwen2.5-VL text model, post-norm output)
                                   ─► stack (N decoder layers + norm, initialised from the base's last N)
                                   ─► head (hidden → codebook logits)

Image tokens enter as `adapter(codebook[id])`: there is no image embedding table (release); with
`ar.image_cells`, plus the embedding of the token's row and column in its grid (ours, off in the release).
The base is frozen and never changed: gradients flow *through* it to the adapter, never *into* it.
"""
from __future__ import annotations

import copy
import functools
import inspect

import torch
import torch.nn as nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (Qwen2_5_VLTextModel, Qwen2_5_VLVisionAttention,
                                                                apply_rotary_pos_emb_vision)
from transformers.utils.generic import is_flash_attention_requested

from ..config import ARConfig


class GenerationAdapter(nn.Module):
    """MLP_GELU: codebook vector (d) → LLM input space (D). Key layout `layers.{0,2,..}` as released.

    cells > 0 adds `cell_rows` and `cell_cols` (cells, D): where a token sits in its cells × cells
    grid, added to its embedding (`cell_embedding`), zero until trained."""

    def __init__(self, in_dim: int, out_dim: int, depth: int, cells: int = 0):
        super().__init__()
        mods = [nn.Linear(in_dim, out_dim)]
        for _ in range(1, depth):
            mods += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*mods)
        self.cells = cells
        if cells:
            self.cell_rows = nn.Parameter(torch.zeros(cells, out_dim))
            self.cell_cols = nn.Parameter(torch.zeros(cells, out_dim))

    def forward(self, x):  # (..., d) -> (..., D)
        return self.layers(x)

    def cell_embedding(self, index: torch.Tensor | int) -> torch.Tensor:
        """index (...,) or an int: tokens' places in their image, raster order → (..., D) row + column
        embedding."""
        last = index if isinstance(index, int) else int(index.max()) if index.numel() else 0
        if last >= self.cells ** 2:
            raise ValueError(f"image token {last} lies outside the {self.cells} × {self.cells} "
                             "grid this model's cell embeddings cover")
        return self.cell_rows[index // self.cells] + self.cell_cols[index % self.cells]


def build_base(cfg: ARConfig, dtype=None, attn="sdpa") -> Qwen2_5_VLForConditionalGeneration:
    """The frozen base: from a Hugging Face folder or ComfyUI's Qwen2.5-VL text-encoder file (real
    Qwen2.5-VL), or from a config dict (small models)."""
    from .base_file import is_base_file, load_base_file
    if cfg.base_path and is_base_file(cfg.base_path):
        base = load_base_file(cfg.base_path, cfg.base, dtype=dtype, attn=attn)
    elif cfg.base_path:
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            cfg.base_path, local_files_only=True, dtype=dtype, attn_implementation=attn)
    else:
        config = Qwen2_5_VLConfig(**copy.deepcopy(cfg.base))
        config._attn_implementation = attn
        base = Qwen2_5_VLForConditionalGeneration(config)
        if dtype is not None:
            base.to(dtype)
    batch_equal_vision_chunks(base)
    return freeze(base)


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def build_stack(text_config, num_layers: int) -> Qwen2_5_VLTextModel:
    """A fresh N-layer text model. Built fresh (not by copying modules) so each layer's
    `self_attn.layer_idx` is 0..N-1 in its own cache; a copied layer keeps the base's index
    and the cache would silently mix positions."""
    config = copy.deepcopy(text_config)
    config.num_hidden_layers = num_layers
    types = getattr(config, "layer_types", None)  # a stack may be deeper than the base (grown)
    config.layer_types = (types + types[-1:] * num_layers)[:num_layers] if types else None
    stack = Qwen2_5_VLTextModel._from_config(config)
    del stack.embed_tokens  # the stack reads hidden states, never token ids (release)
    return stack


class StackedAR(nn.Module):
    def __init__(self, base: Qwen2_5_VLForConditionalGeneration, cfg: ARConfig, codebook_dim: int,
                 codebook_size: int, init: str | None = None):
        super().__init__()
        self.base = freeze(base)
        text_config = base.config.text_config
        hidden = text_config.hidden_size
        self.stack = build_stack(text_config, cfg.num_stacked_layers)
        self.adapter = GenerationAdapter(codebook_dim, hidden, cfg.adapter_depth, cfg.image_cells)
        self.head = nn.Linear(hidden, codebook_size)
        self.to(next(base.parameters()).dtype)
        init = init or cfg.stack_init
        if init == "vlm":
            copy_last_layers(self.base_text, self.stack)
        elif init not in ("random", "llm"):
            raise ValueError(f"stack_init must be 'vlm', 'llm' or 'random', not {init!r}")

    # -- the parts ------------------------------------------------------------------------
    @property
    def base_text(self) -> Qwen2_5_VLTextModel:
        return self.base.model.language_model

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # the base is frozen: never in training mode (no dropout)
        return self

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        return self.base_text.embed_tokens(ids)

    def embed_codes(self, code_vectors: torch.Tensor, index: torch.Tensor | int | None = None) -> torch.Tensor:
        """(..., d) → (..., D). index: the tokens' places in their image (an int: one place for all),
        needed when the model has cell embeddings (ignored otherwise)."""
        x = self.adapter(code_vectors.to(self.head.weight.dtype))
        if self.adapter.cells:
            if index is None:
                raise ValueError("this model embeds image tokens with their grid cell: pass their index")
            if not isinstance(index, int):
                index = torch.as_tensor(index, device=x.device)
            x = x + self.adapter.cell_embedding(index).to(x.dtype)
        return x

    # -- the forward ----------------------------------------------------------------------
    def hidden(self, embeds, position_ids, attention_mask=None, base_cache=None, stack_cache=None):
        """(B, L, D) embeddings → (B, L, D) stack output. Caches are updated in place."""
        use_cache = base_cache is not None
        h = self.base_text(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask,
                           use_cache=use_cache, **{cache_argument(self.base_text): base_cache}).last_hidden_state
        return self.stack(inputs_embeds=h, position_ids=position_ids, attention_mask=attention_mask,
                          use_cache=use_cache, **{cache_argument(self.stack): stack_cache}).last_hidden_state

    def forward(self, embeds, position_ids, attention_mask=None):
        """Teacher-forced logits over the codebook, (B, L, K)."""
        return self.head(self.hidden(embeds, position_ids, attention_mask))

    def base_logits(self, embeds, position_ids, attention_mask=None):
        """What the base alone predicts (its LM head): used to show it is untouched."""
        h = self.base_text(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask).last_hidden_state
        return self.base.lm_head(h)

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("base.")]


@functools.cache
def _cache_argument(module_type: type) -> str:
    return "cache" if "cache" in inspect.signature(module_type.forward).parameters else "past_key_values"


def cache_argument(module: nn.Module) -> str:
    """The name of forward's KV-cache argument: `cache` in the transformers releases that renamed it,
    where `past_key_values` warns and goes in 5.40; `past_key_values` in the 5.x releases before."""
    return _cache_argument(type(module))


def copy_last_layers(base_text: Qwen2_5_VLTextModel, stack: Qwen2_5_VLTextModel) -> None:
    """`vlm` init (paper Table 6c): the stack starts as the base's last N layers and final norm."""
    n, total = len(stack.layers), len(base_text.layers)
    if n > total:
        raise ValueError(f"cannot stack {n} layers on a base with {total}")
    with torch.no_grad():
        for i, layer in enumerate(stack.layers):
            layer.load_state_dict(base_text.layers[total - n + i].state_dict())
        stack.norm.load_state_dict(base_text.norm.state_dict())


def expand_stack_state(state: dict, num_layers: int, prefix: str = "stack.") -> dict:
    """Grow a trained stack's state dict to `num_layers` layers without changing what it computes
    (LLaMA Pro's block expansion): each new layer, appended after the trained ones, is a copy of
    the last one with its two output projections (`o_proj`, `down_proj`) zeroed, so it adds nothing
    to the residual stream until training moves them."""
    pre = f"{prefix}layers."
    have = sorted({int(k[len(pre):].split(".")[0]) for k in state if k.startswith(pre)})
    if not have:
        raise ValueError(f"no {pre}* keys: not a stacked-AR state dict")
    if num_layers < len(have):
        raise ValueError(f"cannot shrink a {len(have)}-layer stack to {num_layers}")
    out = dict(state)
    last = f"{pre}{have[-1]}."
    for i in range(len(have), num_layers):
        for k, v in state.items():
            if k.startswith(last):
                name = k[len(last):]
                zero = name in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
                out[f"{pre}{i}.{name}"] = torch.zeros_like(v) if zero else v.clone()
    return out


def stack_depth(state: dict, prefix: str = "stack.") -> int:
    pre = f"{prefix}layers."
    return len({k[len(pre):].split(".")[0] for k in state if k.startswith(pre)})


def init_stack_from_llm(stack: Qwen2_5_VLTextModel, llm_state: dict) -> None:
    """`llm` init: the last N layers of a text-only LLM's state dict (`layers.{i}.` / `norm.` keys)."""
    ids = sorted({int(k.split(".")[1]) for k in llm_state if k.startswith("layers.")})
    n = len(stack.layers)
    if len(ids) < n:
        raise ValueError(f"the LLM has {len(ids)} layers; {n} are needed")
    with torch.no_grad():
        for i, src in enumerate(ids[-n:]):
            pre = f"layers.{src}."
            stack.layers[i].load_state_dict({k[len(pre):]: v for k, v in llm_state.items() if k.startswith(pre)})
        stack.norm.load_state_dict({"weight": llm_state["norm.weight"]})


class EqualChunkVisionAttention(Qwen2_5_VLVisionAttention):
    """Qwen2.5-VL's vision attention, with one SDPA call when all windows/images are the same length.

    transformers' non-flash path runs one attention call per window and per image; for a batch of
    equal-size images (always so for small models) that is hundreds of tiny calls per layer. The
    math is unchanged: the same softmax(qk^T/sqrt(d))v over the same chunks, batched."""

    def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        if is_flash_attention_requested(self.config) or bool((lengths != lengths[0]).any()):
            return super().forward(hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
        n, chunk = lengths.numel(), int(lengths[0])
        seq = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)
        # (seq, heads, d) → (chunks, heads, chunk, d)
        q, k, v = (t.reshape(n, chunk, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        return self.proj(out.transpose(1, 2).reshape(seq, -1))


def batch_equal_vision_chunks(base) -> None:
    for block in getattr(base.model.visual, "blocks", ()):  # none: a text-encoder file without the vision tower
        block.attn.__class__ = EqualChunkVisionAttention
