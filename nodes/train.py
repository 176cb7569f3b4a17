"""Training nodes: STAR Folder Dataset, STAR Shapes Dataset, STAR Train Stacked Layers, STAR Save Checkpoint.

They run headless through the API like any node, on the library's code (`comfy_star.train.finetune`,
shared with `python -m comfy_star train finetune`). Compared with ComfyUI's own Train LoRA / Plot
Loss Graph: progress with a live loss-curve preview, cancel within a step that leaves the input
model untouched, a loss plot that survives one step or a flat curve, and saves that never overwrite.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

import comfy.model_management

from comfy_star.train.finetune import Example, Examples, finetune_stack, save_model

from . import checks, paths
from .convert import pil_to_image
from .plot import loss_plot
from .progress import Progress
from .schema import (Combo, ComfyNode, Float, Image, Int, NodeOutput, StarDataset, StarModel, String, model_input,
                     schema, seed_input, text_output)

log = logging.getLogger("comfy-star")
KINDS = ["caption", "edit"]


class STARFolderDataset(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARFolderDataset", "STAR Folder Dataset",
            "Reads training examples from a folder inside ComfyUI's input directory. caption: images with "
            "same-named .txt captions. edit: source/target image pairs with an instruction. Unreadable files "
            "are reported by name and skipped.",
            inputs=[
                String.Input("folder", default="star_dataset",
                             tooltip="A folder inside ComfyUI's input directory (e.g. 'star_dataset'); "
                                     "absolute paths and '..' are refused."),
                Combo.Input("kind", options=KINDS, default="caption",
                            tooltip="caption: image + caption pairs (text-to-image). "
                                    "edit: source + instruction + target (image editing)."),
            ],
            outputs=[StarDataset.Output(display_name="dataset", tooltip="The examples, for STAR Train Stacked Layers.")],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, kind):
        try:  # the folder's files, so that adding or editing one re-reads it
            return (paths.folder_fingerprint(paths.input_folder(folder)), kind)
        except ValueError:
            return (folder, kind)

    @classmethod
    def execute(cls, folder, kind) -> NodeOutput:
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {KINDS}, not {kind!r}")
        root = paths.input_folder(folder, "folder")
        from comfy_star import data
        reader = data.CaptionFolder if kind == "caption" else data.EditFolder
        try:  # checks every file once; images are read again only when a batch needs them
            items = reader(root)
        except ValueError as e:
            raise ValueError(f"folder: {e}") from None
        return NodeOutput(Examples(items, name=f"{kind}-folder:{folder}"))


class STARShapesDataset(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARShapesDataset", "STAR Shapes Dataset",
            "Renders training examples from the procedural Shapes world (the embedded model's world): "
            "a dataset to try fine-tuning with, no files needed.",
            inputs=[
                Int.Input("count", default=32, min=1, max=10000, tooltip="How many examples to render."),
                Combo.Input("kind", options=KINDS + ["mixed"], default="caption",
                            tooltip="caption: prompt + image; edit: source + instruction + target; mixed: half each."),
                seed_input(tooltip="Seed of the scenes: the same seed renders the same examples."),
                Int.Input("size", default=64, min=16, max=1024, step=8,
                          tooltip="Image side in pixels (the model resizes to its own input size; "
                                  "star-shapes uses 64)."),
            ],
            outputs=[StarDataset.Output(display_name="dataset", tooltip="The examples, for STAR Train Stacked Layers.")],
        )

    @classmethod
    def execute(cls, count, kind, seed, size) -> NodeOutput:
        count = checks.positive_int(count, "count", 10000)
        seed = checks.seed(seed)
        size = checks.positive_int(size, "size", 1024)
        if kind not in KINDS + ["mixed"]:
            raise ValueError(f"kind: must be one of {KINDS + ['mixed']}, not {kind!r}")
        from comfy_star import data
        rng = random.Random(f"shapes-dataset:{seed}")
        items = []
        for i in range(count):
            comfy.model_management.throw_exception_if_processing_interrupted()
            edit = kind == "edit" or (kind == "mixed" and i % 2 == 1)
            if edit:
                source, instruction, target = data.sample_edit(rng, size=size)[:3]
                items.append(Example(source=source, instruction=instruction, target=target))
            else:
                caption, image = data.sample_t2i(rng, size=size)[:2]
                items.append(Example(image=image, caption=caption))
        return NodeOutput(Examples(items, name=f"shapes:{kind}:{count}:{seed}"))


class STARTrainStackedLayers(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARTrainStackedLayers", "STAR Train Stacked Layers",
            "Fine-tunes the stacked AR layers (stack, generation adapter, head) on a dataset; the base VLM, the VQ "
            "and the diffusion decoder stay frozen. Returns a tuned copy (the input model is never changed) and the "
            "loss curve. Cancel stops within one step.",
            inputs=[
                model_input("The model to start from (it is copied, never changed)."),
                StarDataset.Input("dataset", tooltip="From STAR Folder Dataset or STAR Shapes Dataset."),
                Int.Input("steps", default=20, min=1, max=100000, tooltip="Optimizer steps."),
                Float.Input("learning_rate", default=0.0003, min=0.0000001, max=1.0, step=0.00001,
                            tooltip="AdamW learning rate."),
                Int.Input("batch_size", default=4, min=1, max=1024, tooltip="Examples per step."),
                seed_input(tooltip="Seed of the example order and prompt dropout."),
                String.Input("save_prefix", default="",
                             tooltip="If set, also save the tuned model as models/star/<prefix>_00001.safetensors "
                                     "(never overwriting). Empty: do not save (use STAR Save Checkpoint)."),
            ],
            outputs=[
                StarModel.Output(display_name="model", tooltip="The fine-tuned model."),
                Image.Output(display_name="loss_plot", tooltip="The loss per step."),
            ],
            experimental=True,
        )

    @classmethod
    def execute(cls, model, dataset, steps, learning_rate, batch_size, seed, save_prefix="") -> NodeOutput:
        if not isinstance(dataset, Examples):
            raise ValueError(f"dataset: expected STAR_DATASET from a STAR dataset node, got a {type(dataset).__name__}")
        if not len(dataset):
            raise ValueError("dataset: has no examples")
        steps = checks.positive_int(steps, "steps", 100000)
        batch_size = checks.positive_int(batch_size, "batch_size", 1024)
        lr = checks.number(learning_rate, "learning_rate", 1e-7, 1.0, allow_default=False)
        seed = checks.seed(seed)
        save = isinstance(save_prefix, str) and bool(save_prefix.strip())
        if save:
            paths.save_path(save_prefix, "save_prefix")  # refuse a bad prefix now, not after training

        progress = Progress(steps)
        every = max(1, steps // 20)
        losses: list[float] = []

        def on_step(step, total, loss):
            losses.append(loss)
            preview = loss_plot(losses) if step % every == 0 or step == total else None
            progress(step, total, preview)

        name = f"{model.key}+{dataset.name}(steps={steps},lr={lr},batch={batch_size},seed={seed})"
        tuned, losses_out = finetune_stack(model, dataset, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                           on_step=on_step, name=name)
        plot = pil_to_image(loss_plot(losses_out or losses))
        if save:
            target = save_model(tuned, paths.save_path(save_prefix, "save_prefix"))
            log.info("comfy-star: saved %s", target)
        return NodeOutput(tuned, plot)


class STARSaveCheckpoint(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARSaveCheckpoint", "STAR Save Checkpoint",
            "Saves a STAR model (e.g. a fine-tuned one) to models/star/<prefix>_00001.safetensors, counting up and "
            "never overwriting; it then appears in STAR Model Loader.",
            inputs=[
                model_input("The model to save."),
                String.Input("filename_prefix", default="star_finetune",
                             tooltip="File name prefix inside models/star/ (sub-folders allowed, never outside)."),
            ],
            outputs=[],
            output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix) -> NodeOutput:
        target = paths.save_path(filename_prefix, "filename_prefix")
        with torch.inference_mode(False):
            saved = save_model(model, target)
        root = Path(paths.star_folders()[0]).resolve()
        shown = saved.resolve().relative_to(root).as_posix()
        return NodeOutput(ui=text_output(f"saved models/{paths.FOLDER}/{shown}"))
