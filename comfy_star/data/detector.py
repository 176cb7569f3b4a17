"""A classical detector that reads a Shapes scene back from pixels, and GenEval-style scoring.

    background   the median of the border pixels, snapped to the nearest BACKGROUNDS colour
    colours      each pixel's hue, snapped to the nearest palette hue; pixels with little chroma
                 (max - min over RGB) belong to the background. Hue, not RGB distance, because
                 blur and noise mix a shape's colour with the achromatic background, which moves
                 it in RGB towards other palette colours (red + white ≈ pink) but keeps its hue.
    objects      4-connected regions of one colour; regions too small, or too thin to survive
                 one erosion (blur rings, noise), are dropped; each is then cut at half its own
                 chroma, which is where render() put the edge before any blur
    kind         box fill ratios, see measure()

Measured: detect(render(random_scene)) recovers every scene (kinds, colours, places within
1.5 px) at 64 and 128 px, and after GaussianBlur(0.7) + noise std 8 (tests/test_shapes_world.py).
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from .shapes import BACKGROUNDS, COLORS, Scene, Shape, relation

PALETTE = tuple(COLORS)
PALETTE_HUES = np.array([colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360 for rgb in COLORS.values()])
MIN_CHROMA = 60      # backgrounds (+ noise) stay well below; palette colours are >= 160
MAX_HUE_GAP = 25     # degrees from the nearest palette hue; further off is no palette colour
MIN_AREA = 0.006     # of the image: 25 px at 64 px, against a smallest shape of ~100 px
MIN_CORE = 0.002     # pixels left after one erosion, of the image: 8 px at 64 px


def to_array(image) -> np.ndarray:
    """PIL image, HxWx3 uint8, or HxWx3 float in [0, 1] (ComfyUI's IMAGE, batch of 1) → HxWx3 uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dtype.kind == "f":
        arr = np.clip(arr * 255 + 0.5, 0, 255)
    return arr[..., :3].astype(np.uint8)


def detect(image) -> Scene:
    pixels = to_array(image).astype(np.int32)
    hue, chroma = hue_chroma(pixels)
    labels = color_labels(hue, chroma)
    comps = connected_components(labels)
    cores = np.zeros_like(labels, bool)
    for c in range(len(PALETTE)):
        cores |= erode(labels == c)
    n_pixels = labels.size
    area = np.bincount(comps[comps >= 0], minlength=comps.max() + 1)
    core_area = np.bincount(comps[cores], minlength=len(area))
    shapes = []
    for i in np.flatnonzero((area >= MIN_AREA * n_pixels) & (core_area >= MIN_CORE * n_pixels)):
        region = comps == i
        # Cut at half the shape's own chroma: where a blurred edge crosses 50 %, as in render().
        mask = region & (chroma >= np.median(chroma[region & cores]) / 2)
        shapes.append(measure(mask, PALETTE[labels[region][0]]))
    shapes.sort(key=lambda s: (s.x, s.y))
    return Scene(shapes, background_of(pixels))


def background_of(pixels: np.ndarray) -> str:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    median = np.median(border, axis=0)
    return min(BACKGROUNDS, key=lambda name: np.sum((median - BACKGROUNDS[name]) ** 2))


def color_labels(hue: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """HxW palette index per pixel; -1 for background and colours off the palette."""
    gap = np.abs(hue[..., None] - PALETTE_HUES)
    gap = np.minimum(gap, 360 - gap)
    labels = gap.argmin(-1)
    labels[(chroma < MIN_CHROMA) | (gap.min(-1) > MAX_HUE_GAP)] = -1
    return labels


def hue_chroma(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue in degrees and chroma (max - min) of HxWx3 int pixels."""
    r, g, b = (pixels[..., i].astype(np.float64) for i in range(3))
    hi, lo = pixels.max(-1), pixels.min(-1)
    chroma = (hi - lo).astype(np.float64)
    c = np.maximum(chroma, 1e-9)
    hue = np.where(hi == pixels[..., 0], ((g - b) / c) % 6,
                   np.where(hi == pixels[..., 1], (b - r) / c + 2, (r - g) / c + 4))
    return hue * 60, chroma


def connected_components(labels: np.ndarray) -> np.ndarray:
    """HxW component ids (0..n-1, -1 outside) of 4-connected pixels with the same label >= 0.

    Each pixel holds the smallest pixel index it has heard of; neighbours of the same label
    exchange theirs, and pointer jumping (look up the label of your label) makes it fast.
    """
    h, w = labels.shape
    valid = labels >= 0
    down = valid[1:] & (labels[1:] == labels[:-1])      # (i, j) joins (i + 1, j)
    right = valid[:, 1:] & (labels[:, 1:] == labels[:, :-1])
    comp = np.where(valid, np.arange(h * w).reshape(h, w), h * w)
    while True:
        new = comp.copy()
        new[1:] = np.where(down, np.minimum(new[1:], comp[:-1]), new[1:])
        new[:-1] = np.where(down, np.minimum(new[:-1], comp[1:]), new[:-1])
        new[:, 1:] = np.where(right, np.minimum(new[:, 1:], comp[:, :-1]), new[:, 1:])
        new[:, :-1] = np.where(right, np.minimum(new[:, :-1], comp[:, 1:]), new[:, :-1])
        new[valid] = new.ravel()[new[valid]]
        if np.array_equal(new, comp):
            break
        comp = new
    ids = np.full(h * w, -1)
    roots = np.unique(comp[valid])
    ids[roots] = np.arange(len(roots))
    return np.where(valid, ids[np.minimum(comp, h * w - 1)], -1)


def erode(mask: np.ndarray) -> np.ndarray:
    """Keep pixels whose 4 neighbours are all in the mask: strokes <= 2 px wide vanish."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0] = out[-1] = out[:, 0] = out[:, -1] = False
    return out


def measure(mask: np.ndarray, color: str) -> Shape:
    """Kind, centre and half-extent of one region.

    Fill ratios of the axis box (f_axis) and of the 45°-turned box (f_diag): a square fills its
    axis box and half its diagonal box, a diamond the reverse, a circle ~0.78 of both. A
    triangle is told by its weight below the middle row (3/4 of its area, the others 1/2).
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    area = len(xs)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    f_axis = area / ((x1 - x0 + 1) * (y1 - y0 + 1))
    u, v = xs + ys, xs - ys
    f_diag = area / ((np.ptp(u) + 1) * (np.ptp(v) + 1) / 2)
    middle = (y0 + y1) / 2
    asymmetry = (np.sum(ys > middle) - np.sum(ys < middle)) / area
    if asymmetry >= 0.18:
        kind = "triangle"
    elif f_axis - f_diag > 0.16:
        kind = "square"
    elif f_axis - f_diag < -0.13:
        kind = "diamond"
    else:
        kind = "circle"
    half_extent = max(x1 - x0 + 1, y1 - y0 + 1) / 2
    return Shape(kind, color, float((x0 + x1 + 1) / 2 / w), float((y0 + y1 + 1) / 2 / h), float(half_extent / w))


# --- scoring -------------------------------------------------------------------------------

def _fits(shape: Shape, obj: dict) -> bool:
    return obj.get("kind") in (None, shape.kind) and obj.get("color") in (None, shape.color)


def spec_failures(scene: Scene, spec: dict, exclusive: bool = True) -> list[str]:
    """What a scene gets wrong against a spec (see captions.py); [] when it satisfies it.

    Objects are counted exactly; with `exclusive` nothing else may be in the scene (training
    captions promise that). A relation compares the one shape of object a with that of b.
    """
    wrong = []
    if spec.get("background") and scene.background != spec["background"]:
        wrong.append(f"background {scene.background}, wanted {spec['background']}")
    groups = [[s for s in scene.shapes if _fits(s, o)] for o in spec["objects"]]
    for obj, group in zip(spec["objects"], groups):
        if len(group) != obj.get("count", 1):
            wrong.append(f"{len(group)} × {obj.get('color') or 'any'} {obj.get('kind') or 'shape'}, "
                         f"wanted {obj.get('count', 1)}")
    expected = sum(o.get("count", 1) for o in spec["objects"])
    if exclusive and len(scene.shapes) != expected:
        wrong.append(f"{len(scene.shapes)} shapes in all, wanted {expected}")
    rel = spec.get("relation")
    if rel and not wrong:
        got = relation(groups[rel["a"]][0], groups[rel["b"]][0])
        if got != rel["rel"]:
            wrong.append(f"a is {got} b, wanted {rel['rel']}")
    return wrong


def matches_spec(scene: Scene, spec: dict, exclusive: bool = True) -> bool:
    return not spec_failures(scene, spec, exclusive)


def scenes_match(found: Scene, expected: Scene, tol: float = 3 / 64) -> bool:
    """Same background and shapes (kind, colour), each centre within `tol` of its partner's."""
    if found.background != expected.background or len(found.shapes) != len(expected.shapes):
        return False
    left = list(found.shapes)
    for want in expected.shapes:
        near = [s for s in left if (s.kind, s.color) == (want.kind, want.color)
                and abs(s.x - want.x) <= tol and abs(s.y - want.y) <= tol]
        if not near:
            return False
        left.remove(min(near, key=lambda s: abs(s.x - want.x) + abs(s.y - want.y)))
    return True
