"""ComfyUI nodes for STAR: thin adapters from ComfyUI types to `comfy_star` calls.

ComfyUI imports the pack folder as a module named after its path, and has a top-level module
called `nodes` of its own: this package is reached only by relative import (`from .nodes ...`).

The library is imported under its one canonical name, `comfy_star`, from this pack's folder
(`_library()`), so that every STAR node — and anything else in the server that imports
`comfy_star` — shares one module and so one model manager.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

_PACK = Path(__file__).resolve().parent.parent
_LIB = _PACK / "comfy_star"


def _library():
    """`comfy_star`, imported once from this pack. If another copy is already imported (e.g. a
    pip-installed comfy-star that another pack loaded first), that one is used, with a warning,
    rather than a second model manager."""
    mod = sys.modules.get("comfy_star")
    if mod is not None:
        where = Path(getattr(mod, "__file__", "") or "").resolve().parent
        if where != _LIB:
            logging.getLogger("comfy-star").warning(
                "comfy-star: using the comfy_star already imported from %s, not this pack's %s", where, _LIB)
        return mod
    spec = importlib.util.spec_from_file_location("comfy_star", _LIB / "__init__.py",
                                                  submodule_search_locations=[str(_LIB)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["comfy_star"] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules["comfy_star"]
        raise
    return mod


_library()

from .extension import NODES, STARExtension, comfy_entrypoint, setup  # noqa: E402

__all__ = ["NODES", "STARExtension", "comfy_entrypoint", "setup"]
