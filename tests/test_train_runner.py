"""The generic training runner: frozen weights untouched, exact resume (also after kill -9),
checkpoints that survive crashes, full disks and corruption, cancel, and a 2-process CPU run.

This file is also a script, so the kill -9 and `accelerate launch` tests run the very same model:
    python tests/test_train_runner.py run OUT STEPS THREADS    (a slowed-down run to be killed)
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_train_runner.py ddp OUT
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from safetensors import SafetensorError  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from comfy_star.checkpoint import CheckpointError  # noqa: E402
from comfy_star.train import checkpointing  # noqa: E402
from comfy_star.train.checkpointing import load_checkpoint, prev_path, save_checkpoint, save_file_safely  # noqa: E402
from comfy_star.train.runner import TrainArgs, agree_min, barrier, launch_info, lr_at, train  # noqa: E402


class Tiny(nn.Module):
    """A frozen layer feeding trainable ones, with dropout so that RNG handling is exercised."""

    def __init__(self, width=32):
        super().__init__()
        self.frozen = nn.Linear(8, width)
        self.mid = nn.Linear(width, width)
        self.head = nn.Linear(width, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.frozen(x))
        h = F.dropout(torch.tanh(self.mid(h)), 0.1, self.training)
        return self.head(h)


def tiny_model(width=32):
    torch.manual_seed(0)
    return Tiny(width)


def make_batch(step, rank=0, world=1):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 8, generator=g)
    y = torch.stack([x[:, :4].sum(1), x[:, 4:].sum(1), x[:, 0] * x[:, 1], x.abs().mean(1)], 1)
    return {"x": x, "y": y}


def loss_fn(model, batch):
    loss = F.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"mse": float(loss.detach())}


def targs(out, steps=20, **kw):
    kw = {"lr": 1e-2, "save_every": 5, "log_every": 2, "warmup_steps": 3, "weight_decay": 0.01, **kw}
    return TrainArgs(out_dir=str(out) if out else None, steps=steps, **kw)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def untimed(log):
    return [{k: v for k, v in e.items() if k != "time"} for e in log]


class Stop(Exception):
    pass


def stop_at(n):
    def on_step(step, total, stats):
        if step == n:
            raise Stop(step)
    return on_step


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 20-step run: what every interrupted-and-resumed run must equal, bit for bit."""
    model = tiny_model()
    result = train(model, make_batch, loss_fn, targs(tmp_path_factory.mktemp("ref")))
    return weights(model), result


# --- what is trained, and what is not -----------------------------------------------------------

def test_frozen_params_stay_bit_identical_and_are_not_saved(tmp_path, reference):
    model = tiny_model()
    before = weights(model)
    result = train(model, make_batch, loss_fn, targs(tmp_path))
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in ("frozen.weight", "frozen.bias"))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert result.steps_done == 20 and len(result.losses) == 20 and result.resumed_from is None
    assert result.losses[-1] < result.losses[0]
    assert all(p.grad is None for p in model.parameters())  # grads freed after training
    assert "_is_accelerate_prepared" not in model.__dict__ and "forward" not in model.__dict__

    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ckpt.step == 20
    assert set(ckpt.model) == {"mid.weight", "mid.bias", "head.weight", "head.bias"}  # Tiny has no buffers
    assert len(ckpt.optimizer["state"]) == 4  # one AdamW state per trainable tensor, none for frozen ones
    assert all(torch.equal(ckpt.model[k], after[k]) for k in ckpt.model)
    assert same(after, reference[0])  # and checkpointing changes nothing in the math


def test_model_without_trainable_params_is_refused():
    model = tiny_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, make_batch, loss_fn, targs(None, steps=2))


def test_log_file_matches_result(tmp_path):
    result = train(tiny_model(), make_batch, loss_fn, targs(tmp_path, steps=7))
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [2, 4, 6, 7]  # every log_every, and the last step
    assert lines == result.log
    assert {"step", "loss", "lr", "mse", "grad_norm", "time"} <= set(lines[0])
    assert lines[-1]["loss"] == result.losses[-1]


