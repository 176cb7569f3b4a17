"""Why does the base not tell shape kinds apart? Three probes of its vision tower (a diagnostic for issue 3).

The shipped base answers colours and counts but not "what shape is the red object?" (ShapesVQA per
kind, docs/star-shapes-training.md). This asks where the kind is lost:

    python scripts/vqa_shape_probe.py confusion                       # what the base answers, per true kind
    python scripts/vqa_shape_probe.py probe --head linear             # is the kind in the ViT's tokens?
    python scripts/vqa_shape_probe.py probe --head deepset --train 3000
    python scripts/vqa_shape_probe.py probe --head linear --vision random   # the same ViT, re-initialised
    python scripts/vqa_shape_probe.py tune-vision --steps 600 --lr 1e-3 --out runs/vision-tune

`probe` fits a small head on the ViT's 16 merged tokens of one-shape scenes and reports its held-out
accuracy (chance 0.25): "linear" scores each token linearly and pools them by logsumexp; "deepset" runs an
MLP on each token and averages them (both blind to where a token is, as the LM nearly is along a row).
`tune-vision` trains the vision tower alone (ViT + merger; the language model frozen, so every
text-only row, and so text-to-image, is unchanged) on image questions and captions, then prints
ShapesVQA on eval's 120 questions. `--vision FILE` loads such a tuned tower into the other commands.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import time

import torch
from safetensors.torch import load_file, save_file

from comfy_star import STAR, data
from comfy_star.ar.understand import vision_inputs
from comfy_star.data import qa
from comfy_star.eval.benchmarks import shapes_vqa
from comfy_star.train import stage0_vlm
from comfy_star.train.runner import TrainArgs, train

KINDS = data.shapes.SHAPES


def load(vision: str):
    star = STAR.from_pretrained(device="cpu")
    visual = star.parts.ar.base.model.visual
    if vision == "random":
        torch.manual_seed(0)
        for m in visual.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    elif vision != "shipped":
        star.parts.ar.base.load_state_dict(load_file(vision), strict=False)
    return star


def confusion(star, n: int, seed: int):
    rng, counts = random.Random(seed), collections.Counter()
    for _ in range(n):
        scene = data.shapes.random_scene(rng)
        qa_pair = qa.ask_shape(scene, rng)
        if qa_pair:
            question, truth = qa_pair
            counts[(truth, star.answer(data.shapes.render(scene, 64), question))] += 1
    for (truth, got), k in sorted(counts.items()):
        print(f"{truth:>8} → {got}: {k}")
    right = sum(k for (t, g), k in counts.items() if t == g)
    print(json.dumps({"asked": sum(counts.values()), "right": right}))


def vit_tokens(star, n: int, seed: int):
    """(n, 16, D) ViT tokens of one-shape scenes, and each scene's kind."""
    rng, feats, kinds = random.Random(seed), [], []
    for _ in range(0, n, 50):
        scenes = [data.shapes.random_scene(rng, 1, 1) for _ in range(50)]
        pixels, grid, _ = vision_inputs(star.parts.image_proc, [data.shapes.render(s, 64) for s in scenes])
        with torch.no_grad():
            feats += list(star.parts.ar.base.model.get_image_features(pixels, grid, return_dict=True).pooler_output)
        kinds += [KINDS.index(s.shapes[0].kind) for s in scenes]
    return torch.stack(feats), torch.tensor(kinds)


class LinearMIL(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.score = torch.nn.Linear(d, len(KINDS))

    def forward(self, x):  # (B, tokens, d) → (B, kinds)
        return self.score(x).logsumexp(1)


class DeepSet(torch.nn.Module):
    def __init__(self, d, hidden=256):
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
        self.rho = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Linear(hidden, len(KINDS)))

    def forward(self, x):
        return self.rho(self.phi(x).mean(1))


def probe(star, head: str, n_train: int, n_test: int):
    torch.manual_seed(0)
    x_train, y_train = vit_tokens(star, n_train, 1)
    x_test, y_test = vit_tokens(star, n_test, 2)
    mu, sd = x_train.mean((0, 1)), x_train.std((0, 1)) + 1e-5
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    model = (LinearMIL if head == "linear" else DeepSet)(x_train.shape[-1])
    opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(600):  # full batch
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = lambda x, y: round((model(x).argmax(-1) == y).float().mean().item(), 3)
        print(json.dumps({"head": head, "train_acc": acc(x_train, y_train), "test_acc": acc(x_test, y_test)}))


def tune_vision(star, steps: int, lr: float, out: str, batch: int, vqa_n: int = 120) -> dict:
    base, chat, proc = star.parts.ar.base, star.parts.chat, star.parts.image_proc
    for name, p in base.named_parameters():
        p.requires_grad = name.startswith("model.visual.")

    def example(rng):
        if rng.random() < 0.85:
            return data.sample_vqa(rng, size=64)
        image, caption = data.sample_caption(rng, size=64)
        return image, rng.choice(stage0_vlm.CAPTION_QUESTIONS), caption

    def make_batch(step, rank=0, world=1):
        rng = random.Random(f"vit:{step}")
        return stage0_vlm.build_batch([example(rng) for _ in range(batch)], chat, proc)

    t0 = time.time()
    base.train()
    train(base, make_batch, stage0_vlm.vlm_loss, TrainArgs(out_dir=out, steps=steps, lr=lr, batch_size=batch,
                                                            warmup_steps=50, log_every=50, save_every=200))
    base.eval().requires_grad_(False)
    save_file({k: v.contiguous() for k, v in base.state_dict().items() if k.startswith("model.visual.")},
              f"{out}/visual.safetensors")
    result = {"seconds": round(time.time() - t0), **shapes_vqa(star, vqa_n, 1234)}
    print(json.dumps(result))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["confusion", "probe", "tune-vision"])
    p.add_argument("--vision", default="shipped", help="shipped, random, or a visual.safetensors from tune-vision")
    p.add_argument("--n", type=int, default=80, help="confusion: scenes drawn (those with a shape question asked)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--head", choices=["linear", "deepset"], default="linear")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default="runs/vision-tune")
    p.add_argument("--vqa-n", type=int, default=120, help="tune-vision: ShapesVQA questions after (eval's 120)")
    a = p.parse_args()
    star = load(a.vision)
    if a.command == "confusion":
        confusion(star, a.n, a.seed)
    elif a.command == "probe":
        probe(star, a.head, a.train, a.test)
    else:
        tune_vision(star, a.steps, a.lr, a.out, a.batch, a.vqa_n)


if __name__ == "__main__":
    main()
