"""scripts/vqa_shape_probe.py: tuning the vision tower alone leaves the language model, and so every
text-only row (text-to-image), bit for bit as it was; `--vision FILE` loads the tuned tower back."""

import torch
from scripts_module import load_script

probe = load_script("vqa_shape_probe")


def test_tune_vision_changes_the_vision_tower_alone(tmp_path):
    star = probe.load("shipped")
    before = {k: v.clone() for k, v in star.parts.ar.base.state_dict().items()}
    result = probe.tune_vision(star, steps=2, lr=1e-3, out=str(tmp_path), batch=2, vqa_n=2)
    after = star.parts.ar.base.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.visual.") for k in changed)
    assert 0.0 <= result["accuracy"] <= 1.0
    reloaded = probe.load(str(tmp_path / "visual.safetensors")).parts.ar.base.state_dict()
    assert all(torch.equal(reloaded[k], after[k]) for k in after)


def test_random_vision_is_a_different_tower_with_the_same_language_model():
    shipped, rand = probe.load("shipped").parts.ar.base, probe.load("random").parts.ar.base
    a, b = shipped.state_dict(), rand.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("model.visual."))
    assert not torch.equal(a["model.visual.patch_embed.proj.weight"], b["model.visual.patch_embed.proj.weight"])
