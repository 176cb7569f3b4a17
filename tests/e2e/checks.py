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
    colour in it (not a blank); every text output non-empty. Whether the pictures show what the
    workflow asks for is check_scenes' job, the VQA answers check_answer's.
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


# What each workflow's pictures must show, by image node (its title, else its type): ("prompt", text)
# — the detector reads a scene the prompt asks for, nothing more; ("edit", instruction, source node)
# — the scene of the source node's picture with the instruction carried out (data.edits.followed;
# the instruction must be a prompt in the workflow);
# None — not a Shapes scene (the loss plot). Every image node of every workflow must be named here.
# The embedded model draws these for the workflows' bundled seeds (scripts/workflow_seeds.py finds
# them and says how often other seeds do: the README's table below its list of example workflows).
PROMPT = "a red circle to the left of a blue square"
SCENES: dict[str, dict[str, tuple | None]] = {
    "text_to_image.json": {"SaveImage": ("prompt", PROMPT)},
    "reasoning.json": {"SaveImage": ("prompt", "a green triangle")},  # what the prompt's riddle names
    "vq_vs_diffusion.json": {"VQ decoder": ("prompt", PROMPT), "Diffusion decoder": ("prompt", PROMPT)},
    "edit.json": {"Source": ("prompt", PROMPT), "SaveImage": ("edit", "remove the square", "Source")},
    "vqa.json": {"PreviewImage": ("prompt", PROMPT)},
    "chain.json": {"Source": ("prompt", PROMPT), "SaveImage": ("edit", "make the background white", "Source")},
    "finetune.json": {"Loss": None, "SaveImage": ("prompt", PROMPT)},
}
# The specs (comfy_star.data.captions) of the prompts above; a test checks the library's captions agree.
SPECS = {
    PROMPT: {"objects": [{"kind": "circle", "color": "red", "count": 1},
                         {"kind": "square", "color": "blue", "count": 1}],
             "relation": {"a": 0, "b": 1, "rel": "left of"}, "background": None},
    "a green triangle": {"objects": [{"kind": "triangle", "color": "green", "count": 1}], "relation": None,
                         "background": None},
}


def edit_target(source, instruction: str):
    """(the scene `instruction` asks for, given the source scene; its data.edits kind), for the forms
    "make the background <colour>", "remove the <kind>" and "make the <kind> <colour>"."""
    from dataclasses import replace
    from comfy_star.data.shapes import Scene
    if m := re.fullmatch(r"make the background (\w+)", instruction):
        return Scene(list(source.shapes), m.group(1)), "background"
    if m := re.fullmatch(r"remove the (\w+)", instruction):
        return Scene([s for s in source.shapes if s.kind != m.group(1)], source.background), "remove"
    if m := re.fullmatch(r"make the (\w+) (\w+)", instruction):
        kind, color = m.groups()
        shapes = [replace(s, color=color) if s.kind == kind else s for s in source.shapes]
        return Scene(shapes, source.background), "recolor"
    raise AssertionError(f"no target for the instruction {instruction!r}: teach checks.edit_target its form")


def image_nodes(workflow: dict) -> dict[str, str]:
    """{node id: its key in SCENES (title, else type)} for the nodes that show or save an image."""
    return {str(n["id"]): n.get("title") or n["type"] for n in workflow["nodes"]
            if n["type"] in ("SaveImage", "PreviewImage")}


def scene_failures(name: str, workflow: dict, images_by_node: dict[str, list[Path]]) -> list[str]:
    """What the pictures of workflow `name` get wrong against SCENES; [] when each shows what it should.

    images_by_node: {node id: the image paths it saved or previewed} (from /history)."""
    from PIL import Image
    from comfy_star.data import detector, edits
    expected = SCENES[name]
    keys = image_nodes(workflow)
    assert sorted(keys.values()) == sorted(expected), \
        f"{name}: image nodes {sorted(keys.values())}, SCENES names {sorted(expected)}"
    scenes = {}
    for node_id, key in keys.items():
        paths = images_by_node.get(node_id) or []
        assert len(paths) == 1, f"{name}: {key} (node {node_id}) gave {len(paths)} images, wanted 1"
        with Image.open(paths[0]) as im:
            scenes[key] = detector.detect(im.convert("RGB"))
    wrong = []
    for key, want in expected.items():
        if want is None:
            continue
        found = scenes[key]
        if want[0] == "prompt":
            problems = detector.spec_failures(found, SPECS[want[1]])
        else:
            prompts = {n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "STARStackedARSample"}
            assert want[1] in prompts, f"{name}: SCENES expects the edit {want[1]!r}, the workflow asks {prompts}"
            source = scenes[want[2]]
            target, kind = edit_target(source, want[1])
            if detector.scenes_match(source, target):
                problems = [f"{want[1]!r} changes nothing in the source ({brief(source)})"]
            elif not edits.followed(found, source, target, kind):
                problems = [f"read {brief(found)}, wanted {brief(target)}"]
            else:
                problems = []
        wrong += [f"{key}: {p}" for p in problems]
    return wrong


def brief(scene) -> str:
    """"red circle (0.30, 0.50), blue square (0.75, 0.50) on white": a scene in one short line."""
    shapes = ", ".join(f"{s.color} {s.kind} ({s.x:.2f}, {s.y:.2f})" for s in scene.shapes)
    return f"{shapes or 'no shapes'} on {scene.background}"


def check_scenes(name: str, workflow: dict, images_by_node: dict[str, list[Path]]) -> None:
    wrong = scene_failures(name, workflow, images_by_node)
    assert not wrong, (f"{name}: the pictures do not show what the workflow asks for:\n" + "\n".join(wrong) +
                       "\n(the bundled seeds were found on an x86 CPU with torch 2.14.1; on other hardware the same "
                       "seed may sample other tokens: `python scripts/workflow_seeds.py --bundled` checks, and "
                       "without --bundled finds seeds that work there)")
