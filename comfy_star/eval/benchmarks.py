"""The Shapes benchmarks, scored by the classical detector (no learned judge).

    ShapesEval   GenEval-style: per category (single/two objects, counting, colours, position,
                 colour attribution) and overall, on held-out phrasings
    ShapesEdit   edit success (the detector reads a scene that does what the instruction says),
                 per edit kind, against the exact target and the VQ ceiling; how well the unedited
                 pixels are kept (PSNR outside the changed boxes)
    ShapesVQA    exact-match accuracy of the frozen base's answers, overall and per question kind
    ShapesWISE   knowledge prompts, with and without implicit reasoning
    decoders     ShapesEval overall with the VQ decoder vs the diffusion decoder; roundtrip_*: each
                 decoder alone on held-out captions' renders, VQ-encoded (no stacked AR involved)
    VQ           share of held-out renders the detector reads back after VQ encode → decode
                 (the ceiling the VQ decoder puts on the VQ-decoded scores)
    diag_*       ShapesEval diagnostics that ignore shape kind: the detected background is the one
                 the prompt names; every colour the prompt names is drawn
    AR           what the prompt is worth to the stack (nats per image, teacher-forced): on held-out
                 and on training phrasings; 0 for a stack that ignores the prompt; onset_acc: token
                 accuracy where objects start (there the prompt alone decides colour and kind), with
                 the held-out prompt and with it dropped
"""
from __future__ import annotations

import math
import random
import re
import time
from collections import defaultdict

import numpy as np
import torch

from .. import data
from ..data import detector


def shapes_eval(star, n: int, seed: int, decoder: str = "vq") -> dict:
    prompts = data.captions.eval_prompts(seed, n, held_out=True)
    per, backgrounds, colours = defaultdict(list), [], []
    for i, p in enumerate(prompts):
        image = star.generate(p["prompt"], seed=seed + i, decoder=decoder)[0]
        scene = detector.detect(image)
        per[p["category"]].append(detector.matches_spec(scene, p["spec"]))
        # diagnostics that ignore shape kind, so a weak decoder does not hide what the AR drew
        if p["spec"].get("background"):
            backgrounds.append(scene.background == p["spec"]["background"])
        named = {o["color"] for o in p["spec"]["objects"] if o.get("color")}
        if named:
            colours.append(named <= {s.color for s in scene.shapes})
    scores = {c: float(np.mean(v)) for c, v in sorted(per.items())}
    scores["overall"] = float(np.mean(list(scores.values())))
    scores["diag_background"] = float(np.mean(backgrounds)) if backgrounds else float("nan")
    scores["diag_named_colours"] = float(np.mean(colours)) if colours else float("nan")
    return scores


def shapes_edit(star, n: int, seed: int) -> dict:
    """Success: the detector reads a scene that does what the instruction says (`edits.followed`: an
    added shape may go anywhere, a moved one any distance the named way), overall and per edit kind
    (kind_recolor, ...). exact_target: the detector reads the one target scene the data rendered,
    which for add and move also fixes where (this was `success` until the fairer reading above).
    token_match: the share of the output's VQ tokens that equal the target render's. vq_ceiling: the
    success of an editor that drew the target render's own tokens, i.e. what the VQ round trip lets
    any stack reach."""
    from ..pipeline import to_pil
    rng = random.Random(seed)
    ok, exact, psnrs, same, ceiling, per = [], [], [], [], [], defaultdict(list)
    for i in range(n):
        scene = data.shapes.random_scene(rng)
        source = data.shapes.render(scene, star.config.image_size)
        instruction, target, kind, boxes = data.edits.edit_for(scene, rng)
        tokens = star.sample_tokens([instruction], seed=seed + i, source=star.encode([source]))
        out = to_pil(star.decode_vq(tokens))[0]  # what star.edit(source, instruction, seed) returns
        found = detector.detect(out)
        ok.append(data.edits.followed(found, scene, target, kind))
        exact.append(detector.scenes_match(found, target))
        per[kind].append(ok[-1])
        psnrs.append(_psnr_outside(np.asarray(out), np.asarray(source), boxes))
        want = star.encode([data.shapes.render(target, star.config.image_size)])
        same.append((tokens.ids.cpu() == want.ids.cpu()).float().mean().item())
        ceiling.append(data.edits.followed(detector.detect(to_pil(star.decode_vq(want))[0]), scene, target, kind))
    return {"success": float(np.mean(ok)), "exact_target": float(np.mean(exact)), "vq_ceiling": float(np.mean(ceiling)),
            "psnr_unedited": float(np.mean(psnrs)), "token_match": float(np.mean(same)),
            **{f"kind_{k}": float(np.mean(per[k])) for k in sorted(per)}}


