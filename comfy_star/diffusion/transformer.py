"""The decoder's DiT: diffusers' Lumina2 transformer, widened for VQ channels, with the source on the sequence.

Inputs, per the paper (§2.3) and the authors' release (`transformer_lumina2_seq.py`):
  target   [noisy latent (C) ; VQ embeddings resized to the latent grid (d)]    (B, C+d, h, w)
  source   [source latent, zeros for text-to-image (C) ; the same VQ map (d)]  (B, C+d, h, w)
The source is concatenated below the target along the height, so it joins the image sequence
(RoPE rows h..2h-1). After the noise refiner its tokens pass through `ori_inp_refiner`
(Linear → GELU(tanh) → Linear, last layer zero-initialised, no bias) which *replaces* them, as
the release does; the prediction is cropped back to the target's h rows.

Parameter names are Lumina2Transformer2DModel's plus `ori_inp_refiner.{0,2}`, the release's names, so
the authors' `diffusion_decoder.transformer.*` tensors load as they are.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
from diffusers import Lumina2Transformer2DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from ..config import DiffusionConfig

log = logging.getLogger(__name__)


def widen_patch_embedding(linear: nn.Linear, patch: int, old_c: int, new_c: int) -> nn.Linear:
    """x_embedder for new_c ≥ old_c input channels; the extra channels start at zero weight.

    Lumina2's patchify flattens each patch as (py, px, c), so input column (py*p + px)*C + c.
    The old weights go to the same (py, px, c) in the wider layout; with the extra channels at
    zero the widened layer computes exactly what the old one did. (The release copies them into
    the first p*p*old_c columns instead, which scrambles patch positions and channels.)
    """
    if new_c < old_c:
        raise ValueError(f"cannot narrow a patch embedding from {old_c} to {new_c} channels")
    out_f, pp = linear.out_features, patch * patch
    if linear.in_features != pp * old_c:
        raise ValueError(f"x_embedder has {linear.in_features} inputs, expected {pp}*{old_c}")
    w = linear.weight
    wide = nn.Linear(pp * new_c, out_f, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight.view(out_f, pp, new_c)[:, :, :old_c].copy_(w.view(out_f, pp, old_c))
        if linear.bias is not None:
            wide.bias.copy_(linear.bias)
    return wide


def source_refiner(dim: int) -> nn.Sequential:
    """The release's `ori_inp_refiner`: zero output at init (its last layer is zero, without bias)."""
    mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim, bias=False))
    nn.init.zeros_(mlp[2].weight)
    return mlp


