"""Build STAR's parts from a config, and load their weights from a file.

`Components` is the bag of modules the pipeline orchestrates; nothing here runs a model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .ar.model import StackedAR, build_base, freeze
from .ar.tokenizer import ChatFormat, load_tokenizer
from .ar.understand import image_processor
from .checkpoint import CheckpointError, load_into, read_checkpoint
from .config import STARConfig

PARTS = ("ar", "vq", "diffusion", "text_encoder")


@dataclass
class Components:
    config: STARConfig
    chat: ChatFormat
    image_proc: object
    ar: StackedAR
    vq: torch.nn.Module
    diffusion: torch.nn.Module | None
    # Lumina-Image-2.0's Gemma2 (authors' checkpoints only), read from its folder on first use;
    # a part like the others, so the manager offloads it while the AR or the DiT runs
    text_encoder: torch.nn.Module | None = None

    def modules(self) -> dict[str, torch.nn.Module]:
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}


def build(config: STARConfig, dtype=None, attn: str = "sdpa", with_diffusion: bool = True,
          stack_init: str | None = None) -> Components:
    """Fresh modules (random or copied-from-base weights)."""
    from .diffusion import DiffusionDecoder
    from .vq import STARVQ
    ar_cfg = config.ar
    tok = load_tokenizer(ar_cfg.tokenizer, ar_cfg.base_path)
    chat = ChatFormat(tok, ar_cfg.system_prompt)
    base = build_base(ar_cfg, dtype=dtype, attn=attn)
    ar = StackedAR(base, ar_cfg, config.vq.codebook_dim, config.vq.codebook_size, init=stack_init)
    vq = STARVQ(config.vq).eval()
    diffusion = None
    if with_diffusion and config.diffusion is not None:
        diffusion = DiffusionDecoder(config.diffusion).eval()
    if dtype is not None:
        vq.to(dtype)
        if diffusion is not None:
            diffusion.to(dtype)
    proc = image_processor(ar_cfg.image_patch_size, ar_cfg.image_merge_size, config.image_size)
    return Components(config, chat, proc, ar, vq, diffusion)


def load(path, dtype=None, attn: str = "sdpa", base_path=None, lumina_path=None,
         config_json: str | None = None) -> Components:
    """A comfy-star safetensors file or an authors' checkpoint, into fresh modules.

    base_path / lumina_path: a Qwen2.5-VL folder / a Lumina-Image-2.0 folder to use instead of the
    ones the checkpoint names (for checkpoints that do not hold their base; see checkpoint.apply_folders)."""
    config, tensors = read_checkpoint(path, config_json, base_path=base_path, lumina_path=lumina_path)
    has_diffusion = any(k.startswith("diffusion.") for k in tensors)
    parts = build(config, dtype=dtype, attn=attn, with_diffusion=has_diffusion, stack_init="random")
    if any(k.startswith("ar.base.") for k in tensors):
        load_into(parts.ar.base, tensors, "ar.base.", path, allow_missing=("lm_head.weight",))
        if parts.ar.base.config.tie_word_embeddings:
            parts.ar.base.lm_head.weight = parts.ar.base.model.language_model.embed_tokens.weight
    elif not config.ar.base_path:
        raise CheckpointError(f"{path}: holds no base model and its config names no Qwen2.5-VL folder")
    for name in ("stack", "adapter", "head"):
        load_into(getattr(parts.ar, name), tensors, f"ar.{name}.", path)
    load_into(parts.vq, tensors, "vq.", path)
    if parts.diffusion is not None:
        load_into(parts.diffusion, tensors, "diffusion.", path)
    unknown = sorted({k.split(".")[0] for k in tensors} - {"ar", "vq", "diffusion"})
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensors under {unknown}")
    for module in parts.modules().values():  # a loaded model is for inference; training unfreezes what it trains
        freeze(module)
    return parts


def state_for_saving(parts: Components, include_base: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("stack", "adapter", "head"):
        out.update({f"ar.{name}.{k}": v for k, v in getattr(parts.ar, name).state_dict().items()})
    if include_base:
        out.update({f"ar.base.{k}": v for k, v in parts.ar.base.state_dict().items()})
    out.update({f"vq.{k}": v for k, v in parts.vq.state_dict().items()})
    if parts.diffusion is not None:
        out.update({f"diffusion.{k}": v for k, v in parts.diffusion.state_dict().items()})
    # tied weights (lm_head = embed_tokens) must be stored once for safetensors
    return _untie(out)


def _untie(tensors: dict) -> dict:
    seen, out = {}, {}
    for k, v in tensors.items():
        key = (v.data_ptr(), v.shape, v.stride()) if v.numel() else None
        if key in seen:
            continue  # transformers re-ties lm_head on load
        seen[key] = k
        out[k] = v.clone() if any(v.data_ptr() == o.data_ptr() for o in out.values()) else v
    return out
