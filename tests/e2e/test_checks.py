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
