"""The diffusion decoder: VQ embeddings (+ text, + an optional source image) → image.

`DiffusionDecoder` holds the transformer, the latent codec and the config; `decode` is the sampling
loop (orchestration only: the model is in transformer.py, time in schedule.py); `training_loss` is
the flow-matching objective in the same convention.

Guidance rows, batched into one forward (the release's, `lumina2_decoder.py`):
  text-to-image  uncond (∅ text, no VQ)   image (∅ text, VQ)        full (text, VQ)
  edit           uncond (∅ text, no src)  image (∅ text, source)    full (text, source)   vq (text, VQ, no source)
  v = uncond + g·(full − image) + g_img·(image − uncond)  [+ g_vq·(vq − uncond) when editing]
With a source the VQ channels of the first three rows are zero, as the release trains and samples
them; the edited tokens enter through the vq row. Rows whose weight is 0 are not computed, and
outside `guidance_interval` only `full` (and `vq`) are (the release's cfg truncation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from ..config import DiffusionConfig, SamplingConfig
from .latents import make_latents
from .schedule import X_PREDICTION_MIN_SIGMA, make_scheduler, scheduler_config, shift_sigmas
from .transformer import STARDiffusionTransformer, build_transformer

_DEFAULTS = SamplingConfig()  # the one home of sampling defaults
Callback = Callable[[int, int, object], None]  # (step, total, preview (B, 3, H, W) in [-1, 1] or None)


@dataclass(frozen=True)
class Row:
    """What one guidance row is conditioned on."""
    text: bool
    vq: bool
    source: bool


T2I_ROWS = (Row(False, False, False), Row(False, True, False), Row(True, True, False))
EDIT_ROWS = (Row(False, False, False), Row(False, False, True), Row(True, False, True), Row(True, True, False))


def guidance_weights(guidance: float, image_guidance: float, vq_guidance: float, edit: bool,
                     active: bool = True) -> list[float]:
    """The guidance formula as one weight per row (T2I_ROWS or EDIT_ROWS order); they sum to 1."""
    w = [1.0 - image_guidance, image_guidance - guidance, guidance] if active else [0.0, 0.0, 1.0]
    if edit:
        w = [w[0] - vq_guidance, w[1], w[2], vq_guidance]
    return w


@dataclass
class Conditions:
    """Everything a row can be conditioned on, for B images."""
    text: torch.Tensor  # (B, L, cap)
    mask: torch.Tensor  # (B, L) bool, right-padded
    null_text: torch.Tensor  # (B, L0, cap)
    null_mask: torch.Tensor  # (B, L0)
    vq: torch.Tensor  # (B, d, h, w)
    source: torch.Tensor  # (B, C, h, w) latent, zeros where there is none

    def rows(self, rows: Sequence[Row]):
        """Stacked inputs for `rows`: text (R*B, L', cap), mask, vq (R*B, d, h, w), source (R*B, C, h, w)."""
        L = max(self.text.shape[1], self.null_text.shape[1])
        text, mask = _pad(self.text, self.mask, L)
        null, null_mask = _pad(self.null_text, self.null_mask, L)
        no_vq, no_source = torch.zeros_like(self.vq), torch.zeros_like(self.source)
        texts = torch.cat([text if r.text else null for r in rows])
        masks = torch.cat([mask if r.text else null_mask for r in rows])
        vq = torch.cat([self.vq if r.vq else no_vq for r in rows])
        source = torch.cat([self.source if r.source else no_source for r in rows])
        return texts, masks, vq, source


def _pad(embeds: torch.Tensor, mask: torch.Tensor, length: int):
    """Right-pad (B, L, D) embeddings and their mask to `length`."""
    extra = length - embeds.shape[1]
    if extra:
        embeds = F.pad(embeds, (0, 0, 0, extra))
        mask = F.pad(mask, (0, extra))
    return embeds, mask


def right_aligned(embeds: torch.Tensor, mask: torch.Tensor):
    """Lumina2 reads the first mask.sum() tokens of each row: move the valid tokens to the front."""
    mask = mask.bool()
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # valid first, order kept
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
    return embeds, torch.gather(mask, 1, order)


class DiffusionDecoder(nn.Module):
    """Transformer + latent codec + config. The VAE (if any) is not part of the state dict."""

    def __init__(self, config: DiffusionConfig, transformer: STARDiffusionTransformer | None = None,
                 latents: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.transformer = transformer if transformer is not None else build_transformer(config)
        self.latents = latents if latents is not None else make_latents(config)
        self.scheduler_config = scheduler_config(config)

    def forward(self, images, vq_embeds, text_embeds, text_mask, source_images=None, source_mask=None,
                generator=None) -> torch.Tensor:
        """The training loss (see `training_loss`): forward so that a DDP wrapper syncs gradients."""
        return training_loss(self, images, vq_embeds, text_embeds, text_mask, source_images=source_images,
                             source_mask=source_mask, generator=generator)

    # -- conditioning ------------------------------------------------------------------------------
    @property
    def patch(self) -> int:
        return self.transformer.config.patch_size

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        f, p = self.latents.factor, self.patch
        if height % (f * p) or width % (f * p) or height <= 0 or width <= 0:
            raise ValueError(f"image size {height}x{width} must be a positive multiple of {f * p}")
        return height // f, width // f

    def vq_map(self, vq_embeds: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, h', w', d) code vectors → (B, d, h, w) on the latent grid (config.vq_upsample; bilinear is the paper's E_vq)."""
        x = vq_embeds.permute(0, 3, 1, 2).float()
        if self.config.vq_upsample == "nearest":
            return F.interpolate(x, size=tuple(grid), mode="nearest-exact")
        return F.interpolate(x, size=tuple(grid), mode="bilinear", align_corners=False)

    def null_text(self, batch: int, device=None):
        """The unconditional text: one zero token (used by training dropout unless given another)."""
        cap = self.transformer.config.cap_feat_dim
        return torch.zeros(batch, 1, cap, device=device), torch.ones(batch, 1, dtype=torch.bool, device=device)

    def source_latents(self, images: torch.Tensor | None, grid, has_source: torch.Tensor | None = None,
                       sample: bool = False, generator=None) -> torch.Tensor:
        """(B, 3, H', W') [-1, 1] → (B, C, h, w) latents, resized to the output; zeros where no source."""
        if images is None:
            return None
        f = self.latents.factor
        size = (grid[0] * f, grid[1] * f)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
        z = self.latents.encode(images.float(), sample=sample, generator=generator).float()
        if has_source is not None:
            z = z * has_source.to(z.device, z.dtype)[:, None, None, None]
        return z

    # -- the model, one call for all rows ----------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, text, mask, vq, source) -> torch.Tensor:
        """x (N, C, h, w) float, t (N,) in [0, 1] (1 = image) → v = x0 − noise (N, C, h, w) float."""
        dtype = self.transformer.dtype
        out = self.transformer(
            torch.cat([x, vq], 1).to(dtype), t.to(dtype), text.to(dtype), mask,
            source_hidden_states=torch.cat([source, vq], 1).to(dtype), return_dict=False)[0].float()
        if self.config.prediction == "x":  # out is x0: v = (x0 − x_σ) / σ, σ = 1 − t
            return (out - x) / x_sigma_floor(1 - t.float()).view(-1, 1, 1, 1)
        return out

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, vq_embeds: torch.Tensor, text_embeds: torch.Tensor, text_mask: torch.Tensor,
               height: int, width: int, steps: int = _DEFAULTS.diffusion_steps,
               guidance: float = _DEFAULTS.diffusion_cfg, image_guidance: float = _DEFAULTS.diffusion_image_cfg,
               source_images: torch.Tensor | None = None, generator: torch.Generator | None = None,
               callback: Callback | None = None, vq_guidance: float = 1.0,
               null_text: tuple[torch.Tensor, torch.Tensor] | None = None,
               guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """VQ embeddings (B, h', w', d), text (B, L, cap) + mask (B, L) → images (B, 3, height, width) in [-1, 1].

        source_images (B, 3, H, W) in [-1, 1] makes it an edit. null_text: the unconditional text
        (embeds, mask), broadcastable over B; by default `self.null_text`. callback(step, steps,
        preview) runs after every step; what it raises propagates (that is how a cancel stops us).
        """
        if steps < 1:
            raise ValueError("steps must be at least 1")
        device, B = vq_embeds.device, vq_embeds.shape[0]
        grid = self.latent_grid(height, width)
        cond = self._conditions(vq_embeds, text_embeds, text_mask, source_images, grid, null_text)
        edit = source_images is not None
        rows = EDIT_ROWS if edit else T2I_ROWS

        x = randn_tensor((B, self.transformer.latent_channels, *grid), generator=generator, device=device,
                         dtype=torch.float32)  # σ = 1: pure noise
        scheduler = make_scheduler(self.scheduler_config, steps, grid[0] * grid[1] // self.patch ** 2, device)
        lo, hi = guidance_interval
        cache = {}
        for i, t in enumerate(scheduler.timesteps):
            active = lo < (i + 1) / steps < hi  # the release's cfg truncation (by default: not the last step)
            w = guidance_weights(guidance, image_guidance, vq_guidance, edit, active)
            t_model = 1.0 - t / scheduler.config.num_train_timesteps  # Lumina: 0 noise, 1 image
            v = self.guided_velocity(x, t_model, cond, rows, w, cache)  # (B, C, h, w)
            x0 = x + scheduler.sigmas[i] * v  # the current estimate of the image, for the preview
            x = scheduler.step(-v, t, x, return_dict=False)[0]  # Euler on dx/dσ = −v
            if callback is not None:
                callback(i + 1, steps, self.latents.preview(x0))
        return self.latents.decode(x).float().clamp(-1, 1)

    def guided_velocity(self, x, t, cond: Conditions, rows: Sequence[Row], weights: Sequence[float],
                        cache: dict | None = None) -> torch.Tensor:
        """Σ_k w_k · v(x | row k) for x (B, C, h, w), in one forward over the rows whose weight is not 0."""
        live = tuple(k for k, w in enumerate(weights) if w != 0.0)
        cache = {} if cache is None else cache
        if live not in cache:  # stacked row inputs, built once per set of live rows
            cache[live] = cond.rows([rows[k] for k in live])
        R, B = len(live), x.shape[0]
        v = self.velocity(x.repeat(R, 1, 1, 1), t.expand(R * B), *cache[live]).view(R, *x.shape)
        return sum(weights[k] * v[j] for j, k in enumerate(live))

    def _conditions(self, vq_embeds, text_embeds, text_mask, source_images, grid, null_text) -> Conditions:
        B, device = vq_embeds.shape[0], vq_embeds.device
        text, mask = right_aligned(text_embeds.to(device), text_mask.to(device))
        null, null_mask = null_text if null_text is not None else self.null_text(B, device)
        null, null_mask = right_aligned(null.to(device), null_mask.to(device))
        null, null_mask = null.expand(B, -1, -1), null_mask.expand(B, -1)
        vq = self.vq_map(vq_embeds, grid)
        if source_images is not None:
            source = self.source_latents(source_images.to(device).expand(B, -1, -1, -1), grid)
        else:
            source = torch.zeros(B, self.transformer.latent_channels, *grid, device=device)
        return Conditions(text.float(), mask, null.float(), null_mask, vq, source)


# -- training ----------------------------------------------------------------------------------------

def dropout_plan(has_source: torch.Tensor, cond_drop: float, edit_vq_prob: float, generator=None):
    """Which conditions each sample keeps, so that every guidance row is trained.

    r < u: no text · u ≤ r < 2u: nothing · 2u ≤ r < 3u: no image condition (InstructPix2Pix's
    scheme, the release's); the image condition is the VQ map for text-to-image samples and the
    source for edits. An edit sample is trained as the `vq` row (text, its VQ, no source) with
    probability `edit_vq_prob`. Returns keep_text, keep_vq, keep_source: (B,) bool.
    """
    B, device = has_source.shape[0], has_source.device
    r, q = _rand((2, B), generator, device)
    drop_text = r < 2 * cond_drop
    drop_cond = (r >= cond_drop) & (r < 3 * cond_drop)
    vq_row = has_source & (q < edit_vq_prob)
    keep_text = ~drop_text | vq_row
    keep_vq = torch.where(has_source, vq_row, ~drop_cond)
    keep_source = has_source & ~vq_row & ~drop_cond
    return keep_text, keep_vq, keep_source


def _rand(shape, generator, device):
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def training_loss(decoder: DiffusionDecoder, images: torch.Tensor, vq_embeds: torch.Tensor,
                  text_embeds: torch.Tensor, text_mask: torch.Tensor, source_images: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, source_mask: torch.Tensor | None = None,
                  null_text: tuple[torch.Tensor, torch.Tensor] | None = None, cond_drop: float = 0.1,
                  edit_vq_prob: float = 0.25) -> torch.Tensor:
    """Flow-matching loss: ‖model(x_σ, 1 − σ, conditions) − (x0 − noise)‖², with condition dropout
    (an x-predicting model's velocity is (x̂0 − x_σ) / σ, against (x0 − x_σ) / σ, σ floored alike).

    images (B, 3, H, W) [-1, 1] the targets; vq_embeds (B, h', w', d) their code vectors (treated as
    constants); source_images (B, 3, H, W) or None; source_mask (B,) bool marks the rows that have
    a source (default: the rows of source_images that are not all zero).
    """
    B, device = images.shape[0], images.device
    with torch.no_grad():
        x0 = decoder.latents.encode(images.float(), sample=True, generator=generator).float()  # (B, C, h, w)
        grid = tuple(x0.shape[-2:])
        if source_images is None:
            has_source = torch.zeros(B, dtype=torch.bool, device=device)
            source = torch.zeros_like(x0)
        else:
            has_source = (source_mask if source_mask is not None
                          else source_images.flatten(1).abs().amax(1) > 0).to(device).bool()
            source = decoder.source_latents(source_images, grid, has_source, sample=True, generator=generator)
    vq = decoder.vq_map(vq_embeds.detach(), grid)

    keep_text, keep_vq, keep_source = dropout_plan(has_source, cond_drop, edit_vq_prob, generator)
    null, null_mask = null_text if null_text is not None else decoder.null_text(B, device)
    L = max(text_embeds.shape[1], null.shape[1])
    text, mask = _pad(*right_aligned(text_embeds, text_mask), L)
    null, null_mask = _pad(*right_aligned(null.to(device).expand(B, -1, -1), null_mask.to(device).expand(B, -1)), L)
    text = torch.where(keep_text[:, None, None], text.float(), null.float())
    mask = torch.where(keep_text[:, None], mask, null_mask)
    vq = vq * keep_vq[:, None, None, None]
    source = source * keep_source[:, None, None, None]

    u = _rand((B,), generator, device)
    sigma = shift_sigmas(decoder.scheduler_config, u, grid[0] * grid[1] // decoder.patch ** 2).view(B, 1, 1, 1)
    noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=torch.float32)
    x_sigma = sigma * noise + (1 - sigma) * x0
    v = decoder.velocity(x_sigma, 1 - sigma.flatten(), text, mask, vq, source)
    if decoder.config.prediction == "x":  # JiT's v-loss with x-prediction: the same floored σ on both sides
        return F.mse_loss(v, (x0 - x_sigma) / x_sigma_floor(sigma))
    return F.mse_loss(v, x0 - noise)


def x_sigma_floor(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.clamp_min(X_PREDICTION_MIN_SIGMA)
