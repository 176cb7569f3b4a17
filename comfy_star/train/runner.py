"""The one training loop. Every stage (VQ, stacked AR, diffusion decoder, joint) and the ComfyUI
training node call `train(model, make_batch, loss_fn, args)`:

    for step in range(start, steps):
        seed python/torch RNGs from (seed, step, rank)  # dropout draws the same numbers after a resume
        batch = make_batch(step, rank, world)           # a pure function of its arguments (stage code)
        loss, stats = loss_fn(model, batch)             # under bf16 autocast where asked
        backward, clip, AdamW at lr_at(step)            # only requires_grad=True parameters
        log, checkpoint, sample, on_step

Built on accelerate: `python script.py` trains where the model already is (CPU or one GPU);
`accelerate launch --num_processes N script.py` trains data-parallel with DDP (gloo on CPU).
Frozen parameters are never given to the optimizer and never saved.

Resuming is exact: the checkpoint holds the trainable weights, the optimizer state and the step,
and everything else is a function of the step (data from make_batch, RNGs from seed_step, the
learning rate from lr_at) — so a killed and resumed run ends bit-identical (on CPU) to an
uninterrupted one. That is also why no RNG state is saved: per-step seeding covers every process
and device without having to gather their states.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import CheckpointError
from .checkpointing import find_checkpoint, load_checkpoint, prev_path, remove_stale_temps, save_checkpoint
from .prefetch import to_device

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"


@dataclass
class TrainArgs:
    out_dir: str | None            # None: no checkpoints, no log file (ComfyUI quick runs)
    steps: int
    lr: float = 3e-4
    batch_size: int = 16           # per process; for make_batch's owner, recorded in checkpoints
    seed: int = 0
    save_every: int = 200          # and always at the last step
    log_every: int = 10            # and always at the last step
    sample_every: int = 0          # 0: never call on_sample
    weight_decay: float = 0.0      # on matrices only (dim >= 2), not on biases and norms
    warmup_steps: int = 0
    grad_clip: float = 1.0         # 0: no clipping
    mixed_precision: str = "auto"  # "auto": bf16 on a CUDA device that supports it, else "no"; or "bf16" / "no"
    resume: bool = True            # continue from out_dir's checkpoint; False starts over (and removes it)
    schedule: str = "cosine"       # or "constant" (after warmup)
    min_lr_ratio: float = 0.1      # cosine ends at lr * min_lr_ratio
    find_unused_parameters: bool = False  # DDP only: set if some trainable parameters get no gradient on a step


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # every step's loss (mean over processes), from step 1
    log: list[dict] = field(default_factory=list)      # the log.jsonl entries, earlier runs' included
    steps_done: int = 0
    resumed_from: int | None = None
    cancelled: bool = False
    checkpoint: str | None = None                      # the last checkpoint written or resumed from


def launch_info() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) of this process, as `accelerate launch` set it up (0, 1, default device otherwise)."""
    state = _partial_state()
    return state.process_index, state.num_processes, state.device


