"""Latent codecs: images (B, 3, H, W) in [-1, 1] ↔ the latents the DiT denoises (B, C, H/f, W/f).

  VAELatents    Lumina-Image-2.0's AutoencoderKL (the FLUX VAE: 16 channels, f = 8), loaded lazily
                from `<lumina_path>/vae`; never part of our checkpoints.
  PixelLatents  an exact, invertible pixel-unshuffle (3·f² channels): the small models' "latent",
                no weights at all.

Both give `preview(latents)`: a cheap image of a latent for live previews.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DiffusionConfig

# ComfyUI's latent→RGB factors for the FLUX VAE (comfy/latent_formats.py, `Flux`), which Lumina2 uses;
# they act on the scaled latent, as ours are.
FLUX_RGB_FACTORS = [
    [-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778],
]
FLUX_RGB_BIAS = [-0.0329, -0.0718, -0.0851]


class PixelLatents(nn.Module):
    """(B, 3, H, W) → (B, 3·f², H/f, W/f) by pixel-unshuffle; exactly invertible."""

    def __init__(self, factor: int = 4):
        super().__init__()
        self.factor = factor
        self.channels = 3 * factor * factor

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.factor)

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents).clamp(-1, 1)


class VAELatents(nn.Module):
    """AutoencoderKL with its shift/scaling factors: z = (vae(x) - shift) * scale.

    Give `vae` (an AutoencoderKL), or `path` (a Lumina-Image-2.0 folder) to load `vae/` from on first
    use. The VAE runs in float32, as the release keeps it, on the device of what it is given. It is
    kept out of the module tree on purpose: it comes from the Lumina folder, so it is neither in our
    checkpoints' state dicts nor moved or cast with the decoder.
    """

    def __init__(self, vae=None, path: str | None = None, factor: int = 8, channels: int = 16):
        super().__init__()
        self.__dict__["vae"] = vae  # not a registered submodule (see above)
        self.path, self.factor, self.channels = path, factor, channels

    def _ready(self, device) -> nn.Module:
        if self.vae is None:
            self.__dict__["vae"] = load_vae(self.path)
        return self.vae.to(device=device, dtype=torch.float32)

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        vae = self._ready(images.device)
        dist = vae.encode(images.float()).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self._ready(latents.device)
        z = latents.float() / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return vae.decode(z, return_dict=False)[0]

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """A linear latent→RGB guess (no VAE pass), upsampled to the image size."""
        if latents.shape[1] != len(FLUX_RGB_FACTORS):
            return None
        w = torch.tensor(FLUX_RGB_FACTORS, dtype=torch.float32, device=latents.device)  # (16, 3)
        b = torch.tensor(FLUX_RGB_BIAS, dtype=torch.float32, device=latents.device)
        rgb = torch.einsum("bchw,cr->brhw", latents.float(), w) + b[:, None, None]
        return F.interpolate(rgb, scale_factor=self.factor, mode="nearest").clamp(-1, 1)


def load_vae(path: str | None):
    from diffusers import AutoencoderKL
    if not path or not (Path(path) / "vae").is_dir():
        raise FileNotFoundError(
            f"the diffusion decoder needs Lumina-Image-2.0's VAE: a folder with vae/ inside "
            f"(DiffusionConfig.lumina_path = {path!r})")
    return AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32).eval().requires_grad_(False)


def make_latents(config: DiffusionConfig) -> nn.Module:
    if config.latent == "pixels":
        codec = PixelLatents(config.latent_factor)
        if codec.channels != config.latent_channels:
            raise ValueError(f"pixel latents with factor {config.latent_factor} have {codec.channels} channels, "
                             f"the config says {config.latent_channels}")
        return codec
    if config.latent == "vae":
        return VAELatents(path=config.lumina_path, factor=config.latent_factor, channels=config.latent_channels)
    raise ValueError(f"unknown latent kind {config.latent!r}; use 'vae' or 'pixels'")
