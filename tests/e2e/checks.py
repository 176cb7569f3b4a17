"""What the end-to-end tests expect of the pack: the lead fills these in as the nodes settle.

Kept apart from the tests so that judging outputs (image content, answers) is one file's job.
"""
from __future__ import annotations

import re
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
    colour in it (not a blank); every text output non-empty. Whether the pictures show the prompt
    is judged by the library's benchmarks (README § How good it is), not here: the embedded model does not
    draw prompts yet; the VQA answers are judged by check_answer.
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


# The image each workflow's STAR VQA node is asked about, told apart by its side (the chain asks
# about the upscaled edit; vqa.json about its one generated image).
VQA_IMAGE_SIDE = {"vqa.json": 64, "chain.json": 128}


def right_answers(question: str, scene) -> set[str]:
    """The answers the detector's reading of a scene makes right for a colour question
    ("what colour is the circle?" → the colours of the circles it sees; "… the background?")."""
    m = re.fullmatch(r"what colou?r is the (\w+)\?", question.strip().lower())
    assert m, f"no answer key for the question {question!r}: teach checks.right_answers its form"
    what = m.group(1)
    if what == "background":
        return {scene.background}
    return {s.color for s in scene.shapes if s.kind == what}


def check_answer(name: str, workflow: dict, history: dict, images: list[Path]) -> None:
    """The VQA text of workflow `name` (UI format) answers its question right about the image the
    VQA node saw, as the library's classical detector reads that image. Only for the bundled seeds:
    the embedded model draws other scenes for other seeds (README § How good it is)."""
    from PIL import Image
    from comfy_star.data import detector
    questions = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "STARVQA"]
    texts = [t for out in (history.get("outputs") or {}).values() for t in (out.get("text") or [])]
    assert len(questions) == 1 and len(texts) == 1, f"{name}: one question, one answer: {questions} {texts}"
    pictures = {}
    for path in images:
        with Image.open(path) as im:
            pictures[path] = im.convert("RGB")
    seen = [p for p, im in pictures.items() if im.size[0] == VQA_IMAGE_SIDE[name]]
    assert len(seen) == 1, f"{name}: which image did the VQA node see? {images}"
    scene = detector.detect(pictures[seen[0]])
    right = right_answers(questions[0], scene)
    assert right, f"{name}: {questions[0]!r} has no right answer for the image {seen[0]} ({scene})"
    answer = texts[0].strip().lower().rstrip(".")
    assert answer in right, f"{name}: asked {questions[0]!r}, answered {answer!r}; the detector reads {scene}"
