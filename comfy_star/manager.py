"""The model manager shared by every STAR node: one model per (file, dtype, device).

- A model is loaded once per key, however many nodes or prompts ask for it. The cache holds
  models weakly: whoever uses a model keeps it alive (in ComfyUI, its node-output cache), so
  "Free model and node cache" really frees it, and the next prompt loads it again.
- Each part (ar, vq, diffusion) is moved to the compute device only while a call needs it.
  Outside ComfyUI that is a plain `.to()`; inside ComfyUI each part is a `ModelPatcher` handed to
  `comfy.model_management.load_models_gpu`, so STAR and other packs' models share one GPU.
  This file is the only one in `comfy_star/` that touches ComfyUI, behind `use_comfy()`.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from pathlib import Path

import torch

from .pipeline import DEFAULT_CHECKPOINT, STAR

log = logging.getLogger("comfy-star")
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelManager:
    def __init__(self):
        self._models: "weakref.WeakValueDictionary[tuple, STAR]" = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self.load_count: Counter = Counter()  # key → how many times it was read from disk
        self._placement_factory = None
        self._placed: "weakref.WeakValueDictionary[int, STAR]" = weakref.WeakValueDictionary()  # id → live model

    @staticmethod
    def key(path, dtype, device, base_path=None, lumina_path=None) -> tuple:
        path = Path(path or DEFAULT_CHECKPOINT).resolve()
        stat = path.stat() if path.exists() else None
        # the file's identity is part of the key: a file replaced on disk is a new model
        ident = (stat.st_size, stat.st_mtime_ns) if stat else None
        folders = tuple(str(Path(f).resolve()) if f else None for f in (base_path, lumina_path))
        return (str(path), ident, str(dtype), str(device)) + folders

    def get(self, path=None, dtype: str | torch.dtype | None = None, device: str | None = None,
            base_path=None, lumina_path=None) -> STAR:
        """The model of this file, loaded once per (file, dtype, device, folders).

        base_path / lumina_path: a Qwen2.5-VL-Instruct folder / a Lumina-Image-2.0 folder to use instead
        of the ones the checkpoint names (None: the checkpoint's own)."""
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
            dtype = DTYPES[dtype]
        device = device or _default_device()
        if dtype is None:
            dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        key = self.key(path, dtype, device, base_path, lumina_path)
        with self._lock:  # two nodes asking at once still load once
            star = self._models.get(key)
            if star is None:
                star = STAR.from_pretrained(path, device="cpu" if self._placement_factory else device, dtype=dtype,
                                            base_path=base_path, lumina_path=lumina_path)
                star.manager_key = key
                self.load_count[key] += 1
                log.info("[comfy-star] loaded %s (%s, %s)", key[0], dtype, device)  # counted by the e2e load test
                self._attach(star, device)
                self._models[key] = star
            return star

    def adopt(self, star: STAR, name: str) -> STAR:
        """Register a model made in memory (e.g. by the training node) so it is placed like the rest."""
        star.key = name
        self._attach(star, str(star.device))
        return star

    def loaded(self) -> list[tuple]:
        return list(self._models.keys())

    def clear(self):
        self._models.clear()

    # -- placement ----------------------------------------------------------------------------
    def use_comfy(self):
        """Join ComfyUI's model management (called once by the pack's ComfyUI entry point)."""
        self._placement_factory = _comfy_placement

    def _attach(self, star: STAR, device):
        if self._placement_factory is not None:
            # A part shared with a live model (a tuned copy shares the VQ and diffusion decoder with
            # its original) keeps that model's ComfyUI patcher: a second patcher of the same module
            # would die with the copy while the module lives on, which ComfyUI takes for a leak and
            # answers with a full garbage collection on every later model load.
            shared = {id(p.model): p for other in list(self._placed.values())
                      for p in (getattr(other, "patchers", None) or {}).values()}
            star.placement = self._placement_factory(star, shared)
            self._placed[id(star)] = star
        elif torch.device(device).type != "cpu":
            star.placement = _offload_placement(torch.device(device))


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _offload_placement(device):
    """Keep on the GPU only the parts the current call needs; the rest wait in CPU memory."""
    def place(star: STAR, names):
        for name, module in star.parts.modules().items():
            module.to(device if name in names else "cpu")
        star.device = device
    return place


def _comfy_placement(star: STAR, shared: dict | None = None):
    """shared: {id(module): ModelPatcher} of parts already managed (reused, never duplicated)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    load, offload = mm.get_torch_device(), mm.unet_offload_device()
    shared = shared or {}
    patchers = {}
    for name, module in star.parts.modules().items():
        known = shared.get(id(module))
        patchers[name] = known if known is not None and known.model is module else \
            comfy.model_patcher.ModelPatcher(module, load_device=load, offload_device=offload)
    star.patchers = patchers

    def place(star: STAR, names):
        for name, module in star.parts.modules().items():  # a part read on first use (Gemma2)
            if name not in patchers:
                patchers[name] = comfy.model_patcher.ModelPatcher(module, load_device=load, offload_device=offload)
        mm.load_models_gpu([patchers[n] for n in names if n in patchers])
        star.device = torch.device(load)
    return place


MANAGER = ModelManager()
