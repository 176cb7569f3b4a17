"""scripts/guidance_by_place.py: at one cfg everywhere it samples what the model's own sampler does
(so its "2,2" row is the model's sampling), and it tells free places from places beside an object."""

import torch

from comfy_star import STAR
from scripts_module import load_script

probe = load_script("guidance_by_place")


def test_one_cfg_everywhere_samples_the_models_own_tokens():
    star = STAR.from_pretrained(device="cpu")
    cfg = 2.0  # guided (the script always runs the unconditional rows; at cfg 1 the sampler drops them)
    for seed, prompt in ((3, "a red circle to the left of a blue square"), (4, "three green triangles")):
        ours = probe.sample(star, prompt, seed, cfg, cfg)
        assert torch.equal(ours, star.sample_tokens([prompt], seed=seed, cfg=cfg).ids)


def test_free_places_are_those_with_background_left_and_above():
    b, o = 7, 9  # background code (the first token), an object code
    out = torch.tensor([b, b, b,
                        b, o, b,
                        b, b, 0])  # 3 x 3, the last not drawn yet
    free = [probe.is_free(out, i, 3) for i in range(9)]
    # 5: the object is left of it; 7: the object is above it; 8 touches it only diagonally
    assert free == [True, True, True, True, True, False, True, False, True]
