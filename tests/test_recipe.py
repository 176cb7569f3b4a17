"""The default model's curriculum (`train all`): it runs end to end, and it can continue from a
finished checkpoint (`--start-from`) without changing the parts it does not train."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from comfy_star.checkpoint import read_tensors
from comfy_star.pipeline import DEFAULT_CHECKPOINT, STAR
from comfy_star.train.recipe import Schedule, train_shapes, unpack_checkpoint


def test_start_from_then_final_rebuilds_the_checkpoint_bit_for_bit(tmp_path):
    final = train_shapes(tmp_path, device="cpu", stages=("skip-stage4", "final"),
                        start_from=DEFAULT_CHECKPOINT)
    shipped, rebuilt = read_tensors(DEFAULT_CHECKPOINT), read_tensors(final)
    assert set(shipped) == set(rebuilt)
    different = [k for k in shipped if not torch.equal(shipped[k], rebuilt[k])]
    assert not different, different[:5]


def test_start_from_retrains_the_diffusion_decoder_alone(tmp_path):
    """`--stages stage3,final` from a finished checkpoint: the checkpoint's stack stands in for stage 4,
    so the result is the checkpoint with a new decoder; the decoder settings chosen are carried into it."""
    final = train_shapes(tmp_path, Schedule(batch=2, fixed=1), device="cpu", stages=("stage3", "final"),
                         start_from=DEFAULT_CHECKPOINT, diffusion=dict(prediction="x", shift=1.5, vq_upsample="nearest"))
    shipped, rebuilt = read_tensors(DEFAULT_CHECKPOINT), read_tensors(final)
    assert set(shipped) == set(rebuilt)
    changed = {k for k in shipped if not torch.equal(shipped[k], rebuilt[k])}
    assert changed and all(k.startswith("diffusion.") for k in changed)
    config = STAR.from_pretrained(final, device="cpu").config.diffusion
    assert (config.prediction, config.shift, config.vq_upsample) == ("x", 1.5, "nearest")
    again = train_shapes(tmp_path / "again", Schedule(batch=2, fixed=1), device="cpu", stages=("stage3", "final"),
                         start_from=final)  # not chosen: the decoder goes on as it was trained
    config = STAR.from_pretrained(again, device="cpu").config.diffusion
    assert (config.prediction, config.shift, config.vq_upsample) == ("x", 1.5, "nearest")


def test_a_start_from_stack_stands_in_for_stage4_only_when_no_stack_stage_runs():
    from comfy_star.train.recipe import parts_to_unpack
    assert "stage4" in parts_to_unpack(("stage3", "final"))
    assert "stage4" not in parts_to_unpack(("stage2",)) and "stage4" not in parts_to_unpack(("stage4", "final"))
    assert "stage2" in parts_to_unpack(("stage4", "final"))  # stage 4 starts from the checkpoint's stack
    assert "stage4" not in parts_to_unpack(("stage3",))  # a later `--stages stage4,final` here must still train


def test_unpack_never_replaces_an_existing_stage_file(tmp_path):
    mine = tmp_path / "stage2.safetensors"
    mine.write_bytes(b"a user's own stage 2")
    written = unpack_checkpoint(DEFAULT_CHECKPOINT, tmp_path, ("stage1", "stage2"))
    assert written == ["stage1"]
    assert mine.read_bytes() == b"a user's own stage 2"
    vq_keys = set(load_file(str(tmp_path / "stage1.safetensors")))
    assert vq_keys == {k[len("vq."):] for k in read_tensors(DEFAULT_CHECKPOINT) if k.startswith("vq.")}


def test_start_from_a_missing_file_names_it(tmp_path):
    with pytest.raises(Exception, match="missing.safetensors"):
        unpack_checkpoint(tmp_path / "missing.safetensors", tmp_path)


def test_every_stage_runs_and_the_result_loads_and_generates(tmp_path):
    """A smoke run of the whole curriculum (2 steps a stage): the pack's own recipe produces a
    checkpoint that the pipeline loads and samples from; the base stays frozen after stage 0."""
    final = train_shapes(tmp_path, Schedule(batch=2, scale=1e-6), device="cpu")
    assert {p.name for p in tmp_path.glob("stage*.safetensors")} == \
        {f"stage{i}.safetensors" for i in ("0", "1", "1b", "2", "3", "4")}
    vq1, vq1b = load_file(str(tmp_path / "stage1.safetensors")), load_file(str(tmp_path / "stage1b.safetensors"))
    for k, v in vq1b.items():  # stage 1b tunes the decoder only: the tokens the AR learned stay the same
        if k.startswith(("encoder.", "quant_conv.")):  # (the codebook was exported in between)
            assert torch.equal(v, vq1[k]), k
    assert any(not torch.equal(vq1b[k], vq1[k]) for k in vq1b if k.startswith("decoder."))
    from comfy_star.train.recipe import tokenizer_of
    assert tokenizer_of(tmp_path / "stage1.safetensors") == ("vqgan", 1024)  # the conv encoder, with a projector
    base0 = load_file(str(tmp_path / "stage0.safetensors"))
    shipped = read_tensors(final)
    for k, v in base0.items():  # stages 1-4 never touched the frozen base (fp16 in the shipped file)
        if f"ar.base.{k}" in shipped:
            assert torch.equal(shipped[f"ar.base.{k}"], v.half() if v.is_floating_point() else v), k
    for stage in ("stage2", "stage3", "stage4"):  # periodic sample images
        assert sorted(p.name for p in (tmp_path / stage / "samples").glob("*.png")) == ["step_000001.png",
                                                                                        "step_000002.png"]
    star = STAR.from_pretrained(final, device="cpu")
    tokens = star.sample_tokens(["a red circle"], seed=0)
    assert tokens.ids.shape[-2:] == (8, 8)
    assert star.decode_vq(tokens).shape[-2:] == (64, 64)


def test_stack_layers_grows_the_shipped_stack_and_the_result_loads(tmp_path):
    """`train all --start-from embedded --stages stage4,final --stack-layers 5`: the shipped 4-layer
    stack continues as a 5-layer one (tests/test_ar.py: the grown stack starts computing what the
    shallow one did), the stage files keep their depths, and the checkpoint loads with 5 layers."""
    from comfy_star.__main__ import main
    main(["train", "all", "--out", str(tmp_path), "--start-from", "embedded", "--stages", "stage4,final",
          "--batch", "2", "--scale", "1e-6", "--device", "cpu", "--stack-layers", "5"])
    star = STAR.from_pretrained(tmp_path / "star-shapes.safetensors", device="cpu")
    assert star.config.ar.num_stacked_layers == 5 and len(star.parts.ar.stack.layers) == 5
    assert star.decode_vq(star.sample_tokens(["a red circle"], seed=0)).shape[-2:] == (64, 64)
    from comfy_star.ar.model import stack_depth
    assert stack_depth(load_file(str(tmp_path / "stage2.safetensors"))) == 4  # the unpacked file is untouched
    assert stack_depth(load_file(str(tmp_path / "stage4.safetensors"))) == 5
    # the shipped tokenizer (patch encoder, 4,096 codes) is read back from the unpacked stage 1 file, so the
    # same --out goes on without --start-from or --vq-encoder; a conflicting choice is refused, naming the file
    from comfy_star.train.recipe import tokenizer_of
    assert tokenizer_of(tmp_path / "stage1.safetensors") == (star.config.vq.encoder, star.config.vq.codebook_size)
    with pytest.raises(ValueError, match="stage1.safetensors does not match"):
        main(["train", "all", "--out", str(tmp_path), "--stages", "stage4,final", "--batch", "2",
              "--scale", "1e-6", "--device", "cpu", "--vq-encoder", "vqgan"])
    with pytest.raises(ValueError, match="cannot shrink"):  # a deeper stage 2 never silently loses layers
        main(["train", "all", "--out", str(tmp_path), "--stages", "stage4,final", "--batch", "2",
              "--scale", "1e-6", "--device", "cpu", "--stack-layers", "1"])


def test_steps_replays_a_recorded_step_count(tmp_path):
    """`train all --steps N` (scripts/reproduce_star_shapes.sh): each stage it runs takes exactly N steps,
    whatever the preset's count, and its schedule ends there (a recorded run's step count, replayed)."""
    from comfy_star.__main__ import main
    main(["train", "all", "--out", str(tmp_path), "--start-from", "embedded", "--stages", "stage4,final",
          "--batch", "2", "--device", "cpu", "--scale", "1e-6", "--steps", "3"])
    log = [json.loads(line) for line in (tmp_path / "stage4" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3  # not the 2 that --scale 1e-6 alone gives
    assert log[-1]["lr"] < 3e-4 / 2  # the schedule (peak 3e-4) decayed over 3 steps, not the preset's 3,000
    assert (tmp_path / "star-shapes.safetensors").exists()
    with pytest.raises(SystemExit):  # argparse's error: "--steps must be at least 1 (got 0)"
        main(["train", "all", "--out", str(tmp_path / "x"), "--steps", "0"])


def test_category_weights_reach_stage_4s_batches_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    """`train all --category-weights two_objects=3 --varied-phrasings --raster-order` makes stage 4 draw its
    captions by those weights, in the varied wording, pairs named in drawing order; a weight it cannot read
    stops the command before anything is written."""
    from comfy_star.__main__ import main
    from comfy_star.train import stage2_ar
    seen, make = [], stage2_ar.make_batch_fn
    monkeypatch.setattr(stage2_ar, "make_batch_fn", lambda *a, **k: seen.append(k) or make(*a, **k))
    main(["train", "all", "--out", str(tmp_path / "a"), "--start-from", "embedded", "--stages", "stage4,final",
          "--batch", "2", "--device", "cpu", "--steps", "1", "--category-weights", "two_objects=3,position=0",
          "--varied-phrasings", "--raster-order", "--edit-weights", "move=3"])
    names = ("category_weights", "varied_phrasings", "raster_order", "edit_weights")
    assert {"category_weights": {"two_objects": 3.0, "position": 0.0}, "varied_phrasings": True,
            "raster_order": True, "edit_weights": {"move": 3.0}} in [{n: k.get(n) for n in names} for k in seen]
    assert (tmp_path / "a" / "star-shapes.safetensors").exists()
    with pytest.raises(SystemExit):  # argparse's error names the bad part: "'circle=2': expected NAME=WEIGHT ..."
        main(["train", "all", "--out", str(tmp_path / "b"), "--category-weights", "circle=2"])
    with pytest.raises(SystemExit):
        main(["train", "all", "--out", str(tmp_path / "b"), "--edit-weights", "slide=2"])
    assert not (tmp_path / "b").exists()


def test_edit_layout_is_chosen_then_inherited_from_start_from(tmp_path):
    """`train all --edit-layout source_last` writes the layout into the file it makes; a later
    `--start-from` that file keeps it unless told otherwise (its stack was tuned in that layout)."""
    from comfy_star.__main__ import main
    from comfy_star.checkpoint import read_config
    common = ["--stages", "stage4,final", "--batch", "2", "--device", "cpu", "--steps", "1"]
    main(["train", "all", "--out", str(tmp_path / "a"), "--start-from", "embedded", *common,
          "--edit-layout", "source_last", "--edit-fraction", "1.0"])
    first = tmp_path / "a" / "star-shapes.safetensors"
    assert read_config(first).ar.edit_layout == "source_last"
    main(["train", "all", "--out", str(tmp_path / "b"), "--start-from", str(first), *common])
    assert read_config(tmp_path / "b" / "star-shapes.safetensors").ar.edit_layout == "source_last"
    with pytest.raises(SystemExit):  # argparse's error: "--edit-fraction must be between 0 and 1 (got 1.5)"
        main(["train", "all", "--out", str(tmp_path / "c"), "--edit-fraction", "1.5"])


def test_take_checkpoint_stops_a_stage_early_and_keeps_what_exists(tmp_path):
    from comfy_star.train.checkpointing import save_checkpoint
    from comfy_star.train.recipe import take_checkpoint
    with pytest.raises(FileNotFoundError, match="stage4"):
        take_checkpoint(tmp_path, "stage4")
    weights = {"stack.w": torch.randn(3, 2), "head.b": torch.randn(4)}
    (tmp_path / "stage4").mkdir()
    save_checkpoint(tmp_path / "stage4" / "checkpoint.safetensors", weights, {"state": {}, "param_groups": []}, step=7)
    done = take_checkpoint(tmp_path, "stage4")
    got = load_file(str(done))
    assert set(got) == set(weights) and all(torch.equal(got[k], v) for k, v in weights.items())
    assert (tmp_path / "stage4" / "checkpoint.safetensors").exists()  # still resumable
    with pytest.raises(FileExistsError, match="finished"):
        take_checkpoint(tmp_path, "stage4")


@pytest.mark.parametrize("encoder, grid, codes, flag", [("patch", 8, 1024, 0), ("patch4", 16, 4096, 0),
                                                       ("patch", 8, 4096, 4096)])
def test_the_patch_tokenizer_experiment_runs_from_the_cli(tmp_path, encoder, grid, codes, flag):
    """`train all --vq-encoder patch|patch4` (docs/star-shapes-training.md § Experiment): stage 1
    trains the patch encoder with a plain codebook (no projector), and the stage file loads strictly into that config's VQ, whose
    64 px images are grid x grid tokens."""
    from comfy_star.__main__ import main
    from comfy_star.train.recipe import shapes_config
    from comfy_star.vq import STARVQ
    main(["train", "all", "--out", str(tmp_path), "--stages", "stage0,stage1", "--batch", "2", "--scale", "1e-6",
          "--device", "cpu", "--vq-encoder", encoder, "--codebook-size", str(flag)])
    stage1 = load_file(str(tmp_path / "stage1.safetensors"))
    assert "encoder.mlp.0.weight" in stage1 and not any("projector" in k for k in stage1)
    assert stage1["quantize.embedding.weight"].shape[0] == codes
    from comfy_star.train.recipe import tokenizer_of
    assert tokenizer_of(tmp_path / "stage1.safetensors") == (encoder, codes)  # what a later run of this --out reads
    cfg = shapes_config(encoder, flag)
    vq = STARVQ(cfg.vq)
    vq.load_state_dict(stage1, strict=True)
    assert cfg.grid == grid and cfg.vq.codebook_size == codes
    with torch.no_grad():
        assert vq.encode(torch.zeros(1, 3, 64, 64)).shape[-2:] == (grid, grid)
    with pytest.raises(ValueError, match="vq_encoder"):
        shapes_config("unet")
    with pytest.raises(ValueError, match="codebook_size -1"):
        shapes_config(encoder, -1)


def test_two_process_train_all_writes_each_stage_file_once_and_goes_on(tmp_path):
    """`train all` under torchrun (2 CPU processes, gloo): the ranks agree on the --seconds step budget,
    rank 0 alone writes each stage file while the other waits at a barrier, and both go on to the next
    stage; a second run finds the files and loads them on both ranks. Each stage file holds the weights
    of the stage's last runner checkpoint (the state every DDP replica shares). Every safetensors write
    is recorded per rank (a `sitecustomize` wraps `safetensors.torch.save_file` in both processes):
    rank 1 writes nothing, so no two processes ever write one file."""
    import os
    import re
    import subprocess
    import sys
    from comfy_star.train.checkpointing import load_checkpoint
    out = tmp_path / "run"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WRITE_RECORDER)

    def run(logs):  # each rank's output in its own file (two ranks on one pipe interleave mid-line)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--log-dir", str(tmp_path / logs), "--redirects", "3",
               "-m", "comfy_star", "train", "all", "--out", str(out), "--stages", "stage0,stage1,stage1b",
               "--batch", "2", "--scale", "1e-6", "--seconds", "20", "--workers", "0"]
        env = dict(os.environ, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                   STAR_TEST_WRITES=str(tmp_path / f"{logs}-writes"))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        ranks = [sorted((tmp_path / logs).rglob(f"{r}/std*.log")) for r in range(2)]  # stdout, stderr
        assert all(len(f) == 2 for f in ranks), ranks
        texts = ["\n".join(p.read_text() for p in f) for f in ranks]
        assert done.returncode == 0, done.stderr[-2000:] + "\n".join(t[-2000:] for t in texts)
        return texts

    first = run("logs1")
    for stage in ("stage0", "stage1", "stage1b"):
        steps = [re.findall(rf"\] {stage}: (\d+) steps in ", t) for t in first]
        assert len(steps[0]) == 1 and steps[0] == steps[1], steps  # both ranks ran it, the same steps
        saved = load_file(str(out / f"{stage}.safetensors"))
        ckpt = load_checkpoint(out / stage / "checkpoint.safetensors")
        assert ckpt.extra["world_size"] == 2
        shared = set(saved) & set(ckpt.model)
        assert shared and all(torch.equal(saved[k], ckpt.model[k]) for k in shared), stage
    writes = {r: _recorded_writes(tmp_path / f"logs1-writes.{r}") for r in range(2)}
    assert not writes[1], f"rank 1 wrote {writes[1]}"
    for stage in ("stage0", "stage1", "stage1b"):  # rank 0 wrote each stage file and its checkpoints
        assert writes[0].count(out / f"{stage}.safetensors") == 1, writes[0]
        assert any(p.parent == out / stage for p in writes[0]), writes[0]
    for text in run("logs2"):  # the files are there: each rank loads all three, trains nothing
        assert len(re.findall(r"stage\w+: found .* loading it", text)) == 3, text[-2000:]
        assert " steps in " not in text
    assert not any(_recorded_writes(tmp_path / f"logs2-writes.{r}") for r in range(2))


# Loaded by every Python process of the torchrun test through PYTHONPATH: records (per RANK) the path of
# every safetensors file written, then writes it as usual.
WRITE_RECORDER = """
import os
if os.environ.get("STAR_TEST_WRITES") and os.environ.get("RANK"):
    import safetensors.torch as _st
    _save_file = _st.save_file
    def save_file(tensors, filename, metadata=None):
        with open(os.environ["STAR_TEST_WRITES"] + "." + os.environ["RANK"], "a") as f:
            f.write(os.path.abspath(str(filename)) + "\\n")
        return _save_file(tensors, filename, metadata)
    _st.save_file = save_file
