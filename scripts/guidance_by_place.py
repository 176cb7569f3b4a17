"""Guidance by place: does the prompt need more (or less) guidance where an object may start?
(A diagnostic for issue 3; not shipped, docs/star-shapes-training.md § Guidance by place.)

    python scripts/guidance_by_place.py --n 20 --seed 777 --settings 2,2 3,1 1,2

Each setting is "FREE,IN": the cfg at a free place (the token's left and upper neighbours, where it has
them, are the background code, taken as the image's first token: an object may start here, and only the
prompt can say which) and the cfg everywhere else (inside or beside an object, where the neighbours
already say most of it). "C,C" is the model's own sampling at cfg C (star-shapes' default is 1.5;
the training log's baseline is 2,2, the default when this was measured). Prints the strict ShapesEval score per
category and overall for each setting, on held-out phrasings, one JSON line each. Runs the reference
(transformers) decode loop, whose tokens the fast samplers match for the same seed.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from comfy_star import STAR, data
from comfy_star.ar import sampler
from comfy_star.ar.prompts import t2i_rows
from comfy_star.ar.sequence import assemble
from comfy_star.data import detector
from comfy_star.pipeline import Tokens, to_pil


def is_free(out: torch.Tensor, i: int, side: int) -> bool:
    """out: (side*side,) ids drawn so far. Are token i's left and upper neighbours background?"""
    if i == 0:
        return True
    background = out[0]
    row, col = divmod(i, side)
    return (col == 0 or out[i - 1] == background) and (row == 0 or out[i - side] == background)


@torch.inference_mode()
def sample(star, prompt: str, seed: int, cfg_free: float, cfg_in: float) -> torch.Tensor:
    """One prompt's (side, side) token grid, guided by place; else as `sampler.generate` samples."""
    ar, chat, d = star.parts.ar, star.parts.chat, star.defaults
    codebook = star.parts.vq.codebook()
    side = star.config.grid
    batch = assemble(ar, t2i_rows(chat, [prompt]), codebook, pad_id=chat.tok.pad_token_id)
    params = sampler.SampleParams(cfg=cfg_free, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p)
    procs, caches = sampler.logits_processors(params), sampler.Caches(ar)
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(side * side, dtype=torch.long)
    logits = sampler.prefill(ar, batch, caches)  # (2, K): the cond and uncond rows
    for i in range(side * side):
        cfg = cfg_free if is_free(out, i, side) else cfg_in
        out[i] = sampler.pick(sampler.guide(logits, cfg, 1), params, procs, generator)[0]
        if i + 1 < side * side:
            vectors = codebook[out[i:i + 1]].repeat(2, 1)
            logits = sampler.decode_one_token(ar, vectors, batch.next_position + i, None, caches, i)
    return out.view(1, side, side)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    ap.add_argument("--n", type=int, default=20, help="prompts per ShapesEval category")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--settings", nargs="+", default=["2,2", "3,1", "1,2"], help="FREE,IN cfg pairs")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    star = STAR.from_pretrained(a.model, device="cpu")
    prompts = data.captions.eval_prompts(a.seed, a.n, held_out=True)
    for setting in a.settings:
        cfg_free, cfg_in = map(float, setting.split(","))
        start, per = time.time(), defaultdict(list)
        for i, p in enumerate(prompts):
            ids = sample(star, p["prompt"], a.seed + i, cfg_free, cfg_in)
            image = to_pil(star.decode_vq(Tokens(ids, star.key, [p["prompt"]])))[0]
            per[p["category"]].append(detector.matches_spec(detector.detect(image), p["spec"]))
        scores = {c: round(float(np.mean(v)), 3) for c, v in per.items()}
        print(json.dumps({"cfg_free": cfg_free, "cfg_in": cfg_in, "overall": round(float(np.mean(list(scores.values()))), 3),
                          **scores, "seconds": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