def test_lr_schedule_warmup_then_cosine():
    a = TrainArgs(out_dir=None, steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, a) == pytest.approx(0.1) and lr_at(9, a) == pytest.approx(1.0)
    assert lr_at(10, a) == pytest.approx(1.0) and lr_at(100, a) == pytest.approx(0.1)
    assert lr_at(55, a) == pytest.approx(0.55)
    a.schedule = "constant"
    assert lr_at(99, a) == 1.0


def test_bf16_autocast_trains_and_leaves_the_model_unpatched():
    model = tiny_model()
    before = weights(model)
    result = train(model, make_batch, loss_fn, targs(None, steps=4, mixed_precision="bf16"))
    assert result.steps_done == 4 and torch.equal(model.frozen.weight, before["frozen.weight"])
    assert model.head.weight.dtype == torch.float32 and "forward" not in model.__dict__


# --- resume ---------------------------------------------------------------------------------

def test_exception_in_on_step_propagates_and_resume_is_bitwise_exact(tmp_path, reference):
    with pytest.raises(Stop):
        train(tiny_model(), make_batch, loss_fn, targs(tmp_path), on_step=stop_at(12))
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 10  # the last save, whole
    assert not list(tmp_path.glob("*.tmp-*"))

    model = tiny_model()
    result = train(model, make_batch, loss_fn, targs(tmp_path))
    assert result.resumed_from == 10 and result.steps_done == 20
    assert same(weights(model), reference[0])
    assert result.losses == reference[1].losses
    assert untimed(result.log) == untimed(reference[1].log)  # log.jsonl cut back to step 10, then continued
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert untimed(lines) == untimed(reference[1].log)


