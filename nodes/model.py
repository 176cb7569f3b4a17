"""STAR Model Loader, STAR VQ Encode, STAR VQ Decode."""
from __future__ import annotations

import torch

from comfy_star.manager import MANAGER

from . import paths
from .convert import image_to_pil, star_to_image
from .schema import Combo, ComfyNode, Image, NodeOutput, StarModel, StarTokens, String, model_input, schema

DTYPES = ["auto", "float32", "bfloat16", "float16"]
DEVICES = ["auto", "cpu", "cuda"]


class STARModelLoader(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARModelLoader", "STAR Model Loader",
            "Loads a STAR checkpoint from models/star/ (or the small star-shapes model embedded in the pack). "
            "A model is read from disk once, however many nodes use it, and joins ComfyUI's memory management.",
            inputs=[
                Combo.Input("ckpt_name", options=paths.checkpoints(), default=paths.EMBEDDED,
                            tooltip="The checkpoint: the embedded star-shapes default, a comfy-star .safetensors, "
                                    "or an authors' STAR-3B/7B .pt (with its config JSON beside it) in models/star/."),
                String.Input("base_folder", default="",
                             tooltip="Only for checkpoints that do not hold their base VLM (real STAR-3B/7B): the "
                                     "Qwen2.5-VL-Instruct folder, relative to models/star/, or for STAR-7B the "
                                     "Qwen-Image text encoder file in models/text_encoders/ (e.g. "
                                     "qwen_2.5_vl_7b.safetensors; fp8 files are dequantized). Empty: the folder the "
                                     "checkpoint names, or the base inside it."),
                String.Input("lumina_folder", default="",
                             tooltip="Only for real STAR checkpoints with a diffusion decoder: the Lumina-Image-2.0 "
                                     "folder (VAE, scheduler), relative to models/star/. Empty: the checkpoint's own."),
                Combo.Input("dtype", options=DTYPES, default="auto",
                            tooltip="Weight precision. auto: bfloat16 on a GPU, float32 on a CPU."),
                Combo.Input("device", options=DEVICES, default="auto",
                            tooltip="Where to run. auto: ComfyUI's device (a GPU if there is one, else the CPU)."),
            ],
            outputs=[StarModel.Output(display_name="model", tooltip="The STAR model, for every other STAR node.")],
        )

    @classmethod
    def fingerprint_inputs(cls, ckpt_name, base_folder="", lumina_folder="", dtype="auto", device="auto"):
        try:  # the file's size and mtime: a checkpoint replaced on disk is loaded again
            return (paths.fingerprint(paths.checkpoint_path(ckpt_name)), base_folder, lumina_folder, dtype, device)
        except ValueError:
            return (ckpt_name, base_folder, lumina_folder, dtype, device)

    @classmethod
    def execute(cls, ckpt_name, base_folder="", lumina_folder="", dtype="auto", device="auto") -> NodeOutput:
        path = paths.checkpoint_path(ckpt_name)
        if dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {DTYPES}, not {dtype!r}")
        if device not in DEVICES:
            raise ValueError(f"device: must be one of {DEVICES}, not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was chosen but PyTorch sees no CUDA GPU; choose 'auto' or 'cpu'")
        base = paths.base_model(base_folder, "base_folder")
        lumina = paths.model_folder(lumina_folder, "lumina_folder")
        star = MANAGER.get(path, dtype=dtype, device=None if device == "auto" else device,
                           base_path=base, lumina_path=lumina)
        return NodeOutput(star)


class STARVQEncode(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARVQEncode", "STAR VQ Encode",
            "Turns images into STAR image tokens (the VQ codes the stacked AR reads and writes), e.g. as the "
            "source of an edit. Images are resized to the model's square input size.",
            inputs=[
                model_input(),
                Image.Input("image", tooltip="Images to encode (RGB; RGBA is composited over white, grey is "
                                             "repeated to RGB). Non-square images are stretched to a square."),
            ],
            outputs=[StarTokens.Output(display_name="tokens", tooltip="The token grid of each image, and the images.")],
        )

    @classmethod
    def execute(cls, model, image) -> NodeOutput:
        return NodeOutput(model.encode(image_to_pil(image, "image")))


class STARVQDecode(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARVQDecode", "STAR VQ Decode",
            "Turns STAR image tokens into images with the VQ decoder: fast, at the model's token-grid size.",
            inputs=[
                model_input(),
                StarTokens.Input("tokens", tooltip="Tokens from STAR Stacked AR Sample or STAR VQ Encode, "
                                                   "made by the same model."),
            ],
            outputs=[Image.Output(display_name="image", tooltip="The decoded images.")],
        )

    @classmethod
    def execute(cls, model, tokens) -> NodeOutput:
        _check_tokens(tokens)
        return NodeOutput(star_to_image(model.decode_vq(tokens)))


def _check_tokens(tokens, name: str = "tokens"):
    from comfy_star.pipeline import Tokens
    if not isinstance(tokens, Tokens):
        raise ValueError(f"{name}: expected STAR_TOKENS (from STAR Stacked AR Sample or STAR VQ Encode), "
                         f"got a {type(tokens).__name__}")
    if tokens.ids.ndim != 3 or tokens.ids.shape[0] == 0:
        raise ValueError(f"{name}: expected a (batch, height, width) token grid, got shape {tuple(tokens.ids.shape)}")
    return tokens

