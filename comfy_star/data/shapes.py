"""The Shapes world: flat shapes on a plain background, and a pixel-exact renderer.

Coordinates are normalised, so a scene renders the same at 64, 128 or 256 px: (x, y) is a
shape's centre in [0, 1] (y grows downwards, as in images) and `size` its half-extent. Every
kind fills the same box [x - size, x + size] × [y - size, y + size], so the box a detector
measures gives back centre and size whatever the kind.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# Saturated colours whose hues lie >= 27° apart (red 356°, orange 27°, yellow 54°, green 124°,
# cyan 188°, blue 231°, purple 275°, pink 318°): the detector tells them apart by hue alone,
# which blur and mixing with the (achromatic) background leave unchanged.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (235, 20, 35),
    "orange": (255, 115, 0),
    "yellow": (255, 230, 0),
    "green": (30, 190, 40),
    "cyan": (0, 200, 230),
    "blue": (30, 60, 230),
    "purple": (150, 40, 230),
    "pink": (255, 70, 200),
}
# Achromatic, so no background can be mistaken for a shape colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "diamond")

SIZE_RANGE = (7 / 64, 12 / 64)  # half-extent: 7-12 px at 64 px, readable yet 4 fit
MARGIN = 4 / 64                 # gap between any two shapes' boxes
EDGE = 2 / 64                   # gap between a shape and the image border
RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Shape:
    kind: str     # one of SHAPES
    color: str    # a key of COLORS
    x: float      # centre, normalised
    y: float
    size: float   # half-extent, normalised


@dataclass
class Scene:
    shapes: list[Shape] = field(default_factory=list)
    background: str = "white"


def shape_mask(shape: Shape, size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres fall inside the shape; no anti-aliasing."""
    centres = (np.arange(size) + 0.5) / size
    dx, dy, s = centres[None, :] - shape.x, centres[:, None] - shape.y, shape.size
    if shape.kind == "circle":
        return dx**2 + dy**2 <= s**2
    if shape.kind == "square":
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape.kind == "triangle":  # apex at the top, base at the bottom, as wide as it is tall
        return (np.abs(dy) <= s) & (np.abs(dx) <= (dy + s) / 2)
    if shape.kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= s
    raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {SHAPES}")


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Flat colours on a flat background, pixel-exact, so every pixel is a palette colour."""
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[:] = BACKGROUNDS[scene.background]
    for shape in scene.shapes:
        pixels[shape_mask(shape, size)] = COLORS[shape.color]
    return Image.fromarray(pixels)


# --- placement ---------------------------------------------------------------------------

def inside(shape: Shape) -> bool:
    lo, hi = shape.size + EDGE, 1 - shape.size - EDGE
    return lo <= shape.x <= hi and lo <= shape.y <= hi


def apart(a: Shape, b: Shape, margin: float = MARGIN) -> bool:
    """Boxes separated by at least `margin` along some axis, so shapes never touch."""
    gap = a.size + b.size + margin
    return abs(a.x - b.x) >= gap or abs(a.y - b.y) >= gap


def fits(shape: Shape, others: list[Shape]) -> bool:
    return inside(shape) and all(apart(shape, o) for o in others)


def random_shape(kind: str, color: str, rng: random.Random) -> Shape:
    s = rng.uniform(*SIZE_RANGE)
    lo, hi = s + EDGE, 1 - s - EDGE
    return Shape(kind, color, rng.uniform(lo, hi), rng.uniform(lo, hi), s)


def place(picks: list[tuple[str, str]], rng: random.Random, others=(), tries: int = 100) -> list[Shape] | None:
    """Shapes for (kind, colour) picks at random free places, or None when one did not fit."""
    placed = list(others)
    for kind, color in picks:
        for _ in range(tries):
            shape = random_shape(kind, color, rng)
            if fits(shape, placed):
                placed.append(shape)
                break
        else:
            return None
    return placed[len(others):]


def random_scene(rng: random.Random, n_min: int = 1, n_max: int = 4, kinds=SHAPES, colors=tuple(COLORS),
                 backgrounds=tuple(BACKGROUNDS)) -> Scene:
    """n_min..n_max shapes of random kind and colour (repeats allowed), none touching."""
    while True:
        n = rng.randint(n_min, n_max)
        shapes = place([(rng.choice(kinds), rng.choice(colors)) for _ in range(n)], rng)
        if shapes is not None:
            return Scene(shapes, rng.choice(backgrounds))


# --- where things are ----------------------------------------------------------------------

def relation(a: Shape, b: Shape) -> str:
    """Where a is relative to b, along the axis on which they are further apart."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def is_clear(a: Shape, b: Shape) -> bool:
    """The relation is beyond doubt: boxes apart on the main axis, which is twice the other."""
    dx, dy = abs(a.x - b.x), abs(a.y - b.y)
    main, other = max(dx, dy), min(dx, dy)
    return main >= a.size + b.size and main >= 2 * other


def first_token(shape: Shape, cells: int = 8) -> tuple[int, int]:
    """Where raster-order generation over a cells × cells token grid first meets the shape: (token index,
    pixel index) of its first pixel at 64 px, the token read row by row, the pixel breaking ties."""
    size = 64
    ys, xs = np.nonzero(shape_mask(shape, size))
    cell = size // cells
    return min(zip(((ys // cell) * cells + xs // cell).tolist(), (ys * size + xs).tolist()))


def region(shape: Shape) -> str:
    """Which cell of a 3×3 grid holds the centre: "top-left", "top", ..., "center", ..."""
    row = ("top", "", "bottom")[min(int(shape.y * 3), 2)]
    col = ("left", "", "right")[min(int(shape.x * 3), 2)]
    return "-".join(p for p in (row, col) if p) or "center"


def region_is_clear(shape: Shape, gap: float = 0.05) -> bool:
    """The centre lies at least `gap` away from the grid's lines, so region() is beyond doubt."""
    return all(abs(v - line) >= gap for v in (shape.x, shape.y) for line in (1 / 3, 2 / 3))


def name_of(shape: Shape, scene: Scene) -> str | None:
    """The shortest name that picks out `shape` alone ("circle", "red circle"), else None."""
    if sum(s.kind == shape.kind for s in scene.shapes) == 1:
        return shape.kind
    if sum(s.kind == shape.kind and s.color == shape.color for s in scene.shapes) == 1:
        return f"{shape.color} {shape.kind}"
    return None


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
