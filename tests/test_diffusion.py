"""The diffusion decoder: channel-aware widening, the source on the sequence, sampling, training."""
import pytest
import torch
import torch.nn as nn
from diffusers import Lumina2Transformer2DModel

from comfy_star.config import DiffusionConfig, preset
from comfy_star.diffusion import (DiffusionDecoder, PixelLatents, STARDiffusionTransformer, VAELatents,
                                  build_transformer, guidance_weights, training_loss, widen_patch_embedding)
from comfy_star.diffusion.pipeline import EDIT_ROWS, T2I_ROWS, dropout_plan, right_aligned
from comfy_star.train.stage3_diffusion import diffusion_loss

TINY = dict(sample_size=8, patch_size=2, hidden_size=32, num_layers=1, num_refiner_layers=1, num_attention_heads=2,
            num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(64, 64, 64), cap_feat_dim=16)
CAP, D_VQ = 16, 8


def randomize(model: nn.Module, std=0.2, seed=0) -> nn.Module:
    """Every weight random (Lumina inits some to zero), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def tiny_decoder(seed=0) -> DiffusionDecoder:
    cfg = DiffusionConfig(transformer={**TINY, "in_channels": 48}, vq_channels=D_VQ, latent="pixels",
                          latent_channels=48, latent_factor=4, text_encoder="base")
    dec = DiffusionDecoder(cfg)
    randomize(dec.transformer, std=0.1, seed=seed)
    return dec


def inputs(B=2, grid=4, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    vq = torch.randn(B, grid, grid, D_VQ, generator=g)
    text = torch.randn(B, L, CAP, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False
    return vq, text, mask


def lumina_inputs(C, B=2, h=4, w=6, L=5):
    x, t = torch.randn(B, C, h, w), torch.rand(B)
    text, mask = torch.randn(B, L, CAP), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return x, t, text, mask


# -- widening -----------------------------------------------------------------------------------------

def test_widened_model_with_zero_extra_channels_equals_the_original():
    torch.manual_seed(0)
    C, extra = 4, 5
    lumina = randomize(Lumina2Transformer2DModel(in_channels=C, **TINY))
    wide = STARDiffusionTransformer.from_lumina(lumina, vq_channels=extra).eval()
    assert wide.x_embedder.in_features == 4 * (C + extra) and wide.latent_channels == C
    x, t, text, mask = lumina_inputs(C)
    with torch.no_grad():
        ref = lumina(x, t, text, mask, return_dict=False)[0]
        out = wide(torch.cat([x, torch.zeros(2, extra, 4, 6)], 1), t, text, mask, return_dict=False)[0]
    assert out.shape == ref.shape == (2, C, 4, 6)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_widen_patch_embedding_is_channel_aware():
    p, C, C2 = 2, 3, 7
    old = nn.Linear(p * p * C, 10)
    wide = widen_patch_embedding(old, p, C, C2)
    patch = torch.randn(5, p, p, C)  # Lumina2 flattens a patch as (py, px, c)
    padded = torch.cat([patch, torch.randn(5, p, p, C2 - C) * 0], -1)
    torch.testing.assert_close(wide(padded.flatten(1)), old(patch.flatten(1)), atol=1e-6, rtol=0)


def test_the_releases_first_columns_copy_is_not_equal():
    """The release copies the old weights into the first p*p*C columns; that mixes up patch positions
    and channels, so the widened model is not the original even with the extra channels at zero."""
    torch.manual_seed(0)
    C, extra = 4, 5
    lumina = randomize(Lumina2Transformer2DModel(in_channels=C, **TINY))
    wide = STARDiffusionTransformer.from_lumina(lumina, vq_channels=extra).eval()
    with torch.no_grad():
        naive = nn.Linear(4 * (C + extra), wide.x_embedder.out_features)
        naive.weight.zero_()
        naive.weight[:, : 4 * C].copy_(lumina.x_embedder.weight)
        naive.bias.copy_(lumina.x_embedder.bias)
        wide.x_embedder = naive
        x, t, text, mask = lumina_inputs(C)
        ref = lumina(x, t, text, mask, return_dict=False)[0]
        out = wide(torch.cat([x, torch.zeros(2, extra, 4, 6)], 1), t, text, mask, return_dict=False)[0]
    assert (out - ref).abs().max() > 1e-2


def test_release_key_names_and_zero_initialised_source_refiner():
    model = STARDiffusionTransformer(in_channels=48 + D_VQ, out_channels=48, **TINY)
    keys = set(model.state_dict())
    assert {"ori_inp_refiner.0.weight", "ori_inp_refiner.0.bias", "ori_inp_refiner.2.weight"} <= keys
    assert "ori_inp_refiner.2.bias" not in keys
    assert keys - {k for k in keys if k.startswith("ori_inp_refiner.")} == set(
        Lumina2Transformer2DModel(in_channels=48 + D_VQ, out_channels=48, **TINY).state_dict())
    assert torch.count_nonzero(model.ori_inp_refiner[2].weight) == 0


def test_star_3b_decoder_has_about_2_6b_parameters():
    with torch.device("meta"):
        model = build_transformer(preset("star-3b").diffusion)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 2.6e9) / 2.6e9 < 0.15, n  # paper Table 8: Diff-Dec. 2.6 B (measured 2.625 B)


# -- sampling -----------------------------------------------------------------------------------------

def test_text_to_image_decode_shape_and_range():
    dec = tiny_decoder()
    vq, text, mask = inputs()
    out = dec.decode(vq, text, mask, height=32, width=48, steps=2, guidance=2.0, image_guidance=1.5,
                     generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 48) and out.abs().max() <= 1 and torch.isfinite(out).all()


def test_super_resolution_8x8_tokens_to_128px():
    dec = tiny_decoder()
    vq, text, mask = inputs(B=1, grid=8)
    out = dec.decode(vq, text, mask, height=128, width=128, steps=1, guidance=1.0, image_guidance=1.0,
                     generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 128, 128)
    with pytest.raises(ValueError):
        dec.decode(vq, text, mask, height=100, width=128, steps=1)  # not a multiple of factor * patch


def test_same_seed_same_image_other_seed_other_image():
    dec = tiny_decoder()
    vq, text, mask = inputs()
    run = lambda s: dec.decode(vq, text, mask, 32, 32, steps=2, generator=torch.Generator().manual_seed(s))
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_edit_source_on_the_sequence_changes_the_output():
    dec = tiny_decoder()
    vq, text, mask = inputs()
    g = torch.Generator().manual_seed(3)
    src_a, src_b = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    run = lambda src: dec.decode(vq, text, mask, 32, 32, steps=2, source_images=src,
                                 generator=torch.Generator().manual_seed(0))
    none, a, b = run(None), run(src_a), run(src_b)
    assert a.shape == (2, 3, 32, 32)
    assert (a - none).abs().max() > 1e-3 and (a - b).abs().max() > 1e-3
    small = run(torch.nn.functional.interpolate(src_a, size=(16, 16)))  # sources are resized to the output
    assert small.shape == a.shape


def test_callback_every_step_and_its_exception_propagates():
    dec = tiny_decoder()
    vq, text, mask = inputs()
    seen = []
    dec.decode(vq, text, mask, 32, 32, steps=3, callback=lambda s, n, prev: seen.append((s, n, prev.shape)))
    assert seen == [(1, 3, (2, 3, 32, 32)), (2, 3, (2, 3, 32, 32)), (3, 3, (2, 3, 32, 32))]

    class Cancelled(Exception):
        pass

    calls = []

    def cancel_at_2(step, total, preview):
        calls.append(step)
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        dec.decode(vq, text, mask, 32, 32, steps=5, callback=cancel_at_2)
    assert calls == [1, 2]


def test_guidance_weights_are_the_releases_formula():
    u, img, full, vqr = 1.0, 2.0, 3.0, 5.0
    g, gi, gv = 4.5, 1.05, 1.0
    w = guidance_weights(g, gi, gv, edit=False)
    assert len(w) == len(T2I_ROWS) and abs(sum(w) - 1) < 1e-9
    assert abs(sum(a * b for a, b in zip(w, (u, img, full))) - (u + g * (full - img) + gi * (img - u))) < 1e-9
    w = guidance_weights(g, gi, gv, edit=True)
    expect = u + g * (full - img) + gi * (img - u) + gv * (vqr - u)
    assert len(w) == len(EDIT_ROWS) and abs(sum(a * b for a, b in zip(w, (u, img, full, vqr))) - expect) < 1e-9
    assert guidance_weights(g, gi, gv, edit=False, active=False) == [0.0, 0.0, 1.0]  # cfg truncation
    assert guidance_weights(1.0, 1.0, 0.0, edit=False) == [0.0, 0.0, 1.0]  # one row suffices


def test_text_padding_side_does_not_matter():
    dec = tiny_decoder()
    vq, text, mask = inputs()
    left_text, left_mask = torch.zeros_like(text), torch.zeros_like(mask)
    left_text[0, 2:], left_mask[0, 2:] = text[0, :3], True  # row 0 left-padded, same 3 tokens
    left_text[1], left_mask[1] = text[1], True
    run = lambda t, m: dec.decode(vq, t, m, 32, 32, steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(run(left_text, left_mask), run(text, mask))
    t2, m2 = right_aligned(left_text, left_mask)
    assert torch.equal(m2, mask) and torch.equal(t2[0, :3], text[0, :3])


# -- latents --------------------------------------------------------------------------------------------

def test_pixel_latents_round_trip_is_exact():
    codec = PixelLatents(4)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 48, 8, 12) and torch.equal(codec.decode(z), x)


def test_vae_latents_stay_out_of_the_state_dict():
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, shift_factor=0.1, scaling_factor=0.5)
    codec = VAELatents(vae=vae, factor=2, channels=4)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (1, 4, 8, 8) and codec.decode(z).shape == (1, 3, 16, 16)
    assert codec.preview(z) is None  # the latent→RGB factors are for 16-channel (FLUX) latents
    cfg = DiffusionConfig(transformer={**TINY, "in_channels": 4}, vq_channels=D_VQ, latent="vae",
                          latent_channels=4, latent_factor=2)
    dec = DiffusionDecoder(cfg, latents=codec)
    assert all(k.startswith("transformer.") for k in dec.state_dict())
    assert dec.load_state_dict(dec.state_dict()).missing_keys == []
    with pytest.raises(FileNotFoundError):  # no Lumina folder: a clear error on first use
        DiffusionDecoder(cfg).latents.encode(x)


# -- training -----------------------------------------------------------------------------------------

def test_dropout_plan_trains_every_guidance_row():
    has_source = torch.arange(4000) % 2 == 0
    keep_text, keep_vq, keep_src = dropout_plan(has_source, 0.1, 0.25, torch.Generator().manual_seed(0))
    rows = {(bool(a), bool(b), bool(c), bool(s)) for a, b, c, s in zip(keep_text, keep_vq, keep_src, has_source)}
    for r in T2I_ROWS:
        assert (r.text, r.vq, False, False) in rows
    for r in EDIT_ROWS:
        assert (r.text, r.vq, r.source, True) in rows
    assert not (keep_src & ~has_source).any()


def test_training_loss_backpropagates_and_stage3_batch_works():
    dec = tiny_decoder()
    dec.train()
    vq, text, mask = inputs(B=4)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = training_loss(dec, images, vq, text, mask, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and dec.transformer.x_embedder.weight.grad.abs().sum() > 0
    source = torch.zeros_like(images)
    source[2:] = torch.rand(2, 3, 32, 32) * 2 - 1  # rows 0-1 text-to-image, 2-3 edits
    batch = dict(images=images, vq_embeds=vq, text_embeds=text, text_mask=mask, source_images=source)
    loss, stats = diffusion_loss(dec, batch, size=64)
    assert torch.isfinite(loss) and stats["edit_fraction"] == 0.5


def x_oracle(dec: DiffusionDecoder, image: torch.Tensor) -> torch.Tensor:
    """Make dec's transformer answer every call with `image`'s latent (what a perfect x-predictor
    would say for a decoder that should reproduce `image`); returns that latent."""
    x0 = dec.latents.encode(image)
    dec.transformer.forward = lambda hidden, *a, **k: (x0.expand(hidden.shape[0], -1, -1, -1).to(hidden.dtype),)
    return x0


def test_x_prediction_samples_land_on_the_predicted_image_and_its_loss_is_the_x_error():
    """With prediction "x" the transformer's output is the clean latent: a sampler fed a perfect
    x-predictor ends exactly on its image whatever the guidance (the weights sum to 1), and its
    training loss is 0; the same output read as a velocity ("v") does not give the image."""
    vq, text, mask = inputs()
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    for guidance in (1.0, 3.0):
        dec = tiny_decoder()
        dec.config.prediction = "x"
        x_oracle(dec, image)
        out = dec.decode(vq, text, mask, 32, 32, steps=4, guidance=guidance, image_guidance=1.5,
                         generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, image.clamp(-1, 1).expand_as(out), atol=1e-5)
    loss = training_loss(dec, image.expand(2, -1, -1, -1), vq, text, mask, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-10
    v_dec = tiny_decoder()
    x_oracle(v_dec, image)
    out = v_dec.decode(vq, text, mask, 32, 32, steps=4, generator=torch.Generator().manual_seed(0))
    assert (out - image).abs().mean() > 0.1


def test_diffusion_shift_replaces_the_schedulers_and_bad_settings_are_refused():
    from comfy_star.diffusion.schedule import scheduler_config
    assert scheduler_config(DiffusionConfig())["shift"] == 6.0  # Lumina-Image-2.0's
    cfg = scheduler_config(DiffusionConfig(shift=1.5))
    assert cfg["shift"] == 1.5 and cfg["use_dynamic_shifting"] is False
    with pytest.raises(ValueError, match="prediction"):
        DiffusionConfig(prediction="eps")
    with pytest.raises(ValueError, match="shift"):
        DiffusionConfig(shift=0.0)


def test_lumina_text_encoder_prefix_and_penultimate_layer():
    from transformers import Gemma2Config, Gemma2Model

    from comfy_star.diffusion.text import LUMINA_SYSTEM_PROMPT, LuminaTextEncoder

    class ByteTokenizer:  # a stand-in for Gemma's: <bos> then bytes, right-padded
        padding_side = "left"

        def __call__(self, texts, padding, max_length, truncation, return_tensors):
            rows = [[1] + [2 + b % 60 for b in t.encode()][: max_length - 1] for t in texts]
            L = max(map(len, rows))
            ids = torch.tensor([r + [0] * (L - len(r)) for r in rows])
            return {"input_ids": ids, "attention_mask": (torch.arange(L) < torch.tensor([len(r) for r in rows])[:, None]).long()}

    torch.manual_seed(0)
    gemma = Gemma2Model(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    enc = LuminaTextEncoder(gemma, ByteTokenizer(), max_length=512)
    embeds, mask = enc.encode(["a red circle", "a square"])
    n = len(f"{LUMINA_SYSTEM_PROMPT} <Prompt Start> a red circle") + 1
    assert embeds.shape == (2, n, 16) and mask.dtype == torch.bool and mask[0].all() and not mask[1].all()
    null, null_mask = enc.null(3)
    assert null.shape == (3, 1, 16) and null_mask.all()  # "" without the system prompt: just <bos>
    ref = gemma(torch.tensor([[1]]), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(null[:1], ref)


def test_nearest_vq_map_gives_each_latent_cell_its_own_tokens_code():
    vq, _, _ = inputs(B=1, grid=4)  # (1, 4, 4, d) codes onto an 8 × 8 latent grid
    dec = tiny_decoder()
    dec.config.vq_upsample = "nearest"
    cells = dec.vq_map(vq, (8, 8))  # (1, d, 8, 8)
    for i, j in [(0, 0), (1, 3), (2, 1), (3, 3)]:
        for di in (0, 1):
            for dj in (0, 1):
                assert torch.equal(cells[0, :, 2 * i + di, 2 * j + dj], vq[0, i, j])
    dec.config.vq_upsample = "bilinear"  # the release's: a cell is a blend of neighbouring codes
    blended = dec.vq_map(vq, (8, 8))
    c = vq[0]  # latent cell 3 sits at code coordinate 1.25: 3/4 of code 1, 1/4 of code 2, on each axis
    mix = 0.5625 * c[1, 1] + 0.1875 * (c[1, 2] + c[2, 1]) + 0.0625 * c[2, 2]
    assert torch.allclose(blended[0, :, 3, 3], mix, atol=1e-6)
    with pytest.raises(ValueError, match="vq_upsample"):
        DiffusionConfig(vq_upsample="bicubic")
