"""STAR Implicit Reasoning, STAR Stacked AR Sample, STAR Diffusion Decode."""
from __future__ import annotations

from dataclasses import dataclass

from . import checks
from .convert import image_to_pil, image_to_star, star_to_image
from .model import _check_tokens
from .progress import diffusion_callback, token_callback
from .schema import (ComfyNode, Float, Image, Int, NodeOutput, StarCond, StarTokens, String, model_input, schema,
                     seed_input, text_output)

EXAMPLE_PROMPT = "a red circle to the left of a blue square"
DEFAULT_NOTE = f"{checks.MODEL_DEFAULT}: the loaded model's own default"
TOP_K_MAX = 1 << 20  # more than any codebook: a larger k than the codebook simply keeps them all


@dataclass
class STARCond:
    """What the stacked AR is conditioned on (STAR_COND on the wire)."""
    prompt: str  # the text the stack sees
    original: str  # what the user wrote
    reasoning: str  # what the frozen base answered (empty when no reasoning ran)


class STARImplicitReasoning(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARImplicitReasoning", "STAR Implicit Reasoning",
            "Lets the frozen base VLM answer the prompt first (\"a shape with three corners, the colour of grass\" "
            "→ \"a green triangle\"); that answer conditions the stacked AR. Connect 'cond' to STAR Stacked AR Sample.",
            inputs=[
                model_input(),
                String.Input("prompt", multiline=True, default="a shape with three corners, the colour of grass",
                             tooltip="A prompt that needs knowledge or reasoning to draw."),
                Int.Input("max_tokens", default=0, min=0, max=4096,
                          tooltip="Most tokens the base may write. 0: the model's default."),
            ],
            outputs=[
                StarCond.Output(display_name="cond", tooltip="The reasoned prompt, for STAR Stacked AR Sample."),
                String.Output(display_name="reasoning", tooltip="What the base answered (what will be drawn)."),
            ],
        )

    @classmethod
    def execute(cls, model, prompt, max_tokens=0) -> NodeOutput:
        text = checks.prompt(prompt)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 <= max_tokens <= 4096:
            raise ValueError(f"max_tokens: must be a whole number from 0 (the model's default) to 4096, got {max_tokens!r}")
        checks.prompt_fits(model, text, "prompt", max_tokens or model.defaults.reasoning_max_tokens,
                           budget=("max_tokens", max_tokens) if max_tokens else None)
        reasoning = model.reason(text, max_new_tokens=max_tokens or None)
        if not reasoning.strip():
            reasoning = text
        return NodeOutput(STARCond(prompt=reasoning, original=text, reasoning=reasoning), reasoning,
                          ui=text_output(reasoning))


class STARStackedARSample(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARStackedARSample", "STAR Stacked AR Sample",
            "Generates image tokens with the stacked autoregressive layers, one token at a time (the preview fills "
            "in row by row). With a source (tokens or image) it edits that image following the prompt. "
            "The model makes one token-grid size; choose the output size on STAR Diffusion Decode.",
            inputs=[
                model_input(),
                String.Input("prompt", multiline=True, default=EXAMPLE_PROMPT,
                             tooltip="What to draw, or for an edit the instruction (\"make the circle green\"). "
                                     "Ignored when 'cond' is connected."),
                seed_input(),
                Float.Input("cfg", default=checks.MODEL_DEFAULT, min=-1.0, max=100.0, step=0.1,
                            tooltip=f"Classifier-free guidance: how strongly to follow the prompt (1: off). "
                                    f"{DEFAULT_NOTE}, which for edits may differ (star-shapes: 1.5 for both; STAR-3B/7B: 5)."),
                Float.Input("temperature", default=checks.MODEL_DEFAULT, min=-1.0, max=10.0, step=0.05,
                            tooltip=f"Sampling temperature (0: always the likeliest token). {DEFAULT_NOTE}, which "
                                    f"for edits may differ: they copy most of the source, and a colder draw keeps "
                                    f"it (star-shapes: 1, edits 0.25)."),
                Int.Input("top_k", default=64, min=-1, max=TOP_K_MAX,
                          tooltip=f"Sample among the k likeliest tokens (0: all). {DEFAULT_NOTE}."),
                Float.Input("top_p", default=1.0, min=-1.0, max=1.0, step=0.01,
                            tooltip=f"Nucleus sampling: the smallest set of tokens whose probability reaches p "
                                    f"(1: off). {DEFAULT_NOTE}."),
                Int.Input("batch_size", default=1, min=1, max=64,
                          tooltip="Images per run (different samples of the same prompt). With a source batch of "
                                  "several images, each is edited once; leave this at 1 or make it match."),
                StarCond.Input("cond", optional=True,
                               tooltip="From STAR Implicit Reasoning: replaces the prompt with the reasoned one."),
                StarTokens.Input("source_tokens", optional=True,
                                 tooltip="For editing: the image to edit, from STAR VQ Encode."),
                Image.Input("source_image", optional=True,
                            tooltip="For editing: the image to edit, as the VLM sees it (semantic features). "
                                    "Alone, it is also encoded to tokens for you."),
            ],
            outputs=[StarTokens.Output(display_name="tokens",
                                       tooltip="Image tokens, for STAR VQ Decode or STAR Diffusion Decode.")],
        )

    @classmethod
    def execute(cls, model, prompt, seed, cfg, temperature, top_k, top_p, batch_size,
                cond=None, source_tokens=None, source_image=None) -> NodeOutput:
        if cond is not None:
            if not isinstance(cond, STARCond):
                raise ValueError(f"cond: expected STAR_COND from STAR Implicit Reasoning, got a {type(cond).__name__}")
            text = checks.prompt(cond.prompt, "cond")
        else:
            text = checks.prompt(prompt)
        edit = source_tokens is not None or source_image is not None
        checks.prompt_fits(model, text, "cond" if cond is not None else "prompt",
                           model.config.grid ** 2 + (checks.image_tokens(model) if edit else 0))
        seed = checks.seed(seed)
        params = dict(cfg=checks.number(cfg, "cfg", 0.0, 100.0),
                      temperature=checks.number(temperature, "temperature", 0.0, 10.0),
                      top_k=checks.number(top_k, "top_k", 0, TOP_K_MAX),
                      top_p=checks.number(top_p, "top_p", 0.01, 1.0))
        n = checks.positive_int(batch_size, "batch_size", 64)
        source, images, n = _edit_source(model, source_tokens, source_image, n)
        tokens = model.sample_tokens([text] * n, seed=seed, source=source, source_images=images,
                                     callback=token_callback(model), **params)
        return NodeOutput(tokens)


