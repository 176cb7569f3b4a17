"""Near misses (data.negatives): a scene that breaks its caption's promise in one way, for preference tuning."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from comfy_star import data
from comfy_star.data import detector, negatives
from comfy_star.data.shapes import Scene, Shape


def test_a_near_miss_breaks_its_caption_and_the_detector_reads_it_broken(monkeypatch):
    """Over every category: the miss fails the spec both as a scene and as pixels read back, keeps the
    background, and every kind of miss is drawn."""
    rng, used, picked = random.Random("near-miss"), Counter(), []
    names = {m.__name__ for m in negatives.MISSES}
    monkeypatch.setattr(negatives, "MISSES", tuple(lambda s, r, m=m: picked.append(m.__name__) or m(s, r)
                                                   for m in negatives.MISSES))  # records which one made the miss
    for i in range(300):
        caption, category, spec, scene = data.captions.random_caption(rng)
        miss = negatives.near_miss(spec, scene, rng)
        if miss is None:
            continue
        used[picked[-1]] += 1
        assert miss.background == scene.background and miss != scene
        assert detector.spec_failures(miss, spec), (spec, miss)
        assert detector.spec_failures(detector.detect(data.render(miss)), spec), (spec, miss)
    assert set(used) == names, used  # every miss kind is met
    assert sum(used.values()) >= 295


def test_copy_kind_and_swap_places_change_one_thing_and_keep_the_layout():
    a = Shape("circle", "red", 0.25, 0.5, 0.12)
    b = Shape("square", "blue", 0.75, 0.5, 0.10)
    scene = Scene([a, b], "white")
    rng = random.Random(0)
    copied = negatives.copy_kind(scene, rng)
    assert {s.kind for s in copied.shapes} in ({"circle"}, {"square"})
    assert [(s.x, s.y, s.color, s.size) for s in copied.shapes] == [(s.x, s.y, s.color, s.size) for s in scene.shapes]
    swapped = negatives.swap_places(scene, rng)
    assert [(s.kind, s.color, s.size) for s in swapped.shapes] == [(s.kind, s.color, s.size) for s in scene.shapes]
    assert [(s.x, s.y) for s in swapped.shapes] == [(b.x, b.y), (a.x, a.y)]
    spec = {"objects": [{"kind": "circle", "color": None, "count": 1}, {"kind": "square", "color": None, "count": 1}],
            "relation": {"a": 0, "b": 1, "rel": "left of"}, "background": None}
    assert detector.matches_spec(scene, spec) and not detector.matches_spec(swapped, spec)
    assert negatives.copy_kind(Scene([a], "white"), rng) is None  # nothing to copy from


def test_a_scene_that_misses_its_spec_already_is_refused():
    spec = {"objects": [{"kind": "circle", "color": None, "count": 1}], "relation": None, "background": None}
    with pytest.raises(ValueError, match="does not meet its spec"):
        negatives.near_miss(spec, Scene([Shape("square", "red", 0.5, 0.5, 0.1)], "white"), random.Random(0))


def test_sample_preference_is_seeded_and_its_two_images_differ():
    one = data.sample_preference(random.Random(5), size=64)
    two = data.sample_preference(random.Random(5), size=64)
    caption, right, miss, category = one
    assert caption == two[0] and np.array_equal(np.asarray(right), np.asarray(two[1]))
    assert right.size == miss.size == (64, 64) and not np.array_equal(np.asarray(right), np.asarray(miss))
    assert category in data.CATEGORIES