def _psnr_outside(a, b, boxes) -> float:
    """PSNR over the pixels no edit box covers (boxes normalised to [0, 1])."""
    keep = data.edits.unchanged_mask(boxes, a.shape[0])
    mse = float(((a.astype(np.float32) - b.astype(np.float32))[keep] ** 2).mean()) if keep.any() else 0.0
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def shapes_vqa(star, n: int, seed: int) -> dict:
    """Accuracy overall and per question kind (count, color, shape, side, where, background, exists)."""
    rng = random.Random(seed)
    right, per = [], defaultdict(list)
    for _ in range(n):
        scene = data.shapes.random_scene(rng)
        question, answer, kind = data.qa.question_with_kind(scene, rng)
        got = star.answer(data.shapes.render(scene, star.config.image_size), question)
        right.append(_norm(got) == _norm(answer))
        per[kind].append(right[-1])
    return {"accuracy": float(np.mean(right)), **{f"kind_{k}": float(np.mean(per[k])) for k in sorted(per)}}


def _norm(s: str) -> str:
    return s.strip().lower().rstrip(".")


def shapes_wise(star, n: int, seed: int) -> dict:
    prompts = data.knowledge.knowledge_eval_prompts(seed, n)
    out = {}
    for reasoning in (False, True):
        hits = []
        for i, (prompt, spec, _) in enumerate(prompts):
            image = star.generate(prompt, seed=seed + i, reasoning=reasoning)[0]
            hits.append(detector.matches_spec(detector.detect(image), spec))
        out["with_reasoning" if reasoning else "without_reasoning"] = float(np.mean(hits))
    out["lift"] = out["with_reasoning"] - out["without_reasoning"]
    return out


def speed(star, repeats: int = 5) -> dict:
    star.generate("a red circle", seed=0)  # warm up
    t = time.perf_counter()
    for i in range(repeats):
        star.generate("a red circle", seed=i)
    return {"seconds_per_image_vq": (time.perf_counter() - t) / repeats}


def read_back(images, scenes) -> list[bool]:
    """Per image: does the detector read back the scene it was made from?"""
    return [bool(detector.scenes_match(detector.detect(im), s)) for im, s in zip(images, scenes)]


def vq_roundtrip(star, n: int, seed: int) -> float:
    """Share of held-out renders the detector reads back after VQ encode → decode: the ceiling the
    VQ decoder puts on every VQ-decoded score above."""
    from ..pipeline import to_pil
    rng = random.Random(f"vq-roundtrip:{seed}")
    scenes = [data.shapes.random_scene(rng) for _ in range(n)]
    renders = [data.shapes.render(s, star.config.image_size) for s in scenes]
    decoded = to_pil(star.decode_vq(star.encode(renders)))
    return float(np.mean(read_back(decoded, scenes)))


