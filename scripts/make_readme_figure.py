"""Render docs/star-shapes.png: what the embedded default model makes, unretouched and unselected.

    python scripts/make_readme_figure.py [--model CKPT] [--out docs/star-shapes.png]

Each row is one held-out ShapesEval prompt (the first of each category for a fixed seed, not
picked by hand): the prompt, the VQ-decoded image, the diffusion-decoded image, and whether the
detector reads the prompt in each. A last row shows an edit and a VQA answer.
"""
from __future__ import annotations

import argparse
import random
import sys
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_star import data  # noqa: E402
from comfy_star.data import detector  # noqa: E402
from comfy_star.pipeline import STAR  # noqa: E402

CELL, TEXT_W, PAD = 128, 300, 6
INK, PAPER = (20, 20, 20), (250, 250, 250)


def cell(image: Image.Image) -> Image.Image:
    return image.convert("RGB").resize((CELL, CELL), Image.NEAREST)


def row(texts: list[str], images: list[Image.Image]) -> Image.Image:
    lines = [line for t in texts for line in textwrap.wrap(t, 44) or [""]]
    height = max(CELL + PAD if images else 0, 12 * len(lines) + 2 * PAD)
    out = Image.new("RGB", (TEXT_W + len(images) * (CELL + PAD), height), PAPER)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, 4 + 12 * i), line, fill=INK)
    for i, im in enumerate(images):
        out.paste(cell(im), (TEXT_W + i * (CELL + PAD), 0))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="docs/star-shapes.png")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    star = STAR.from_pretrained(a.model, device="cpu")
    rows = [row(["star-shapes, unselected: the first held-out prompt of each ShapesEval category",
                 "columns: VQ decode | diffusion decode"], [])]
    seen = set()
    for i, item in enumerate(data.captions.eval_prompts(a.seed, 3, held_out=True)):
        if item["category"] in seen:
            continue
        seen.add(item["category"])
        vq = star.generate(item["prompt"], seed=a.seed + i, decoder="vq")[0]
        dif = star.generate(item["prompt"], seed=a.seed + i, decoder="diffusion")[0]
        ok = [detector.matches_spec(detector.detect(im), item["spec"]) for im in (vq, dif)]
        rows.append(row([f"{item['category']}: \"{item['prompt']}\"",
                         f"detector: VQ {'yes' if ok[0] else 'no'}, diffusion {'yes' if ok[1] else 'no'}"], [vq, dif]))
    rng = random.Random(a.seed)
    scene = data.shapes.random_scene(rng, 1, 3)
    source = data.shapes.render(scene, star.config.image_size)
    instruction, *_ = data.edits.edit_for(scene, rng)
    edited = star.edit(source, instruction, seed=a.seed)[0]
    rows.append(row([f"edit: \"{instruction}\"", "columns: source | result"], [source, edited]))
    question, answer = data.qa.question_for(scene, rng)
    said = star.answer(source, question)
    rows.append(row([f"VQA: \"{question}\"", f"model: \"{said}\"", f"truth: \"{answer}\""], [source]))
    width = max(r.width for r in rows)
    figure = Image.new("RGB", (width, sum(r.height for r in rows)), PAPER)
    y = 0
    for r in rows:
        figure.paste(r, (0, y))
        y += r.height
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(a.out, optimize=True)
    print(f"wrote {a.out} ({figure.width}×{figure.height})")


if __name__ == "__main__":
    main()
