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

import dataclasses
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
    """Config for an authors' checkpoint: their JSON beside the file if present, else by file name.
    Folder names in the JSON are resolved against the JSON's and the checkpoint's folders."""
    path = Path(path)
    found = _release_json(path, json_path)
    if found is not None:
        d, where = found
        return config_from_release_json(d, roots=_roots(where.parent, path.parent))
    name = path.stem.lower()
    for key in ("7b", "3b"):
        if key in name:
            return preset(f"star-{key}")
    if "vq" in name:
        return preset("star-3b")
    raise CheckpointError(f"{path}: cannot tell which STAR model this is; put the release's config JSON beside it")


def _release_json(path: Path, json_path: str | None):
    """(the release JSON as a dict, its path), or None. A named JSON that is not one is an error."""
    if json_path:
        c = Path(json_path)
        try:
            d = json.loads(c.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{c}: cannot read this config JSON ({e})") from e
        if not ("stacked_ar" in d and "pixel_encoder" in d):
            raise CheckpointError(f"{c}: not a STAR release config (no 'stacked_ar' / 'pixel_encoder' sections)")
        return d, c
    for c in sorted(path.parent.glob("*.json")):
        try:
            d = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and "stacked_ar" in d and "pixel_encoder" in d:
            return d, c
    return None


def _roots(*folders: Path) -> tuple[Path, ...]:
    """Where a release JSON's relative folder names may be: its folder, the checkpoint's, and their
    parents (the release's paths are relative to its repository root, e.g. `checkpoints/...`)."""
    out = []
    for f in folders:
        for r in (f, f.parent):
            if r not in out:
                out.append(r)
    return tuple(out)


def resolve_folder(name: str | None, roots=()) -> str | None:
    """A folder named in a release JSON: as given if it exists, else under one of `roots` (the full
    relative name, then its last part). Unresolved names are returned as given (errors come later,
    naming them)."""
    if not name:
        return name
    p = Path(name)
    if p.is_dir():
        return str(p)
    if not p.is_absolute():
        for root in roots:
            for cand in (root / p, root / p.name):
                if cand.is_dir():
                    return str(cand)
    return name


def config_from_release_json(d: dict, roots=()) -> STARConfig:
    """The release's STAR_Qwen2.5-VL-*.json → our STARConfig (folders resolved under `roots`)."""
    pe, pa = d["pixel_encoder"], d["pixel_adapter"]
    hidden = d["pixel_output_head"]["n_embed"]
    name = "star-7b" if hidden == 3584 else "star-3b"
    cfg = preset(name)
    side = int(round(pe.get("num_tokens", 576) ** 0.5))
    cfg.vq = VQConfig(codebook_size=pe["image_token_size"], codebook_dim=pe["n_embed"], attn_heads=pe.get("num_heads", 8))
    cfg.image_size = side * cfg.vq.downsample
    base_path = resolve_folder(d.get("language_model", {}).get("model_path"), roots)
    lumina_path = resolve_folder(d.get("pixel_decoder", {}).get("model_path"), roots)
    cfg.ar = ARConfig(base=cfg.ar.base, base_path=base_path,
                      num_stacked_layers=d["stacked_ar"]["num_layers"], adapter_depth=pa.get("depth", 1))
    cfg.diffusion = DiffusionConfig(transformer=cfg.diffusion.transformer,
                                    vq_channels=pe["n_embed"], lumina_path=lumina_path)
    return cfg


def vq_config_from_tensors(tensors: dict, like: VQConfig) -> VQConfig:
    """The VQ's architecture as its tensors give it (the release fixes it in code, not in its JSON):
    channels, levels, blocks per level, latent and codebook sizes. `like` gives what shapes cannot
    tell (the attention heads) and is returned as it is when there are no VQ tensors."""
    def shape(key):
        t = tensors.get("vq." + key)
        return None if t is None else tuple(t.shape)

    conv_in, quant, table = shape("encoder.conv_in.weight"), shape("quant_conv.weight"), \
        shape("quantize.embedding.weight")
    if conv_in is None or quant is None:
        return like
    ch = conv_in[0]
    levels = sorted({int(k.split(".")[3]) for k in tensors if k.startswith("vq.encoder.conv_blocks.")})
    mult = []
    for i in levels:
        out = shape(f"encoder.conv_blocks.{i}.res.0.conv1.weight")
        if out is None or out[0] % ch:
            return like  # not our layout: let the loader name the mismatching keys
        mult.append(out[0] // ch)
    blocks = len({k.split(".")[5] for k in tensors if k.startswith("vq.encoder.conv_blocks.0.res.")})
    return dataclasses.replace(
        like, ch=ch, ch_mult=tuple(mult), num_res_blocks=blocks or like.num_res_blocks, z_channels=quant[1],
        codebook_dim=quant[0], codebook_size=table[0] if table else like.codebook_size,
        projector_dim=0, projector_depth=0)


# --- the folders a real checkpoint needs ----------------------------------------------------

def read_base_folder(folder: str | os.PathLike, what: str = "the base folder") -> dict:
    """A Hugging Face Qwen2.5-VL folder's config.json, checked; CheckpointError naming it if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{what} {str(folder)!r} does not exist; it must be a Qwen2.5-VL-Instruct folder "
                              f"(config.json, *.safetensors, tokenizer files), e.g. a download of "
                              f"Qwen/Qwen2.5-VL-3B-Instruct for STAR-3B, or for STAR-7B ComfyUI's "
                              f"qwen_2.5_vl_7b*.safetensors text encoder; name another with base_path "
                              f"(the loader's base_folder)")
    try:
        d = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{what} {str(folder)!r} is not a Hugging Face model folder: no readable "
                              f"config.json ({e}); expected a Qwen2.5-VL-Instruct folder") from e
    if d.get("model_type") != "qwen2_5_vl":
        raise CheckpointError(f"{what} {str(folder)!r} holds a {d.get('model_type')!r} model; STAR's base must be "
                              f"a Qwen2.5-VL-Instruct folder (model_type 'qwen2_5_vl')")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        raise CheckpointError(f"{what} {str(folder)!r} has no tokenizer files (tokenizer.json or vocab.json + "
                              f"merges.txt); copy the whole Qwen2.5-VL-Instruct folder")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{what} {str(folder)!r} has no weights (*.safetensors); copy the whole "
                              f"Qwen2.5-VL-Instruct folder")
    return d


def check_lumina_folder(folder: str | os.PathLike, what: str = "the Lumina folder") -> Path:
    folder = Path(folder)
    missing = [sub for sub in ("vae", "text_encoder", "tokenizer") if not (folder / sub).is_dir()]
    if not folder.is_dir() or missing:
        raise CheckpointError(f"{what} {str(folder)!r} " + ("does not exist" if not folder.is_dir() else
                              f"has no {', '.join(s + '/' for s in missing)}") +
                              "; it must be a Lumina-Image-2.0 folder (vae/, text_encoder/, tokenizer/, scheduler/, "
                              "transformer/), a download of Alpha-VLLM/Lumina-Image-2.0")
    return folder


_LUMINA_TRANSFORMER_KEYS = ("sample_size", "patch_size", "in_channels", "hidden_size", "num_layers",
                            "num_refiner_layers", "num_attention_heads", "num_kv_heads", "multiple_of",
                            "ffn_dim_multiplier", "norm_eps", "scaling_factor", "axes_dim_rope", "axes_lens",
                            "cap_feat_dim")


def apply_folders(config: STARConfig, source, base_path=None, lumina_path=None, has_base: bool = False,
                  need_base: bool = True) -> STARConfig:
    """Point `config` at a Qwen2.5-VL base folder (or ComfyUI's Qwen2.5-VL text-encoder file, see
    ar/base_file.py) and a Lumina-Image-2.0 folder (overrides, or the ones it names), and take from them
    what sizes the model: the base's config.json (a file's shapes are checked against the checkpoint's
    own base config instead), and the Lumina
    transformer's and VAE's configs (as the release builds its decoder from that folder).
    need_base=False (conversion): a named base folder that is not here keeps the preset's sizes."""
    if base_path:
        if has_base:
            raise CheckpointError(f"{source}: holds its own base model; a base folder cannot replace it "
                                  f"(leave base_folder empty)")
        config.ar.base_path = str(base_path)
    if config.ar.base_path and not has_base and (need_base or base_path or Path(config.ar.base_path).exists()):
        from .ar import base_file
        if base_file.is_base_file(config.ar.base_path):  # ComfyUI's Qwen2.5-VL text-encoder .safetensors
            base = base_file.base_config(config.ar.base_path, config.ar.base)
            base_file.tokenizer_folder(config.ar.base_path)  # found now, or an error naming where it looked
        else:
            what = "the base folder" if base_path else f"{source}: the base folder its config names,"
            base = read_base_folder(config.ar.base_path, what)
        config.ar.base = {k: v for k, v in base.items() if not k.startswith("_")}
        vision = base.get("vision_config", {})
        config.ar.image_patch_size = vision.get("patch_size", config.ar.image_patch_size)
        config.ar.image_merge_size = vision.get("spatial_merge_size", config.ar.image_merge_size)
        config.ar.tokenizer = "qwen"
    if config.diffusion is None:
        if lumina_path:
            raise CheckpointError(f"{source}: has no diffusion decoder, so no Lumina folder to replace "
                                  f"(leave lumina_folder empty)")
        return config
    if lumina_path and config.diffusion.latent != "vae" and config.diffusion.text_encoder != "gemma2":
        raise CheckpointError(f"{source}: its diffusion decoder uses neither Lumina-Image-2.0's VAE nor its text "
                              f"encoder; a Lumina folder cannot be given for it (leave lumina_folder empty)")
    if lumina_path:
        config.diffusion.lumina_path = str(check_lumina_folder(lumina_path))
    folder = config.diffusion.lumina_path
    if folder and Path(folder).is_dir():
        transformer = _optional_json(Path(folder) / "transformer" / "config.json")
        vae = _optional_json(Path(folder) / "vae" / "config.json")
        if transformer:
            config.diffusion.transformer = {k: transformer[k] for k in _LUMINA_TRANSFORMER_KEYS if k in transformer}
        if vae:
            config.diffusion.latent_channels = vae.get("latent_channels", config.diffusion.latent_channels)
            config.diffusion.latent_factor = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    return config


def _optional_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def read_checkpoint(path, config_json: str | None = None, base_path=None, lumina_path=None, need_base: bool = True):
    """(config, tensors in our layout) for a comfy-star file or an authors' checkpoint, with the
    base and Lumina folders applied (overrides first, else the folders the checkpoint names).

    An authors' `STAR-*.pt` without `pixel_encoder.*` tensors takes its VQ from the `VQ-Model.pt`
    its JSON names (or one beside it), as the release does."""
    path = _existing(path)
    tensors = read_tensors(path)
    if path.suffix == ".safetensors":
        if config_json:
            raise CheckpointError(f"{path}: a comfy-star file carries its own config; config_json is for .pt files")
        config = read_config(path)
    else:
        config = release_config(path, config_json)
        if not any(k.startswith("vq.") for k in tensors):
            tensors.update(_release_vq(path, config_json))
        grid = config.grid  # the JSON's num_tokens; the pixels per token come from the VQ's tensors
        config.vq = vq_config_from_tensors(tensors, config.vq)
        config.image_size = grid * config.vq.downsample
    has_base = any(k.startswith("ar.base.") for k in tensors)
    return apply_folders(config, path, base_path, lumina_path, has_base, need_base), tensors


def _release_vq(path: Path, config_json: str | None) -> dict:
    found = _release_json(path, config_json)
    named = found[0]["pixel_encoder"].get("model_path") if found else None
    roots = _roots(found[1].parent, path.parent) if found else (path.parent,)
    candidates = []
    if named:
        p = Path(named)
        candidates += ([p] if p.is_absolute() else [r / p for r in roots]) + [r / p.name for r in roots]
    candidates.append(path.parent / "VQ-Model.pt")
    for c in candidates:
        if c.is_file() and c.resolve() != path.resolve():
            vq = read_tensors(c)
            if any(k.startswith("vq.") for k in vq):
                return {k: v for k, v in vq.items() if k.startswith("vq.")}
    raise CheckpointError(f"{path}: holds no VQ tensors (pixel_encoder.*) and no VQ-Model.pt was found "
                          f"({named or 'none named in its JSON'}); put VQ-Model.pt beside it")


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
