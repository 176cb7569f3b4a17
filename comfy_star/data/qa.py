"""Questions about a scene with short canonical answers (one word or a digit), and a caption.

Every question is asked only where its answer is beyond doubt: "what colour is the square?"
needs exactly one square, "left or right" needs the two shapes clearly apart on that axis.
"""
from __future__ import annotations

import random

from .shapes import COLORS, SHAPES, Scene, Shape, article, name_of, region, region_is_clear

COLOUR = ("colour", "color")
REGION_WORDS = {"top-left": "at the top left", "top": "at the top", "top-right": "at the top right",
                "left": "on the left", "center": "in the center", "right": "on the right",
                "bottom-left": "at the bottom left", "bottom": "at the bottom", "bottom-right": "at the bottom right"}


def question_for(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """(question, answer), the question type drawn evenly among those that apply."""
    return question_with_kind(scene, rng)[:2]


def question_with_kind(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """(question, answer, kind), kind one of QUESTION_KINDS; the same draws as question_for."""
    askers = [ask_count, ask_color, ask_shape, ask_side, ask_where, ask_background, ask_exists]
    rng.shuffle(askers)
    for ask in askers:
        qa = ask(scene, rng)
        if qa:
            return (*qa, ask.__name__[4:])
    return (*ask_background(scene, rng), "background")


QUESTION_KINDS = ("count", "color", "shape", "side", "where", "background", "exists")


def ask_count(scene, rng):
    target = rng.choice(["kind", "color", "all", "both"])
    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    if target == "all":
        n, what = len(scene.shapes), rng.choice(["shapes", "objects"])
    elif target == "kind":
        n, what = sum(s.kind == kind for s in scene.shapes), kind + "s"
    elif target == "color":
        n, what = sum(s.color == color for s in scene.shapes), f"{color} shapes"
    else:
        n, what = sum((s.kind, s.color) == (kind, color) for s in scene.shapes), f"{color} {kind}s"
    template = rng.choice(["how many {w} are there?", "how many {w} are in the image?", "count the {w}.",
                           "how many {w} can you see?", "number of {w}?"])
    return template.format(w=what), str(n)


def ask_color(scene, rng):
    unique = [s for s in scene.shapes if sum(t.kind == s.kind for t in scene.shapes) == 1]
    if not unique:
        return None
    s = rng.choice(unique)
    template = rng.choice(["what {c} is the {k}?", "which {c} is the {k}?", "what is the {c} of the {k}?",
                           "the {k} is what {c}?"])
    return template.format(c=rng.choice(COLOUR), k=s.kind), s.color


def ask_shape(scene, rng):
    unique = [s for s in scene.shapes if sum(t.color == s.color for t in scene.shapes) == 1]
    if not unique:
        return None
    s = rng.choice(unique)
    template = rng.choice(["what shape is the {c} object?", "what shape is {c}?", "which shape is {c}?",
                           "what is the {c} shape?", "what kind of shape is the {c} one?"])
    return template.format(c=s.color), s.kind


def ask_side(scene, rng):
    """Left or right / above or below, between two shapes clearly apart on that axis."""
    named = [(s, name_of(s, scene)) for s in scene.shapes]
    pairs = [(a, na, b, nb) for a, na in named for b, nb in named if a is not b and na and nb]
    rng.shuffle(pairs)
    for a, na, b, nb in pairs:
        if rng.random() < 0.5 and abs(a.x - b.x) >= a.size + b.size:
            return f"is the {na} left or right of the {nb}?", "left" if a.x < b.x else "right"
        if abs(a.y - b.y) >= a.size + b.size:
            return f"is the {na} above or below the {nb}?", "above" if a.y < b.y else "below"
    return None


def ask_where(scene, rng):
    """Which part of the image (a 3×3 grid) holds a shape, for one well inside its cell."""
    cands = [(s, name_of(s, scene)) for s in scene.shapes if name_of(s, scene) and region_is_clear(s)]
    if not cands:
        return None
    s, name = rng.choice(cands)
    return rng.choice(["where is the {n}?", "in which part of the image is the {n}?"]).format(n=name), region(s)


def ask_background(scene, rng):
    q = rng.choice(["what {c} is the background?", "what is the background {c}?", "which {c} is the background?"])
    return q.format(c=rng.choice(COLOUR)), scene.background


def ask_exists(scene, rng):
    """Yes half the time: ask about a shape that is there, or one that is not."""
    present = {(s.kind, s.color) for s in scene.shapes}
    if rng.random() < 0.5 and scene.shapes:
        s = rng.choice(scene.shapes)
        kind, color = s.kind, s.color
    else:
        absent = [(k, c) for k in SHAPES for c in COLORS if (k, c) not in present]
        kind, color = rng.choice(absent)
    template = rng.choice(["is there {art} {c} {k}?", "is there {art} {c} {k} in the image?", "do you see {art} {c} {k}?",
                           "does the picture contain {art} {c} {k}?"])
    answer = "yes" if (kind, color) in present else "no"
    return template.format(art=article(color), c=color, k=kind), answer


def describe(scene: Scene) -> str:
    """The canonical caption: every shape with its place, in reading order, then the background.

    "a red circle at the top left and a blue square on the right, on a white background"
    """
    ordered = sorted(scene.shapes, key=lambda s: (min(int(s.y * 3), 2), s.x))
    return f"{join_words([_shape_words(s) for s in ordered]) or 'nothing'}, on a {scene.background} background"


def join_words(parts: list[str]) -> str:
    """["a", "b", "c"] → "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _shape_words(s: Shape) -> str:
    return f"{article(s.color)} {s.color} {s.kind} {REGION_WORDS[region(s)]}"
