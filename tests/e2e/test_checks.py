"""checks.check_answer, the judge of the VQA workflows' answers, on scenes whose truth is known
(no server): it must accept the right colour and refuse a wrong one, or it judges nothing."""
from __future__ import annotations

import pytest

import checks
from comfy_star.data.shapes import Scene, Shape, render

SCENE = Scene([Shape("circle", "red", 0.3, 0.5, 0.2), Shape("square", "blue", 0.75, 0.5, 0.2)], "white")
WORKFLOW = {"nodes": [{"type": "STARVQA", "widgets_values": ["what colour is the circle?", 64]}]}


def _judge(tmp_path, answer, side=64, scene=SCENE, workflow=WORKFLOW):
    path = tmp_path / "seen.png"
    render(scene, side).save(path)
    checks.check_answer("chain.json" if side == 128 else "vqa.json", workflow,
                        {"outputs": {"9": {"text": [answer]}}}, [path])


@pytest.mark.parametrize("answer", ["red", "Red.", " red\n"])
def test_the_right_colour_passes(tmp_path, answer):
    _judge(tmp_path, answer)


def test_the_right_colour_passes_on_the_upscaled_chain_image(tmp_path):
    _judge(tmp_path, "red", side=128)


@pytest.mark.parametrize("answer", ["blue", "green", "circle", ""])
def test_a_wrong_answer_fails(tmp_path, answer):
    with pytest.raises(AssertionError, match="answered"):
        _judge(tmp_path, answer)


def test_a_question_about_a_shape_the_image_lacks_fails(tmp_path):
    with pytest.raises(AssertionError, match="no right answer"):
        _judge(tmp_path, "red", scene=Scene([Shape("square", "red", 0.5, 0.5, 0.3)], "white"))


def test_background_questions_are_judged_too(tmp_path):
    asks = {"nodes": [{"type": "STARVQA", "widgets_values": ["What color is the background?", 64]}]}
    _judge(tmp_path, "white", workflow=asks)
    with pytest.raises(AssertionError, match="answered"):
        _judge(tmp_path, "black", workflow=asks)


def test_a_question_without_an_answer_key_is_an_error(tmp_path):
    asks = {"nodes": [{"type": "STARVQA", "widgets_values": ["how many shapes are there?", 64]}]}
    with pytest.raises(AssertionError, match="no answer key"):
        _judge(tmp_path, "2", workflow=asks)


# --- checks.scene_failures: the judge of the workflows' pictures ------------------------------------------

EDIT_FLOW = {"nodes": [{"id": 5, "type": "PreviewImage", "title": "Source"}, {"id": 9, "type": "SaveImage"},
                       {"id": 7, "type": "STARStackedARSample", "widgets_values": ["remove the square", 0]}]}
REMOVED = Scene([SCENE.shapes[0]], "white")


def _scenes(tmp_path, name, workflow, scenes: dict):
    paths = {}
    for node_id, scene in scenes.items():
        paths[node_id] = [tmp_path / f"{node_id}.png"]
        render(scene, 64).save(paths[node_id][0])
    return checks.scene_failures(name, workflow, paths)


def test_each_spec_is_the_one_the_library_writes_that_prompt_for():
    """SPECS say what their prompts promise: the library's own captions for each spec include the prompt."""
    import random
    from comfy_star.data import captions
    for prompt, spec in checks.SPECS.items():
        assert any(captions.caption_from_spec(spec, random.Random(i)) == prompt for i in range(5000)), prompt


def test_every_workflow_names_what_each_of_its_pictures_shows():
    import json
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json")):
        assert path.name in checks.SCENES, f"SCENES does not say what {path.name} draws"
        named = sorted(checks.image_nodes(json.loads(path.read_text())).values())
        assert named == sorted(checks.SCENES[path.name]), path.name


def test_the_prompted_scene_passes_and_others_fail(tmp_path):
    flow = {"nodes": [{"id": 4, "type": "SaveImage"}]}
    assert _scenes(tmp_path, "text_to_image.json", flow, {"4": SCENE}) == []
    swapped = Scene([Shape("circle", "red", 0.75, 0.5, 0.15), Shape("square", "blue", 0.3, 0.5, 0.15)], "white")
    assert _scenes(tmp_path, "text_to_image.json", flow, {"4": swapped}) == [
        "SaveImage: a is right of b, wanted left of"]
    extra = Scene(SCENE.shapes + [Shape("triangle", "red", 0.5, 0.15, 0.1)], "white")
    assert "SaveImage: 3 shapes in all, wanted 2" in _scenes(tmp_path, "text_to_image.json", flow, {"4": extra})


def test_an_edit_passes_only_when_it_does_what_it_says_to_the_source(tmp_path):
    assert _scenes(tmp_path, "edit.json", EDIT_FLOW, {"5": SCENE, "9": REMOVED}) == []
    unchanged = _scenes(tmp_path, "edit.json", EDIT_FLOW, {"5": SCENE, "9": SCENE})
    assert unchanged == ["SaveImage: read red circle (0.30, 0.50), blue square (0.75, 0.50) on white, "
                         "wanted red circle (0.30, 0.50) on white"]
    moved = Scene([Shape("circle", "red", 0.3, 0.2, 0.2)], "white")  # the circle may not move
    assert len(_scenes(tmp_path, "edit.json", EDIT_FLOW, {"5": SCENE, "9": moved})) == 1
    # a wrong source fails on its own, whatever the edit made of it
    wrong_source = _scenes(tmp_path, "edit.json", EDIT_FLOW, {"5": REMOVED, "9": REMOVED})
    assert wrong_source[0].startswith("Source: 0 × blue square")


@pytest.mark.parametrize("instruction, source, target", [
    ("make the background white", Scene(SCENE.shapes, "black"), SCENE),
    ("make the square green", SCENE, Scene([SCENE.shapes[0], Shape("square", "green", 0.75, 0.5, 0.2)], "white")),
])
def test_each_kind_of_edit_is_judged(tmp_path, instruction, source, target):
    sampler = {"id": 7, "type": "STARStackedARSample", "widgets_values": [instruction]}
    flow = {"nodes": [*EDIT_FLOW["nodes"][:2], sampler]}
    chain = {"Source": ("prompt", checks.PROMPT), "SaveImage": ("edit", instruction, "Source")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(checks.SCENES, "chain.json", chain)
        assert _scenes(tmp_path, "chain.json", flow, {"5": source, "9": target}) == []
        assert len(_scenes(tmp_path, "chain.json", flow, {"5": source, "9": source})) == 1
        if instruction.startswith("make the background"):  # an edit that changes nothing is no example
            assert "changes nothing" in _scenes(tmp_path, "chain.json", flow, {"5": target, "9": target})[0]


def test_the_edit_must_be_the_workflows_own(tmp_path):
    flow = {"nodes": [*EDIT_FLOW["nodes"][:2], {"id": 7, "type": "STARStackedARSample",
                                                "widgets_values": ["make the circle green"]}]}
    with pytest.raises(AssertionError, match="the workflow asks"):
        _scenes(tmp_path, "edit.json", flow, {"5": SCENE, "9": REMOVED})


def test_a_missing_or_unnamed_picture_is_refused(tmp_path):
    with pytest.raises(AssertionError, match="gave 0 images"):
        _scenes(tmp_path, "edit.json", EDIT_FLOW, {"5": SCENE})
    with pytest.raises(AssertionError, match="SCENES names"):
        _scenes(tmp_path, "text_to_image.json", EDIT_FLOW, {"5": SCENE, "9": REMOVED})
