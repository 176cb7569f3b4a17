"""Everything this pack takes from ComfyUI's V3 node API, in one place.

ComfyUI's V3 schema (`comfy_api.latest`) is its direction but not yet declared stable
(`ComfyAPI_latest.STABLE = False`). Every node module reaches it only through this file, so an
API change costs one edit here.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported)

CATEGORY = "STAR"
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # what ComfyUI's own seeds allow (torch.Generator takes 64 bits)

ComfyNode = io.ComfyNode
NodeOutput = io.NodeOutput
Image = io.Image
String = io.String
Int = io.Int
Float = io.Float
Boolean = io.Boolean
Combo = io.Combo

# the pack's own wire types
StarModel = io.Custom("STAR_MODEL")
StarTokens = io.Custom("STAR_TOKENS")
StarCond = io.Custom("STAR_COND")
StarDataset = io.Custom("STAR_DATASET")


def schema(node_id: str, display_name: str, description: str, inputs: list, outputs: list,
           output_node: bool = False, experimental: bool = False, not_idempotent: bool = False) -> io.Schema:
    """A STAR node's schema. Declare required inputs first, optional ones last: the frontend lays
    out (and saves `widgets_values` in) required-then-optional order, so the two orders agree."""
    seen_optional = False
    for i in inputs:
        if i.optional:
            seen_optional = True
        elif seen_optional:
            raise ValueError(f"{node_id}: required input {i.id!r} declared after an optional one")
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=inputs, outputs=outputs, is_output_node=output_node, is_experimental=experimental,
                     not_idempotent=not_idempotent)


def model_input(tooltip: str = "The STAR model, from STAR Model Loader (or STAR Train Stacked Layers).") -> io.Input:
    return StarModel.Input("model", tooltip=tooltip)


def seed_input(name: str = "seed", tooltip: str = "Random seed: the same seed and settings give the same result.") -> io.Input:
    return io.Int.Input(name, default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip=tooltip)


def text_output(value: str):
    """UI payload that shows text on the node (and in the API's history outputs as `text`)."""
    return ui.PreviewText(value)


def preview_image(image, cls):
    """UI payload that shows an IMAGE on the node (saved to ComfyUI's temp folder)."""
    return ui.PreviewImage(image, cls=cls)
