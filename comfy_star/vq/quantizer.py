"""STAR-VQ's vector quantizer, and the codebook projector it is trained with.

At inference the codebook is a plain table, `embedding.weight` (K, d), exactly as in the
authors' release. During training (`VQConfig.projector_dim > 0`) the codebook is instead the
output of a projector applied to a fixed random basis, after VQGAN-LC / SimVQ and FVQ's
VQBridge (Chang et al. 2025, the paper's stage 1):

    codebook = projector(base)        base: (K, p) buffer, never trained; projector: trained

Every code is made by the same projector weights, so the gradient of any code in use moves
all of them together and none is stranded far from the encoder's outputs: utilisation stays
near 100 % however large K is. `export_codebook()` evaluates the projector once and stores
the result as the plain table, which is all inference (and the released checkpoints) need.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BASIS_SEED = 20251215  # the basis is a pure function of (K, p): a resumed run rebuilds it exactly


class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup with a straight-through gradient, codebook and commitment losses.

    State (release layout): `embedding.weight` (K, d). With a projector instead: `base` (K, p)
    and `projector.*`. Loading a plain table into a projector-form quantizer turns it into the
    plain form (a trained-and-exported checkpoint into a model built from a training config);
    the release's `codebook_used` usage counter is accepted and dropped.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, projector_dim: int = 0,
                 projector_depth: int = 0, l2_norm: bool = False, restart_every: int = 0):
        super().__init__()
        self.codebook_size, self.dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.restart_every = restart_every
        if restart_every:
            if projector_dim > 0:
                raise ValueError("dead-code restarts need a plain codebook: set projector_dim=0 or restart_every=0")
            # persistent, so a resumed run restarts exactly as the uninterrupted one would
            self.register_buffer("code_usage", torch.zeros(codebook_size))
            self.register_buffer("forwards", torch.zeros((), dtype=torch.long))
        if projector_dim > 0:
            self.register_buffer("base", fixed_basis(codebook_size, projector_dim))  # (K, p)
            self.projector = CodebookProjector(codebook_size, projector_dim, dim, depth=projector_depth)
            self.embedding = None
        else:
            self.projector = None
            self.embedding = nn.Embedding(codebook_size, dim)
            nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)  # as LlamaGen

    @property
    def has_projector(self) -> bool:
        return self.projector is not None

    def codebook(self) -> torch.Tensor:
        """(K, d): the effective codebook (projected when training with a projector)."""
        table = self.projector(self.base) if self.has_projector else self.embedding.weight
        return F.normalize(table, dim=-1) if self.l2_norm else table

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) → code vectors (..., d)."""
        return F.embedding(ids, self.codebook())

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, codebook: torch.Tensor, chunk: int = 1 << 26) -> torch.Tensor:
        """z (N, d) → ids (N,) of the nearest codes, in float32, in chunks of at most `chunk` distances."""
        with torch.autocast(z.device.type, enabled=False):
            z, e = z.float(), codebook.float()
            e_sq = (e * e).sum(1)  # (K,)
            rows = max(1, chunk // e.shape[0])
            ids = [(e_sq - 2 * zc @ e.t()).argmin(1) for zc in z.split(rows)]  # ||z||² is constant per row
        return torch.cat(ids) if ids else z.new_zeros(0, dtype=torch.long)

    def forward(self, z: torch.Tensor):
        """z (B, d, h, w) → (z_q (B, d, h, w) with straight-through gradient, ids (B, h, w), losses)."""
        B, d, h, w = z.shape
        z = z.permute(0, 2, 3, 1)  # (B, h, w, d)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        codebook = self.codebook()  # (K, d)
        ids = self.lookup(z.reshape(-1, d), codebook).view(B, h, w)
        if self.training and self.restart_every:
            self.restart_dead_codes(z.reshape(-1, d), ids.flatten())
        z_q = F.embedding(ids, codebook)  # (B, h, w, d), differentiable w.r.t. the codebook
        losses = {
            "codebook": F.mse_loss(z_q.float(), z.detach().float()),            # codes move to the encoder
            "commit": self.beta * F.mse_loss(z.float(), z_q.detach().float()),  # encoder commits to codes
        }
        z_q = z + (z_q - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        return z_q.permute(0, 3, 1, 2), ids, losses

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, ids: torch.Tensor) -> None:
        """z (N, d) latents, ids (N,) their codes. Every `restart_every` forwards (the first
        included, which seeds the whole codebook from data), re-seed the codes no earlier batch
        chose since the last restart with random latents of this batch: without it a fresh plain codebook
        collapses onto a handful of codes. Codes the window's batches used never move; a code only
        this batch chose may (its patches get the new value now and are looked up again next step)."""
        if int(self.forwards) % self.restart_every == 0:  # usage counts the window's earlier batches
            dead = (self.code_usage == 0).nonzero().flatten()
            gen = torch.Generator().manual_seed(int(self.forwards))  # a pure function of the step
            pick = torch.randint(len(z), (len(dead),), generator=gen).to(z.device)
            self.embedding.weight[dead] = z[pick].to(self.embedding.weight)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.broadcast(self.embedding.weight.data, 0)  # ranks saw different latents
            self.code_usage.zero_()
        self.code_usage += torch.bincount(ids, minlength=self.codebook_size).to(self.code_usage)
        self.forwards += 1

    @torch.no_grad()
    def export_codebook(self) -> None:
        """Replace the projector by the plain table it produces (the release's layout), and drop
        the restart bookkeeping: an exported VQ is for inference."""
        if self.restart_every:
            del self.code_usage, self.forwards
            self.restart_every = 0
        if not self.has_projector:
            return
        table = self.projector(self.base)  # not normalised: l2_norm is applied on use, as in LlamaGen
        self._become_plain(table.shape, table.device, table.dtype)
        self.embedding.weight.copy_(table)

    def _become_plain(self, shape, device, dtype) -> None:
        del self.projector, self.base
        self.projector = None
        self.embedding = nn.Embedding(*shape, device=device, dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "codebook_used", None)  # the release's usage counter: not ours to keep
        if not self.restart_every:  # restart bookkeeping in a training checkpoint, read for inference
            state_dict.pop(prefix + "code_usage", None)
            state_dict.pop(prefix + "forwards", None)
        table = state_dict.get(prefix + "embedding.weight")
        if self.has_projector and table is not None and not any(k.startswith(prefix + "projector.") for k in state_dict):
            self._become_plain(table.shape, self.base.device, self.base.dtype)  # an exported checkpoint
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def fixed_basis(codebook_size: int, dim: int) -> torch.Tensor:
    """(K, p) rows ~ N(0, I/p) from a fixed seed; left empty on the meta device."""
    base = torch.empty(codebook_size, dim)
    if base.device.type != "meta":
        g = torch.Generator(device="cpu").manual_seed(BASIS_SEED)
        base.copy_(torch.randn(codebook_size, dim, generator=g) / math.sqrt(dim))
    return base


class CodebookProjector(nn.Module):
    """codebook = linear(base) [+ bridge(base) when depth > 0].

    depth=0 (the default) is the linear projector of VQGAN-LC / SimVQ. depth > 0 adds FVQ's
    VQBridge in miniature (the paper: "2 DiT-blocks, which compresses and reconstructs the
    codebook"): consecutive groups of `group` codes are compressed into one token, `depth`
    transformer blocks process the K / group tokens, and a linear layer recovers the codes; that
    layer starts at zero, so training starts from the linear projector.

    Measured on star-shapes (64 px): the bridge reached 93 % held-out utilisation at batch 64 ×
    4000 steps, but collapsed to 1-4 codes at batch 16 × 800 steps, where the linear projector
    kept 56 %. Hence linear by default.
    """

    def __init__(self, codebook_size: int, base_dim: int, dim: int, depth: int = 0, group: int = 16,
                 hidden: int | None = None, heads: int = 4):
        super().__init__()
        self.linear = nn.Linear(base_dim, dim)
        self.depth = depth
        if depth == 0:
            return
        self.group = math.gcd(group, codebook_size)
        hidden = hidden or max(64, min(4 * dim, 1024))
        self.compress = nn.Linear(self.group * base_dim, hidden)
        self.blocks = nn.ModuleList([Block(hidden, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(hidden)
        self.recover = nn.Linear(hidden, self.group * dim)
        nn.init.zeros_(self.recover.weight)
        nn.init.zeros_(self.recover.bias)

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        """base (K, p) → codebook (K, d)."""
        out = self.linear(base)
        if self.depth == 0:
            return out
        K, p = base.shape
        x = self.compress(base.reshape(1, K // self.group, self.group * p))  # (1, K/g, hidden)
        for block in self.blocks:
            x = block(x)
        return out + self.recover(self.norm(x)).reshape(K, -1)  # (K, d)


class Block(nn.Module):
    """Pre-norm transformer block (no positions: the codes are a set, not a sequence)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(approximate="tanh"),
                                 nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, C/heads)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.norm2(x))


# --- codebook statistics -------------------------------------------------------------------------

def code_histogram(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    return torch.bincount(ids.reshape(-1).long().cpu(), minlength=codebook_size)[:codebook_size]


def codebook_utilisation(ids: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the K entries that occur at least once in `ids`."""
    return (code_histogram(ids, codebook_size) > 0).sum().item() / codebook_size


def codebook_perplexity(ids: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code frequencies in `ids`: K when all are used equally, 1 for one code."""
    counts = code_histogram(ids, codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(-(p * p.log()).sum().item()) if len(p) else 0.0
