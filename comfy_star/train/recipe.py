"""The paper's curriculum, in miniature, for the embedded default `star-shapes`.

    stage 0  a tiny Qwen2.5-VL learns to understand the Shapes world, then is frozen
    stage 1  STAR-VQ with the codebook projector
    stage 2  the stacked AR learns text-to-image (stack copied from the base's last N layers)
    stage 3  the diffusion decoder on frozen VQ embeddings
    stage 4  joint text-to-image + editing; stop-gradient between the AR and the decoder

Each stage writes `<out>/stageN.safetensors` and keeps a resumable checkpoint in `<out>/stageN/`;
rerunning skips finished stages. `python -m comfy_star train all --out runs/star-shapes`.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import components as comps
from ..ar.model import StackedAR, build_base, expand_stack_state, freeze, stack_depth
from ..ar.tokenizer import ChatFormat, load_tokenizer
from ..ar.understand import image_processor
from ..checkpoint import save_star
from ..config import preset
from . import stage0_vlm, stage2_ar
from .prefetch import Prefetched, to_device
from .runner import TrainArgs, agree_min, barrier, launch_info, train


ALL_STAGES = ("stage0", "stage1", "stage1b", "stage2", "stage3", "stage4", "final")


@dataclass
class Schedule:
    """Steps per stage; `scale` shrinks them all for a smoke run."""
    stage0: int = 6000
    stage1: int = 3000
    stage1b: int = 3000
    stage2: int = 6000
    stage3: int = 3000
    stage4: int = 3000
    batch: int = 64
    scale: float = 1.0
    lr_scale: float = 1.0  # multiplies every stage's learning rate
    warmup: int = 0        # linear warmup steps at the start of each stage (a warm start's fresh optimizer)
    onset_weight: float = 1.0  # stages 2 and 4: weight of "which code" where objects start (stage2_ar.token_loss)
    fixed: int = 0         # > 0: every stage run takes exactly this many steps (a recorded run, replayed)
    edit_fraction: float = 0.5  # stage 4: the share of a batch's rows that are edits
    category_weights: dict = field(default_factory=dict)  # stage 4: caption categories' draw weights (1 each)
    edit_weights: dict = field(default_factory=dict)  # stage 4: edit kinds' draw weights (1 each)
    varied_phrasings: bool = False  # stage 4: captions.VARIED's phrasings drawn beside the usual ones
    raster_order: bool = False  # stage 4: a pair's objects named in drawing order (captions.in_raster_order)
    preference_pairs: int = 0  # stage 4: (right render, near miss) pairs per step for the DPO term (0: none)
    preference_beta: float = 0.5  # stage 4: the DPO term's β (train/preference.py); 0.1 drifted (`runs/p9I`)
    preference_weight: float = 0.25  # stage 4: the DPO term's weight beside the cross-entropy

    def steps(self, name):
        if self.fixed:
            return self.fixed
        return max(2, int(getattr(self, name) * self.scale))


def log(msg):
    print(f"[recipe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def device_of(module):
    return next(module.parameters()).device


def fit_steps(module, make_batch, loss_fn, seconds: float, probe: int = 6) -> int:
    """How many steps fit in `seconds`: time a few forward/backward passes (weights and buffers
    untouched: a training forward may change state, e.g. a VQ's dead-code restarts)."""
    device = device_of(module)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    batches = [to_device(make_batch(10**6 + i), device) for i in range(probe)]
    loss_fn(module, batches[0])[0].backward()  # warm up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for b in batches[1:]:
        loss_fn(module, b)[0].backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    module.zero_grad(set_to_none=True)
    module.load_state_dict(state)
    per_step = (time.time() - t) / (probe - 1) * 1.15  # + optimizer step and logging
    log(f"  {per_step * 1e3:.0f} ms/step → {int(seconds / per_step)} steps in {seconds:.0f}s")
    return max(2, int(seconds / per_step))


def run_stage(out: Path, name: str, module, make_batch, loss_fn, steps, batch, lr, seed, workers, run=True,
              seconds: float = 0, lr_scale: float = 1.0, warmup: int = 0, samples=None, adapt=None, **kw):
    """Train `module`'s trainable parameters unless `<out>/<name>.safetensors` exists (then load it).
    With run=False the stage must already be done (another process, or an earlier run, did it).
    `adapt` maps a stage file's state dict before it is loaded (e.g. a stack grown by more layers)."""
    done = out / f"{name}.safetensors"
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    adapt = adapt or (lambda state: state)
    if done.exists():
        log(f"{name}: found {done}, loading it")
        missing, unexpected = module.load_state_dict(adapt(load_file(str(done))), strict=False)
        if unexpected or set(missing) & trainable:
            raise ValueError(f"{done} does not match {name}'s module: {sorted(set(missing) & trainable)[:5]} {unexpected[:5]}")
        return
    if not run:
        raise FileNotFoundError(f"{name} is needed but not done: {done} is missing (run it first)")
    init = out / f"{name}-init.safetensors"
    if init.exists():  # warm start from an earlier run's weights (a fresh optimizer and schedule)
        log(f"{name}: starting from {init}")
        module.load_state_dict(adapt(load_file(str(init))), strict=False)
    if seconds:  # every process times its own steps; all must run the same number
        steps = agree_min(min(steps, fit_steps(module, make_batch, loss_fn, seconds)))
    t0 = time.time()
    args = TrainArgs(out_dir=str(out / name), steps=steps, lr=lr * lr_scale, batch_size=batch, seed=seed,
                     save_every=max(100, steps // 10), log_every=50, warmup_steps=min(warmup, steps // 2),
                     sample_every=max(1, min(500, steps // 10)) if samples else 0, **kw)
    on_sample = None if samples is None else lambda model, step: samples(out / name / "samples" / f"step_{step:06d}.png")
    result = train(module, Prefetched(make_batch, steps, workers), loss_fn, args, on_sample=on_sample)
    # everything but an earlier stage's frozen base (buffers too: e.g. a VQ projector's fixed basis)
    state = {n: t.detach().cpu().contiguous() for n, t in module.state_dict().items() if not n.startswith("base.")}
    if launch_info()[0] == 0:  # one writer: every rank holds the same weights after DDP
        save_file(comps._untie(state), str(done))
    barrier()  # no rank goes on to load the stage file before it exists
    last = result.log[-1] if result.log else {}
    log(f"{name}: {steps} steps in {time.time() - t0:.0f}s, last {json.dumps(last)}")


# which part of a star-shapes checkpoint each stage trained, and the prefix its module's keys lose
STAGE_PARTS = {"stage0": ("ar.base.",), "stage1": ("vq.",), "stage1b": ("vq.decoder.", "vq.post_quant_conv."),
               "stage2": ("ar.stack.", "ar.adapter.", "ar.head."), "stage3": ("diffusion.",),
               "stage4": ("ar.stack.", "ar.adapter.", "ar.head.")}  # a finished checkpoint's stack is its last
STAGE_ROOT = {"stage0": "ar.base.", "stage1": "vq.", "stage1b": "vq.", "stage2": "ar.", "stage3": "diffusion.",
              "stage4": "ar."}


def parts_to_unpack(stages) -> list[str]:
    """The stages a `--start-from` checkpoint stands in for: those not run. Its stack stands in for
    stage 4 too when this run ends in `final` and trains no stack (with stage 2 or 4, or a later run of
    stage 4 in the same folder, stage 4 must come from the new stack: an existing stage file is kept)."""
    stack_is_final = "final" in stages and not {"stage2", "stage4"} & set(stages)
    return [s for s in STAGE_PARTS if s not in stages and (s != "stage4" or stack_is_final)]


def grown(state: dict, num_layers: int) -> dict:
    """A stage-2 state dict with `num_layers` stacked layers: new ones start as the identity."""
    have = stack_depth(state)
    if have < num_layers:
        log(f"stage2: growing the stack from {have} to {num_layers} layers (new layers start as the identity)")
    return expand_stack_state(state, num_layers)


def with_cells(state: dict, model) -> dict:
    """A stage-2 state dict for `model`: zero cell embeddings added where the model has them and the
    state (a stack trained without them) does not, so the model starts out computing what it did.
    Trained ones are never dropped: without them the stack would no longer compute what it learned."""
    if "adapter.cell_rows" in state and not model.adapter.cells:
        raise ValueError("this stage-2 stack was trained with image-cell embeddings; it cannot continue without "
                         "them (leave out --no-image-cells)")
    if model.adapter.cells and "adapter.cell_rows" not in state:
        log(f"stage2: adding {model.adapter.cells} x {model.adapter.cells} image-cell embeddings (zero at first)")
        state = dict(state, **{f"adapter.{k}": torch.zeros_like(v) for k, v in model.adapter.named_parameters()
                               if k.startswith("cell_")})
    return state


def unpack_checkpoint(path, out: Path, stages=("stage0", "stage1", "stage1b", "stage2", "stage3")) -> list[str]:
    """Write `<out>/<stage>.safetensors` for each of `stages` from a finished star-shapes checkpoint
    (e.g. the embedded one), so that the curriculum continues from it: `train all --start-from CKPT
    --stages stage4,final` tunes the shipped stack further. Existing stage files are never replaced."""
    from ..checkpoint import read_config, read_tensors
    if read_config(path).name != "star-shapes":
        raise ValueError(f"{path}: --start-from takes a star-shapes checkpoint")
    tensors = read_tensors(path)
    written = []
    for stage in stages:
        done = out / f"{stage}.safetensors"
        if done.exists():
            log(f"{stage}: {done} exists, kept")
            continue
        prefixes = STAGE_PARTS[stage]
        drop = len(STAGE_ROOT[stage])
        state = {k[drop:]: v.float() if v.is_floating_point() else v
                 for k, v in tensors.items() if k.startswith(prefixes)}
        if not state:
            raise ValueError(f"{path}: holds nothing for {stage} (no keys under {prefixes})")
        save_file(comps._untie(state), str(done))
        written.append(stage)
        log(f"{stage}: unpacked {len(state)} tensors from {path}")
    return written


def take_checkpoint(out: Path, name: str) -> Path:
    """Stop a stage early: write `<out>/<name>.safetensors` from the stage's latest resumable
    checkpoint (its weights at that step, part-way through the schedule). A finished stage file is
    never replaced; the checkpoint is left as it was (the stage can still be resumed)."""
    from .checkpointing import find_checkpoint, load_checkpoint
    done = out / f"{name}.safetensors"
    if done.exists():
        raise FileExistsError(f"{done} exists: {name} is finished (remove it to take a checkpoint instead)")
    path = find_checkpoint(out / name)
    if path is None:
        raise FileNotFoundError(f"{out / name} holds no training checkpoint of {name}")
    ckpt = load_checkpoint(path)
    save_file({k: v.contiguous() for k, v in ckpt.model.items()}, str(done))
    log(f"{name}: took {ckpt.path} (step {ckpt.step}) as {done}")
    return done


def shapes_config(vq_encoder: str = "vqgan", codebook_size: int = 0):
    """The star-shapes preset; `vq_encoder="patch"` is the patch-local tokenizer of
    docs/star-shapes-training.md § Experiment (a plain codebook with dead-code restarts in place of the
    projector, which collapses from a cold start with that encoder), and "patch4" the same on 4 px
    patches with 4,096 codes. `codebook_size` (0: the encoder's default) sets the number of codes, and
    with it the AR head's width."""
    cfg = preset("star-shapes")
    if vq_encoder in ("patch", "patch4"):
        cfg.vq.encoder, cfg.vq.restart_every, cfg.vq.projector_dim, cfg.vq.projector_depth = "patch", 20, 0, 0
    if vq_encoder == "patch4":  # 4 px patches (16 x 16 tokens), 4096 codes: scripts/patch_codebook_ceiling.py
        cfg.vq.ch_mult, cfg.vq.codebook_size = cfg.vq.ch_mult[:-1], 4096
    elif vq_encoder not in ("vqgan", "patch"):
        raise ValueError(f"vq_encoder {vq_encoder!r}: expected 'vqgan', 'patch' or 'patch4'")
    if codebook_size < 0 or codebook_size == 1:
        raise ValueError(f"codebook_size {codebook_size}: expected at least 2 codes (0: the default)")
    if codebook_size:
        cfg.vq.codebook_size = codebook_size
    return cfg


def tokenizer_of(stage1_file) -> tuple[str, int]:
    """(vq_encoder, codebook_size) that rebuild a stage-1 file's STAR-VQ, read from its tensors' names and shapes."""
    from safetensors import safe_open
    with safe_open(str(stage1_file), "pt") as f:
        keys = set(f.keys())
        book = next((k for k in ("quantize.embedding.weight", "quantize.base") if k in keys), None)
        codes = f.get_slice(book).get_shape()[0] if book else 0
        if "encoder.mlp.0.weight" not in keys:
            return "vqgan", codes
        patch_pixels = f.get_slice("encoder.mlp.0.weight").get_shape()[1] // 3  # 3·f² inputs per patch
    return ("patch4" if patch_pixels == 16 else "patch"), codes


DECODER_SETTINGS = ("prediction", "shift", "vq_upsample")  # how a decoder is trained, beyond its shape


def decoder_settings(preset, chosen: dict, start_from=None):
    """The preset's DiffusionConfig with each of DECODER_SETTINGS as chosen, else as --start-from's
    decoder was trained (a decoder goes on as it began), else the preset's; validated."""
    unknown = set(chosen) - set(DECODER_SETTINGS)
    if unknown:
        raise ValueError(f"unknown diffusion decoder settings {sorted(unknown)}; known: {DECODER_SETTINGS}")
    was = None
    if start_from:
        from ..checkpoint import read_config
        was = read_config(start_from).diffusion
    values = {name: chosen[name] if chosen.get(name) is not None else getattr(was or preset, name)
              for name in DECODER_SETTINGS}
    return replace(preset, **values)  # __post_init__ refuses a bad value by name


def train_shapes(out_dir="runs/star-shapes", schedule: Schedule | None = None, device=None, seed=0,
                 workers=0, stages=ALL_STAGES, seconds: float = 0, start_from=None, take=(),
                 vq_encoder: str | None = None, stack_layers: int = 0, codebook_size: int = 0,
                 edit_layout: str | None = None, diffusion: dict | None = None,
                 image_cells: bool | None = None) -> Path:
    sched = schedule or Schedule()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in take:
        take_checkpoint(out, name)
    if start_from:
        if launch_info()[0] == 0:  # one writer under torchrun; the others wait for the files
            unpack_checkpoint(start_from, out, parts_to_unpack(stages))
        barrier()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    if vq_encoder is None:  # not chosen: the tokenizer this run (or --start-from) already has, else the conv one
        stage1, vq_encoder = out / "stage1.safetensors", "vqgan"
        if stage1.exists():
            vq_encoder, codes = tokenizer_of(stage1)
            codebook_size = codebook_size or codes
            log(f"STAR-VQ: {vq_encoder} encoder, {codebook_size} codes, as {stage1} has")
    cfg = shapes_config(vq_encoder, codebook_size)
    if not stack_layers and start_from:  # continue a checkpoint as deep as it is
        from ..checkpoint import read_config
        stack_layers = read_config(start_from).ar.num_stacked_layers
    if stack_layers:  # a shallower stage-2 stack (an older checkpoint's) is grown to this depth
        cfg.ar.num_stacked_layers = stack_layers
    if edit_layout is None and start_from:  # not chosen: the layout --start-from's stack was tuned in
        from ..checkpoint import read_config
        edit_layout = read_config(start_from).ar.edit_layout
    if edit_layout:
        cfg.ar.edit_layout = edit_layout
    if image_cells is None and start_from:  # not chosen: as --start-from's stack
        from ..checkpoint import read_config
        image_cells = bool(read_config(start_from).ar.image_cells)
    cfg.ar.image_cells = cfg.grid if image_cells else 0
    if cfg.diffusion is not None:
        cfg.diffusion = decoder_settings(cfg.diffusion, diffusion or {}, start_from)
    B = sched.batch
    tune = dict(lr_scale=sched.lr_scale, warmup=sched.warmup)

    # stage 0: the understanding model (trainable only here); it needs nothing else
    chat = ChatFormat(load_tokenizer(cfg.ar.tokenizer), cfg.ar.system_prompt)
    proc = image_processor(cfg.ar.image_patch_size, cfg.ar.image_merge_size, cfg.image_size)
    base = build_base(cfg.ar).to(device)
    base.requires_grad_(True).train()
    mb0 = stage0_vlm.make_batch_fn(chat, proc, B, cfg.image_size, seed)
    run_stage(out, "stage0", base, mb0, stage0_vlm.vlm_loss, sched.steps("stage0"), B, 1e-3, seed, workers,
              run="stage0" in stages, seconds=seconds, **tune)
    freeze(base)
    if set(stages) <= {"stage0"}:
        return out

    from .stage1_vq import make_batch as vq_batch, vq_loss
    from .stage3_diffusion import diffusion_loss
    parts = comps.build(cfg, stack_init="random")
    parts.ar = StackedAR(base, cfg.ar, cfg.vq.codebook_dim, cfg.vq.codebook_size, init="random")
    for m in parts.modules().values():
        m.to(device)

    # stage 1: STAR-VQ
    vq = parts.vq.train()
    vq.requires_grad_(True)
    mb1 = lambda step, rank=0, world=1: vq_batch(step, B, cfg.image_size, seed + rank * 7919)
    run_stage(out, "stage1", vq, mb1, lambda m, x: vq_loss(m, x.to(device)), sched.steps("stage1"), B, 1e-3,
              seed, workers, run="stage1" in stages, seconds=seconds, **tune)
    if hasattr(vq, "export_codebook"):
        vq.export_codebook()
    freeze(vq)

    # stage 1b: the VQ decoder alone, on the tokens stage 1 fixed. The encoder and codebook (what
    # the AR and the diffusion decoder learn from) do not move, so it runs beside stages 2-4.
    if {"stage1b", "final"} & set(stages) or (out / "stage1b.safetensors").exists():
        for part in (vq.decoder, vq.post_quant_conv):
            part.requires_grad_(True).train()
        mb1b = lambda step, rank=0, world=1: vq_batch(step, B, cfg.image_size, seed + 1 + rank * 7919)
        run_stage(out, "stage1b", vq, mb1b, lambda m, x: vq_loss(m, x.to(device)), sched.steps("stage1b"), B,
                  5e-4, seed, workers, run="stage1b" in stages, seconds=seconds, **tune)
        freeze(vq)

    # stage 2: the stack starts as a copy of the trained base's last N layers (vlm init)
    parts.ar = StackedAR(base, cfg.ar, cfg.vq.codebook_dim, cfg.vq.codebook_size, init="vlm").to(device)
    if {"stage2", "stage4"} & set(stages):
        mb2 = stage2_ar.make_batch_fn(parts.image_proc, cfg.image_size, B, seed)
        loss2 = lambda m, b: stage2_ar.ar_loss(m, parts, to_device(b, device), device, sched.onset_weight)
        run_stage(out, "stage2", parts.ar, mb2, loss2, sched.steps("stage2"), B, 5e-4, seed, workers,
                  run="stage2" in stages, seconds=seconds, samples=lambda path: sample_strip(parts, path),
                  adapt=lambda state: with_cells(grown(state, cfg.ar.num_stacked_layers), parts.ar), **tune)

    # stage 3: the diffusion decoder, on frozen VQ embeddings and frozen base text features
    if parts.diffusion is not None and {"stage3", "final"} & set(stages):
        parts.diffusion.train().requires_grad_(True)
        # targets at the decoder's output size (super-resolution: tokens come from the 64 px render)
        mb3 = stage2_ar.make_batch_fn(parts.image_proc, cfg.sampling.diffusion_size, B, seed + 1, drop_prob=0.0,
                                      edit_fraction=0.3, vision=False)
        loss3 = lambda m, b: diffusion_loss(m, diffusion_batch(parts, to_device(b, device), device))
        run_stage(out, "stage3", parts.diffusion, mb3, loss3, sched.steps("stage3"), B, 5e-4, seed, workers,
                  run="stage3" in stages, seconds=seconds,
                  samples=lambda path: sample_strip(parts, path, decoder="diffusion"), **tune)

    # stage 4: joint text-to-image + editing (the AR part; the decoder saw edits in stage 3)
    skip4 = "stage4" not in stages and not (out / "stage4.safetensors").exists() and "skip-stage4" in stages
    if skip4:
        log("stage4 skipped on request: the model ships stage 2's stack (no edit tuning)")
        run_stage(out, "stage2", parts.ar, None, None, 0, B, 0, seed, workers, run=False)
    elif {"stage4", "final"} & set(stages):
        mb4 = stage2_ar.make_batch_fn(parts.image_proc, cfg.image_size, B, seed + 2,
                                      edit_fraction=sched.edit_fraction, category_weights=sched.category_weights,
                                      varied_phrasings=sched.varied_phrasings, raster_order=sched.raster_order,
                                      edit_weights=sched.edit_weights)
        loss4 = lambda m, b: stage2_ar.ar_loss(m, parts, to_device(b, device), device, sched.onset_weight)
        if sched.preference_pairs and "stage4" in stages:
            mb4, loss4, _ = with_preference(out, parts, mb4, cfg.image_size, sched, seed, device)
        run_stage(out, "stage4", parts.ar, mb4, loss4, sched.steps("stage4"), B, 3e-4, seed, workers,
                  run="stage4" in stages, seconds=seconds, samples=lambda path: sample_strip(parts, path), **tune)
    if "final" not in stages:
        return out
    cfg.vq.projector_dim = cfg.vq.projector_depth = cfg.vq.restart_every = 0  # exported: a plain codebook ships

    for m in parts.modules().values():
        freeze(m)
    final = out / "star-shapes.safetensors"
    tensors = {k: v.half() if v.is_floating_point() else v
               for k, v in comps.state_for_saving(parts, include_base=True).items()}
    save_star(final, cfg, tensors, overwrite=True)
    log(f"wrote {final} ({final.stat().st_size / 2**20:.1f} MiB)")
    return final


def with_preference(out: Path, parts, make_batch, image_size: int, sched: Schedule, seed: int, device):
    """(batch function, loss function, reference): stage 4's with the preference term (train/preference.py)
    added. The reference is the stack stage 4 starts from: stage 2's, or `<out>/stage4-init.safetensors`
    (and so on resume too, not the weights resumed)."""
    from . import preference
    ref = preference.reference_of(parts.ar)
    init = out / "stage4-init.safetensors"
    if init.exists():
        ref.load_state_dict(load_file(str(init)), strict=False)
    log(f"stage4: a preference term on {sched.preference_pairs} pairs a step, beta {sched.preference_beta}, "
        f"weight {sched.preference_weight}")
    make_batch = preference.add_pairs(make_batch, image_size, sched.preference_pairs, seed + 3)
    loss = lambda m, b: preference.preference_ar_loss(m, ref, parts, to_device(b, device), device,
                                                      sched.onset_weight, sched.preference_beta,
                                                      sched.preference_weight)
    return make_batch, loss, ref


SAMPLE_PROMPTS = ("a red circle to the left of a blue square", "two green triangles on a white background",
                  "a yellow diamond", "a purple square above an orange circle")


@torch.no_grad()
def sample_strip(parts, path: Path, decoder: str = "vq", seed: int = 0) -> None:
    """The periodic sample images of a stage: the same prompts and seed every time, side by side.
    decoder "vq": the stacked AR's tokens, VQ-decoded (stages 2 and 4); "diffusion": the decoder
    alone, on the tokens of the prompts' reference renders (stage 3), each next to its render."""
    from .. import data
    from ..pipeline import STAR, Tokens, to_pil
    star = STAR(parts, device=device_of(parts.ar), dtype=next(parts.ar.parameters()).dtype, key="training")
    size = parts.config.image_size
    if decoder == "vq":
        images = [star.generate(p, seed=seed)[0] for p in SAMPLE_PROMPTS]
    else:
        rng = random.Random(seed)
        renders = [data.shapes.render(data.shapes.random_scene(rng), size) for _ in SAMPLE_PROMPTS]
        tokens = star.encode(renders)
        decoded = to_pil(star.decode_diffusion(Tokens(tokens.ids, star.key, list(SAMPLE_PROMPTS)), seed=seed))
        images = [im for pair in zip(renders, decoded) for im in pair]
    side = max(im.width for im in images)
    from PIL import Image
    strip = Image.new("RGB", (side * len(images), side))
    for i, im in enumerate(images):
        strip.paste(im.convert("RGB").resize((side, side), Image.NEAREST), (i * side, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


@torch.no_grad()
def diffusion_batch(parts, batch, device):
    """Images (t2i targets and edit results), their VQ embeddings (stop-gradient), text features,
    and the edit sources (zeros → "no source" for text-to-image rows)."""
    images, texts, sources = [], [], []
    if batch["captions"]:
        images.append(stage2_ar.to_model_range(batch["images"], device))
        texts += batch["captions"]
    if batch["instructions"]:
        images.append(stage2_ar.to_model_range(batch["targets"], device))
        texts += batch["instructions"]
    x = torch.cat(images)
    small = torch.nn.functional.interpolate(x, size=(parts.config.image_size,) * 2, mode="area")
    ids = parts.vq.encode(small)
    vq_embeds = parts.vq.embed(ids).detach()
    star = _TextFeatures(parts, device)
    text, mask = star.text_features(texts)
    src = None
    if batch["instructions"]:
        src = torch.zeros_like(x)
        src[len(batch["captions"]):] = stage2_ar.to_model_range(batch["sources"], device)  # t2i rows: zeros
    return dict(images=x, vq_embeds=vq_embeds, text_embeds=text, text_mask=mask, source_images=src)


class _TextFeatures:
    """The pipeline's text features for the decoder, without building a whole STAR."""
    def __init__(self, parts, device):
        self.parts, self.device, self.config = parts, device, parts.config

    def text_features(self, prompts):
        from ..pipeline import STAR
        return STAR.text_features(self, prompts)
