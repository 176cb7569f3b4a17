"""Convert an authors' checkpoint (`STAR-3B.pt`, `STAR-7B.pt`, `VQ-Model.pt`) to our safetensors format.

The tensors are renamed (checkpoint.RELEASE_PREFIXES), checked against a model of the config
built on the `meta` device (so a 7B conversion needs no memory for weights), and written with
the config in the file's metadata. The base VLM stays a Qwen2.5-VL folder named in the config.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CheckpointError, read_tensors, release_config, save_star


def expected_shapes(config) -> dict[str, tuple]:
    """Shapes of every tensor our modules hold for this config (built on meta: no memory)."""
    from .ar.model import GenerationAdapter, build_stack
    from .vq import STARVQ
    from transformers import Qwen2_5_VLConfig
    import copy
    with torch.device("meta"):
        text = Qwen2_5_VLConfig(**copy.deepcopy(config.ar.base)).text_config
        mods = {"ar.stack.": build_stack(text, config.ar.num_stacked_layers),
                "ar.adapter.": GenerationAdapter(config.vq.codebook_dim, text.hidden_size, config.ar.adapter_depth),
                "ar.head.": torch.nn.Linear(text.hidden_size, config.vq.codebook_size),
                "vq.": STARVQ(config.vq)}
        if config.diffusion is not None:
            from .diffusion import DiffusionDecoder
            mods["diffusion."] = DiffusionDecoder(config.diffusion)
    return {p + k: tuple(v.shape) for p, m in mods.items() for k, v in m.state_dict().items()}


def convert(src, dst, config_json=None, overwrite=False) -> Path:
    src = Path(src)
    config = release_config(src, config_json)
    tensors = read_tensors(src)
    if not any(k.startswith("diffusion.") for k in tensors):
        config.diffusion = None
    shapes = expected_shapes(config)
    bad = [f"{k}: {tuple(v.shape)} (expected {shapes[k]})" for k, v in tensors.items()
           if k in shapes and tuple(v.shape) != shapes[k]]
    unknown = [k for k in tensors if k not in shapes]
    if bad or unknown:
        raise CheckpointError(f"{src}: does not match the {config.name} layout: "
                              f"wrong shapes {bad[:5]}, unknown keys {unknown[:5]}")
    return save_star(dst, config, tensors, overwrite=overwrite)
