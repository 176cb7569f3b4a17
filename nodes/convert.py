"""ComfyUI IMAGE ⇄ STAR tensors, written once.

ComfyUI IMAGE: (B, H, W, C) float in [0, 1], channels last.
STAR:          (B, 3, H, W) float in [-1, 1], channels first (what `STAR.decode_*` return).

Rules for what an IMAGE may hold (each refusal says which input and what to change):
- 3 channels (RGB): used as is.
- 4 channels (RGBA): composited over white, `rgb * a + (1 - a)`. A transparent pixel has no
  colour of its own; white is what a viewer shows behind it and what Shapes scenes' light
  backgrounds are closest to. Composite over another colour first if you need one.
- 1 channel (grey): repeated to RGB (grey is exactly representable in RGB).
- 2 channels (grey + alpha): composited over white, then repeated to RGB.
- any other channel count, a tensor that is not 4-D (B, H, W, C), an empty batch or image,
  and NaN / ±inf values are refused. Finite values outside [0, 1] are clamped (several core
  nodes overshoot slightly).
- Non-square images are resized (stretched) to the model's square input by the library; crop
  first with a core node (e.g. ImageCrop) to keep the aspect.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if hasattr(x, "shape") else f"a {type(x).__name__}"


def check_image(image, name: str = "image") -> torch.Tensor:
    """A valid IMAGE → (B, H, W, 3) float32 in [0, 1] on the CPU, following the module's rules."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected an IMAGE tensor (B, H, W, C), got {_describe(image)}")
    if image.ndim != 4:
        hint = " (a MASK? convert it with the core 'Convert Mask to Image' node)" if image.ndim == 3 else ""
        raise ValueError(f"{name}: expected an IMAGE of 4 dimensions (batch, height, width, channels), "
                         f"got {_describe(image)}{hint}")
    b, h, w, c = image.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{name}: the image batch is empty ({_describe(image)}); connect a node that makes an image")
    if c not in (1, 2, 3, 4):
        raise ValueError(f"{name}: {c} channels is not an image ComfyUI can show; expected RGB (3), "
                         f"RGBA (4) or grey (1) in the last dimension, got {_describe(image)}")
    x = image.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the image holds NaN or infinite values; fix the node that made it")
    x = x.clamp(0.0, 1.0)
    if c in (2, 4):  # composite over white
        alpha = x[..., -1:]
        x = x[..., :-1] * alpha + (1.0 - alpha)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    return x.contiguous()


def image_to_star(image, name: str = "image") -> torch.Tensor:
    """IMAGE (B, H, W, C) [0, 1] → (B, 3, H, W) [-1, 1]."""
    return check_image(image, name).permute(0, 3, 1, 2) * 2.0 - 1.0


def star_to_image(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) [-1, 1] → IMAGE (B, H, W, 3) float32 [0, 1] on the CPU."""
    return ((x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 1).contiguous()


def image_to_pil(image, name: str = "image") -> list[Image.Image]:
    """IMAGE → list of RGB PIL images (one per batch item)."""
    arr = (check_image(image, name).numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in arr]


def pil_to_image(images) -> torch.Tensor:
    """One PIL image or a list of same-sized ones → IMAGE (B, H, W, 3) [0, 1]."""
    if isinstance(images, Image.Image):
        images = [images]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr)
