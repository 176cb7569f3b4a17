"""The frozen base from ComfyUI's Qwen2.5-VL text-encoder file (what Qwen-Image users have in
`models/text_encoders/qwen_2.5_vl_7b*.safetensors`), instead of a Hugging Face folder.

Such a file is one safetensors of tensors only: no config, no tokenizer. So
- the architecture is the STAR checkpoint's own base config (the star-7b preset for STAR-7B),
  checked against the file's tensor shapes, which must agree;
- the tokenizer is ComfyUI's bundled copy of Qwen2.5's (`comfy/text_encoders/qwen25_tokenizer/`),
  or a `qwen25_tokenizer/` folder beside the file;
- fp8 files are dequantized on load (weight * its per-tensor scale);
- a file without the vision tower (`visual.*`) still generates images, but editing and answering
  questions about images raise an error naming the file; likewise answering and reasoning for a
  file without `lm_head` (ComfyUI never uses the LM head; Qwen2.5-VL-7B does not tie it).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..checkpoint import CheckpointError

TOKENIZER_DIR = "qwen25_tokenizer"  # ComfyUI's name: comfy/text_encoders/qwen25_tokenizer
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALES = (".scale_weight", ".weight_scale")  # old "scaled fp8" files / new "_quantization_metadata" files
DROPPED = ("scaled_fp8",)  # the old format's marker tensor
DROPPED_SUFFIXES = (".scale_input", ".input_scale")  # activation scales: only for fp8 matmuls


def comfy_to_transformers(key: str) -> str | None:
    """A key of ComfyUI's Qwen2.5-VL text-encoder file → its name in transformers'
    Qwen2_5_VLForConditionalGeneration; None for a key that is not a weight of the base.

    ComfyUI's layout (comfy/text_encoders/llama.py `Qwen25_7BVLI`: `self.model = Llama2_`, `self.visual =
    qwen_vl.Qwen2VLVisionTransformer`; no lm_head module) is the original Hugging Face Qwen2.5-VL checkpoint's:
        model.embed_tokens.weight                       model.norm.weight
        model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}   model.layers.{i}.self_attn.o_proj.weight
        model.layers.{i}.mlp.{gate,up,down}_proj.weight model.layers.{i}.{input,post_attention}_layernorm.weight
        visual.patch_embed.proj.weight                  visual.blocks.{i}.norm{1,2}.weight
        visual.blocks.{i}.attn.{qkv,proj}.{weight,bias} visual.blocks.{i}.mlp.{gate,up,down}_proj.{weight,bias}
        visual.merger.ln_q.weight                       visual.merger.mlp.{0,2}.{weight,bias}
        lm_head.weight                                  (in some files only)
    transformers >= 4.52:  model.language_model.<after "model.">,  model.visual.<after "visual.">,  lm_head.weight
    (fp8 files also hold `scaled_fp8` and `<layer>.scale_weight`/`.weight_scale`/`.scale_input`/`.input_scale`:
    read by `read_base_file`, never mapped.)
    """
    if key == "lm_head.weight" or key.startswith(("model.language_model.", "model.visual.")):
        return key  # already transformers' names
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    if key.startswith("visual."):
        return "model." + key
    return None


def is_base_file(path) -> bool:
    p = Path(path)
    return p.is_file() or (not p.is_dir() and p.suffix == ".safetensors")


# --- the header: what the file holds, without reading its tensors ------------------------------

def _header(path: Path) -> tuple[dict, dict, dict]:
    """(shapes, dtypes, metadata) by key."""
    if not path.is_file():
        raise CheckpointError(f"base file {str(path)!r} does not exist; it must be ComfyUI's Qwen2.5-VL text "
                              f"encoder (models/text_encoders/qwen_2.5_vl_7b*.safetensors) or a Qwen2.5-VL-Instruct "
                              f"folder")
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            return shapes, dtypes, f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read this safetensors file, it is truncated or corrupt ({e})") from e


def base_config(path, like: dict, shapes: dict | None = None) -> dict:
    """The base's Qwen2_5_VLConfig dict for this file: `like` (the STAR checkpoint's base config), after
    checking that the file's shapes are that model's. CheckpointError naming the file and what differs."""
    path = Path(path)
    shapes = shapes if shapes is not None else _header(path)[0]
    shapes = {comfy_to_transformers(k) or k: v for k, v in shapes.items()}
    lm, vis = "model.language_model.", "model.visual."
    if f"{lm}layers.0.self_attn.k_proj.bias" not in shapes or f"{lm}layers.0.self_attn.q_norm.weight" in shapes:
        raise CheckpointError(f"{path}: not a Qwen2.5-VL text encoder (no model.layers.0.self_attn.k_proj.bias, the "
                              f"key ComfyUI recognises Qwen2.5 by); the base must be ComfyUI's "
                              f"qwen_2.5_vl_7b*.safetensors or a Qwen2.5-VL-Instruct folder")
    text, vision = like.get("text_config", {}), like.get("vision_config", {})
    if not text:
        raise CheckpointError(f"{path}: the STAR checkpoint names no base architecture to check this file against")
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    found = {
        "hidden size": shapes[f"{lm}embed_tokens.weight"][1],
        "vocabulary": shapes[f"{lm}embed_tokens.weight"][0],
        "layers": len({k.split(".")[3] for k in shapes if k.startswith(f"{lm}layers.")}),
        "MLP size": shapes[f"{lm}layers.0.mlp.gate_proj.weight"][0],
        "key/value heads": shapes[f"{lm}layers.0.self_attn.k_proj.bias"][0] // head_dim,
    }
    expected = {"hidden size": text["hidden_size"], "vocabulary": text["vocab_size"],
                "layers": text["num_hidden_layers"], "MLP size": text["intermediate_size"],
                "key/value heads": text["num_key_value_heads"]}
    if any(k.startswith(vis) for k in shapes):
        found.update({"vision width": shapes[f"{vis}patch_embed.proj.weight"][0],
                      "vision blocks": len({k.split(".")[3] for k in shapes if k.startswith(f"{vis}blocks.")}),
                      "vision output": shapes[f"{vis}merger.mlp.2.weight"][0]})
        expected.update({"vision width": vision.get("hidden_size"), "vision blocks": vision.get("depth"),
                         "vision output": vision.get("out_hidden_size")})
    wrong = [f"{k} {found[k]} (expected {expected[k]})" for k in found if found[k] != expected[k]]
    if wrong:
        raise CheckpointError(f"{path}: not the base this STAR checkpoint was trained on: " + ", ".join(wrong) +
                              f" (STAR-7B needs Qwen2.5-VL-7B, e.g. qwen_2.5_vl_7b.safetensors; STAR-3B needs 3B)")
    return copy.deepcopy(like)


# --- the tokenizer ---------------------------------------------------------------------------

def _comfyui_tokenizer_dirs() -> list[Path]:
    """ComfyUI's bundled Qwen2.5 tokenizer: from the running ComfyUI (`comfy` importable, not imported
    here), else $COMFYUI_DIR."""
    roots = []
    spec = importlib.util.find_spec("comfy")
    if spec is not None and spec.submodule_search_locations:
        roots.append(Path(list(spec.submodule_search_locations)[0]))
    if os.environ.get("COMFYUI_DIR"):
        roots.append(Path(os.environ["COMFYUI_DIR"]) / "comfy")
    return [r / "text_encoders" / TOKENIZER_DIR for r in roots]


def tokenizer_folder(base_path) -> str:
    """Where the base's tokenizer is: the base folder itself, or for a text-encoder file, a
    `qwen25_tokenizer/` folder beside it, else ComfyUI's bundled one."""
    p = Path(base_path)
    if p.is_dir():
        return str(p)
    candidates = [p.parent / TOKENIZER_DIR] + _comfyui_tokenizer_dirs()
    for c in candidates:
        if (c / "vocab.json").is_file() and (c / "merges.txt").is_file() or (c / "tokenizer.json").is_file():
            return str(c)
    raise CheckpointError(f"{p}: a ComfyUI text-encoder file holds no tokenizer, and Qwen2.5's was not found "
                          f"(looked in {', '.join(map(str, candidates))}); run inside ComfyUI, set COMFYUI_DIR, or "
                          f"put Qwen2.5's tokenizer files in a {TOKENIZER_DIR}/ folder beside the file")


# --- the weights -----------------------------------------------------------------------------

def read_base_file(path, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The file's base weights in transformers' names and `dtype`, fp8 ones dequantized."""
    path = Path(path)
    _, dtypes, meta = _header(path)
    quant = {}
    if "_quantization_metadata" in meta:
        try:
            quant = json.loads(meta["_quantization_metadata"]).get("layers", {}) or {}
        except (ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: its _quantization_metadata is not valid JSON ({e})") from e
    odd = {layer: spec.get("format") for layer, spec in quant.items()
           if spec.get("format") not in ("float8_e4m3fn", "float8_e5m2")}
    if odd:
        layer, fmt = next(iter(odd.items()))
        raise CheckpointError(f"{path}: quantized as {fmt!r} ({layer} and {len(odd) - 1} more layers), which "
                              f"comfy-star cannot dequantize; use the bf16 or fp8 file (qwen_2.5_vl_7b.safetensors)")
    out = {}
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        for key in sorted(keys):
            if key in DROPPED or key.endswith(SCALES + DROPPED_SUFFIXES):
                continue
            name = comfy_to_transformers(key)
            if name is None:
                raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Qwen2.5-VL text encoder "
                                      f"(expected model.*, visual.* and lm_head.weight)")
            t = f.get_tensor(key)
            if t.dtype in FP8:
                layer = key[: -len(".weight")] if key.endswith(".weight") else key
                scale = next((f.get_tensor(layer + s) for s in SCALES if layer + s in keys), None)
                t = t.to(torch.float32)
                if scale is not None:
                    if scale.numel() != 1:
                        raise CheckpointError(f"{path}: {key} has a {tuple(scale.shape)} scale (block-wise fp8), "
                                              f"which comfy-star cannot dequantize; use the bf16 file")
                    t = t * scale.to(torch.float32)
            elif not t.is_floating_point():
                raise CheckpointError(f"{path}: {key} is stored as {dtypes[key]} (a quantization comfy-star cannot "
                                      f"read); use the bf16 or fp8 file")
            out[name] = t.to(dtype)
    return out


class MissingPart(torch.nn.Module):
    """Stands in for a part the file lacks; using it raises an error that says what needs it."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    @property
    def dtype(self):  # transformers reads `visual.dtype` before calling it
        raise CheckpointError(self.message)

    def forward(self, *args, **kwargs):
        raise CheckpointError(self.message)


def load_base_file(path, config: dict, dtype=None, attn: str = "sdpa"):
    """Qwen2_5_VLForConditionalGeneration with `config` (see base_config) and the file's weights."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    path = Path(path)
    dtype = dtype or torch.float32
    tensors = read_base_file(path, dtype)
    has_vision = any(k.startswith("model.visual.") for k in tensors)
    cfg = Qwen2_5_VLConfig(**copy.deepcopy(config))
    tied = cfg.text_config.tie_word_embeddings or cfg.tie_word_embeddings
    has_head = "lm_head.weight" in tensors or tied
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report calls absent parts "newly initialized": we say what they mean
    try:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            None, config=cfg, state_dict=tensors, dtype=dtype, attn_implementation=attn, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not (k.startswith("model.visual.") and not has_vision)
               and not (k == "lm_head.weight" and not has_head)]
    problems = missing + sorted(info["unexpected_keys"]) + [str(m) for m in info["mismatched_keys"]]
    if problems:
        raise CheckpointError(f"{path}: does not match a Qwen2.5-VL base: missing {missing[:6]}, "
                              f"unexpected {sorted(info['unexpected_keys'])[:6]}, other shapes "
                              f"{[str(m) for m in info['mismatched_keys']][:4]}")
    if not has_vision:
        model.model.visual = MissingPart(
            f"{path}: holds no vision tower (visual.* tensors), so this base cannot see images: editing and "
            f"answering questions about images need it (text-to-image generation does not). Use a text-encoder "
            f"file with the vision tower (ComfyUI's qwen_2.5_vl_7b.safetensors for Qwen-Image-Edit) or the "
            f"Qwen2.5-VL-Instruct folder")
    if not has_head:
        model.lm_head = MissingPart(
            f"{path}: holds no lm_head.weight (ComfyUI's text encoders never use it), so this base cannot write "
            f"text: answering questions and implicit reasoning need it (generation and editing do not). Use the "
            f"Qwen2.5-VL-Instruct folder as the base for those")
    return model