class STARDiffusionTransformer(Lumina2Transformer2DModel):
    """Lumina2 DiT + the release's source refiner; `forward` takes the source sequence separately.

    The config is Lumina2's: `in_channels` = latent + VQ channels, `out_channels` = latent channels.
    """

    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 528,
                 out_channels: int | None = 16, hidden_size: int = 2304, num_layers: int = 26,
                 num_refiner_layers: int = 2, num_attention_heads: int = 24, num_kv_heads: int = 8,
                 multiple_of: int = 256, ffn_dim_multiplier: float | None = None, norm_eps: float = 1e-5,
                 scaling_factor: float = 1.0, axes_dim_rope: tuple = (32, 32, 32),
                 axes_lens: tuple = (300, 512, 512), cap_feat_dim: int = 2304):
        super().__init__(
            sample_size=sample_size, patch_size=patch_size, in_channels=in_channels, out_channels=out_channels,
            hidden_size=hidden_size, num_layers=num_layers, num_refiner_layers=num_refiner_layers,
            num_attention_heads=num_attention_heads, num_kv_heads=num_kv_heads, multiple_of=multiple_of,
            ffn_dim_multiplier=ffn_dim_multiplier, norm_eps=norm_eps, scaling_factor=scaling_factor,
            axes_dim_rope=tuple(axes_dim_rope), axes_lens=tuple(axes_lens), cap_feat_dim=cap_feat_dim)
        self.ori_inp_refiner = source_refiner(hidden_size)

    @property
    def latent_channels(self) -> int:
        return self.out_channels

    @property
    def vq_channels(self) -> int:
        return self.config.in_channels - self.out_channels

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, source_hidden_states: torch.Tensor | None = None,
                return_dict: bool = True):
        """hidden_states (B, C+d, h, w), timestep (B,) in [0, 1] (0 noise, 1 image), text (B, L, cap)
        with a right-padded mask (B, L), source (B, C+d, h, w) or None → velocity (B, C, h, w)."""
        h = hidden_states.shape[2]
        x = hidden_states if source_hidden_states is None else torch.cat([hidden_states, source_hidden_states], 2)
        _, _, H, W = x.shape  # H = h, or 2h with the source below

        temb, text = self.time_caption_embed(x, timestep, encoder_hidden_states)  # (B, D'), (B, L, D)
        x, text_rope, image_rope, rope, text_lens, seq_lens = self.rope_embedder(x, encoder_attention_mask)
        x = self.x_embedder(x)  # (B, N, p*p*(C+d)) → (B, N, D)

        for layer in self.context_refiner:
            text = layer(text, encoder_attention_mask, text_rope)
        for layer in self.noise_refiner:
            x = layer(x, None, image_rope, temb)
        if source_hidden_states is not None:
            n = x.shape[1] // 2  # target tokens first (rows 0..h-1), then the source's
            x = torch.cat([x[:, :n], self.ori_inp_refiner(x[:, n:])], dim=1)

        joint, mask = self._joint_sequence(text, x, text_lens, seq_lens)  # (B, S, D), (B, S) or None
        for layer in self.layers:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                joint = self._gradient_checkpointing_func(layer, joint, mask, rope, temb)
            else:
                joint = layer(joint, mask, rope, temb)
        joint = self.norm_out(joint, temb)  # (B, S, p*p*C)

        out = self._unpatchify(joint, text_lens, seq_lens, H, W)[:, :, :h]  # (B, C, h, w)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def _joint_sequence(self, text, image, text_lens, seq_lens):
        """[text_i[:len_i] ; image_i ; padding] per row; a key mask only when the lengths differ."""
        B, S = image.shape[0], max(seq_lens)
        joint = image.new_zeros(B, S, image.shape[-1])
        mask = torch.zeros(B, S, dtype=torch.bool, device=image.device)
        for i, (n_text, n) in enumerate(zip(text_lens, seq_lens)):
            joint[i, :n_text] = text[i, :n_text]
            joint[i, n_text:n] = image[i]
            mask[i, :n] = True
        return joint, (mask if len(set(seq_lens)) > 1 else None)

    def _unpatchify(self, joint, text_lens, seq_lens, H, W):
        p, C = self.config.patch_size, self.out_channels
        rows = [joint[i, n_text:n].view(H // p, W // p, p, p, C).permute(4, 0, 2, 1, 3).reshape(C, H, W)
                for i, (n_text, n) in enumerate(zip(text_lens, seq_lens))]
        return torch.stack(rows)  # (B, C, H, W)

    @classmethod
    def from_lumina(cls, lumina: Lumina2Transformer2DModel, vq_channels: int) -> "STARDiffusionTransformer":
        """A pretrained Lumina-Image-2.0 transformer, widened (channel-aware) for `vq_channels` more inputs."""
        cfg = dict(lumina.config)
        C, p = cfg["in_channels"], cfg["patch_size"]
        kwargs = {k: cfg[k] for k in _LUMINA_KEYS if k in cfg}
        kwargs.update(in_channels=C + vq_channels, out_channels=lumina.out_channels)
        model = cls(**kwargs).to(device=lumina.device, dtype=lumina.dtype)
        state = dict(lumina.state_dict())
        wide = widen_patch_embedding(lumina.x_embedder, p, C, C + vq_channels)
        state["x_embedder.weight"], state["x_embedder.bias"] = wide.weight, wide.bias
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith("ori_inp_refiner.") for k in missing):
            raise RuntimeError(f"from_lumina: missing {missing}, unexpected {unexpected}")
        return model


_LUMINA_KEYS = ("sample_size", "patch_size", "in_channels", "out_channels", "hidden_size", "num_layers",
                "num_refiner_layers", "num_attention_heads", "num_kv_heads", "multiple_of", "ffn_dim_multiplier",
                "norm_eps", "scaling_factor", "axes_dim_rope", "axes_lens", "cap_feat_dim")


def build_transformer(config: DiffusionConfig) -> STARDiffusionTransformer:
    """From `DiffusionConfig.transformer` (Lumina2 kwargs before widening) + `vq_channels`.

    Keep hidden_size above patch²·latent_channels: the model predicts x0 − noise, so each token must
    carry its patch's noise through; a narrower model loses part of it for good (measured on
    star-shapes' 4·48 = 192-d patches: hidden 128 plateaus, hidden 256 learns).
    """
    kwargs = dict(config.transformer)
    C = kwargs.pop("in_channels", config.latent_channels)
    if C != config.latent_channels:
        raise ValueError(f"transformer in_channels {C} != latent_channels {config.latent_channels}")
    kwargs.pop("out_channels", None)
    model = STARDiffusionTransformer(in_channels=C + config.vq_channels, out_channels=C, **kwargs)
    patch_dim = model.config.patch_size ** 2 * C
    if model.config.hidden_size <= patch_dim:
        log.warning("diffusion transformer: hidden_size %d <= patch_size^2 * latent_channels = %d; the noise "
                    "in each token cannot pass through, expect a poor decoder", model.config.hidden_size, patch_dim)
    return model
