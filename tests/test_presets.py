"""The full-size presets, built on the meta device (no memory, no weights), reproduce paper Table 8."""
import copy

import pytest
import torch
from transformers import Qwen2_5_VLConfig

from comfy_star.ar.model import GenerationAdapter, build_stack
from comfy_star.config import STARConfig, preset


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name, layers, billions", [("star-3b", 16, 1.2), ("star-7b", 14, 3.0)])
def test_stacked_ar_size_matches_table8(name, layers, billions):
    cfg = preset(name)
    with torch.device("meta"):
        text = Qwen2_5_VLConfig(**copy.deepcopy(cfg.ar.base)).text_config
        stack = build_stack(text, cfg.ar.num_stacked_layers)
    n = count(stack)
    print(f"{name}: stacked AR {n / 1e9:.2f} B ({layers} layers)")
    assert cfg.ar.num_stacked_layers == layers
    assert abs(n / 1e9 - billions) / billions < 0.15


def test_presets_round_trip_through_json():
    for name in ("star-3b", "star-7b", "star-shapes"):
        cfg = preset(name)
        assert STARConfig.from_json(cfg.to_json()) == cfg


def test_unknown_preset_and_field_are_named():
    with pytest.raises(ValueError, match="unknown preset 'star-1b'"):
        preset("star-1b")
    bad = preset("star-shapes").to_json().replace('"image_size"', '"image_sise"')
    with pytest.raises(ValueError, match="image_sise"):
        STARConfig.from_json(bad)