def agree_min(n: int) -> int:
    """The smallest of `n` over all launched processes (n itself in a single process): a figure every
    rank computes on its own, such as a step budget timed by each, must be the same everywhere, or the
    rank with more steps waits forever in a collective at the end."""
    state = _partial_state()
    if state.num_processes == 1:
        return n
    import torch.distributed as dist
    t = torch.tensor([n], dtype=torch.long, device=state.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def barrier() -> None:
    """Wait for every launched process (nothing in a single process)."""
    state = _partial_state()
    if state.num_processes > 1:
        state.wait_for_everyone()


def _partial_state():
    """accelerate fixes CPU-or-GPU at the first PartialState() in a process. Without CUDA, a launch of
    several processes (torchrun) must say CPU, or accelerate quietly runs each one on its own."""
    from accelerate import PartialState
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes", "on")
    return PartialState(cpu=cpu or (launched and not torch.cuda.is_available()))


def lr_at(step: int, args: TrainArgs) -> float:
    """Learning rate for 0-based `step`: linear warmup, then constant or cosine down to lr * min_lr_ratio."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.schedule == "constant":
        return args.lr
    if args.schedule != "cosine":
        raise ValueError(f"unknown schedule {args.schedule!r} (expected 'cosine' or 'constant')")
    t = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    low = args.lr * args.min_lr_ratio
    return low + 0.5 * (1 + math.cos(math.pi * t)) * (args.lr - low)


def seed_step(seed: int, step: int, rank: int):
    """Seed the global RNGs from (seed, step, rank), so a step's randomness never depends on history."""
    s = int.from_bytes(hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()[:8], "little") % 2**63
    random.seed(s)
    torch.default_generator.manual_seed(s)
    if torch.cuda.is_initialized():  # (torch.manual_seed would also queue lazy CUDA seeding: slow, every step)
        torch.cuda.manual_seed_all(s)
    np = sys.modules.get("numpy")  # seed numpy only if someone uses it; importing it costs time
    if np is not None:
        np.random.seed(s % 2**32)


def train(model: torch.nn.Module, make_batch: Callable, loss_fn: Callable, args: TrainArgs,
          on_sample: Callable | None = None, on_step: Callable | None = None,
          cancel: Callable[[], bool] | None = None) -> TrainResult:
    """Train `model`'s requires_grad parameters for args.steps optimizer steps (resuming if asked).

    make_batch(step, rank, world_size) -> batch   (tensors are moved to the training device)
    loss_fn(model, batch) -> (loss, {name: float})  model may be DDP-wrapped: call its forward
    on_step(step, total, stats)   after every step; an exception stops training and propagates
    cancel() -> bool              polled before every step; True stops (checkpointing first)
    on_sample(model, step)        every sample_every steps, main process, no_grad, modes restored
    """
    acc = _accelerator(args)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    trainable = _trainable(model, acc)
    buffers = _state_buffers(model)
    device = acc.device if world > 1 else trainable[0][1].device  # one process: train where the caller put it
    bf16 = _use_bf16(args.mixed_precision, device)
    out = Path(args.out_dir) if args.out_dir else None

    ckpt = _start(out, args, acc)
    wrapped, optimizer = _prepare(acc, model, trainable, buffers, ckpt, args)
    result = _result_so_far(out, ckpt, acc)
    start = result.steps_done
    acc.print(f"[train] {world} process(es) on {device}, {'bf16' if bf16 else 'fp32'}, steps {start}→{args.steps}"
              + (f", resumed from {ckpt.path}" if ckpt else ""))
    bar = _progress_bar(args.steps, start, main)
    params = [p for _, p in trainable]
    saved = start if ckpt is not None else None
    t0 = time.time()
    try:
        for step in range(start, args.steps):
            if cancel is not None and _any_process(acc, bool(cancel())):
                result.cancelled = True
                break
            seed_step(args.seed, step, rank)
            batch = to_device(make_batch(step, rank, world), device)
            stats, grad_norm = _step(acc, wrapped, optimizer, params, loss_fn, batch, step, args, bf16)
            loss_value, lr, done = stats["loss"], stats["lr"], step + 1
            result.losses.append(loss_value)
            result.steps_done = done
            if _due(done, args.log_every, args.steps):
                _log(result, out, main, done, stats, grad_norm, time.time() - t0)
            if out is not None and _due(done, args.save_every, args.steps):
                result.checkpoint = _save(out, acc, trainable, buffers, optimizer, done, args, result)
                saved = done
            if on_sample is not None and args.sample_every > 0 and done % args.sample_every == 0 and main:
                _sample(on_sample, model, done)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            if on_step is not None:
                on_step(done, args.steps, stats)
        if result.cancelled and out is not None and saved != result.steps_done:
            result.checkpoint = _save(out, acc, trainable, buffers, optimizer, result.steps_done, args, result)
    finally:
        bar.close()
        _release(acc, model, optimizer, device)
    return result


# --- setup ----------------------------------------------------------------------------------

def _accelerator(args: TrainArgs):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    world = _partial_state().num_processes
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if args.find_unused_parameters else []
    # mixed precision is ours (torch.autocast around loss_fn), not accelerate's: accelerate's can't change
    # within a process and patches model.forward, which would outlive training in a ComfyUI session
    return Accelerator(device_placement=world > 1, kwargs_handlers=handlers)


def _trainable(model, acc) -> list[tuple[str, torch.nn.Parameter]]:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (requires_grad=True): nothing to train")
    n_train = sum(p.numel() for _, p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    acc.print(f"[train] {n_train:,} trainable parameters in {len(trainable)} tensors, {n_all - n_train:,} frozen")
    return trainable


def _state_buffers(model) -> list[tuple[str, torch.Tensor]]:
    """Persistent buffers that training changes (a quantizer's dead-code counters): checkpointed
    beside the weights, so a resumed run goes on exactly as the uninterrupted one would."""
    keys = set(model.state_dict())
    return [(n, b) for n, b in model.named_buffers() if n in keys]


def _use_bf16(mixed_precision: str, device: torch.device) -> bool:
    if mixed_precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if mixed_precision not in ("bf16", "no"):
        raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', not {mixed_precision!r}")
    return mixed_precision == "bf16"


def _optimizer(trainable, args: TrainArgs) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (decaying biases and norm gains only hurts)."""
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)


def _prepare(acc, model, trainable, buffers, ckpt, args: TrainArgs):
    """(model for loss_fn — DDP-wrapped when several processes —, optimizer), with the checkpoint's state."""
    if ckpt is not None:
        _load_weights(trainable, ckpt)
        _load_buffers(buffers, ckpt)  # before DDP wraps the model, which broadcasts rank 0's weights
    wrapped = acc.prepare(model)
    optimizer = _optimizer(trainable, args)
    if ckpt is not None:
        _load_optimizer(optimizer, ckpt)
    return wrapped, acc.prepare(optimizer)


def _start(out: Path | None, args: TrainArgs, acc):
    """Prepare out_dir; return the checkpoint to resume from, or None to start fresh."""
    if out is None:
        return None
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
    acc.wait_for_everyone()
    found = find_checkpoint(out)
    if found is not None and args.resume:
        ckpt = load_checkpoint(found)  # every process reads it (same files, same fallback decision)
        _warn_if_changed(ckpt, args, acc.num_processes)
        return ckpt
    if found is not None and acc.is_main_process:  # resume=False: start over, don't mix two runs' files
        warnings.warn(f"resume=False: starting over in {out}, removing its checkpoints and log", RuntimeWarning)
        for p in (out / CHECKPOINT, prev_path(out / CHECKPOINT), out / LOG):
            p.unlink(missing_ok=True)
    acc.wait_for_everyone()
    return None


def _warn_if_changed(ckpt, args: TrainArgs, world: int):
    before = dict(ckpt.extra.get("args", {}), world_size=ckpt.extra.get("world_size", world))
    now = dict(asdict(args), world_size=world)
    changed = [f"{k} {before[k]!r}→{now[k]!r}" for k in ("seed", "batch_size", "lr", "steps", "world_size")
               if k in before and before[k] != now[k]]
    if changed:
        warnings.warn(f"resuming {ckpt.path} with changed settings: {', '.join(changed)}; "
                      "the run will not match an uninterrupted one", RuntimeWarning)
    if ckpt.step > args.steps:
        warnings.warn(f"{ckpt.path} is at step {ckpt.step}, past steps={args.steps}: nothing to do", RuntimeWarning)


def _load_weights(trainable, ckpt):
    names = [n for n, _ in trainable]
    saved = ckpt.extra.get("params", list(ckpt.model))
    if saved != names:  # the optimizer state is matched by position: names *and* order must agree
        missing, unexpected = sorted(set(names) - set(saved)), sorted(set(saved) - set(names))
        raise CheckpointError(f"{ckpt.path} was saved for other trainable parameters "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]}, or another order)")
    with torch.no_grad():
        for name, p in trainable:
            t = ckpt.model[name]
            if t.shape != p.shape:
                raise CheckpointError(f"{ckpt.path}: {name} is {tuple(t.shape)} in the file, "
                                      f"{tuple(p.shape)} in the model")
            p.copy_(t)