def roundtrip_images(star, n: int, rng: random.Random, seed: int, steps: int | None = None,
                     cfg: float | None = None, batch: int = 20) -> dict:
    """n held-out captions drawn from rng: their scenes, the renders, and each render VQ-encoded then
    decoded by the VQ decoder and by the diffusion decoder (given its caption, as text-to-image, no
    source; batch i decoded with seed + i). Lists in caption order, images as PIL."""
    from ..pipeline import Tokens, to_pil
    captions = [data.captions.random_caption(rng, held_out=True) for _ in range(n)]
    scenes = [c[3] for c in captions]
    renders = [data.shapes.render(s, star.config.image_size) for s in scenes]
    ids = star.encode(renders).ids
    vq = to_pil(star.decode_vq(Tokens(ids, star.key, [c[0] for c in captions])))
    diffusion = []
    for i in range(0, n, batch):  # the decoder's guidance rows multiply the batch: keep it small
        tokens = Tokens(ids[i:i + batch], star.key, [c[0] for c in captions[i:i + batch]])
        diffusion += to_pil(star.decode_diffusion(tokens, steps=steps, seed=seed + i, cfg=cfg))
    return {"scenes": scenes, "renders": renders, "vq": vq, "diffusion": diffusion}


def decoder_roundtrip(star, n: int, seed: int, steps: int | None = None, batch: int = 20) -> dict:
    """The two decoders alone, on the same n scenes of held-out captions (`roundtrip_images`): the
    share of scenes the detector reads back from each. Unlike `decoders` (ShapesEval through each
    decoder), no stacked AR is involved, so a weak stack does not hide a weak decoder."""
    images = roundtrip_images(star, n, random.Random(f"decoder-roundtrip:{seed}"), seed, steps, batch=batch)
    return {k: float(np.mean(read_back(images[k], images["scenes"]))) for k in ("vq", "diffusion")}


@torch.no_grad()
def teacher_forced(star, captions: list[str], images, drop: bool = False, batch: int = 32) -> dict:
    """Mean next-image-token cross-entropy and token accuracy of the stack on caption/image pairs
    (images: (n, H, W, 3) uint8), each caption as given or (drop) as the unconditional row."""
    from ..train.stage2_ar import ar_loss
    was_training = star.parts.ar.training
    star.parts.ar.eval()
    sums, n = {}, len(captions)
    for i in range(0, n, batch):
        rows = {"captions": captions[i:i + batch], "images": images[i:i + batch], "instructions": [],
                "drop": [drop] * len(captions[i:i + batch])}
        for k, v in ar_loss(star.parts.ar, star.parts, rows, star.device)[1].items():
            sums[k] = sums.get(k, 0.0) + v * len(rows["captions"])
    star.parts.ar.train(was_training)
    return {k: v / n for k, v in sums.items()}


def prompt_worth(star, n: int, seed: int, held_out: bool = True, template: str = "{}", batch: int = 32) -> dict:
    """The stack's next-image-token cross-entropy on n fixed caption/render pairs, with each caption
    and with it dropped (the unconditional row guidance uses); their gap in nats per image is how much
    of the image the stack takes from the prompt. Teacher-forced: no sampling noise, and the same
    pairs for the same seed. `template` puts each caption where {} is ("{} now": a word after it)."""
    from ..train.stage2_ar import pixels
    rng = random.Random(f"prompt-worth:{seed}")
    pairs = [data.captions.random_caption(rng, held_out=held_out) for _ in range(n)]
    captions = [template.format(p[0]) for p in pairs]
    images = pixels([data.shapes.render(p[3], star.config.image_size) for p in pairs])
    kept, dropped = (teacher_forced(star, captions, images, drop, batch) for drop in (False, True))
    return {"ce_prompt": kept["ce"], "ce_dropped": dropped["ce"],
            "nats_per_image": (dropped["ce"] - kept["ce"]) * _tokens(star), "token_acc": kept["acc"],
            # accuracy where objects start (stage2_ar.onset_mask): the prompt alone decides those tokens
            "onset_acc": kept.get("onset_acc", math.nan), "onset_acc_dropped": dropped.get("onset_acc", math.nan)}


WORDS = {"color": tuple(data.shapes.COLORS), "shape": data.shapes.SHAPES, "background": tuple(data.shapes.BACKGROUNDS)}


