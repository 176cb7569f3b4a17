"""Edit triples: a scene, an instruction, and the scene the instruction asks for.

Instructions name shapes only where the name picks out one shape ("the circle", "the red
circle"). Shapes the edit is not about keep their exact kind, colour, place and size, and
`changed_boxes` (normalised x0, y0, x1, y1, padded by a pixel at 64 px) cover every pixel the
edit may change, so evaluation can measure how well the rest of the image was kept.
"""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from .detector import scenes_match
from .shapes import BACKGROUNDS, COLORS, SHAPES, Scene, Shape, article, fits, name_of, place
from .weights import parse_weights

EDIT_KINDS = ("recolor", "add", "remove", "move", "replace", "background")
MAX_SHAPES = 4
PAD = 1 / 64
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DIRECTION_WORDS = {"left": ["to the left", "left"], "right": ["to the right", "right"],
                   "up": ["up", "upwards"], "down": ["down", "downwards"]}
MOVE_STEP = (0.15, 0.3)  # how far `move` shifts a shape, as a share of the image
TOL = 3 / 64             # the detector's tolerance on a centre (`scenes_match`)


def edit_for(scene: Scene, rng: random.Random, kind: str | None = None, weights: dict[str, float] | None = None):
    """(instruction, target_scene, edit_kind, changed_boxes); kind None draws one that applies, the
    kinds evenly or in proportion to `weights` (name → weight, 1 for a kind it leaves out)."""
    kinds = [kind] if kind else _weighted_order(rng, weights) if weights else rng.sample(EDIT_KINDS, len(EDIT_KINDS))
    for k in kinds:
        made = EDITS[k](scene, rng)
        if made:
            instruction, target, boxes = made
            return instruction, target, k, boxes
    raise ValueError(f"no {kind or 'edit'} applies to this scene: {scene}")


def _weighted_order(rng: random.Random, weights: dict[str, float]) -> list[str]:
    """The kinds in the order they are tried: each next one drawn by weight from those left (weight 0: never)."""
    left = [k for k in EDIT_KINDS if weights.get(k, 1.0) > 0]
    order = []
    while left:
        order.append(rng.choices(left, [weights.get(k, 1.0) for k in left])[0])
        left.remove(order[-1])
    return order


def parse_edit_weights(text: str) -> dict[str, float]:
    """"move=3,add=2" → {"move": 3.0, "add": 2.0}; "" → {}. Names the bad part."""
    return parse_weights(text, EDIT_KINDS, "edit")


def followed(found: Scene, source: Scene, target: Scene, kind: str, tol: float = TOL) -> bool:
    """Does `found` (the detector's reading of an edited image) do what the instruction said?

    The target scene is one render of the instruction. Recolour, remove, replace and background
    fix every shape, so `found` must match it. "add a red circle" and "move the circle left" do
    not fix where: an added shape may go anywhere, and a moved one must go the named way by at
    least the shortest step the data moves (less the tolerance) and stay on its line. The shapes
    the edit is not about must stay where they were, in every case.
    """
    if kind not in ("add", "move"):
        return scenes_match(found, target, tol)
    old = [s for s in source.shapes if s not in target.shapes]  # the moved shape where it was (move)
    new = [s for s in target.shapes if s not in source.shapes]  # the added or moved shape where it went
    kept = Scene([s for s in source.shapes if s not in old], target.background)
    for cand in found.shapes:
        if (cand.kind, cand.color) != (new[0].kind, new[0].color):
            continue
        rest = list(found.shapes)
        rest.remove(cand)
        if not scenes_match(Scene(rest, found.background), kept, tol):
            continue
        if kind == "add" or _moved_along(old[0], new[0], cand, tol):
            return True
    return False


def _moved_along(was: Shape, target: Shape, got: Shape, tol: float) -> bool:
    """`got` lies from `was` the way `target` does: far enough along that direction, not across it."""
    dx, dy = np.sign(target.x - was.x), np.sign(target.y - was.y)  # one of DIRECTIONS
    along = (got.x - was.x) * dx + (got.y - was.y) * dy
    across = abs((got.x - was.x) * dy) + abs((got.y - was.y) * dx)
    return along >= MOVE_STEP[0] - tol and across <= tol


