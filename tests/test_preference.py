"""Stage 4's preference term (train/preference.py): DPO over a caption's render and a near miss."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from comfy_star.pipeline import STAR
from comfy_star.train import preference


def _pairs(star, n: int, seed: int = 0) -> dict:
    make = preference.add_pairs(lambda step, rank=0, world=1: {}, star.config.image_size, n, seed)
    return make(0)["pairs"]


def _trainable(ar):
    for part in (ar.stack, ar.adapter, ar.head):
        part.requires_grad_(True)
    return [p for p in ar.parameters() if p.requires_grad]


def test_the_reference_shares_the_base_and_copies_the_rest():
    star = STAR.from_pretrained(device="cpu")
    ar = star.parts.ar
    ref = preference.reference_of(ar)
    assert ref.base is ar.base
    pointers = {p.data_ptr() for p in ar.parameters()}
    copied = [p for n, p in ref.named_parameters() if not n.startswith("base.")]
    assert copied and not any(p.data_ptr() in pointers for p in copied)
    assert not any(p.requires_grad for p in ref.parameters())


def test_at_the_start_the_term_is_log_2_and_it_teaches_the_stack_to_prefer_the_render():
    """Policy = reference: every margin is 0, the loss ln 2. A few steps of the term alone on fixed pairs
    widen the likelihood gap between each render and its near miss; the reference does not move."""
    torch.manual_seed(0)
    star = STAR.from_pretrained(device="cpu")
    ar, parts = star.parts.ar, star.parts
    ref = preference.reference_of(ar)
    ref_before = {n: p.clone() for n, p in ref.named_parameters() if not n.startswith("base.")}
    params = _trainable(ar)
    pairs = _pairs(star, 4)
    loss, _, stats = preference.dpo_loss(ar, ref, parts, pairs, "cpu", beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    gap0 = stats["pref_gap"]
    opt = torch.optim.Adam(params, lr=2e-4)
    for _ in range(4):
        opt.zero_grad()
        loss, _, stats = preference.dpo_loss(ar, ref, parts, pairs, "cpu", beta=0.1)
        loss.backward()
        assert all(p.grad is None for p in ar.base.parameters())
        opt.step()
    _, _, stats = preference.dpo_loss(ar, ref, parts, pairs, "cpu", beta=0.1)
    assert stats["pref_gap"] > gap0 + 1.0, (gap0, stats)
    assert stats["dpo"] < math.log(2)
    assert all(torch.equal(p, ref_before[n]) for n, p in ref.named_parameters() if not n.startswith("base."))


def test_the_reference_is_the_stack_stage_4_starts_from(tmp_path):
    """With `<out>/stage4-init.safetensors` (a warm start), the reference is those weights, so a resumed
    run compares against where the run began, not against the weights it resumes."""
    from comfy_star.train.recipe import Schedule, with_preference
    star = STAR.from_pretrained(device="cpu")
    ar = star.parts.ar
    init = {n: t.clone() for n, t in ar.state_dict().items() if not n.startswith("base.")}
    init["head.weight"] = init["head.weight"] + 1.0
    save_file({k: v.contiguous() for k, v in init.items()}, str(tmp_path / "stage4-init.safetensors"))
    make, _, ref = with_preference(tmp_path, star.parts, lambda step, rank=0, world=1: {}, star.config.image_size,
                                   Schedule(preference_pairs=2), seed=0, device="cpu")
    assert torch.equal(ref.head.weight, init["head.weight"]) and ref.base is ar.base
    assert not torch.equal(ar.head.weight, init["head.weight"])  # the policy is left as it was
    assert len(make(0)["pairs"]["captions"]) == 2


def test_train_all_with_preference_pairs_logs_the_term_and_bad_settings_are_refused(tmp_path):
    from comfy_star.__main__ import main
    main(["train", "all", "--out", str(tmp_path / "a"), "--start-from", "embedded", "--stages", "stage4,final",
          "--batch", "2", "--device", "cpu", "--steps", "1", "--preference-pairs", "2"])
    last = json.loads((tmp_path / "a" / "stage4" / "log.jsonl").read_text().splitlines()[-1])
    assert {"ce", "dpo", "pref_acc", "pref_gap"} <= set(last)
    assert (tmp_path / "a" / "star-shapes.safetensors").exists()
    for bad in (["--preference-beta", "0"], ["--preference-weight", "-1"], ["--preference-pairs", "-2"]):
        with pytest.raises(SystemExit):  # argparse's error names the values given
            main(["train", "all", "--out", str(tmp_path / "b"), "--preference-pairs", "2", *bad])
        assert not (tmp_path / "b").exists()


def test_the_stage_4_loss_adds_the_right_renders_likelihood_and_the_weighted_term():
    """loss = the usual rows' cross-entropy + the right renders' cross-entropy (which holds their likelihood
    up while DPO pushes the misses down) + weight × DPO (ln 2 at the start)."""
    import random

    from comfy_star import data
    from comfy_star.train.stage2_ar import pixels
    star = STAR.from_pretrained(device="cpu")
    ar, parts = star.parts.ar, star.parts
    ref = preference.reference_of(ar)
    rng = random.Random(2)
    drawn = [data.sample_t2i(rng, size=star.config.image_size)[:2] for _ in range(2)]
    batch = {"captions": [c for c, _ in drawn], "images": pixels([im for _, im in drawn]), "instructions": [],
             "drop": [False, False], "pairs": _pairs(star, 2)}
    with torch.no_grad():
        loss, stats = preference.preference_ar_loss(ar, ref, parts, batch, "cpu", onset_weight=1.0, beta=0.5, weight=0.25)
    assert stats["right_ce"] > 0
    assert loss.item() == pytest.approx(stats["ce"] + stats["right_ce"] + 0.25 * math.log(2), rel=1e-5)
