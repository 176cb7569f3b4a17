"""Can the tiny base learn *where* things are, with a given M-RoPE setting? (a diagnostic for issue 3)

The shipped base answers colours and counts but not positions or shape kinds (docs/star-shapes-training.md
§ VQA per question kind). A suspect: M-RoPE gives an image token (t, h, w) positions one apart, and with the
star-shapes base (head_dim 48, rope_theta 1e4, mrope_section [8, 8, 8]) the h section's fastest
frequency turns a query by 0.046 rad per row and the w section's by 0.0022 rad per column, so
columns look alike to attention. This trains the base from scratch on position questions only
("where is the red circle?" over a 3×3 grid, 60 %; "is X left or right of / above or below Y?",
40 %) for a fixed time, then asks "where is the C K?" about one shape in each of the 9 regions
(4 kinds × 2 colours = 72 images) and prints the share right (and right row / right column).

    python scripts/mrope_position_ab.py --theta 10000 --sections 8,8,8 --seconds 900
    python scripts/mrope_position_ab.py --theta 10 --sections 4,10,10 --seconds 900
    python scripts/mrope_position_ab.py --shipped     # the probe alone, on the embedded model's base
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import time

import torch

from comfy_star import data
from comfy_star.ar.model import build_base
from comfy_star.ar.tokenizer import ChatFormat, load_tokenizer
from comfy_star.ar.understand import answer, image_processor
from comfy_star.data import qa
from comfy_star.data.shapes import Scene, Shape, region
from comfy_star.train.recipe import shapes_config
from comfy_star.train.stage0_vlm import build_batch


def row(r: str) -> str:
    return "top" if "top" in r else "bottom" if "bottom" in r else "middle"


def col(r: str) -> str:
    return "left" if "left" in r else "right" if "right" in r else "middle"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--theta", type=float, default=10000.0)
    p.add_argument("--sections", default="8,8,8", help="mrope_section t,h,w (sums to head_dim / 2 = 24)")
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None)
    p.add_argument("--shipped", action="store_true", help="no training: probe the embedded model's base")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = shapes_config()
    text = cfg.ar.base["text_config"]
    text["rope_theta"], text["rope_scaling"]["mrope_section"] = a.theta, [int(x) for x in a.sections.split(",")]
    chat = ChatFormat(load_tokenizer(cfg.ar.tokenizer), cfg.ar.system_prompt)
    proc = image_processor(cfg.ar.image_patch_size, cfg.ar.image_merge_size, cfg.image_size)
    if a.shipped:
        from comfy_star.pipeline import STAR
        star = STAR.from_pretrained(device="cpu")
        base, chat, proc, a.seconds = star.parts.ar.base, star.parts.chat, star.parts.image_proc, 0
    else:
        base = build_base(cfg.ar).requires_grad_(True).train()
    opt = torch.optim.AdamW(base.parameters(), lr=1e-3, weight_decay=0.0)
    rng = random.Random(1)

    def example():
        while True:
            scene = data.shapes.random_scene(rng)
            question = (qa.ask_where if rng.random() < 0.6 else qa.ask_side)(scene, rng)
            if question:
                return data.shapes.render(scene, cfg.image_size), *question

    t0, losses = time.time(), []
    while time.time() - t0 < a.seconds:
        loss = base(**build_batch([example() for _ in range(a.batch)], chat, proc)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    base.eval()
    right = {"where": [], "row": [], "col": []}
    for kind, colour, (x, y) in itertools.product(data.shapes.SHAPES, ["red", "blue"],
                                                  itertools.product([0.17, 0.5, 0.83], repeat=2)):
        shape = Shape(kind, colour, x, y, 0.1)
        image = data.shapes.render(Scene([shape], "white"), cfg.image_size)
        got = answer(base, chat, [f"where is the {colour} {kind}?"], images=[image], proc=proc, max_new_tokens=16)[0]
        truth = region(shape)
        right["where"].append(got.strip() == truth)
        right["row"].append(row(got) == row(truth))
        right["col"].append(col(got) == col(truth))
    loss = (lambda part: sum(part) / len(part) if part else None)
    result = dict(model="shipped" if a.shipped else f"theta {a.theta:g}, sections {a.sections}", steps=len(losses),
                  seconds=round(time.time() - t0), loss_first50=loss(losses[:50]), loss_last50=loss(losses[-50:]),
                  **{k: round(sum(v) / len(v), 3) for k, v in right.items()})
    print(json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
