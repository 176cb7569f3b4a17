"""Does the stack know where in the token grid it is? A linear probe of each image token's row and
column, read from the hidden states at that token (a diagnostic for issue 3: ShapesEval's position
prompts; docs/star-shapes-training.md § Where the stack is in its grid).

    python scripts/cell_probe.py [--model runs/NAME/star-shapes.safetensors] [--n 320]

Teacher-forced renders of random captions (training phrasings): at each image token, the embedding
that enters the base ("input"), the base's output ("base") and the stack's ("stack"). A softmax
regression per layer and per target (row, column) is fitted on the first 80 % of the images and
scored on the rest, on all tokens and on background tokens alone (where the code itself says
nothing about the place). Chance is 1 / side.
"""
from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from comfy_star import STAR, data
from comfy_star.ar.prompts import training_row
from comfy_star.ar.sequence import Codes, Text, assemble
from comfy_star.train.stage2_ar import background_codes, encode_ids, pixels


@torch.inference_mode()
def features(star, n: int, seed: int = 0, batch: int = 32):
    """n renders → ({layer: (n, tokens, D)}, ids (n, tokens))."""
    ar, chat = star.parts.ar, star.parts.chat
    rng = random.Random(f"cell-probe:{seed}")
    pairs = [data.captions.random_caption(rng) for _ in range(n)]
    ids = encode_ids(star.parts.vq, pixels([data.shapes.render(p[3], star.config.image_size) for p in pairs]),
                     star.device)
    tokens = ids.shape[1]
    out = {"input": [], "base": [], "stack": []}
    for i in range(0, n, batch):
        rows = [[Text(training_row(chat, p[0], False)), Codes(t)] for p, t in zip(pairs[i:i + batch], ids[i:i + batch])]
        b = assemble(ar, rows, star.parts.vq.codebook(), pad_id=chat.tok.pad_token_id)
        mask = None if bool(b.attention_mask.all()) else b.attention_mask
        h_base = ar.base_text(inputs_embeds=b.embeds, position_ids=b.position_ids, attention_mask=mask).last_hidden_state
        h_stack = ar.stack(inputs_embeds=h_base, position_ids=b.position_ids, attention_mask=mask).last_hidden_state
        for name, h in (("input", b.embeds), ("base", h_base), ("stack", h_stack)):
            out[name].append(h[:, -tokens:].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}, ids.cpu()


def probe(x: torch.Tensor, y: torch.Tensor, classes: int, train: float = 0.8, steps: int = 300,
          keep: torch.Tensor | None = None) -> dict:
    """Softmax regression x (n, tokens, D) → y (n, tokens), fitted on the first `train` share of the n
    images; held-out accuracy on all tokens and on those `keep` (n, tokens) marks."""
    x = (x - x.mean((0, 1))) / (x.std((0, 1)) + 1e-6)
    cut = int(len(x) * train)
    w = torch.zeros(x.shape[-1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    xs, ys = x[:cut].reshape(-1, x.shape[-1]), y[:cut].reshape(-1)
    for _ in range(steps):
        opt.zero_grad()
        (F.cross_entropy(xs @ w + b, ys) + 1e-4 * w.square().sum()).backward()
        opt.step()
    with torch.no_grad():
        right = (x[cut:] @ w + b).argmax(-1) == y[cut:]
    res = {"all": float(right.float().mean())}
    if keep is not None:
        res["kept"] = float(right[keep[cut:]].float().mean())
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    ap.add_argument("--n", type=int, default=320, help="renders (80 %% fit, 20 %% scored)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    star = STAR.from_pretrained(a.model, device="cpu")
    feats, ids = features(star, a.n)
    side = star.config.grid
    place = torch.arange(ids.shape[1]).expand_as(ids)
    background = ids == background_codes(ids)[:, None]
    print(f"held-out accuracy of a linear probe (chance {1 / side:.3f}); all tokens / background tokens")
    for name, x in feats.items():
        for what, y in (("row", place // side), ("column", place % side)):
            r = probe(x, y, side, keep=background)
            print(f"{name:6s} {what:7s} {r['all']:.3f} / {r['kept']:.3f}")


if __name__ == "__main__":
    main()