def _edit_source(model, source_tokens, source_image, n: int):
    """The source of an edit, as (tokens, PIL images for the VLM, batch size), batches matched:
    a batch of 1 is repeated; an image alone is encoded. (None, None, n) for text-to-image."""
    images = None if source_image is None else image_to_pil(source_image, "source_image")
    if source_tokens is None and images is None:
        return None, None, n
    if source_tokens is None:
        source_tokens = model.encode(images)
    _check_tokens(source_tokens, "source_tokens")
    if source_tokens.source is None and images is None:
        raise ValueError("source_tokens: these tokens carry no image (they were sampled, not encoded); "
                         "connect the image to source_image too, or make the tokens with STAR VQ Encode")
    b = source_tokens.ids.shape[0]
    if images is not None:
        b = checks.batches(b, "source_tokens", len(images), "source_image")
    n = checks.batches(b, "source_tokens / source_image", n, "batch_size")
    if images is not None and len(images) == 1:
        images = images * n
    return _repeat_tokens(source_tokens, n), images, n


def _repeat_tokens(tokens, n: int):
    """A batch of 1 repeated to n (other sizes are already checked to equal n)."""
    if tokens.ids.shape[0] == n:
        return tokens
    from comfy_star.pipeline import Tokens
    src = None if tokens.source is None else tokens.source.repeat(n, 1, 1, 1)
    return Tokens(tokens.ids.repeat(n, 1, 1), tokens.codebook_of, list(tokens.prompts) * n, source=src)


class STARDiffusionDecode(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARDiffusionDecode", "STAR Diffusion Decode",
            "Turns STAR image tokens into an image with the diffusion decoder: slower than VQ Decode, sharper, "
            "and at a size you choose. For an edit, connect the source image too.",
            inputs=[
                model_input(),
                StarTokens.Input("tokens", tooltip="Tokens from STAR Stacked AR Sample (or STAR VQ Encode)."),
                seed_input(tooltip="Seed of the diffusion noise."),
                Int.Input("steps", default=0, min=0, max=500,
                          tooltip="Denoising steps. 0: the model's default (3 for the embedded star-shapes, "
                                  "40 for STAR-3B and STAR-7B)."),
                Int.Input("size", default=0, min=0, max=8192, step=8,
                          tooltip="Side of the square output in pixels: a multiple of the decoder's patch "
                                  "(8 for star-shapes, 16 for STAR-3B/7B). 0: the model's default."),
                Float.Input("cfg", default=2.0, min=-1.0, max=100.0, step=0.1,
                            tooltip=f"Text guidance of the decoder (1: off). {DEFAULT_NOTE}."),
                Float.Input("image_cfg", default=1.0, min=-1.0, max=100.0, step=0.05,
                            tooltip=f"Source-image guidance, for edits (1: off). {DEFAULT_NOTE}."),
                Image.Input("source_image", optional=True,
                            tooltip="For edits: the image that was edited (defaults to the source the tokens carry)."),
            ],
            outputs=[Image.Output(display_name="image", tooltip="The decoded images.")],
        )

    @classmethod
    def execute(cls, model, tokens, seed, steps, size, cfg, image_cfg, source_image=None) -> NodeOutput:
        _check_tokens(tokens)
        seed = checks.seed(seed)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 500:
            raise ValueError(f"steps: must be a whole number from 0 (the model's default) to 500, got {steps!r}")
        size = checks.diffusion_size(model, size)
        cfg = checks.number(cfg, "cfg", 0.0, 100.0)
        image_cfg = checks.number(image_cfg, "image_cfg", 0.0, 100.0)
        source = None
        if source_image is not None:
            source = image_to_star(source_image, "source_image")
            n = tokens.ids.shape[0]
            if source.shape[0] not in (1, n):
                raise ValueError(f"batch mismatch: tokens has {n} items but source_image has {source.shape[0]}; "
                                 f"give one source image, or one per token grid")
            source = source.repeat(n, 1, 1, 1) if source.shape[0] != n else source
        total = steps or model.defaults.diffusion_steps
        out = model.decode_diffusion(tokens, size=size, steps=steps or None, seed=seed, cfg=cfg, image_cfg=image_cfg,
                                     source=source, callback=diffusion_callback(model, total))
        return NodeOutput(star_to_image(out))