"""


def _recorded_writes(path) -> list:
    from pathlib import Path
    return [Path(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------- onset weighting

def test_onset_mask_marks_where_each_object_starts_in_raster_order():
    from comfy_star.train.stage2_ar import onset_mask
    grid = torch.full((2, 8, 8), 92)
    grid[0, 2, 3:5] = 1                    # a circle: its top row starts at (2, 3) ...
    grid[0, 3:5, 2:6] = 2                  # ... its wider middle starts under background at (3, 2)
    grid[0, 6, 6] = 3                      # a second, separate object
    # image 1 is plain background: no object, no onset
    onsets = onset_mask(grid.view(2, 64)).view(2, 8, 8)
    assert onsets[0].nonzero().tolist() == [[2, 3], [3, 2], [6, 6]]
    assert not onsets[1].any()
    with pytest.raises(ValueError, match="square"):
        onset_mask(torch.zeros(1, 48, dtype=torch.long))


def test_onset_weight_changes_the_loss_but_not_the_logged_cross_entropy():
    import random

    from comfy_star import data
    from comfy_star.train.stage2_ar import ar_loss, pixels
    star = STAR.from_pretrained(device="cpu")
    rng = random.Random(3)
    pairs = [data.sample_t2i(rng, size=star.config.image_size)[:2] for _ in range(4)]
    batch = {"captions": [c for c, _ in pairs], "images": pixels([im for _, im in pairs]),
             "instructions": [], "drop": [False] * 4}
    with torch.no_grad():
        plain, plain_stats = ar_loss(star.parts.ar, star.parts, batch, "cpu")
        weighted, stats = ar_loss(star.parts.ar, star.parts, batch, "cpu", onset_weight=5.0)
    assert plain.item() == pytest.approx(plain_stats["ce"])
    assert stats["ce"] == pytest.approx(plain_stats["ce"])
    # onsets are harder than background tokens, so weighing them up raises the loss
    assert weighted.item() > plain.item() + 0.05
    assert 0.0 <= stats["onset_acc"] < stats["acc"]


def test_onset_weight_teaches_which_object_starts_not_whether_one_does():
    """The extra onset term masks the background's logit: its gradient there is the plain loss's,
    so weighing onsets up does not make the stack start objects more often than the data does."""
    from comfy_star.train.stage2_ar import background_codes, onset_mask, token_loss
    targets = torch.full((2, 8, 8), 7)
    targets[0, 2, 3:5], targets[0, 3:5, 2:6], targets[1, 5, 1] = 1, 2, 3
    targets = targets.view(2, 64)
    logits = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    onset, bg = onset_mask(targets), background_codes(targets)
    k = int(onset.sum())

    def grad(weight):  # d(loss summed over tokens, not averaged) / d(logits) at the onsets
        loss, _ = token_loss(logits, targets, weight)
        (g,) = torch.autograd.grad(loss * (targets.numel() + (weight - 1) * k), logits)
        return g[onset]  # (k, V)

    plain, weighted = grad(1.0), grad(5.0)
    rows, bg_at, tgt_at = torch.arange(k), bg[:, None].expand(-1, 64)[onset], targets[onset]
    assert torch.allclose(weighted[rows, bg_at], plain[rows, bg_at])             # whether: unchanged
    assert (weighted[rows, tgt_at] < plain[rows, tgt_at] - 1e-3).all()          # which: pushed up more


def test_decoder_settings_are_chosen_else_inherited_and_an_unknown_one_is_named():
    from comfy_star.config import DiffusionConfig
    from comfy_star.train.recipe import decoder_settings
    preset = DiffusionConfig(latent="pixels", shift=None)
    assert decoder_settings(preset, {"vq_upsample": "nearest", "shift": None}).vq_upsample == "nearest"
    assert decoder_settings(preset, {}).vq_upsample == "bilinear"
    with pytest.raises(ValueError, match="upsampling"):
        decoder_settings(preset, {"upsampling": "nearest"})
    with pytest.raises(ValueError, match="vq_upsample"):
        decoder_settings(preset, {"vq_upsample": "cubic"})


def test_image_cells_start_at_zero_on_a_stack_trained_without_them_and_are_inherited(tmp_path):
    """`train all --start-from embedded --image-cells`: the shipped stack gains zero row and column
    embeddings (it computes what it did), stage 4 trains them, the file records them and loads with
    them, and a later `--start-from` that file keeps them; `--no-image-cells` cannot drop trained ones."""
    from comfy_star.__main__ import main
    from comfy_star.checkpoint import read_config
    common = ["--stages", "stage4,final", "--batch", "2", "--device", "cpu", "--steps", "2"]
    main(["train", "all", "--out", str(tmp_path / "a"), "--start-from", "embedded", *common, "--image-cells"])
    first = tmp_path / "a" / "star-shapes.safetensors"
    grid = read_config(first).grid
    assert read_config(first).ar.image_cells == grid == 8
    tensors = read_tensors(first)
    assert tensors["ar.adapter.cell_rows"].shape == tensors["ar.adapter.cell_cols"].shape == (grid, 192)
    assert tensors["ar.adapter.cell_rows"].abs().sum() > 0  # trained from zero, so it moved
    star = STAR.from_pretrained(first, device="cpu")
    assert torch.equal(star.parts.ar.adapter.cell_rows, tensors["ar.adapter.cell_rows"].float())
    assert star.decode_vq(star.sample_tokens(["a red circle"], seed=0)).shape[-2:] == (64, 64)
    main(["train", "all", "--out", str(tmp_path / "b"), "--start-from", str(first), *common])
    assert read_config(tmp_path / "b" / "star-shapes.safetensors").ar.image_cells == grid
    with pytest.raises(ValueError, match="trained with image-cell embeddings"):
        main(["train", "all", "--out", str(tmp_path / "c"), "--start-from", str(first), *common, "--no-image-cells"])
