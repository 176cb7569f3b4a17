"""Folder datasets for your own images, and a writer of tiny Shapes-world examples in the same layouts.

CaptionFolder: every image under `root` (any depth; .png .jpg .jpeg .webp) with a caption in a
same-named .txt beside it:

    root/cat.png   root/cat.txt        ("a cat on a sofa")
    root/more/dog.jpg   root/more/dog.txt

EditFolder: three folders matched by file name (without extension):

    root/source/NAME.png         the image before the edit
    root/target/NAME.png         the image after it (resized to the source's size if it differs)
    root/instructions/NAME.txt   the instruction ("make the sky pink")

Files are checked once, when the dataset is made: an image that does not open, a missing or
empty caption, a pair without its partner is skipped - logged as a warning on the
"comfy_star.data" logger and listed in `.skipped` as (path, reason). Transparent images are
laid on white, greyscale and palette images become RGB. A folder with nothing usable raises
ValueError naming the folder and the layout it expected.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("comfy_star.data")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def load_rgb(path: Path) -> tuple[Image.Image | None, str]:
    """(RGB image, "") or (None, why it could not be read)."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img), ""
    except Exception as e:  # PIL raises many kinds; any of them means "skip this file"
        return None, f"unreadable image ({type(e).__name__}: {e})"


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale: scale to 8 bits
        a = np.asarray(img, np.float64)
        return Image.fromarray((a / max(a.max(), 1e-9) * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def read_text(path: Path) -> tuple[str | None, str]:
    if not path.is_file():
        return None, f"missing {path.name}"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable {path.name} ({type(e).__name__})"
    return (text, "") if text else (None, f"empty {path.name}")


def square(img: Image.Image, size: int | None) -> Image.Image:
    """Shorter side to `size`, then the centre square; unchanged when size is None."""
    if size is None:
        return img
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


class _Folder:
    def __init__(self, root, size: int | None = None):
        self.root, self.size = Path(root), size
        self.items: list[tuple] = []
        self.skipped: list[tuple[Path, str]] = []
        if not self.root.is_dir():
            raise ValueError(f"{self.root} is not a folder. {self.LAYOUT}")

    def skip(self, path: Path, reason: str):
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append((path, reason))

    def check_not_empty(self):
        if not self.items:
            raise ValueError(f"no usable examples in {self.root} ({len(self.skipped)} skipped). {self.LAYOUT}")

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class CaptionFolder(_Folder):
    LAYOUT = "Expected images (.png .jpg .jpeg .webp) each with a same-named .txt caption beside it."

    def __init__(self, root, size: int | None = None):
        super().__init__(root, size)
        for path in images_in(self.root):
            caption, why = read_text(path.with_suffix(".txt"))
            image, why_image = load_rgb(path) if caption else (None, "")
            if caption is None or image is None:
                self.skip(path, why or why_image)
            else:
                self.items.append((path, caption))
        self.check_not_empty()

    def __getitem__(self, i: int) -> dict:
        path, caption = self.items[i]
        return {"image": square(load_rgb(path)[0], self.size), "caption": caption}


class EditFolder(_Folder):
    LAYOUT = ("Expected root/source/NAME.png, root/target/NAME.png and root/instructions/NAME.txt "
              "(any of .png .jpg .jpeg .webp) for each edit NAME.")

    def __init__(self, root, size: int | None = None):
        super().__init__(root, size)
        targets = {p.stem: p for p in images_in(self.root / "target")} if (self.root / "target").is_dir() else {}
        for source in images_in(self.root / "source") if (self.root / "source").is_dir() else []:
            target = targets.get(source.stem)
            instruction, why = read_text(self.root / "instructions" / f"{source.stem}.txt")
            if target is None:
                why = f"no target/{source.stem}.* to go with it"
            elif instruction is not None:
                why = next((w for w in (load_rgb(source)[1], load_rgb(target)[1]) if w), "")
            if why:
                self.skip(source, why)
            else:
                self.items.append((source, target, instruction))
        self.check_not_empty()

    def __getitem__(self, i: int) -> dict:
        source, target, instruction = self.items[i]
        src, tgt = square(load_rgb(source)[0], self.size), square(load_rgb(target)[0], self.size)
        if tgt.size != src.size:  # an edit pair must line up pixel for pixel
            tgt = tgt.resize(src.size, Image.Resampling.LANCZOS)
        return {"source": src, "target": tgt, "instruction": instruction}


def write_shapes_folder(root, n: int, seed: int = 0, kind: str = "caption", size: int = 64) -> Path:
    """n Shapes-world examples in CaptionFolder ("caption") or EditFolder ("edit") layout."""
    from .stream import sample_edit, sample_t2i
    root, rng = Path(root), random.Random(f"shapes-folder:{seed}")
    for i in range(n):
        name = f"{i:05d}"
        if kind == "caption":
            root.mkdir(parents=True, exist_ok=True)
            caption, image, _ = sample_t2i(rng, size)
            image.save(root / f"{name}.png")
            (root / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        elif kind == "edit":
            source, instruction, target, _ = sample_edit(rng, size)
            for sub in ("source", "target", "instructions"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            source.save(root / "source" / f"{name}.png")
            target.save(root / "target" / f"{name}.png")
            (root / "instructions" / f"{name}.txt").write_text(instruction + "\n", encoding="utf-8")
        else:
            raise ValueError(f"kind must be 'caption' or 'edit', not {kind!r}")
    return root
