"""Convert an authors' checkpoint (`STAR-3B.pt`, `STAR-7B.pt`, `VQ-Model.pt`) to our safetensors format.

The tensors are renamed (checkpoint.RELEASE_PREFIXES), checked against a model of the config
built on the `meta` device (so a 7B conversion needs no memory for weights), and written with
the config in the file's metadata. The base VLM stays a Qwen2.5-VL folder named in the config
(and the decoder's text encoder and VAE a Lumina-Image-2.0 folder); both are read at conversion
for the shapes they fix, and can be replaced at load time (`STAR.from_pretrained(base_path=...)`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CheckpointError, read_checkpoint, save_star


def expected_shapes(config) -> dict[str, tuple]:
    """Shapes of every tensor our modules hold for this config (built on meta: no memory)."""
    from .ar.model import GenerationAdapter, build_stack
    from .vq import STARVQ
    from transformers import Qwen2_5_VLConfig
    import copy
    with torch.device("meta"):
        text = Qwen2_5_VLConfig(**copy.deepcopy(config.ar.base)).text_config
        mods = {"ar.stack.": build_stack(text, config.ar.num_stacked_layers),
                "ar.adapter.": GenerationAdapter(config.vq.codebook_dim, text.hidden_size, config.ar.adapter_depth,
                                                 config.ar.image_cells),
                "ar.head.": torch.nn.Linear(text.hidden_size, config.vq.codebook_size),
                "vq.": STARVQ(config.vq)}
        if config.diffusion is not None:
            from .diffusion import DiffusionDecoder
            mods["diffusion."] = DiffusionDecoder(config.diffusion)
    return {p + k: tuple(v.shape) for p, m in mods.items() for k, v in m.state_dict().items()}


def convert(src, dst, config_json=None, overwrite=False, base_path=None, lumina_path=None) -> Path:
    """base_path / lumina_path: the Qwen2.5-VL and Lumina-Image-2.0 folders to record in the file, instead
    of the ones the release JSON names; the base folder must exist (its config.json sizes the stack)."""
    src = Path(src)
    if src.suffix == ".safetensors":
        raise CheckpointError(f"{src}: already a comfy-star file; convert reads the authors' .pt checkpoints")
    config, tensors = read_checkpoint(src, config_json, base_path=base_path, lumina_path=lumina_path, need_base=False)
    if not any(k.startswith("diffusion.") for k in tensors):
        config.diffusion = None
    shapes = expected_shapes(config)
    bad = [f"{k}: {tuple(v.shape)} (expected {shapes[k]})" for k, v in tensors.items()
           if k in shapes and tuple(v.shape) != shapes[k]]
    unknown = [k for k in tensors if k not in shapes]
    if bad or unknown:
        hint = ""
        if config.ar.base_path and not Path(config.ar.base_path).exists():
            hint = (f"; its base folder {config.ar.base_path!r} is not here, so the {config.name} sizes were "
                    f"assumed: name the Qwen2.5-VL folder with --base")
        raise CheckpointError(f"{src}: does not match the {config.name} layout: "
                              f"wrong shapes {bad[:5]}, unknown keys {unknown[:5]}{hint}")
    return save_star(dst, config, tensors, overwrite=overwrite)
