"""scripts/cell_probe.py: the probe reads a place that is written into the features, not one that
is not; and the features it reads are the model's, one per image token at each layer."""
import torch
from scripts_module import load_script

from comfy_star import STAR

probe = load_script("cell_probe")


def test_the_probe_finds_a_planted_column_and_not_a_missing_one():
    gen = torch.Generator().manual_seed(0)
    n, tokens, side, dim = 60, 16, 4, 12
    column = torch.arange(tokens).expand(n, tokens) % side
    noise = torch.randn(n, tokens, dim, generator=gen)
    planted = noise.clone()
    planted[..., :side] += 5 * torch.nn.functional.one_hot(column, side)  # the column, written in
    assert probe.probe(planted, column, side)["all"] > 0.95
    assert probe.probe(noise, column, side)["all"] < 0.45  # chance 0.25


def test_features_are_one_per_image_token_and_the_input_is_the_embedding_that_enters_the_base():
    star = STAR.from_pretrained(device="cpu")
    feats, ids = probe.features(star, 3, batch=2)
    tokens = star.config.grid ** 2
    assert ids.shape == (3, tokens)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {k: (3, tokens, 192) for k in ("input", "base", "stack")}
    codes = star.parts.vq.codebook()[ids[0]]
    with torch.inference_mode():
        expected = star.parts.ar.embed_codes(codes, torch.arange(tokens)).float()
    torch.testing.assert_close(feats["input"][0], expected)
    assert not torch.allclose(feats["base"], feats["stack"])
