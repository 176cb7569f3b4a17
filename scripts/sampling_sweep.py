"""ShapesEval (or ShapesEdit) over a grid of sampling settings (cfg x temperature x top-k), to choose
a model's defaults on a selection seed that is not the reported one (eval reports seed 1234).

    python scripts/sampling_sweep.py [--model PATH] [--seed 777] [--n 10]
    python scripts/sampling_sweep.py --cfg 3 6 10 16 --temperature 1 0.7 0.4 --top-k 64 8
    python scripts/sampling_sweep.py --task edit --n 60 --cfg 1 2 3 --temperature 1 0.5 0

Prints one JSON line per setting: for text-to-image, overall and the two kind-blind diagnostics
(the background the prompt names is drawn; every colour it names is drawn); for edits, success,
the PSNR of the pixels no edit touches and the share of tokens equal to the target render's.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from comfy_star.eval.benchmarks import shapes_edit, shapes_eval
from comfy_star.pipeline import STAR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a star-shapes checkpoint (default: the embedded one)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--task", choices=("t2i", "edit"), default="t2i")
    ap.add_argument("--n", type=int, default=10, help="t2i: prompts per ShapesEval category; edit: edits")
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0, 6.0, 10.0, 16.0])
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0, 0.7, 0.4])
    ap.add_argument("--top-k", type=int, nargs="+", default=[64, 8])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    star = STAR.from_pretrained(a.model, device="cpu")
    sampling = star.config.sampling  # the defaults every generate() call reads
    for cfg, temperature, top_k in itertools.product(a.cfg, a.temperature, a.top_k):
        sampling.cfg, sampling.temperature, sampling.top_k = cfg, temperature, top_k
        sampling.edit_cfg, sampling.edit_temperature = cfg, temperature  # edits read these where set
        t = time.time()
        if a.task == "edit":
            r, keep = shapes_edit(star, a.n, a.seed), ("success", "psnr_unedited", "token_match")
        else:
            r, keep = shapes_eval(star, a.n, a.seed), ("overall", "diag_background", "diag_named_colours")
        print(json.dumps({"cfg": cfg, "temperature": temperature, "top_k": top_k,
                          **{k: round(r[k], 3) for k in keep}, "seconds": round(time.time() - t)}), flush=True)


if __name__ == "__main__":
    main()
