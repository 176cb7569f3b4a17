"""comfy-star: STAR (stacked autoregressive unified multimodal model) for ComfyUI.

The ComfyUI entry point: registers the STAR nodes through ComfyUI's V3 API (`comfy_entrypoint`).
Nothing else happens here; the nodes live in `nodes/`, the model in the `comfy_star` library.
WEB_DIRECTORY serves `web/`: `web/docs/<node id>.md` is each node's help page, which the frontend
fetches from /extensions/<this folder's name>/docs/ when a user opens a node's help.
(No NODE_CLASS_MAPPINGS on purpose: ComfyUI would then never call `comfy_entrypoint`.)

Outside ComfyUI the nodes are not loaded: where ComfyUI's `comfy_api` is not importable, or where
this file is imported as a plain module rather than as the pack's package (pytest does so from a
checkout whose folder name is not a Python identifier, e.g. `comfy-star`: there is no parent
package for the relative import). ComfyUI always imports a custom node folder as a package.
"""
import importlib.util

WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
