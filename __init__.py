"""comfy-star: STAR (stacked autoregressive unified multimodal model) for ComfyUI.

The ComfyUI entry point: registers the STAR nodes through ComfyUI's V3 API (`comfy_entrypoint`).
Nothing else happens here; the nodes live in `nodes/`, the model in the `comfy_star` library.
(No NODE_CLASS_MAPPINGS on purpose: ComfyUI would then never call `comfy_entrypoint`.)

Outside ComfyUI (e.g. pytest importing this folder as the parent package of `tests/`) ComfyUI's
`comfy_api` is not importable and the nodes are not loaded.
"""
import importlib.util

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
