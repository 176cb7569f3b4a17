"""scripts/decoder_compare.py: the paired decoder read-back is seeded (a model compared with itself
gets the same images, so no scene is read by "only one"), and the only-counts compare scene by scene."""
from comfy_star import STAR
from scripts_module import load_script

compare = load_script("decoder_compare")


def test_paired_readback_is_seeded():
    star = STAR.from_pretrained()
    first = compare.paired_readback(star, n=3, seed=5, cfg=1.0, batch=2)
    again = compare.paired_readback(star, n=3, seed=5, cfg=1.0, batch=2)
    assert first == again
    assert len(first["read"]) == 3 and first["mse"] > 0
    assert compare.only_counts(first["read"], again["read"]) == (0, 0)


def test_paired_readback_decodes_with_the_steps_given():
    star = STAR.from_pretrained()
    default = compare.paired_readback(star, n=2, seed=5, cfg=1.0, batch=2)
    named = compare.paired_readback(star, n=2, seed=5, cfg=1.0, steps=star.defaults.diffusion_steps, batch=2)
    one_step = compare.paired_readback(star, n=2, seed=5, cfg=1.0, steps=1, batch=2)
    assert named == default  # None means the model's own step count
    assert one_step["mse"] != default["mse"]  # a single Euler step from noise is a different image


def test_only_counts_compare_scene_by_scene():
    # equal totals (2 and 2) can still differ scene by scene
    assert compare.only_counts([True, False, True, False], [True, True, False, False]) == (1, 1)
    assert compare.only_counts([True, True], [False, False]) == (2, 0)
