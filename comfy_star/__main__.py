"""`python -m comfy_star …` (or `comfy-star …`): train, evaluate, convert, generate.

    python -m comfy_star train all --out runs/star-shapes            # reproduce the embedded default
    python -m comfy_star train finetune --model M --data DIR --steps 200 --out tuned.safetensors
    python -m comfy_star eval --model runs/star-shapes/star-shapes.safetensors --json eval.json
    python -m comfy_star convert STAR-3B.pt star-3b.safetensors      # authors' .pt → our format
    python -m comfy_star generate "a red circle" --out circle.png
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="comfy_star", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train the default model's stages, or fine-tune the stack")
    t.add_argument("stage", choices=["all", "finetune"])
    t.add_argument("--out", default="runs/star-shapes")
    t.add_argument("--device", default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (0.01: smoke run)")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr-scale", type=float, default=1.0, help="all: multiply every stage's learning rate")
    t.add_argument("--warmup", type=int, default=0, help="all: linear warmup steps at the start of each stage")
    t.add_argument("--onset-weight", type=float, default=1.0,
                   help="all: stages 2 and 4 add (W - 1) x the loss of 'which code' at the image tokens where "
                        "objects start, the background masked (there the prompt alone decides colour and kind)")
    t.add_argument("--workers", type=int, default=0, help="data worker processes")
    t.add_argument("--seconds", type=float, default=0,
                   help="time budget per stage: fewer steps if the schedule would not fit (0: no limit)")
    t.add_argument("--stages", default="stage0,stage1,stage1b,stage2,stage3,stage4,final",
                   help="which stages to run; the others must be done already (their files in --out)")
    t.add_argument("--start-from", default=None,
                   help="all: a finished star-shapes checkpoint ('embedded' for the shipped one) whose parts stand "
                        "in for the stages not listed in --stages, e.g. --stages stage4,final tunes its stack further")
    t.add_argument("--take-checkpoint", default="", metavar="STAGE[,STAGE]",
                   help="all: stop these stages early: their latest checkpoint becomes their result")
    t.add_argument("--vq-encoder", choices=["vqgan", "patch", "patch4"], default=None,
                   help="all: STAR-VQ's encoder (default: the one --out's stage 1 file or --start-from has, else "
                        "'vqgan', the conv encoder); 'patch' is the "
                        "patch-local tokenizer the shipped model uses (with --codebook-size 4096), 'patch4' the same "
                        "on 4 px patches (16 x 16 tokens, 4096 codes) (use the same value for every stage of one --out)")
    t.add_argument("--codebook-size", type=int, default=0,
                   help="all: STAR-VQ's number of codes (default: the encoder's: 1024, or 4096 for 'patch4'); "
                        "the same value for every stage of one --out")
    t.add_argument("--stack-layers", type=int, default=0,
                   help="all: stacked layers (default: as many as --start-from's checkpoint has, else the preset's 4); "
                        "a shallower stack from --start-from or an earlier stage 2 is grown, each new layer "
                        "starting as the identity (LLaMA Pro block expansion)")
    t.add_argument("--edit-layout", choices=["release", "source_last"], default=None,
                   help="all: where edit rows put the source image: 'release' (before the instruction, the "
                        "authors' layout) or 'source_last' (after it, a fixed distance from the output) "
                        "(default: --start-from's, else the preset's)")
    t.add_argument("--image-cells", action=argparse.BooleanOptionalAction, default=None,
                   help="all: give each image token a learned embedding of its row and column in the token grid "
                        "(zero at first; --start-from's stack learns them from there) (default: --start-from's, "
                        "else off, as the release)")
    t.add_argument("--diffusion-prediction", choices=["v", "x"], default=None,
                   help="all: what the diffusion decoder predicts: 'v' (the velocity, as Lumina2 and the release) "
                        "or 'x' (the clean image; JiT) (default: --start-from's, else the preset's)")
    t.add_argument("--diffusion-shift", type=float, default=None,
                   help="all: the diffusion decoder's flow-matching time shift (default: --start-from's, else the "
                        "preset's)")
    t.add_argument("--diffusion-vq-upsample", choices=["bilinear", "nearest"], default=None,
                   help="all: how the diffusion decoder resizes the token grid to its latent grid: 'bilinear' "
                        "(the release's) or 'nearest' (each cell its own token's code) (default: --start-from's, "
                        "else the preset's)")
    t.add_argument("--edit-fraction", type=float, default=0.5, help="all: stage 4's share of edit rows")
    t.add_argument("--category-weights", default="", metavar="NAME=W[,NAME=W]",
                   help="all: how often stage 4 draws each ShapesEval category's captions, e.g. "
                        "two_objects=2,position=2,color_attr=2 (a category left out weighs 1)")
    t.add_argument("--edit-weights", default="", metavar="KIND=W[,KIND=W]",
                   help="all: how often stage 4 draws each kind of edit, e.g. move=3 (a kind left out weighs 1)")
    t.add_argument("--varied-phrasings", action="store_true",
                   help="all: stage 4's captions also use more training phrasings (captions.VARIED); the "
                        "held-out ones ShapesEval asks with stay unseen")
    t.add_argument("--raster-order", action="store_true",
                   help="all: stage 4's captions of two objects with no relation name them in the order "
                        "row-by-row generation meets them (the first shape drawn is the first one named)")
    t.add_argument("--preference-pairs", type=int, default=0, metavar="P",
                   help="all: stage 4 also scores P (caption, render, near miss) pairs a step and asks the stack "
                        "to prefer the render (DPO against the stack it starts from; a near miss breaks the "
                        "caption in one way: a kind copied, colours or places swapped, a shape too many) (0: off)")
    t.add_argument("--preference-beta", type=float, default=0.5, help="all: the preference term's DPO beta")
    t.add_argument("--preference-weight", type=float, default=0.25,
                   help="all: the preference term's weight beside stage 4's cross-entropy")
    t.add_argument("--model", default=None, help="finetune: the checkpoint to start from (default: embedded)")
    t.add_argument("--data", default=None, help="finetune: a caption folder (image + same-named .txt)")
    t.add_argument("--steps", type=int, default=None,
                   help="all: exactly this many steps for each stage it runs (a recorded run's count, replayed: "
                        "the schedule, warmup and checkpoint intervals follow from it), instead of the preset's "
                        "x --scale; finetune: training steps (default 200)")
    t.add_argument("--lr", type=float, default=3e-4)

    e = sub.add_parser("eval", help="ShapesEval / ShapesEdit / ShapesVQA / ShapesWISE")
    e.add_argument("--model", default=None)
    e.add_argument("--n", type=int, default=20, help="prompts per category")
    e.add_argument("--json", default=None)
    e.add_argument("--seed", type=int, default=1234)

    c = sub.add_parser("convert", help="an authors' .pt checkpoint → comfy-star safetensors")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--config-json", default=None)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--base", default=None, help="the Qwen2.5-VL-Instruct folder (default: the one the JSON names)")
    c.add_argument("--lumina", default=None, help="the Lumina-Image-2.0 folder (default: the one the JSON names)")

    g = sub.add_parser("generate", help="text → image with a model")
    g.add_argument("prompt")
    g.add_argument("--model", default=None)
    g.add_argument("--out", default="star.png")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--decoder", choices=["vq", "diffusion"], default="vq")
    g.add_argument("--reasoning", action="store_true")

    a = p.parse_args(argv)
    if a.cmd == "train" and a.diffusion_shift is not None and not a.diffusion_shift > 0:
        p.error(f"--diffusion-shift must be positive (got {a.diffusion_shift})")
    if a.cmd == "train" and not 0 <= a.edit_fraction <= 1:
        p.error(f"--edit-fraction must be between 0 and 1 (got {a.edit_fraction})")
    if a.cmd == "train" and (a.preference_pairs < 0 or not a.preference_beta > 0 or not a.preference_weight > 0):
        p.error(f"--preference-pairs must be 0 or more, --preference-beta and --preference-weight positive "
                f"(got {a.preference_pairs}, {a.preference_beta}, {a.preference_weight})")
    if getattr(a, "steps", None) is not None and a.steps < 1:
        p.error(f"--steps must be at least 1 (got {a.steps})")
    weights, edit_weights = {}, {}
    if a.cmd == "train":
        from .data.captions import parse_category_weights
        from .data.edits import parse_edit_weights
        try:
            weights = parse_category_weights(a.category_weights)
        except ValueError as e:
            p.error(f"--category-weights: {e}")
        try:
            edit_weights = parse_edit_weights(a.edit_weights)
        except ValueError as e:
            p.error(f"--edit-weights: {e}")
    if a.cmd == "train" and a.stage == "all":
        from .pipeline import DEFAULT_CHECKPOINT
        from .train.recipe import Schedule, train_shapes
        train_shapes(a.out, Schedule(batch=a.batch, scale=a.scale, lr_scale=a.lr_scale, warmup=a.warmup,
                                     onset_weight=a.onset_weight, fixed=a.steps or 0,
                                     edit_fraction=a.edit_fraction, category_weights=weights,
                                     edit_weights=edit_weights,
                                     varied_phrasings=a.varied_phrasings, raster_order=a.raster_order,
                                     preference_pairs=a.preference_pairs, preference_beta=a.preference_beta,
                                     preference_weight=a.preference_weight),
                     device=a.device, seed=a.seed, workers=a.workers,
                     stages=tuple(a.stages.split(",")), seconds=a.seconds,
                     start_from=DEFAULT_CHECKPOINT if a.start_from == "embedded" else a.start_from,
                     take=tuple(filter(None, a.take_checkpoint.split(","))), vq_encoder=a.vq_encoder,
                     stack_layers=a.stack_layers, codebook_size=a.codebook_size, edit_layout=a.edit_layout,
                     image_cells=a.image_cells,
                     diffusion=dict(prediction=a.diffusion_prediction, shift=a.diffusion_shift,
                                    vq_upsample=a.diffusion_vq_upsample))
    elif a.cmd == "train":
        from .train.finetune import finetune_cli
        finetune_cli(a)
    elif a.cmd == "eval":
        from .eval.benchmarks import run_all, table
        results = run_all(a.model, n=a.n, seed=a.seed)
        print(table(results))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=2)
    elif a.cmd == "convert":
        from .convert import convert
        print(convert(a.src, a.dst, a.config_json, a.overwrite, base_path=a.base, lumina_path=a.lumina))
    elif a.cmd == "generate":
        from .pipeline import STAR
        star = STAR.from_pretrained(a.model)
        star.generate(a.prompt, seed=a.seed, decoder=a.decoder, reasoning=a.reasoning)[0].save(a.out)
        print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
