"""Where STAR files live in a ComfyUI install, resolved through `folder_paths`.

- checkpoints: `models/star/` (plus any `star:` entry of the user's extra_model_paths.yaml),
  registered with `folder_paths.add_model_folder_path`, which appends and never replaces.
- a Qwen2.5-VL base folder or a Lumina-Image-2.0 folder: a sub-folder of a `star` folder; the base may
  also be ComfyUI's Qwen2.5-VL text-encoder file, in `models/text_encoders/` (or a `star` folder).
- training folders: a sub-folder of ComfyUI's `input/` directory.
Names are resolved inside those roots only: absolute paths and `..` are refused.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import folder_paths

from .checks import encodable

FOLDER = "star"
TEXT_ENCODERS = "text_encoders"  # ComfyUI's own folder kind (models/text_encoders, models/clip)
EMBEDDED = "star-shapes (embedded)"
CHECKPOINT_SUFFIXES = {".safetensors", ".pt", ".pth", ".bin", ".ckpt"}


def register() -> None:
    """Idempotent: make `models/star` a model folder ComfyUI knows (and lists files of)."""
    path = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths or path not in folder_paths.get_folder_paths(FOLDER):
        folder_paths.add_model_folder_path(FOLDER, path)


def star_folders() -> list[str]:
    register()
    return folder_paths.get_folder_paths(FOLDER)


def checkpoints() -> list[str]:
    """The loader's choices: the embedded default first, then our files and the authors' `.pt`s.
    Files inside a Hugging Face model folder (one with a config.json) are parts of a base or a
    Lumina folder, not checkpoints, and are left out."""
    roots = {Path(r).resolve() for r in star_folders()}
    names = []
    for name in folder_paths.get_filename_list(FOLDER):
        if Path(name).suffix.lower() not in CHECKPOINT_SUFFIXES:
            continue
        full = folder_paths.get_full_path(FOLDER, name)
        parent = Path(full).resolve().parent if full else None
        if parent is not None and parent not in roots and (parent / "config.json").exists():
            continue
        names.append(name)
    return [EMBEDDED] + names


def checkpoint_path(name: str, input_name: str = "ckpt_name") -> Path | None:
    """→ the file, or None for the embedded default."""
    if name == EMBEDDED:
        return None
    if not isinstance(name, str) or name not in checkpoints():
        raise ValueError(f"{input_name}: {name!r} is not a checkpoint in models/{FOLDER}/ "
                         f"(choose one from the list, or copy the file into models/{FOLDER}/ and refresh)")
    path = Path(folder_paths.get_full_path_or_raise(FOLDER, name))
    if not _inside_model_folders(path):
        raise ValueError(f"{input_name}: {name!r} is a link to {os.path.realpath(path)}, outside ComfyUI's model "
                         f"folders; copy the file into models/{FOLDER}/ (or link to a file inside a model folder)")
    return path


def _inside_model_folders(path: Path) -> bool:
    """A symlink may point into any registered model folder, never elsewhere."""
    real = Path(os.path.realpath(path))
    roots = {Path(os.path.realpath(folder_paths.models_dir))}
    for kind, (folders, _) in folder_paths.folder_names_and_paths.items():
        if kind != "custom_nodes":
            roots.update(Path(os.path.realpath(f)) for f in folders)
    return any(root in real.parents for root in roots)


def _relative(text: str, input_name: str) -> PurePosixPath:
    encodable(text, input_name)  # a lone UTF-16 surrogate (JSON can carry one) can be in no file name
    p = PurePosixPath(text.strip().replace("\\", "/"))
    if p.is_absolute() or re.match(r"^[A-Za-z]:", text.strip()) or ".." in p.parts:
        raise ValueError(f"{input_name}: {text!r} must be a folder name relative to its root, "
                         f"without '..' or an absolute path")
    return p


def model_folder(text: str, input_name: str) -> str | None:
    """A base / Lumina folder named relative to a `star` folder; '' → None (use the checkpoint's)."""
    if not text or not text.strip():
        return None
    rel = _relative(text, input_name)
    for root in star_folders():
        candidate = Path(root) / rel
        if candidate.is_dir():
            return str(candidate)
    raise ValueError(f"{input_name}: no folder {str(rel)!r} in {', '.join(star_folders())}; "
                     f"put the model folder there, or leave this empty to use the checkpoint's own")


def base_model(text: str, input_name: str = "base_folder") -> str | None:
    """The frozen base: a Qwen2.5-VL folder in a `star` folder, or ComfyUI's Qwen2.5-VL text-encoder
    `.safetensors` (e.g. qwen_2.5_vl_7b.safetensors) in `text_encoders` (or `star`); '' → None."""
    if not text or not text.strip():
        return None
    rel = _relative(text, input_name)
    for root in star_folders():
        if (Path(root) / rel).is_dir():
            return str(Path(root) / rel)
    text_encoders = list(folder_paths.folder_names_and_paths.get(TEXT_ENCODERS, ([], None))[0])
    for root in text_encoders + star_folders():
        candidate = Path(root) / rel
        if candidate.is_file() and candidate.suffix.lower() == ".safetensors":
            if not _inside_model_folders(candidate):
                raise ValueError(f"{input_name}: {text!r} is a link to {os.path.realpath(candidate)}, outside "
                                 f"ComfyUI's model folders; copy the file into models/{TEXT_ENCODERS}/")
            return str(candidate)
    raise ValueError(f"{input_name}: no folder {str(rel)!r} in {', '.join(star_folders())} and no .safetensors file "
                     f"{str(rel)!r} in {', '.join(text_encoders + star_folders())}; put the Qwen2.5-VL folder in "
                     f"models/{FOLDER}/ (or its text-encoder file in models/{TEXT_ENCODERS}/), or leave this empty "
                     f"to use the checkpoint's own")


def input_folder(text: str, input_name: str = "folder") -> Path:
    """A training folder inside ComfyUI's input directory."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{input_name}: is empty; name a folder inside ComfyUI's input directory")
    rel = _relative(text, input_name)
    root = Path(folder_paths.get_input_directory()).resolve()
    folder = (root / rel).resolve()
    if root != folder and root not in folder.parents:
        raise ValueError(f"{input_name}: {text!r} leads outside ComfyUI's input directory")
    if not folder.is_dir():
        raise ValueError(f"{input_name}: no folder {str(rel)!r} in ComfyUI's input directory ({root})")
    return folder


def save_path(prefix: str, input_name: str = "filename_prefix") -> Path:
    """The next free `models/star/<prefix>_00001.safetensors` (sub-folders allowed, never outside)."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(f"{input_name}: is empty; give a file name prefix such as 'star_finetune'")
    rel = _relative(prefix, input_name)
    root = Path(star_folders()[0]).resolve()
    target_dir = (root / rel).parent.resolve()
    if root != target_dir and root not in target_dir.parents:
        raise ValueError(f"{input_name}: {prefix!r} leads outside models/{FOLDER}/")
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = rel.name
    pattern = re.compile(re.escape(stem) + r"_(\d{5,})\.safetensors$")
    used = [int(m.group(1)) for f in os.listdir(target_dir) if (m := pattern.match(f))]
    return target_dir / f"{stem}_{max(used, default=0) + 1:05d}.safetensors"


def fingerprint(path: Path | None):
    """What identifies a file's content cheaply: a replaced file gets a new fingerprint."""
    if path is None:
        from comfy_star.pipeline import DEFAULT_CHECKPOINT
        path = DEFAULT_CHECKPOINT
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


def folder_fingerprint(folder: Path):
    entries = []
    for dirpath, _, files in os.walk(folder):
        for f in sorted(files):
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(dirpath, f), folder), st.st_size, st.st_mtime_ns))
    return (str(folder), tuple(sorted(entries)))
