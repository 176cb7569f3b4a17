"""Training checkpoints: one safetensors file, written so that a crash never costs the last one.

    tensors   model.<name>                  the trainable weights (frozen ones are never saved)
              optim.state.<index>.<key>     the optimizer's tensors (AdamW: step, exp_avg, exp_avg_sq)
    metadata  format  "comfy-star-train/1"
              step    optimizer steps done
              optim   JSON: param_groups and any non-tensor optimizer state
              extra   JSON: whatever the runner wants back (arguments, the loss curve, ...)

Writing: a temp file in the same folder, fsync, then os.replace — a rename is atomic, so a reader
sees the old file or the new one, never half of one. The old checkpoint is first renamed to
`<name>-prev.safetensors`, so a crash at any instant leaves at least one whole checkpoint.
Reading never unpickles: tensors and JSON only.
"""
from __future__ import annotations

import errno
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from ..checkpoint import CheckpointError

FORMAT = "comfy-star-train/1"


@dataclass
class TrainCheckpoint:
    path: Path                       # the file actually read (the -prev one after a fallback)
    step: int
    model: dict[str, torch.Tensor]   # trainable weights, by parameter name
    optimizer: dict                  # a torch optimizer state_dict
    extra: dict = field(default_factory=dict)


def prev_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}-prev{path.suffix}")


# --- writing ------------------------------------------------------------------------------

def save_checkpoint(path, trainable_state: dict[str, torch.Tensor], optimizer_state: dict, step: int,
                    extra: dict | None = None) -> Path:
    """Write a training checkpoint atomically, keeping the one it replaces as `<name>-prev`."""
    tensors = {f"model.{k}": v for k, v in trainable_state.items()}
    optim_tensors, optim_json = _flatten_optimizer(optimizer_state)
    tensors.update(optim_tensors)
    metadata = {"format": FORMAT, "step": str(int(step)), "optim": json.dumps(optim_json),
                "extra": json.dumps(extra or {})}
    path = Path(path)
    tmp = _write_temp(tensors, path, metadata)
    try:
        if _is_whole(path):  # a damaged latest must not push a good -prev out of the way
            os.replace(path, prev_path(path))  # until the next line only -prev exists: loaders fall back to it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already unless a rename failed
    _fsync_dir(path.parent)
    return path


def save_file_safely(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None,
                     overwrite: bool = False) -> Path:
    """Write a safetensors file atomically. An existing file is kept (FileExistsError) unless overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:  # fail before spending time writing
        raise _exists(path)
    tmp = _write_temp(tensors, path, metadata)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _link_new(tmp: Path, path: Path):
    """Publish tmp as path only if path does not exist, atomically (another writer may have won)."""
    try:
        os.link(tmp, path)  # fails with FileExistsError if path appeared meanwhile
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a filesystem without hard links: check-then-rename is the best we can do
        if path.exists():
            raise _exists(path)
        os.replace(tmp, path)


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{path} already exists; not overwriting it (pass overwrite=True)", str(path))


def _write_temp(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None) -> Path:
    """Write and fsync `<path>.tmp-<pid>`; on any failure remove it, so the folder holds only whole files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        _write_tensors(tensors, tmp, metadata)
        _fsync_file(tmp)
    except BaseException as e:  # KeyboardInterrupt too: never leave a half-written temp behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while writing {path}; nothing was replaced "
                                        f"(the previous file, if any, is intact)", str(path)) from e
        raise
    return tmp


def _is_whole(path: Path) -> bool:
    """Cheap: safetensors checks at open that the header parses and the file is as long as it says."""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def _write_tensors(tensors, tmp: Path, metadata):
    """safetensors reports I/O failures as SafetensorError("... (os error N)"); turn those back into OSError."""
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m:
            raise OSError(int(m.group(1)), str(e)) from e
        raise


def _fsync_file(path: Path):
    fd = os.open(path, os.O_RDONLY)  # Linux/macOS flush a file's data through any descriptor
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path):
    """Make the rename itself durable. Not possible on Windows (and not needed there)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict → (tensors under optim.state.<i>.<key>, JSON for everything else)."""
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


# --- reading ------------------------------------------------------------------------------

def load_checkpoint(path, map_location: str | torch.device = "cpu") -> TrainCheckpoint:
    """Read a training checkpoint; if it is missing or damaged and `<name>-prev` is whole, use that
    (with a warning). The error names every file tried and what was wrong with it."""
    path, prev = Path(path), prev_path(path)
    try:
        return _read(path, map_location)
    except CheckpointError as e:
        if not prev.exists():
            raise
        first = e
    try:
        ckpt = _read(prev, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"no usable checkpoint: {first}; and the fallback {e}") from e
    warnings.warn(f"{first}; using the previous checkpoint {prev} (step {ckpt.step}) instead", RuntimeWarning)
    return ckpt


def find_checkpoint(folder) -> Path | None:
    """The checkpoint to resume from in a run folder (the latest, or only -prev after an ill-timed crash)."""
    latest = Path(folder) / "checkpoint.safetensors"
    return latest if latest.exists() or prev_path(latest).exists() else None


def _read(path: Path, map_location) -> TrainCheckpoint:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    model, optim = {}, {}
    try:
        with safe_open(str(path), "pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a comfy-star training checkpoint (format {meta.get('format')!r})")
            for key in f.keys():
                (model if key.startswith("model.") else optim)[key] = f.get_tensor(key)
        step, optim_json, extra = int(meta["step"]), json.loads(meta["optim"]), json.loads(meta["extra"])
    except CheckpointError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read this checkpoint, it is truncated or corrupt ({e})") from e
    model = {k[len("model."):]: v for k, v in model.items()}
    return TrainCheckpoint(path, step, model, _unflatten_optimizer(optim, optim_json), extra)


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, _, index, name = key.split(".", 3)  # optim.state.<index>.<name>
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def remove_stale_temps(folder):
    """Temp files left in a run folder by a killed writer: ours (`*.tmp-<pid>`, its pid gone) and
    safetensors' own (`.tmpXXXXXX`: save_file writes one and renames it). Call it only where no
    other process is writing (the runner does, before training starts)."""
    for tmp in Path(folder).iterdir():
        ours = re.fullmatch(r".+\.tmp-(\d+)", tmp.name)
        if ours and int(ours.group(1)) != os.getpid() and not _alive(int(ours.group(1))):
            tmp.unlink(missing_ok=True)
        elif re.fullmatch(r"\.tmp[A-Za-z0-9]{6}", tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would terminate the process, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or we cannot tell: keep its file
    return True
