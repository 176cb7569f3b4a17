"""STAR-VQ: shapes, the release's state-dict layout, the codebook projector and its export,
codebook statistics, and the full-size parameter counts (paper Table 8) on the meta device."""
import random

import pytest
import torch
import torch.nn.functional as F

from comfy_star.config import VQConfig, preset
from comfy_star.vq import STARVQ, codebook_perplexity, codebook_utilisation, count_params
from comfy_star.vq.model import AttnBlock

TINY = dict(codebook_size=64, codebook_dim=8, ch=32, ch_mult=(1, 2), z_channels=32, num_res_blocks=1, attn_heads=2)


def tiny(projector_dim=0, seed=0, depth=0, **kw) -> STARVQ:
    torch.manual_seed(seed)
    return STARVQ(VQConfig(**{**TINY, **kw}, projector_dim=projector_dim), projector_depth=depth).eval()


def images(B=2, H=16, W=24, seed=0):
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def spread_codebook(model):
    """A codebook on the scale of the encoder's outputs, so that many codes are in use."""
    with torch.no_grad():
        model.quantize.embedding.weight.normal_(0, 0.3)


def test_encode_decode_shapes_and_range():
    model = tiny()
    x = images(2, 16, 24)
    ids = model.encode(x)
    assert ids.shape == (2, 8, 12) and ids.dtype == torch.long
    assert 0 <= ids.min() and ids.max() < 64
    out = model.decode(ids)
    assert out.shape == (2, 3, 16, 24)
    assert out.min() >= -1 and out.max() <= 1
    recon, train_ids, losses = model(x)
    assert recon.shape == x.shape and torch.equal(train_ids, ids)
    assert set(losses) == {"codebook", "commit"}


def test_embed_rows_are_codebook_rows_and_lookup_is_nearest():
    model = tiny()
    spread_codebook(model)
    x = images()
    ids = model.encode(x)
    emb = model.embed(ids)
    assert emb.shape == (2, 8, 12, 8)
    assert torch.equal(emb, model.codebook()[ids])
    z = model.encode_latent(x).permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(z, model.codebook()).argmin(1)
    assert torch.equal(ids.flatten(), brute)
    chunked = model.quantize.lookup(z, model.codebook(), chunk=64 * 5)  # 5 rows at a time
    assert torch.equal(chunked, brute)


