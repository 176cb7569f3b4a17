"""What the end-to-end tests expect of the pack: the lead fills these in as the nodes settle.

Kept apart from the tests so that judging outputs (image content, answers) is one file's job.
"""
from __future__ import annotations

from pathlib import Path

# The exact set of node ids in the STAR category (checked by test_server.test_star_nodes).
EXPECTED_NODES: set[str] = {
    "STARModelLoader", "STARVQEncode", "STARVQDecode", "STARImplicitReasoning", "STARStackedARSample",
    "STARDiffusionDecode", "STARVQA", "STARFolderDataset", "STARShapesDataset", "STARTrainStackedLayers",
    "STARSaveCheckpoint",
}

# The workflow (a file name in workflows/) whose run must report progress on the websocket.
PROGRESS_WORKFLOW = "text_to_image.json"

# The workflow that test_interrupt starts and interrupts at its first progress event, and input
# overrides {class_type: {input: value}} that make it run long enough to be interrupted.
INTERRUPT_WORKFLOW = "text_to_image.json"
INTERRUPT_OVERRIDES: dict[str, dict] = {}

# Seconds one workflow may take on a 2-core CPU (the default model).
WORKFLOW_TIMEOUT = 900


# Image sides each workflow's outputs may have (the embedded model: 64 px VQ images, 64 px
# diffusion decodes by default; the chain upscales to 128; the loss plot is its own size).
SIDES = {"chain.json": {64, 128}, "finetune.json": None}


def check_outputs(name: str, history: dict, images: list[Path]) -> None:
    """Judge what workflow `name` (a file name in workflows/) produced.

    history: its /history entry ('outputs' per node id: 'images', 'text', ...).
    images:  local paths of every image it saved or previewed, in node-id order.
    Every image must be a readable RGB picture of a size the graph makes, with more than one
    colour in it (not a blank); every text output non-empty. What the pictures show is judged by
    the library's benchmarks (README, results), not here: the embedded model is still under-trained.
    """
    from PIL import Image
    outputs = history.get("outputs") or {}
    texts = [t for out in outputs.values() for t in (out.get("text") or [])]
    assert images or texts, f"{name}: no output image and no output text: {outputs}"
    sides = SIDES.get(name, {64})
    for path in images:
        assert Path(path).is_file() and Path(path).stat().st_size > 0, f"{name}: empty output {path}"
        with Image.open(path) as im:
            im = im.convert("RGB")
            if sides is not None:
                assert im.size[0] == im.size[1] and im.size[0] in sides, f"{name}: {path} is {im.size}"
            assert len(im.getcolors(1 << 16) or [0, 0]) > 1, f"{name}: {path} is a single flat colour"
    for t in texts:
        assert isinstance(t, str) and t.strip(), f"{name}: empty text output"
    if name in ("vqa.json", "chain.json"):
        assert texts, f"{name}: the VQA node gave no text"
