"""STAR-VQ: a VQGAN-style image tokenizer in LlamaGen's layout, as the authors released it.

    images (B, 3, H, W) in [-1, 1]
      └ encoder ─► (B, z, h, w) ─ quant_conv ─► (B, d, h, w) ─ quantize ─► ids (B, h, w)
    ids ─ codebook ─► (B, d, h, w) ─ post_quant_conv ─► (B, z, h, w) ─ decoder ─► images
    with h = H / 2**(len(ch_mult) - 1)

Parameter names equal the release's (`encoder.conv_blocks.{i}.res.{j}.conv1.weight`,
`quantize.embedding.weight`, ...), so `VQ-Model.pt`, and `STAR-3B.pt`'s `pixel_encoder.*`,
load with a plain `load_state_dict`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import VQConfig
from .quantizer import VectorQuantizer

RELEASE_PREFIX = "pixel_encoder."  # where the VQ sits inside the release's STAR-3B.pt / STAR-7B.pt


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = Normalize(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = Normalize(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Self-attention over the h*w positions; the channels split into `heads` contiguous groups."""

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        assert channels % heads == 0, f"{channels} channels do not split into {heads} heads"
        self.heads = heads
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        # (B, C, H, W) → (B, heads, H*W, C/heads); scale (C/heads)^-0.5, as the release's bmm/softmax
        q, k, v = (proj(h).view(B, self.heads, C // self.heads, H * W).transpose(2, 3)
                   for proj in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C/heads)
        return x + self.proj_out(a.transpose(2, 3).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, then stride 2: (H, W) → (H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: resnet blocks, each followed by attention at the coarsest level, then a resampler."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, heads: int, attn: bool, resample: type | None):
        super().__init__()
        self.res = nn.ModuleList([ResnetBlock(c_in if j == 0 else c_out, c_out) for j in range(n_blocks)])
        self.attn = nn.ModuleList([AttnBlock(c_out, heads) for _ in range(n_blocks)] if attn else [])
        if resample is Downsample:
            self.downsample = Downsample(c_out)
        elif resample is Upsample:
            self.upsample = Upsample(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, res in enumerate(self.res):
            x = res(x)
            if len(self.attn):
                x = self.attn[j](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


def middle(channels: int, heads: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels, heads), ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    def __init__(self, c: VQConfig, in_channels: int = 3):
        super().__init__()
        widths = [c.ch * m for m in c.ch_mult]  # e.g. 256 · (1, 2, 2, 4, 8)
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(in_channels, c.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList([
            Level(([c.ch] + widths)[i], widths[i], c.num_res_blocks, c.attn_heads, attn=(i == last),
                  resample=Downsample if i < last else None)
            for i in range(len(widths))])
        self.mid = middle(widths[-1], c.attn_heads)
        self.norm_out = Normalize(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                # (B, ch, H, W)
        for level in self.conv_blocks:
            h = level(h)                   # ... (B, ch*mult[-1], h, w)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)


class PatchEncoder(nn.Module):
    """Each f×f patch on its own (f = the downsample): pixel-unshuffle, then a per-patch MLP as
    1×1 convs. No padding, no attention, no image-wide normalisation, so a token depends on its
    patch alone: a flat background is one code wherever it lies, and an edit that leaves a patch
    alone leaves its code alone, which is what makes the AR's targets learnable for a small model."""

    def __init__(self, c: VQConfig, in_channels: int = 3):
        super().__init__()
        f, width = c.downsample, 4 * c.z_channels
        self.unshuffle = nn.PixelUnshuffle(f)
        self.mlp = nn.Sequential(nn.Conv2d(in_channels * f * f, width, 1), nn.SiLU(),
                                 nn.Conv2d(width, width, 1), nn.SiLU(),
                                 nn.Conv2d(width, c.z_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.unshuffle(x))  # (B, 3, H, W) → (B, 3·f², h, w) → (B, z, h, w)


ENCODERS = {"vqgan": Encoder, "patch": PatchEncoder}


class Decoder(nn.Module):
    """Mirror of the encoder, coarsest level first, with one more resnet block per level."""

    def __init__(self, c: VQConfig, out_channels: int = 3):
        super().__init__()
        widths = [c.ch * m for m in reversed(c.ch_mult)]  # coarsest first
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(c.z_channels, widths[0], 3, padding=1)
        self.mid = middle(widths[0], c.attn_heads)
        self.conv_blocks = nn.ModuleList([
            Level(widths[max(i - 1, 0)], widths[i], c.num_res_blocks + 1, c.attn_heads, attn=(i == 0),
                  resample=Upsample if i < last else None)
            for i in range(len(widths))])
        self.norm_out = Normalize(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)                # (B, ch*mult[-1], h, w)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)                   # ... (B, ch, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)


class STARVQ(nn.Module):
    def __init__(self, config: VQConfig, projector_depth: int | None = None):
        projector_depth = config.projector_depth if projector_depth is None else projector_depth
        super().__init__()
        self.config = config
        if config.encoder not in ENCODERS:
            raise ValueError(f"VQConfig.encoder {config.encoder!r}: expected one of {sorted(ENCODERS)}")
        self.encoder = ENCODERS[config.encoder](config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_dim, 1)
        self.quantize = VectorQuantizer(config.codebook_size, config.codebook_dim,
                                        projector_dim=config.projector_dim, projector_depth=projector_depth,
                                        restart_every=config.restart_every)
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    # -- the codebook --------------------------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        """(K, d): the effective codebook (the projector's output while training with one)."""
        return self.quantize.codebook()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) → code vectors (B, h, w, d)."""
        return self.quantize.embed(ids.long())

    def export_codebook(self) -> None:
        """Bake the projector into a plain `quantize.embedding.weight` and drop it (no-op without one)."""
        self.quantize.export_codebook()

    # -- images ↔ ids ---------------------------------------------------------------------------
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → continuous latents (B, d, h, w), before quantization."""
        return self.quant_conv(self.encoder(images.to(self.dtype)))

    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) → images (B, 3, H, W), not clamped."""
        return self.decoder(self.post_quant_conv(z_q.to(self.dtype)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → ids (B, h, w) long."""
        z = self.encode_latent(images)  # (B, d, h, w)
        if self.quantize.l2_norm:
            z = F.normalize(z, dim=1)
        B, d, h, w = z.shape
        ids = self.quantize.lookup(z.permute(0, 2, 3, 1).reshape(-1, d), self.codebook())
        return ids.view(B, h, w)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) → images (B, 3, H, W) in [-1, 1]."""
        z_q = self.embed(ids).permute(0, 3, 1, 2)  # (B, d, h, w)
        return self.decode_latent(z_q).clamp(-1, 1)

    def forward(self, images: torch.Tensor):
        """Training: images (B, 3, H, W) → (recon (B, 3, H, W) unclamped, ids (B, h, w),
        {"codebook": ..., "commit": ...} scalar losses)."""
        z_q, ids, losses = self.quantize(self.encode_latent(images))
        return self.decode_latent(z_q), ids, losses

    # -- the authors' checkpoints ----------------------------------------------------------------
    def load_release_state_dict(self, state: dict, strict: bool = True):
        """Load `VQ-Model.pt`'s state dict, or a whole `STAR-*.pt` (its `pixel_encoder.*` part).

        The release's `quantize.codebook_used` counter is dropped; anything else that does not
        match raises a ValueError naming the keys (strict) or is returned (not strict)."""
        if any(k.startswith(RELEASE_PREFIX) for k in state):
            state = {k[len(RELEASE_PREFIX):]: v for k, v in state.items() if k.startswith(RELEASE_PREFIX)}
        check_state_dict(self, state)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if strict and (missing or unexpected):
            raise ValueError(f"STAR-VQ state dict does not match the {self.config} model: "
                             f"missing {_few(missing)}, unexpected {_few(unexpected)}")
        return missing, unexpected


def check_state_dict(model: nn.Module, state: dict) -> None:
    """Raise a ValueError naming every tensor whose shape differs from the model's."""
    own = model.state_dict()
    wrong = [f"{k}: given {tuple(v.shape)}, model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"STAR-VQ state dict has tensors of another shape (another config?): {_few(wrong)}")


def _few(keys, n: int = 8) -> str:
    keys = list(keys)
    return str(keys[:n])[:-1] + (f", ... {len(keys) - n} more]" if len(keys) > n else "]")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