def _load_buffers(buffers, ckpt):
    """Buffers the checkpoint holds (older checkpoints hold none: those keep their current values)."""
    saved = set(ckpt.extra.get("buffers", []))
    with torch.no_grad():
        for name, b in buffers:
            if name in saved:
                b.copy_(ckpt.model[name])


def _load_optimizer(optimizer, ckpt):
    try:
        optimizer.load_state_dict(ckpt.optimizer)  # moves and casts the state to each parameter's device
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: its optimizer state does not fit this model ({e})") from e


def _result_so_far(out: Path | None, ckpt, acc) -> TrainResult:
    """On resume: the loss curve from the checkpoint, and log.jsonl cut back to its step (the killed
    run may have logged steps past its last checkpoint; those will be run, and logged, again)."""
    if ckpt is None:
        return TrainResult()
    log = _read_log(out / LOG, ckpt.step)
    if acc.is_main_process:
        _rewrite_log(out / LOG, log)
    acc.wait_for_everyone()
    return TrainResult(losses=list(ckpt.extra.get("losses", []))[:ckpt.step], log=log, steps_done=ckpt.step,
                       resumed_from=ckpt.step, checkpoint=str(ckpt.path))


def _progress_bar(total: int, start: int, main: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, disable=not main, mininterval=1.0, desc="train", dynamic_ncols=True)


