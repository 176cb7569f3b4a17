"""Checkpoints: our safetensors files, and the authors' `.pt` release, read without unpickling code.

Our file (one per model):
    tensors   ar.base.*  (small models only; real STAR names a Qwen2.5-VL folder instead)
              ar.stack.*  ar.adapter.*  ar.head.*  vq.*  diffusion.*
    metadata  format = "comfy-star/1", config = STARConfig JSON

The authors' `STAR-3B.pt` / `STAR-7B.pt` are `{"state_dict": ...}` with keys under
`pixel_encoder.`, `pixel_adapter.`, `pixel_output_head.`, `stacked_ar.`, `diffusion_decoder.`;
`VQ-Model.pt` is a bare VQ state dict. They are read with `torch.load(weights_only=True)`
(as ComfyUI does): a file that needs a full unpickle is refused.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from .config import ARConfig, DiffusionConfig, STARConfig, VQConfig, preset

FORMAT = "comfy-star/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


# --- reading ------------------------------------------------------------------------------

def read_config(path: str | os.PathLike) -> STARConfig:
    path = _existing(path)
    if path.suffix == ".safetensors":
        meta = _safetensors_metadata(path)
        if meta.get("format") != FORMAT or "config" not in meta:
            raise CheckpointError(f"{path}: not a comfy-star checkpoint (metadata has no {FORMAT!r} config)")
        try:
            return STARConfig.from_json(meta["config"])  # plain JSON: nothing in metadata is executed
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: its config metadata is not valid: {e}") from e
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return release_config(path)
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r} (expected .safetensors or .pt)")


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors, in our key layout."""
    path = _existing(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: cannot read this safetensors file, it is truncated or corrupt ({e})") from e
    return release_to_ours(_torch_load_safely(path))


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _safetensors_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read this safetensors file, it is truncated or corrupt ({e})") from e


def _torch_load_safely(path: Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to load: this file needs a full unpickle (it may run code). "
            f"Only plain tensor checkpoints are read; convert it with a trusted tool first. ({e})") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read this .pt file, it is truncated or corrupt ({e})") from e
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


# --- the authors' layout --------------------------------------------------------------------

RELEASE_PREFIXES = [  # (theirs, ours), first match wins
    ("pixel_encoder.", "vq."),
    ("pixel_adapter.", "ar.adapter."),
    ("pixel_output_head.", "ar.head."),
    ("stacked_ar.model.language_model.", "ar.stack."),  # transformers >= 4.52 layout
    ("stacked_ar.model.", "ar.stack."),  # the release's (transformers 4.4x) layout
    ("diffusion_decoder.transformer.", "diffusion.transformer."),
]
RELEASE_IGNORED = ("pixel_encoder.quantize.codebook_used", "llm.", "diffusion_decoder.text_encoder",
                   "diffusion_decoder.vae.", "diffusion_decoder.text_encoding_pipeline.", "diffusion_decoder.pipe.")


def release_to_ours(state: dict) -> dict:
    if not any(k.startswith(p) for k in state for p, _ in RELEASE_PREFIXES):
        state = {"pixel_encoder." + k: v for k, v in state.items()}  # VQ-Model.pt: a bare VQ state dict
    out = {}
    for key, value in state.items():
        if key.startswith(RELEASE_IGNORED) or key.endswith("rotary_emb.inv_freq"):
            continue
        for theirs, ours in RELEASE_PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
        else:
            out["unmapped." + key] = value  # reported as unexpected by the loader
    return out


def release_config(path: Path, json_path: str | None = None) -> STARConfig:
    """Config for an authors' checkpoint: their JSON beside the file if present, else by file name."""
    candidates = [Path(json_path)] if json_path else sorted(path.parent.glob("*.json"))
    for c in candidates:
        try:
            d = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if "stacked_ar" in d and "pixel_encoder" in d:
            return config_from_release_json(d)
    name = path.stem.lower()
    for key in ("7b", "3b"):
        if key in name:
            return preset(f"star-{key}")
    if "vq" in name:
        return preset("star-3b")
    raise CheckpointError(f"{path}: cannot tell which STAR model this is; put the release's config JSON beside it")


def config_from_release_json(d: dict) -> STARConfig:
    """The release's STAR_Qwen2.5-VL-*.json → our STARConfig."""
    pe, pa = d["pixel_encoder"], d["pixel_adapter"]
    hidden = d["pixel_output_head"]["n_embed"]
    name = "star-7b" if hidden == 3584 else "star-3b"
    cfg = preset(name)
    side = int(round(pe.get("num_tokens", 576) ** 0.5))
    cfg.vq = VQConfig(codebook_size=pe["image_token_size"], codebook_dim=pe["n_embed"], attn_heads=pe.get("num_heads", 8))
    cfg.image_size = side * cfg.vq.downsample
    cfg.ar = ARConfig(base=cfg.ar.base, base_path=d.get("language_model", {}).get("model_path"),
                      num_stacked_layers=d["stacked_ar"]["num_layers"], adapter_depth=pa.get("depth", 1))
    cfg.diffusion = DiffusionConfig(transformer=cfg.diffusion.transformer,
                                    vq_channels=pe["n_embed"], lumina_path=d.get("pixel_decoder", {}).get("model_path"))
    return cfg


# --- writing --------------------------------------------------------------------------------

def save_star(path: str | os.PathLike, config: STARConfig, tensors: dict[str, torch.Tensor], overwrite=False) -> Path:
    """Write one comfy-star file atomically; never replaces an existing file unless asked."""
    from .train.checkpointing import save_file_safely
    meta = {"format": FORMAT, "config": config.to_json()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file_safely(tensors, str(path), metadata=meta, overwrite=overwrite)
    return Path(path)


def load_into(module: torch.nn.Module, tensors: dict, prefix: str, path, strict: bool = True,
              allow_missing: tuple = ()) -> None:
    """Load `prefix.*` tensors into module, with an error that names the file and the keys."""
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in sub.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path}: tensors of another shape for {prefix.rstrip('.')} "
                              f"(a checkpoint of a different model?): " + "; ".join(wrong[:5]))
    missing, unexpected = module.load_state_dict(sub, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq") and k not in allow_missing]
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path}: {prefix.rstrip('.')} does not match this checkpoint: "
                              f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                              f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