def box(shape: Shape) -> tuple[float, float, float, float]:
    r = shape.size + PAD
    return (max(shape.x - r, 0.0), max(shape.y - r, 0.0), min(shape.x + r, 1.0), min(shape.y + r, 1.0))


def unchanged_mask(boxes, size: int) -> np.ndarray:
    """(size, size) bool, True on the pixels no changed box touches."""
    keep = np.ones((size, size), bool)
    for x0, y0, x1, y1 in boxes:
        keep[int(y0 * size):int(np.ceil(y1 * size)), int(x0 * size):int(np.ceil(x1 * size))] = False
    return keep


def _named(scene, rng):
    """A random shape with a unique name, or (None, None)."""
    cands = [(s, name_of(s, scene)) for s in scene.shapes if name_of(s, scene)]
    return rng.choice(cands) if cands else (None, None)


def _swap(scene, old, new) -> Scene:
    return Scene([new if s is old else s for s in scene.shapes], scene.background)


def recolor(scene, rng):
    s, name = _named(scene, rng)
    if s is None:
        return None
    color = rng.choice([c for c in COLORS if c != s.color])
    template = rng.choice(["make the {n} {c}", "colour the {n} {c}", "color the {n} {c}", "paint the {n} {c}",
                           "change the colour of the {n} to {c}", "change the color of the {n} to {c}",
                           "turn the {n} {c}", "recolor the {n} {c}"])
    return template.format(n=name, c=color), _swap(scene, s, replace(s, color=color)), [box(s)]


def add(scene, rng):
    if len(scene.shapes) >= MAX_SHAPES:
        return None
    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    new = place([(kind, color)], rng, others=scene.shapes)
    if new is None:
        return None
    np_ = f"{article(color)} {color} {kind}"
    template = rng.choice(["add {x}", "add {x} to the picture", "put {x} somewhere", "draw {x} as well",
                           "insert {x}", "also add {x}"])
    return template.format(x=np_), Scene(scene.shapes + new, scene.background), [box(new[0])]


def remove(scene, rng):
    s, name = _named(scene, rng)
    if s is None or len(scene.shapes) < 2:  # never leave an empty picture
        return None
    template = rng.choice(["remove the {n}", "delete the {n}", "erase the {n}", "take away the {n}",
                           "get rid of the {n}"])
    return template.format(n=name), Scene([t for t in scene.shapes if t is not s], scene.background), [box(s)]


def move(scene, rng, tries: int = 10):
    """Shift one shape 0.15-0.3 of the image up, down, left or right, into free space."""
    for _ in range(tries):
        s, name = _named(scene, rng)
        if s is None:
            return None
        direction = rng.choice(list(DIRECTIONS))
        dx, dy = DIRECTIONS[direction]
        step = rng.uniform(*MOVE_STEP)
        moved = replace(s, x=s.x + dx * step, y=s.y + dy * step)
        if fits(moved, [t for t in scene.shapes if t is not s]):
            template = rng.choice(["move the {n} {d}", "shift the {n} {d}", "push the {n} {d}", "slide the {n} {d}"])
            instruction = template.format(n=name, d=rng.choice(DIRECTION_WORDS[direction]))
            return instruction, _swap(scene, s, moved), [box(s), box(moved)]
    return None


def replace_kind(scene, rng):
    s, name = _named(scene, rng)
    if s is None:
        return None
    kind = rng.choice([k for k in SHAPES if k != s.kind])
    template = rng.choice(["turn the {n} into {a} {k}", "replace the {n} with {a} {k}", "change the {n} into {a} {k}",
                           "make the {n} {a} {k}", "swap the {n} for {a} {k}"])
    instruction = template.format(n=name, a=article(kind), k=kind)
    return instruction, _swap(scene, s, replace(s, kind=kind)), [box(s)]  # same colour, place and size


def background(scene, rng):
    color = rng.choice([b for b in BACKGROUNDS if b != scene.background])
    template = rng.choice(["change the background to {b}", "make the background {b}", "use a {b} background",
                           "set the background to {b}", "turn the background {b}"])
    return template.format(b=color), Scene(list(scene.shapes), color), [(0.0, 0.0, 1.0, 1.0)]


EDITS = {"recolor": recolor, "add": add, "remove": remove, "move": move, "replace": replace_kind,
         "background": background}
