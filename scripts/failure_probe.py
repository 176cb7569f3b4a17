"""Where the stack fails ShapesEval (a diagnostic for issue 3; docs/star-shapes-training.md
§ Where ShapesEval fails).

    python scripts/failure_probe.py phrasing --n 40 --seed 99
    python scripts/failure_probe.py two-kinds --n 40 [--held-out] [--model M ...]

`phrasing`: the strict ShapesEval score per category on held-out phrasings (what eval reports) and
on training phrasings (other specs, the same count), and how many shapes were drawn against how many
the prompt asked for: what unseen wording costs, and what is left to miss with the training wording.
`two-kinds`: prompts asking for two shapes of different kinds (two_objects specs, no background),
each image put in one bin: both kinds right ("ok"), two shapes of one kind ("same_kind_twice"), one
of the two kinds among what was drawn ("one_right"), or anything else ("other": neither kind, or both
among extra shapes); and, of the images in "ok", how many drew the first-named kind first in raster
order ("ok_named_first"; about half unless the stack learnt an order, as `train all --raster-order` asks).
"""
from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict

import torch

from comfy_star import STAR, data
from comfy_star.data import detector
from comfy_star.data.shapes import first_token

BINS = ("ok", "same_kind_twice", "one_right", "other")


def two_kinds_bin(want: list[str], got: list[str]) -> str:
    """The bin of an image that was asked for the kinds `want` (two, different) and shows `got`."""
    if sorted(want) == sorted(got):
        return "ok"
    if len(got) == 2 and got[0] == got[1]:
        return "same_kind_twice"
    return "one_right" if len(set(want) & set(got)) == 1 else "other"


def two_kinds(star, n: int, seed: int = 5, held_out: bool = False) -> Counter:
    rng, bins = random.Random(seed), Counter({b: 0 for b in BINS})
    for i in range(n):
        spec = data.captions.random_spec("two_objects", rng)
        spec["background"] = None
        prompt = data.captions.caption_from_spec(spec, rng, held_out)
        found = detector.detect(star.generate(prompt, seed=i)[0]).shapes
        bin_ = two_kinds_bin([o["kind"] for o in spec["objects"]], [s.kind for s in found])
        bins[bin_] += 1
        if bin_ == "ok":
            bins["ok_named_first"] += min(found, key=first_token).kind == spec["objects"][0]["kind"]
    return bins


def phrasing(star, n: int, seed: int, held_out: bool) -> tuple[dict, dict]:
    """({category: strict score}, {category: Counter of shapes drawn - shapes asked for})."""
    met, drawn = defaultdict(list), defaultdict(Counter)
    for i, p in enumerate(data.captions.eval_prompts(seed, n, held_out=held_out)):
        scene = detector.detect(star.generate(p["prompt"], seed=seed + i)[0])
        met[p["category"]].append(detector.matches_spec(scene, p["spec"]))
        drawn[p["category"]][len(scene.shapes) - sum(o.get("count", 1) for o in p["spec"]["objects"])] += 1
    return {c: sum(v) / len(v) for c, v in met.items()}, drawn


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=["phrasing", "two-kinds"])
    p.add_argument("--model", nargs="*", default=[None], help="checkpoints (default: the embedded model)")
    p.add_argument("--n", type=int, default=40, help="prompts (per category for phrasing)")
    p.add_argument("--seed", type=int, default=None, help="prompt seed (default: 99 phrasing, 5 two-kinds)")
    p.add_argument("--held-out", action="store_true", help="two-kinds: held-out phrasings")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for model in a.model:
        star = STAR.from_pretrained(model, device="cpu")
        name = model or "embedded"
        if a.probe == "two-kinds":
            bins = two_kinds(star, a.n, 5 if a.seed is None else a.seed, a.held_out)
            print(name, " ".join(f"{b} {bins[b]}" for b in (*BINS, "ok_named_first")))
            continue
        for held_out in (True, False):
            scores, drawn = phrasing(star, a.n, 99 if a.seed is None else a.seed, held_out)
            overall = sum(scores.values()) / len(scores)
            print(f"{name} {'held-out' if held_out else 'training'} phrasings: overall {overall:.3f}")
            for c in data.captions.CATEGORIES:
                print(f"  {c:14s} {scores[c]:.3f}  shapes drawn - asked: {dict(sorted(drawn[c].items()))}")


if __name__ == "__main__":
    main()