class Counting(Tiny):
    """Its forward depends on a persistent buffer that training changes (as a VQ's dead-code
    counters do): a resume that lost the buffer would not match the uninterrupted run."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.calls += 1
        return super().forward(x) * (1 + 0.01 * self.calls)


def test_persistent_buffers_are_checkpointed_and_resumed(tmp_path):
    torch.manual_seed(0)
    ref = Counting()
    train(ref, make_batch, loss_fn, targs(tmp_path / "ref"))
    torch.manual_seed(0)
    with pytest.raises(Stop):
        train(Counting(), make_batch, loss_fn, targs(tmp_path / "run"), on_step=stop_at(12))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert ckpt.extra["buffers"] == ["calls"] and float(ckpt.model["calls"]) == 10
    torch.manual_seed(0)
    model = Counting()
    train(model, make_batch, loss_fn, targs(tmp_path / "run"))
    assert float(model.calls) == 20 and same(weights(model), weights(ref))


def test_cancel_stops_gracefully_checkpoints_and_resumes_exactly(tmp_path, reference):
    polls = []
    result = train(tiny_model(), make_batch, loss_fn, targs(tmp_path), cancel=lambda: polls.append(1) or len(polls) > 7)
    assert result.cancelled and result.steps_done == 7 and len(result.losses) == 7
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 7  # saved on cancel
    model = tiny_model()
    train(model, make_batch, loss_fn, targs(tmp_path))
    assert same(weights(model), reference[0])


def test_on_sample_runs_on_schedule_without_grad_and_modes_are_restored(tmp_path):
    calls = []

    def on_sample(model, step):
        model.eval()
        calls.append((step, torch.is_grad_enabled()))

    model = tiny_model()
    train(model, make_batch, loss_fn, targs(None, steps=12, sample_every=4), on_sample=on_sample)
    assert calls == [(4, False), (8, False), (12, False)]
    assert model.training and model.head.training


def test_resume_false_starts_over(tmp_path, reference):
    with pytest.raises(Stop):
        train(tiny_model(), make_batch, loss_fn, targs(tmp_path), on_step=stop_at(12))
    model = tiny_model()
    with pytest.warns(RuntimeWarning, match="starting over"):
        result = train(model, make_batch, loss_fn, targs(tmp_path, resume=False))
    assert result.resumed_from is None and same(weights(model), reference[0])


def test_mismatched_checkpoint_is_refused_clearly(tmp_path):
    train(tiny_model(), make_batch, loss_fn, targs(tmp_path, steps=5))
    model = tiny_model()
    model.mid.requires_grad_(False)
    changed = pytest.warns(RuntimeWarning, match="steps 5→10")
    with pytest.raises(CheckpointError, match="other trainable parameters"), changed:
        train(model, make_batch, loss_fn, targs(tmp_path, steps=10))


# --- damaged files, full disks ---------------------------------------------------------------

def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_checkpoint_names_the_file_and_falls_back_to_prev(tmp_path, reference):
    with pytest.raises(Stop):  # saves at 5 (→ prev) and 10, of the same 20-step schedule as the reference
        train(tiny_model(), make_batch, loss_fn, targs(tmp_path), on_step=stop_at(12))
    latest = tmp_path / "checkpoint.safetensors"
    truncate(latest)
    with pytest.warns(RuntimeWarning, match="truncated or corrupt"):
        assert load_checkpoint(latest).step == 5
    with pytest.warns(RuntimeWarning):  # training resumes from prev, and still ends exactly on the reference
        model = tiny_model()
        result = train(model, make_batch, loss_fn, targs(tmp_path))
    assert result.resumed_from == 5 and same(weights(model), reference[0])

    truncate(latest)
    prev_path(latest).write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(latest)
    assert str(latest) in str(e.value) and str(prev_path(latest)) in str(e.value)
    assert "truncated or corrupt" in str(e.value)


def test_a_damaged_latest_never_replaces_a_whole_prev(tmp_path):
    path, no_optim = tmp_path / "checkpoint.safetensors", {"state": {}, "param_groups": []}
    for step in (1, 2):
        save_checkpoint(path, {"w": torch.full((3,), float(step))}, no_optim, step)
    truncate(path)
    save_checkpoint(path, {"w": torch.full((3,), 3.0)}, no_optim, 3)
    assert load_checkpoint(prev_path(path)).step == 1 and load_checkpoint(path).step == 3


def test_corrupt_file_without_prev_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def full_disk(tensors, filename, metadata=None):
    """What safetensors does on a full disk: part of the file, then an error naming the OS error."""
    Path(filename).write_bytes(b"partial")
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_disk_full_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    state = {"w": torch.ones(3)}
    save_checkpoint(path, state, {"state": {}, "param_groups": []}, step=1)
    old = path.read_bytes()
    monkeypatch.setattr(checkpointing, "save_file", full_disk)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, {"w": torch.zeros(3)}, {"state": {}, "param_groups": []}, step=2)
    assert e.value.errno == errno.ENOSPC and str(path) in str(e.value)
    assert path.read_bytes() == old and not prev_path(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the temp is gone


def test_disk_full_during_training_propagates_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    def fill_disk_after_first_save(step, total, stats):
        if step == 5:
            monkeypatch.setattr(checkpointing, "save_file", full_disk)

    with pytest.raises(OSError) as e:
        train(tiny_model(), make_batch, loss_fn, targs(tmp_path), on_step=fill_disk_after_first_save)
    assert e.value.errno == errno.ENOSPC
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 5
    assert not list(tmp_path.glob("*.tmp-*"))


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = [f"checkpoint.safetensors.tmp-{dead.stdout.strip()}", ".tmpAb12Cd",  # removed
             f"checkpoint.safetensors.tmp-{os.getpid()}", "checkpoint.safetensors"]  # kept: a live writer's, data
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    checkpointing.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_save_file_safely_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file_safely({"a": torch.ones(2)}, path, metadata={"k": "v"})
    with pytest.raises(FileExistsError, match="model.safetensors"):
        save_file_safely({"a": torch.zeros(2)}, path)
    assert torch.equal(load_file(str(path))["a"], torch.ones(2))
    save_file_safely({"a": torch.zeros(2)}, path, overwrite=True)
    assert torch.equal(load_file(str(path))["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# --- real processes ----------------------------------------------------------------------------

def script_env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_kill_9_at_a_random_moment_then_resume_is_bitwise_exact(tmp_path):
    """A real crash: SIGKILL lands anywhere (mid-step, mid-write, between the two renames)."""
    steps, width = 60, 128
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, __file__, "run", str(out), str(steps), str(torch.get_num_threads())],
                            env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180  # a loaded CI box can take long to start python + torch
        while not prev_path(out / "checkpoint.safetensors").exists():  # at least two saves done
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the child never wrote its second checkpoint"
            time.sleep(0.01)
        delay = random.uniform(0, 0.6)  # the child needs >= 1 s more: it sleeps 20 ms a step
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the child finished before the kill: make it slower"

    ckpt = load_checkpoint(prev_path(out / "checkpoint.safetensors"))  # -prev stays loadable
    assert ckpt.step % 5 == 0
    model = tiny_model(width)
    result = train(model, make_batch, loss_fn, targs(out, steps))
    ref = tiny_model(width)
    ref_result = train(ref, make_batch, loss_fn, targs(tmp_path / "ref", steps))
    assert result.resumed_from > 0, f"killed after {delay:.2f}s"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # a killed writer's temps are cleaned up
    assert same(weights(model), weights(ref)), f"killed after {delay:.2f}s at step {result.resumed_from}"
    assert result.losses == ref_result.losses
    assert untimed(result.log) == untimed(ref_result.log)


def test_two_process_cpu_run_with_torchrun(tmp_path):
    """DDP over gloo. (`accelerate launch --cpu --num_processes 2` needs mpirun for that; torchrun does not.)"""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "ddp", str(tmp_path)]
    # the gloo path on a GPU machine too (hidden GPUs: gloo's barrier would look for a GPU per process)
    env = dict(script_env(), ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    assert same(ranks[0], ranks[1])  # DDP kept the replicas equal
    initial = weights(tiny_model())
    assert torch.equal(ranks[0]["frozen.weight"], initial["frozen.weight"])
    assert not torch.equal(ranks[0]["head.weight"], initial["head.weight"])
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ckpt.step == 6 and ckpt.extra["world_size"] == 2
    assert all(torch.equal(ckpt.model[k], ranks[0][k]) for k in ckpt.model)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


def test_launch_info_single_process():
    rank, world, device = launch_info()
    assert (rank, world) == (0, 1) and isinstance(device, torch.device)
    assert agree_min(7) == 7  # nothing to agree with
    barrier()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_bf16_frozen_untouched_resume_and_memory_given_back(tmp_path):
    dtypes = set()

    def bf16_loss(model, batch):
        out = model(batch["x"])
        dtypes.add(out.dtype)
        return F.mse_loss(out.float(), batch["y"]), {}

    model = tiny_model().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):  # warm up: cuBLAS keeps its workspaces for good
        loss_fn(model, {k: v.cuda() for k, v in make_batch(0).items()})[0].backward()
    model.zero_grad(set_to_none=True)
    before, allocated = weights(model), torch.cuda.memory_allocated()
    with pytest.raises(Stop):
        train(model, make_batch, bf16_loss, targs(tmp_path), on_step=stop_at(12))
    assert dtypes == {torch.bfloat16}  # "auto" chose bf16 autocast on this GPU
    assert torch.equal(model.frozen.weight, before["frozen.weight"]) and model.head.weight.dtype == torch.float32
    assert torch.cuda.memory_allocated() == allocated  # grads and optimizer state freed
    resumed, ref = tiny_model().cuda(), tiny_model().cuda()
    train(resumed, make_batch, bf16_loss, targs(tmp_path))
    train(ref, make_batch, bf16_loss, targs(None))
    for k, v in weights(ref).items():
        torch.testing.assert_close(weights(resumed)[k], v, rtol=0, atol=1e-6)


# --- the script side ----------------------------------------------------------------------------

def _run_to_be_killed(out, steps, threads):
    torch.set_num_threads(int(threads))  # the same as the parent's, so the float math is the same
    train(tiny_model(128), make_batch, loss_fn, targs(out, int(steps)), on_step=lambda *a: time.sleep(0.02))


def _ddp(out):
    rank, world, device = launch_info()
    assert world == 2 and device.type == "cpu", (world, device)
    # a step budget each rank timed on its own (`train all --seconds`) is agreed: the smallest wins
    assert agree_min(10 + 5 * rank) == 10
    barrier()
    model, wrappers = tiny_model(), set()

    def ddp_loss(wrapped, batch):
        wrappers.add(type(wrapped).__name__)
        return loss_fn(wrapped, batch)

    train(model, make_batch, ddp_loss, targs(out, steps=6, save_every=3, log_every=2))
    assert wrappers == {"DistributedDataParallel"}, wrappers
    save_file({k: v.contiguous() for k, v in weights(model).items()}, str(Path(out) / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    {"run": _run_to_be_killed, "ddp": _ddp}[sys.argv[1]](*sys.argv[2:])
