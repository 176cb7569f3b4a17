"""scripts/near_miss_probe.py: the stack's preference between a caption's render and a near miss."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest

from comfy_star import STAR, data
from comfy_star.data import negatives

spec = importlib.util.spec_from_file_location("near_miss_probe", Path(__file__).parents[1] / "scripts" / "near_miss_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


@pytest.fixture(scope="module")
def star():
    return STAR.from_pretrained(device="cpu")


def test_pairs_are_made_by_the_one_miss_asked_for_and_break_their_caption(star):
    rng = random.Random(0)
    for caption, render, miss in probe.pairs_for(negatives.swap_colors, 6, rng, star.config.image_size):
        right, wrong = data.detect(render), data.detect(miss)
        assert sorted(s.kind for s in right.shapes) == sorted(s.kind for s in wrong.shapes)
        assert sorted(s.color for s in right.shapes) == sorted(s.color for s in wrong.shapes)  # traded, not changed
        assert not np.array_equal(np.asarray(render), np.asarray(miss))


def test_rank_scores_the_gap_between_render_and_miss(star):
    """A pair whose miss is the render itself ties (gap 0, so never 'prefers'); one whose 'miss' adds a
    shape is a longer image, far less likely under the caption, so the render wins."""
    rng = random.Random(1)
    same = [(c, r, r) for c, r, _ in probe.pairs_for(negatives.copy_kind, 4, rng, star.config.image_size)]
    tie = probe.rank(star, same)
    assert tie == {"prefers_render": 0.0, "gap_nats": 0.0}
    added = probe.rank(star, probe.pairs_for(negatives.add_one, 4, rng, star.config.image_size))
    assert added["prefers_render"] == 1.0 and added["gap_nats"] > 5
