"""Does the stack rate a caption's render above a near miss of it? Teacher-forced, by kind of miss
(a diagnostic for issue 3, and what stage 4's preference term trains; docs/star-shapes-training.md
§ Preference tuning against near misses).

    python scripts/near_miss_probe.py [--model runs/NAME/star-shapes.safetensors] [--n 40] [--seed 7]

For each kind of near miss (data.negatives.MISSES: a kind copied to the other object, colours or
places swapped, a shape dropped or added, a wrong kind or colour), n training captions of the six
categories where that miss applies, each with its render and its near miss: the share of pairs in
which the stack's log-likelihood of the render (summed over its tokens, the caption never dropped)
beats the miss's, and the mean gap in nats. Then copy_kind twice more, split by whether the shape
that takes the other's kind is drawn after it in raster order (copy_kind_later: "the first kind
drawn twice") or before it (copy_kind_earlier). Chance is 0.5 (± 0.08 at n = 40); a held-out seed
is not a held-out wording (the captions are training phrasings, as the preference term's are).
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import torch

from comfy_star import STAR, data
from comfy_star.data import negatives
from comfy_star.data.shapes import Scene, first_token
from comfy_star.train.preference import image_logp
from comfy_star.train.stage2_ar import pixels


def pairs_for(miss, n: int, rng: random.Random, size: int):
    """n (caption, render, near miss) made by `miss` alone."""
    out = []
    while len(out) < n:
        caption, _, spec, scene = data.captions.random_caption(rng)
        bad = miss(scene, rng)
        if bad is not None and data.spec_failures(bad, spec):
            out.append((caption, data.render(scene, size), data.render(bad, size)))
    return out


def copy_kind_pairs(n: int, rng: random.Random, size: int, later: bool):
    """n copy_kind pairs in which the shape that takes the other's kind is drawn after it in raster
    order (later=True: "the first kind drawn twice"), or before it."""
    out = []
    while len(out) < n:
        caption, _, spec, scene = data.captions.random_caption(rng)
        shapes = scene.shapes
        ij = [(i, j) for i in range(len(shapes)) for j in range(len(shapes))
              if i != j and shapes[i].kind != shapes[j].kind
              and (first_token(shapes[j]) > first_token(shapes[i])) == later]
        if not ij:
            continue
        i, j = rng.choice(ij)
        bad = Scene([replace(s, kind=shapes[i].kind) if k == j else s for k, s in enumerate(shapes)], scene.background)
        if data.spec_failures(bad, spec):
            out.append((caption, data.render(scene, size), data.render(bad, size)))
    return out


@torch.inference_mode()
def rank(star, pairs, batch: int = 16) -> dict:
    gaps = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        captions = [c for c, _, _ in chunk] * 2
        images = pixels([r for _, r, _ in chunk] + [m for _, _, m in chunk])
        logp = image_logp(star.parts.ar, star.parts, captions, images, star.device).view(2, -1)
        gaps.append(logp[0] - logp[1])
    gap = torch.cat(gaps)
    return {"prefers_render": round((gap > 0).float().mean().item(), 3), "gap_nats": round(gap.mean().item(), 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    p.add_argument("--n", type=int, default=40, help="pairs per kind of miss")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    star = STAR.from_pretrained(a.model, device="cpu")
    rng = random.Random(f"near-miss-probe:{a.seed}")
    size = star.config.image_size
    results = {m.__name__: rank(star, pairs_for(m, a.n, rng, size)) for m in negatives.MISSES}
    for later in (True, False):  # copy_kind again, by which of the two shapes is drawn first
        results[f"copy_kind_{'later' if later else 'earlier'}"] = rank(star, copy_kind_pairs(a.n, rng, size, later))
    for name, r in results.items():
        print(f"{name:20s} prefers the render {r['prefers_render']:.3f}, by {r['gap_nats']:+.2f} nats")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
