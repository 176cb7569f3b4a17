"""Checkpoint reading: the authors' layout, and clear errors for bad files."""
import json

import pytest
import torch
from safetensors.torch import save_file

from comfy_star.ar.model import StackedAR, build_base
from comfy_star.checkpoint import (CheckpointError, config_from_release_json, load_into, read_config,
                                   read_tensors, release_to_ours)
from test_ar import D_CODE, K, tiny_ar_config


def release_ar_state(model: StackedAR) -> dict:
    """What the release's STARMultiModal.state_dict() holds for these parts (transformers 4.4x names)."""
    out = {}
    for k, v in model.stack.state_dict().items():
        out[f"stacked_ar.model.{k}"] = v.clone()
    for k, v in model.adapter.state_dict().items():
        out[f"pixel_adapter.{k}"] = v.clone()
    for k, v in model.head.state_dict().items():
        out[f"pixel_output_head.{k}"] = v.clone()
    out["pixel_encoder.quantize.codebook_used"] = torch.zeros(10)  # saved by the release, ignored
    return out


def test_release_ar_layout_loads_with_no_missing_or_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_ar_config()
    src = StackedAR(build_base(cfg), cfg, D_CODE, K)
    path = tmp_path / "STAR-tiny.pt"
    torch.save({"state_dict": release_ar_state(src)}, path)
    ours = read_tensors(path)
    dst = StackedAR(build_base(cfg), cfg, D_CODE, K, init="random")
    for name in ("stack", "adapter", "head"):
        load_into(getattr(dst, name), ours, f"ar.{name}.", path)  # strict: raises on any mismatch
        for (k, a), (_, b) in zip(getattr(src, name).state_dict().items(), getattr(dst, name).state_dict().items()):
            assert torch.equal(a, b), k


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="full unpickle"):
        read_tensors(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_truncated_safetensors_names_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(100, 100)}, str(path), metadata={"format": "comfy-star/1", "config": "{}"})
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated or corrupt"):
        read_tensors(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_config(tmp_path / "nope.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="not a comfy-star checkpoint"):
        read_config(other)
    bad = tmp_path / "bad.safetensors"
    save_file({"a": torch.zeros(1)}, str(bad), metadata={"format": "comfy-star/1", "config": '{"evil": 1}'})
    with pytest.raises(CheckpointError, match="config metadata is not valid"):
        read_config(bad)


def test_wrong_shape_names_key_and_file(tmp_path):
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match=r"x.safetensors.*head.*weight: file \(5, 4\) vs model \(3, 4\)"):
        load_into(lin, {"ar.head.weight": torch.zeros(5, 4), "ar.head.bias": torch.zeros(3)}, "ar.head.",
                  tmp_path / "x.safetensors")


def test_release_json_config():
    d = {"stacked_ar": {"num_layers": 16}, "pixel_encoder": {"image_token_size": 65536, "n_embed": 512,
         "num_tokens": 576, "num_heads": 8}, "pixel_adapter": {"depth": 2, "input_dim": 512, "n_embed": 2048},
         "pixel_output_head": {"n_embed": 2048, "image_token_size": 65536},
         "language_model": {"model_path": "checkpoints/Qwen2.5-VL-3B-Instruct"},
         "pixel_decoder": {"model_path": "checkpoints/lumina-image2"}}
    cfg = config_from_release_json(json.loads(json.dumps(d)))
    assert cfg.name == "star-3b" and cfg.image_size == 384 and cfg.grid == 24
    assert cfg.ar.num_stacked_layers == 16 and cfg.ar.base_path.endswith("3B-Instruct")


def test_release_prefixes():
    s = {"stacked_ar.model.layers.0.mlp.up_proj.weight": 1, "pixel_adapter.layers.2.bias": 2,
         "pixel_output_head.weight": 3, "pixel_encoder.quant_conv.weight": 4,
         "pixel_encoder.quantize.codebook_used": 5, "diffusion_decoder.transformer.x_embedder.weight": 6}
    assert release_to_ours(s) == {"ar.stack.layers.0.mlp.up_proj.weight": 1, "ar.adapter.layers.2.bias": 2,
                                  "ar.head.weight": 3, "vq.quant_conv.weight": 4,
                                  "diffusion.transformer.x_embedder.weight": 6}
