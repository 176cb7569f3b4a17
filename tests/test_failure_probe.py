"""scripts/failure_probe.py: its bins say what was drawn against the two kinds asked for, and its
counts come from the detector reading what the model drew."""
import pytest
from scripts_module import load_script

from comfy_star import STAR, data
from comfy_star.data.shapes import Scene, Shape

probe = load_script("failure_probe")


@pytest.mark.parametrize("got, bin_", [(["square", "circle"], "ok"), (["circle", "circle"], "same_kind_twice"),
                                       (["square", "square"], "same_kind_twice"), (["circle"], "one_right"),
                                       (["circle", "triangle"], "one_right"), (["triangle", "diamond"], "other"),
                                       ([], "other"), (["circle", "square", "square"], "other")])
def test_two_kinds_bins(got, bin_):
    assert probe.two_kinds_bin(["circle", "square"], got) == bin_


class TwoCircles:
    """A stand-in model that draws the same scene whatever it is asked."""
    def generate(self, prompt, seed=0):
        scene = Scene([Shape("circle", "red", 0.25, 0.5, 10 / 64), Shape("circle", "blue", 0.75, 0.5, 10 / 64)], "white")
        return [data.shapes.render(scene, 64)]


class Nothing:
    def generate(self, prompt, seed=0):
        return [data.shapes.render(Scene([], "gray"), 64)]


def test_two_kinds_reads_what_was_drawn():
    assert probe.two_kinds(TwoCircles(), 6) == {"ok": 0, "same_kind_twice": 6, "one_right": 0, "other": 0}
    assert probe.two_kinds(Nothing(), 6) == {"ok": 0, "same_kind_twice": 0, "one_right": 0, "other": 6}


def test_phrasing_scores_every_category_on_the_embedded_model():
    scores, drawn = probe.phrasing(STAR.from_pretrained(device="cpu"), 1, 99, held_out=True)
    assert set(scores) == set(data.captions.CATEGORIES) and all(s in (0.0, 1.0) for s in scores.values())
    assert all(sum(drawn[c].values()) == 1 for c in data.captions.CATEGORIES)


class Obedient:
    """Draws the two kinds the prompt names, the first-named on top (raster order first) or below."""
    def __init__(self, first_on_top: bool):
        self.first_on_top = first_on_top

    def generate(self, prompt, seed=0):
        named = sorted((k for k in data.shapes.SHAPES if k in prompt), key=prompt.find)
        ys = (0.25, 0.75) if self.first_on_top else (0.75, 0.25)
        scene = Scene([Shape(k, "red", 0.5, y, 10 / 64) for k, y in zip(named, ys)], "white")
        return [data.shapes.render(scene, 64)]


def test_two_kinds_counts_which_kind_came_first_in_raster_order():
    on_top, below = probe.two_kinds(Obedient(True), 8), probe.two_kinds(Obedient(False), 8)
    assert on_top["ok"] == below["ok"] == 8
    assert (on_top["ok_named_first"], below["ok_named_first"]) == (8, 0)