def test_multihead_attention_matches_the_release_math():
    torch.manual_seed(0)
    block = AttnBlock(64, heads=4).eval()
    x = torch.randn(2, 64, 3, 5)
    with torch.no_grad():
        h = block.norm(x)
        q, k, v = block.q(h), block.k(h), block.v(h)
        b, c, hh, ww = q.shape  # the release's forwar_multi_head, step by step
        q = q.reshape(b, 4, c // 4, hh * ww).permute(0, 1, 3, 2)
        k = k.reshape(b, 4, c // 4, hh * ww)
        w_ = torch.softmax((q @ k) * (c // 4) ** -0.5, dim=3)
        v = v.reshape(b, 4, c // 4, hh * ww)
        ref = x + block.proj_out((v @ w_.permute(0, 1, 3, 2)).reshape(b, c, hh, ww))
        assert torch.allclose(block(x), ref, atol=1e-5)


def release_state(model, prefix="pixel_encoder."):
    """A state dict as the authors save it: their usage counter inside, maybe under a prefix."""
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    state[prefix + "quantize.codebook_used"] = torch.zeros(65536)
    if prefix:
        state["llm.model.embed_tokens.weight"] = torch.zeros(4, 4)  # the rest of a STAR-3B.pt
    return state


@pytest.mark.parametrize("prefix", ["pixel_encoder.", ""])
def test_release_layout_loads_exactly(prefix):
    src = tiny(seed=1)
    spread_codebook(src)
    dst = tiny(seed=2)
    missing, unexpected = dst.load_release_state_dict(release_state(src, prefix))
    assert missing == [] and unexpected == []
    x = images()
    assert torch.equal(dst.encode(x), src.encode(x))
    assert torch.equal(dst.decode(src.encode(x)), src.decode(src.encode(x)))


def test_plain_load_state_dict_accepts_the_release_usage_counter():
    src, dst = tiny(seed=1), tiny(seed=2)
    result = dst.load_state_dict(release_state(src, prefix=""), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert "quantize.codebook_used" not in dst.state_dict()


def test_wrong_shapes_and_missing_keys_are_named():
    model = tiny()
    state = release_state(tiny(codebook_size=32), prefix="pixel_encoder.")
    with pytest.raises(ValueError, match=r"quantize\.embedding\.weight: given \(32, 8\), model \(64, 8\)"):
        model.load_release_state_dict(state)
    state = release_state(tiny(), prefix="")
    del state["decoder.conv_out.bias"]
    with pytest.raises(ValueError, match=r"missing \['decoder\.conv_out\.bias'\]"):
        model.load_release_state_dict(state)
    state = release_state(tiny(), prefix="")
    state["quantize.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected \['quantize\.extra'\]"):
        model.load_release_state_dict(state)


def train_a_little(model, steps=2):
    model.train()
    for _ in range(steps):  # plain SGD by hand (torch.optim's first step costs seconds of imports)
        recon, _, losses = model(images())
        (F.mse_loss(recon, images()) + losses["codebook"] + losses["commit"]).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.5 * p.grad
                    p.grad = None
    return model.eval()


@pytest.mark.parametrize("depth", [0, 2])  # linear projector (default), VQBridge
def test_projector_trains_and_exports_to_the_plain_layout(depth):
    model = tiny(projector_dim=8, depth=depth)
    assert model.quantize.has_projector
    assert "quantize.base" in dict(model.named_buffers())  # the fixed basis: never trained
    assert "quantize.embedding.weight" not in model.state_dict()
    recon, _, losses = model.train()(images())
    (recon.square().mean() + losses["codebook"] + losses["commit"]).backward()
    assert model.quantize.projector.linear.weight.grad.abs().sum() > 0  # codebook loss reaches the projector
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0             # straight-through reaches the encoder
    model.zero_grad()
    train_a_little(model)
    if depth:
        assert model.quantize.projector.recover.weight.abs().sum() > 0  # the bridge left its zero start

    x = images(3)
    before_ids, codebook = model.encode(x), model.codebook().detach().clone()
    before = model.decode(before_ids)
    model.export_codebook()
    assert not model.quantize.has_projector
    assert set(model.state_dict()) == set(tiny().state_dict())          # exactly the release's keys
    assert torch.equal(model.codebook(), codebook)
    assert torch.equal(model.encode(x), before_ids)
    assert torch.equal(model.decode(before_ids), before)

    fresh = tiny(projector_dim=8, seed=5, depth=depth)  # a model built from the training config takes the exported file
    fresh.load_state_dict(model.state_dict())
    assert not fresh.quantize.has_projector
    assert torch.equal(fresh.decode(fresh.encode(x)), model.decode(model.encode(x)))


def test_projector_state_round_trips_and_basis_is_fixed():
    a = train_a_little(tiny(projector_dim=8, seed=1, depth=2))
    b = tiny(projector_dim=8, seed=2, depth=2)
    assert torch.equal(a.quantize.base, b.quantize.base)  # a pure function of (K, p)
    b.load_state_dict(a.state_dict())
    assert b.quantize.has_projector and torch.equal(a.codebook(), b.codebook())


def test_default_projector_is_linear_and_bridge_starts_as_it():
    model = STARVQ(VQConfig(**TINY, projector_dim=4))
    assert set(k for k in model.state_dict() if "projector" in k) == {
        "quantize.projector.linear.weight", "quantize.projector.linear.bias"}
    assert model.codebook().shape == (64, 8)
    bridged = tiny(projector_dim=4, depth=2)
    with torch.no_grad():  # zero-initialised output layer: the bridge adds nothing at the start
        q = bridged.quantize
        assert torch.allclose(q.codebook(), q.projector.linear(q.base))


def test_codebook_statistics_on_known_ids():
    ids = torch.tensor([[0, 1], [1, 3]])
    assert codebook_utilisation(ids, 8) == 3 / 8
    assert codebook_utilisation(torch.arange(16).view(2, 2, 4), 16) == 1.0
    assert codebook_perplexity(torch.tensor([0, 1, 2, 3]), 8) == pytest.approx(4.0)
    assert codebook_perplexity(torch.zeros(10, dtype=torch.long), 8) == pytest.approx(1.0)


def test_star3b_parameter_counts_match_table8():
    with torch.device("meta"):
        model = STARVQ(preset("star-3b").vq)
    enc, dec = count_params(model.encoder), count_params(model.decoder)
    # paper Table 8: pixel encoder 0.4 B, VQ decoder 0.6 B; the release's architecture gives these:
    assert enc == 413_594_368 and dec == 609_721_347
    assert abs(enc / 0.4e9 - 1) < 0.15 and abs(dec / 0.6e9 - 1) < 0.15
    assert model.codebook().shape == (65536, 512)


def test_make_batch_is_a_pure_function_of_step_and_seed(monkeypatch):
    from comfy_star.train import stage1_vq
    try:
        from comfy_star import data  # noqa: F401  (the Shapes world)
    except ImportError:  # until the data package exists: coloured rectangles
        from PIL import Image, ImageDraw

        def rectangles(rng, size):
            im = Image.new("RGB", (size, size), (255, 255, 255))
            x, y = rng.randrange(size // 2), rng.randrange(size // 2)
            ImageDraw.Draw(im).rectangle([x, y, x + size // 3, y + size // 3], fill=(rng.randrange(256), 0, 0))
            return im
        monkeypatch.setattr(stage1_vq, "sample_image", rectangles)
    a = stage1_vq.make_batch(3, 4, 32, seed=7)
    assert a.shape == (4, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, stage1_vq.make_batch(3, 4, 32, seed=7))
    assert not torch.equal(a, stage1_vq.make_batch(4, 4, 32, seed=7))
    assert not torch.equal(a, stage1_vq.make_batch(3, 4, 32, seed=8))


def test_vq_loss_and_gradients():
    from comfy_star.train.stage1_vq import vq_loss
    model = tiny(projector_dim=8).train()
    loss, stats = vq_loss(model, images(2, 16, 16))
    loss.backward()
    assert torch.isfinite(loss)
    assert {"l1", "l2", "edge", "codebook", "commit", "utilisation", "perplexity"} <= set(stats)
    assert all(isinstance(v, float) for v in stats.values())
    assert all(p.grad is not None for p in model.parameters())  # none unused: DDP needs no find_unused


# --- the patch encoder and dead-code restarts (star-shapes' tokenizer) ---------------------------

def test_patch_encoder_codes_depend_on_their_patch_alone():
    model = tiny(encoder="patch")
    spread_codebook(model)
    x = images(1, 16, 24)
    ids = model.encode(x)
    assert ids.shape == (1, 8, 12)
    y = x.clone()
    y[..., :2, :2] = -y[..., :2, :2]  # change the top-left patch only
    changed = model.encode(y) != ids
    changed[0, 0, 0] = False
    assert not changed.any()  # no other token moved: the conv encoder gives no such promise
    flat = torch.full((1, 3, 16, 24), 0.5)
    assert model.encode(flat).unique().numel() == 1  # a flat image is one code wherever it lies


def test_dead_codes_restart_from_the_batch_and_export_drops_the_bookkeeping():
    model = tiny(encoder="patch", restart_every=3).train()
    x = images(4)
    model(x)  # the first training forward seeds the whole codebook from this batch's latents
    z = model.encode_latent(x).permute(0, 2, 3, 1).reshape(-1, 8)
    rows = model.quantize.embedding.weight.detach()
    dist = torch.cdist(rows, z, compute_mode="donot_use_mm_for_euclid_dist")
    assert dist.min(1).values.max() < 1e-6  # every code is one of the latents
    assert model.encode(x).unique().numel() > 8  # no collapse onto a handful of codes
    used = set(model.encode(x).flatten().tolist())
    before = rows.clone()
    model(images(4, seed=1)), model(images(4, seed=2)), model(images(4, seed=3))  # the 4th forward restarts
    moved = (model.quantize.embedding.weight != before).any(1)
    assert not any(moved[i] for i in used)  # codes in use are never re-seeded
    assert "quantize.code_usage" in model.state_dict()  # resumable: the window is in the checkpoint
    model.export_codebook()
    assert "quantize.code_usage" not in model.state_dict() and "quantize.forwards" not in model.state_dict()
    fresh = tiny(encoder="patch")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.encode(x), model.eval().encode(x))


def test_restarts_refuse_a_projector():
    with pytest.raises(ValueError, match="plain codebook"):
        tiny(projector_dim=8, encoder="patch", restart_every=3)


def test_unknown_encoder_is_named():
    with pytest.raises(ValueError, match="encoder 'resnet'"):
        tiny(encoder="resnet")