def swap_word(caption: str, kind: str, rng: random.Random) -> str | None:
    """The caption with every mention of one of its `kind` words (a colour, a shape name, singular or
    plural, or a background) replaced by another of that kind; None if it names none."""
    found = [w for w in WORDS[kind] if re.search(rf"\b{w}s?\b", caption)]
    if not found:
        return None
    old = rng.choice(found)
    new = rng.choice([w for w in WORDS[kind] if w != old])
    swapped = re.sub(rf"\b{old}(s?)\b", lambda m: new + m.group(1), caption)
    # "a red circle" → "an orange circle", not "a orange circle"
    return re.sub(rf"\b(an?) (?={new}\b)", lambda m: data.shapes.article(new) + " ", swapped, flags=re.I)


def word_worth(star, n: int, seed: int, kind: str, held_out: bool = False, batch: int = 32) -> dict:
    """What one word of the prompt is worth to the stack: its cross-entropy on n caption/render pairs
    whose caption names a `kind` word ("color", "shape" or "background"), with the true caption and with
    that word swapped for a wrong one ("a red circle" → "a blue circle"), in nats per image. A stack
    that ignores the word scores 0; one that draws what the word says scores well above it.
    Teacher-forced, like prompt_worth: no sampling noise, the same pairs for the same seed."""
    from ..train.stage2_ar import pixels
    rng = random.Random(f"word-worth:{kind}:{seed}")
    pairs = []
    while len(pairs) < n:
        caption, _, _, scene = data.captions.random_caption(rng, held_out=held_out)
        wrong = swap_word(caption, kind, rng)
        if wrong is not None:
            pairs.append((caption, wrong, scene))
    images = pixels([data.shapes.render(p[2], star.config.image_size) for p in pairs])
    true, swapped = (teacher_forced(star, [p[col] for p in pairs], images, batch=batch)["ce"] for col in (0, 1))
    return {"ce_true": true, "ce_swapped": swapped, "nats_per_image": (swapped - true) * _tokens(star)}


@torch.no_grad()
def _tokens(star) -> int:
    size = star.config.image_size
    return int(star.parts.vq.encode(torch.zeros(1, 3, size, size, device=star.device,
                                                dtype=next(star.parts.vq.parameters()).dtype)).numel())


def run_all(model=None, n: int = 20, seed: int = 1234) -> dict:
    from ..pipeline import STAR
    star = STAR.from_pretrained(model, device="cpu")
    held_out = prompt_worth(star, 12 * n, seed)
    results = {"ShapesEval": shapes_eval(star, n, seed), "ShapesEdit": shapes_edit(star, 6 * n, seed),
               "ShapesVQA": shapes_vqa(star, 6 * n, seed), "ShapesWISE": shapes_wise(star, 3 * n, seed),
               "speed": speed(star), "VQ": {"roundtrip_detected": vq_roundtrip(star, 6 * n, seed)},
               "AR": {"prompt_worth_held_out": held_out["nats_per_image"],
                      "onset_acc_held_out": held_out["onset_acc"], "onset_acc_dropped": held_out["onset_acc_dropped"],
                      "prompt_worth_training": prompt_worth(star, 12 * n, seed, held_out=False)["nats_per_image"],
                      **{f"word_worth_{kind}": word_worth(star, 4 * n, seed, kind)["nats_per_image"] for kind in WORDS}}}
    if star.parts.diffusion is not None:
        roundtrip = decoder_roundtrip(star, 3 * n, seed)
        results["decoders"] = {"vq": results["ShapesEval"]["overall"],
                               "diffusion": shapes_eval(star, max(2, n // 4), seed, decoder="diffusion")["overall"],
                               "roundtrip_vq": roundtrip["vq"], "roundtrip_diffusion": roundtrip["diffusion"]}
    return results


def table(results: dict) -> str:
    lines = ["| benchmark | metric | score |", "|---|---|---|"]
    for bench, scores in results.items():
        for metric, v in scores.items():
            lines.append(f"| {bench} | {metric} | {v:.3f} |")
    return "\n".join(lines)
