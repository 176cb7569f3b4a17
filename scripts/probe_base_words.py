"""Can the stack find a caption's words in what it reads? A linear probe on the frozen base's last hidden
state (the stack's input at the caption's positions): 8-way colour, 4-way shape and 3-way background
classifiers (logistic regression, Adam), trained on 400 captions "a {colour} {shape} on a {bg} background"
and tested on 200 others, at the word's last byte and at the caption's last byte.

    python scripts/probe_base_words.py [MODEL]

If a word is read back here (near 1.0) but the stack's word_worth for it is ~0 (scripts/prompt_worth.py
--words), the information is in the stack's input and the stack has not learned to use it yet.
"""
from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from comfy_star import data
from comfy_star.pipeline import STAR

S = data.shapes
VOCAB = {"colour": list(S.COLORS), "shape": list(S.SHAPES), "background": list(S.BACKGROUNDS)}


def hidden_states(star, captions):
    """(caption, prefix up to each probed word) → the base's last hidden state at every byte."""
    ar, chat = star.parts.ar, star.parts.chat
    with torch.inference_mode():
        for cap in captions:
            ids = torch.tensor([chat.encode(cap)])
            yield ar.base_text(inputs_embeds=ar.embed_text(ids)).last_hidden_state[0]


def probe(x: torch.Tensor, y: torch.Tensor, classes: int, train: int = 400, steps: int = 300) -> float:
    """Test accuracy of a linear classifier fitted on the first `train` rows."""
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        (F.cross_entropy(x[:train] @ w + b, y[:train]) + 1e-3 * w.pow(2).sum()).backward()
        opt.step()
    return ((x[train:] @ w + b).argmax(-1) == y[train:]).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    star = STAR.from_pretrained(a.model, device="cpu")
    rng = random.Random(a.seed)
    picks = [{k: rng.choice(v) for k, v in VOCAB.items()} for _ in range(600)]
    captions = [f"a {p['colour']} {p['shape']} on a {p['background']} background" for p in picks]
    states = list(hidden_states(star, captions))
    enc = star.parts.chat.encode
    print("| word | at the word's last byte | at the caption's last byte | chance |")
    print("|---|---|---|---|")
    for kind, words in VOCAB.items():
        y = torch.tensor([words.index(p[kind]) for p in picks])
        ends = [len(enc(cap[:cap.index(p[kind]) + len(p[kind])])) - 1 for cap, p in zip(captions, picks)]
        at_word = probe(torch.stack([h[e] for h, e in zip(states, ends)]), y, len(words))
        at_end = probe(torch.stack([h[-1] for h in states]), y, len(words))
        print(f"| {kind} | {at_word:.2f} | {at_end:.2f} | {1 / len(words):.2f} |", flush=True)


if __name__ == "__main__":
    main()
