"""Near misses: a scene that breaks a caption's promise in one way, its layout otherwise kept.

Preference tuning (train/preference.py) asks the stack to rate a caption's render above a near
miss of it. The misses are the stack's own failures (docs/star-shapes-training.md § Where
ShapesEval fails): the first object's kind copied to the second, colours swapped between two
objects, the two places swapped, a shape too many or too few, a wrong kind or colour. Each one is
checked against the spec (detector.spec_failures), so a pair never teaches the stack to dislike
an image that meets its caption.
"""
from __future__ import annotations

import random
from dataclasses import replace

from .detector import spec_failures
from .shapes import COLORS, SHAPES, Scene, fits, place


def _two(scene: Scene, rng: random.Random, differ) -> tuple[int, int] | None:
    """Indices of two shapes for which differ(a, b) holds, or None."""
    pairs = [(i, j) for i in range(len(scene.shapes)) for j in range(len(scene.shapes))
             if i != j and differ(scene.shapes[i], scene.shapes[j])]
    return rng.choice(pairs) if pairs else None


def _with(scene: Scene, changes: dict[int, object]) -> Scene:
    return Scene([changes.get(i, s) for i, s in enumerate(scene.shapes)], scene.background)


def copy_kind(scene: Scene, rng: random.Random) -> Scene | None:
    """One shape drawn as another's kind: "a circle and a square" → two circles."""
    ij = _two(scene, rng, lambda a, b: a.kind != b.kind)
    if ij is None:
        return None
    i, j = ij
    return _with(scene, {j: replace(scene.shapes[j], kind=scene.shapes[i].kind)})


def _change_one(scene: Scene, rng: random.Random, field: str, values) -> Scene | None:
    """One shape's `field` ("kind" or "color") set to another of `values`."""
    if not scene.shapes:
        return None
    i = rng.randrange(len(scene.shapes))
    now = getattr(scene.shapes[i], field)
    return _with(scene, {i: replace(scene.shapes[i], **{field: rng.choice([v for v in values if v != now])})})


def other_kind(scene: Scene, rng: random.Random) -> Scene | None:
    return _change_one(scene, rng, "kind", SHAPES)


def other_color(scene: Scene, rng: random.Random) -> Scene | None:
    return _change_one(scene, rng, "color", list(COLORS))


def swap_colors(scene: Scene, rng: random.Random) -> Scene | None:
    """Two shapes trade colours: "a red circle and a blue square" → a blue circle and a red square."""
    ij = _two(scene, rng, lambda a, b: a.color != b.color)
    if ij is None:
        return None
    (i, j), shapes = ij, scene.shapes
    return _with(scene, {i: replace(shapes[i], color=shapes[j].color), j: replace(shapes[j], color=shapes[i].color)})


def swap_places(scene: Scene, rng: random.Random) -> Scene | None:
    """Two shapes trade places (each keeps its size), when both still fit: a relation turned round."""
    ij = _two(scene, rng, lambda a, b: (a.kind, a.color) != (b.kind, b.color))
    if ij is None:
        return None
    (i, j), shapes = ij, scene.shapes
    moved = {i: replace(shapes[i], x=shapes[j].x, y=shapes[j].y), j: replace(shapes[j], x=shapes[i].x, y=shapes[i].y)}
    miss = _with(scene, moved)
    others = lambda k: [s for n, s in enumerate(miss.shapes) if n != k]
    return miss if all(fits(miss.shapes[k], others(k)) for k in (i, j)) else None


def drop_one(scene: Scene, rng: random.Random) -> Scene | None:
    if len(scene.shapes) < 2:
        return None
    i = rng.randrange(len(scene.shapes))
    return Scene([s for n, s in enumerate(scene.shapes) if n != i], scene.background)


def add_one(scene: Scene, rng: random.Random) -> Scene | None:
    """One more shape, a copy's kind and colour half of the time (one too many when counting)."""
    like = rng.choice(scene.shapes) if scene.shapes and rng.random() < 0.5 else None
    pick = (like.kind, like.color) if like else (rng.choice(SHAPES), rng.choice(list(COLORS)))
    extra = place([pick], rng, others=scene.shapes)
    return None if extra is None else Scene(scene.shapes + extra, scene.background)


MISSES = (copy_kind, other_kind, other_color, swap_colors, swap_places, drop_one, add_one)


def near_miss(spec: dict, scene: Scene, rng: random.Random, tries: int = 20) -> Scene | None:
    """A scene like `scene` (which meets `spec`) that does not meet it, by one of MISSES drawn at
    random; None if `tries` draws found none (rare: a miss that cannot apply is drawn again)."""
    if spec_failures(scene, spec):
        raise ValueError(f"the scene does not meet its spec to begin with: {spec_failures(scene, spec)}")
    for _ in range(tries):
        miss = rng.choice(MISSES)(scene, rng)
        if miss is not None and spec_failures(miss, spec):
            return miss
    return None