# --- during the loop ---------------------------------------------------------------------------

def _step(acc, model, optimizer, params, loss_fn, batch, step, args, bf16):
    """One optimizer step at lr_at(step); returns (stats with loss and lr, gradient norm before clipping)."""
    lr = lr_at(step, args)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, stats = loss_fn(model, batch)
    acc.backward(loss)
    loss_value = _mean_loss(acc, loss)
    if not math.isfinite(loss_value):  # stop before a NaN reaches the weights (the checkpoint stays good)
        raise FloatingPointError(f"loss is {loss_value} at step {step + 1}; stopping (last checkpoint kept)")
    grad_norm = acc.clip_grad_norm_(params, args.grad_clip) if args.grad_clip > 0 else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_value, "lr": lr, **{k: _number(v) for k, v in (stats or {}).items()}}, grad_norm

def _due(done: int, every: int, total: int) -> bool:
    return done == total or (every > 0 and done % every == 0)


def _mean_loss(acc, loss) -> float:
    loss = loss.detach().float()
    return float(acc.reduce(loss, "mean") if acc.num_processes > 1 else loss)


def _number(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _any_process(acc, flag: bool) -> bool:
    """All processes must stop at the same step, or DDP waits forever on the ones that went on."""
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), "sum") > 0)


def _log(result: TrainResult, out, main, done, stats, grad_norm, elapsed):
    entry = {"step": done, **stats}
    if grad_norm is not None:
        entry["grad_norm"] = float(grad_norm)
    entry["time"] = round(elapsed, 3)
    result.log.append(entry)
    if out is not None and main:
        with open(out / LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _save(out: Path, acc, trainable, buffers, optimizer, step, args, result) -> str:
    path = out / CHECKPOINT
    if acc.is_main_process:
        extra = {"args": asdict(args), "params": [n for n, _ in trainable], "losses": result.losses,
                 "world_size": acc.num_processes, "buffers": [n for n, _ in buffers]}
        tensors = {**{n: b for n, b in buffers}, **{n: p for n, p in trainable}}
        save_checkpoint(path, tensors, optimizer.state_dict(), step, extra)
    acc.wait_for_everyone()
    return str(path)


def _sample(on_sample, model, step):
    modes = [(m, m.training) for m in model.modules()]  # on_sample may call .eval(): give training back its modes
    try:
        with torch.no_grad():
            on_sample(model, step)
    finally:
        for m, training in modes:
            m.train(training)


def _release(acc, model, optimizer, device):
    """Leave the caller's model as it came: no grads, no accelerate marks (a second train() must prepare
    it anew); and free the optimizer's memory now, not whenever the garbage collector gets to it."""
    optimizer.zero_grad(set_to_none=True)
    getattr(optimizer, "optimizer", optimizer).state.clear()
    model.__dict__.pop("_is_accelerate_prepared", None)
    if device.type == "cuda":
        acc.free_memory()  # gc + empty the CUDA cache, so other models (ComfyUI) get the VRAM back


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line half-written when the process was killed
            continue
        if entry.get("step", upto + 1) <= upto:
            entries.append(entry)
    return entries


def _rewrite_log(path: Path, entries: list[dict]):
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    os.replace(tmp, path)
