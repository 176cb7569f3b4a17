"""A loss curve drawn with PIL (no plotting dependency): raw losses faint, a smoothed line bold,
labelled axes. Handles one step and a flat curve (ComfyUI's Plot Loss Graph divides by zero there)."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40


def _smooth(values: list[float], weight: float) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def loss_plot(losses: list[float], title: str = "STAR fine-tuning loss") -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = LEFT, TOP, W - RIGHT, H - BOTTOM
    d.text((x0, 6), title, fill=(0, 0, 0), font=font)
    values = [v for v in losses if math.isfinite(v)]
    if not values:
        d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
        d.text((x0 + 10, (y0 + y1) // 2), "no finite loss values", fill=(200, 0, 0), font=font)
        return img
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    n = len(losses)

    def xy(i, v):
        x = x0 + (x1 - x0) * (i / (n - 1) if n > 1 else 0.5)
        y = y1 - (y1 - y0) * (v - lo) / (hi - lo)
        return x, y

    for k in range(5):  # horizontal grid with loss labels
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        d.line([x0, y, x1, y], fill=(230, 230, 230))
        d.text((4, y - 6), f"{v:.3g}", fill=(0, 0, 0), font=font)
    for k in range(5):  # step labels
        i = round((n - 1) * k / 4) if n > 1 else 0
        x, _ = xy(i, lo)
        d.text((x - 8, y1 + 6), str(i + 1), fill=(0, 0, 0), font=font)
    d.text(((x0 + x1) // 2 - 12, H - 16), "step", fill=(0, 0, 0), font=font)
    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))

    pts = [xy(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    if len(pts) == 1:
        x, y = pts[0]
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    else:
        d.line(pts, fill=(170, 195, 235), width=1)
        smooth = _smooth([v for v in losses if math.isfinite(v)], 0.6 if n > 20 else 0.3)
        d.line([(p[0], xy(0, s)[1]) for p, s in zip(pts, smooth)], fill=(30, 90, 200), width=2)
    d.text((x1 - 150, 6), f"last {values[-1]:.4f}  min {min(values):.4f}", fill=(0, 0, 0), font=font)
    return img
