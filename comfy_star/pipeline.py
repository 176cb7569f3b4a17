"""STAR: the one public API. Orchestration only: the math lives in ar/, vq/ and diffusion/.

    star = STAR.from_pretrained()                 # the embedded default, star-shapes
    image = star.generate("a red circle to the left of a blue square", seed=2)[0]
    star.generate("a shape with three corners, the colour of grass", reasoning=True)
    star.edit(image, "remove the square")
    star.answer(image, "what colour is the background?")

Every step that can take a while accepts `callback(step, total, preview)`; ComfyUI's progress
bar raises from it on cancel, and the exception propagates out of the loop.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import components as comps
from .ar import sampler
from .ar.prompts import edit_rows, t2i_rows
from .ar.sequence import assemble
from .ar.understand import answer as base_answer
from .ar.understand import vision_inputs, vit_features
from .config import SamplingConfig

ASSETS = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "star-shapes.safetensors"

Callback = Callable[[int, int, object], None]


@dataclass
class Tokens:
    """Image tokens plus what produced them: (B, h, w) ids into `codebook_of`'s codebook."""
    ids: torch.Tensor
    codebook_of: str  # the model key, so a decoder can refuse tokens from another codebook
    prompts: list  # what conditioned them (for the diffusion decoder's text features)
    source: torch.Tensor | None = None  # (B, 3, H, W) in [-1, 1] for edits


def to_tensor(images, size: int | None = None) -> torch.Tensor:
    """PIL list → (B, 3, H, W) in [-1, 1], resized to `size` when given."""
    arrs = []
    for im in images:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arrs.append(np.asarray(im, dtype=np.float32))
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def prompt_list(prompts) -> list[str]:
    """A list of prompts; one str is one prompt (iterating it would make one image per character)."""
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if not prompts or bad:
        raise TypeError(f"prompts must be a str or a non-empty list of str, got {bad or 'an empty list'}")
    return prompts


class STAR:
    def __init__(self, parts: comps.Components, device="cpu", dtype=torch.float32, key: str = "star"):
        self.parts = parts
        self.config = parts.config
        self.device = torch.device(device)
        self.dtype = dtype
        self.key = key
        self.placement = None  # set by the model manager: prepare(names) puts those parts on the device

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path=None, device=None, dtype=None, base_path=None, lumina_path=None,
                        config_json=None) -> "STAR":
        """A comfy-star file (default: the embedded star-shapes) or an authors' STAR-*.pt.

        base_path: the Qwen2.5-VL-Instruct folder, lumina_path: the Lumina-Image-2.0 folder, instead of
        the ones the checkpoint (or the release JSON beside it) names. config_json: the release JSON."""
        path = Path(path) if path else DEFAULT_CHECKPOINT
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        parts = comps.load(path, dtype=dtype, base_path=base_path, lumina_path=lumina_path, config_json=config_json)
        star = cls(parts, device, dtype, key=str(path))
        star.to(device)
        return star

    def to(self, device):
        for m in self.parts.modules().values():
            m.to(device)
        self.device = torch.device(device)
        return self

    def _use(self, *names):
        """Make sure these parts are on the compute device (the manager may offload the rest)."""
        if self.placement is not None:
            self.placement(self, names)

    @property
    def defaults(self) -> SamplingConfig:
        return self.config.sampling

    # -- the steps (what the ComfyUI nodes call) ---------------------------------------------
    def encode(self, images: list[Image.Image]) -> Tokens:
        self._use("vq")
        x = to_tensor(images, self.config.image_size).to(self.device, self.dtype)
        with torch.inference_mode():
            ids = self.parts.vq.encode(x)
        return Tokens(ids, self.key, [""] * len(images), source=x.float().cpu())

    def decode_vq(self, tokens: Tokens) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1]."""
        self._check(tokens)
        self._use("vq")
        with torch.inference_mode():
            return self.parts.vq.decode(tokens.ids.to(self.device)).float().cpu()

    def reason(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """Implicit reasoning: the frozen base answers the prompt; that answer is what to draw."""
        self._use("ar")
        n = max_new_tokens or self.defaults.reasoning_max_tokens
        text = base_answer(self.parts.ar.base, self.parts.chat, [prompt], max_new_tokens=n)[0]
        return (text or prompt) + self.config.ar.reasoning_suffix

    def answer(self, image: Image.Image, question: str, max_new_tokens: int = 64) -> str:
        self._use("ar")
        image = image.convert("RGB").resize((self.config.image_size,) * 2, Image.BICUBIC) \
            if self.config.ar.tokenizer == "bytes" else image.convert("RGB")
        return base_answer(self.parts.ar.base, self.parts.chat, [question], images=[image],
                           proc=self.parts.image_proc, max_new_tokens=max_new_tokens)[0]

    def sample_tokens(self, prompts: list[str], seed: int = 0, cfg=None, temperature=None, top_k=None,
                      top_p=None, source: Tokens | None = None, source_images: list | None = None,
                      callback: Callback | None = None) -> Tokens:
        """Stacked-AR sampling of one token grid per prompt; with `source`, an edit of it."""
        prompts = prompt_list(prompts)
        d = self.defaults
        if source is not None:  # an edit: its own defaults where the model has them
            cfg = cfg if cfg is not None else d.edit_cfg
            temperature = temperature if temperature is not None else d.edit_temperature
        params = sampler.SampleParams(cfg=d.cfg if cfg is None else cfg,
                                      temperature=d.temperature if temperature is None else temperature,
                                      top_k=d.top_k if top_k is None else top_k,
                                      top_p=d.top_p if top_p is None else top_p)
        self._use("ar", "vq")
        ar, chat = self.parts.ar, self.parts.chat
        codebook = self.parts.vq.codebook().to(self.device, self.dtype)
        grid = self.config.grid
        vision = None
        with torch.inference_mode():
            if source is None:
                rows = t2i_rows(chat, prompts)
            else:
                self._check(source)
                src_ids = source.ids.flatten(1).to(self.device)
                if src_ids.shape[0] != len(prompts):
                    raise ValueError(f"{len(prompts)} prompts but {src_ids.shape[0]} source images")
                images = source_images or to_pil(source.source)
                pixel_values, thw, _ = vision_inputs(self.parts.image_proc, images)
                vision = (vit_features(ar.base, pixel_values, thw), thw)
                rows = edit_rows(chat, prompts, src_ids, self.config.ar.edit_layout)
            batch = assemble(ar, rows, codebook, vision=vision, pad_id=chat.tok.pad_token_id)
            gen = torch.Generator(self.device).manual_seed(int(seed))
            ids = sampler.generate(ar, batch, codebook, grid * grid, params, gen, callback)
        src = source.source if source is not None else None
        return Tokens(ids.view(-1, grid, grid), self.key, list(prompts), source=src)

    @torch.inference_mode()
    def text_features(self, prompts: list[str]):
        """Text conditioning for the diffusion decoder: Lumina-Image-2.0's Gemma2 for the authors'
        checkpoints (a local folder), else the frozen base's last hidden states (small models)."""
        if self.config.diffusion.text_encoder == "gemma2":
            encoder = self._lumina_text()
            self._use("text_encoder")
            return encoder.encode(prompts)
        chat, ar = self.parts.chat, self.parts.ar
        rows = [chat.encode(p)[: self.config.diffusion.max_text_tokens] or [chat.tok.pad_token_id] for p in prompts]
        L = max(map(len, rows))
        ids = torch.tensor([r + [chat.tok.pad_token_id] * (L - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows], device=self.device)
        with torch.inference_mode():
            h = ar.base_text(input_ids=ids, attention_mask=mask).last_hidden_state
        return h, mask.bool()

    @torch.inference_mode()
    def decode_diffusion(self, tokens: Tokens, size: int | None = None, steps: int | None = None,
                         seed: int = 0, cfg: float | None = None, image_cfg: float | None = None,
                         source: torch.Tensor | None = None, callback: Callback | None = None) -> torch.Tensor:
        """VQ tokens → image through the diffusion decoder; `source` (B, 3, H, W) [-1, 1] for edits."""
        if self.parts.diffusion is None:
            raise ValueError("this checkpoint has no diffusion decoder; use VQ Decode")
        self._check(tokens)
        d = self.defaults
        size = size or d.diffusion_size
        gemma = self.config.diffusion.text_encoder == "gemma2"
        if gemma:  # Gemma2 encodes the text first, then makes room: the AR stays offloaded throughout
            text, mask = self.text_features(tokens.prompts)
            null = self._lumina_text().null(1)
            self._use("vq", "diffusion")
        else:  # small models: the frozen base encodes the text
            self._use("ar", "vq", "diffusion")
            (text, mask), null = self.text_features(tokens.prompts), None
        embeds = self.parts.vq.embed(tokens.ids.to(self.device))
        src = source if source is not None else tokens.source
        gen = torch.Generator(self.device).manual_seed(int(seed))
        out = self.parts.diffusion.decode(
            embeds, text, mask, height=size, width=size, steps=steps or d.diffusion_steps,
            guidance=d.diffusion_cfg if cfg is None else cfg,
            image_guidance=d.diffusion_image_cfg if image_cfg is None else image_cfg,
            source_images=None if src is None else src.to(self.device, self.dtype),
            generator=gen, callback=callback, null_text=null)
        return out.float().cpu()

    def _lumina_text(self):
        if self.parts.text_encoder is None:
            from .diffusion.text import LuminaTextEncoder
            path = self.config.diffusion.lumina_path
            if not path:
                raise ValueError("this checkpoint's diffusion decoder needs a Lumina-Image-2.0 folder "
                                 "(config diffusion.lumina_path) for its Gemma2 text encoder")
            # the DiT's RoPE has axes_lens[0] caption positions, and the image starts after the caption
            limit = self.parts.diffusion.transformer.config.axes_lens[0] - 1 if self.parts.diffusion else 10 ** 9
            length = min(self.config.diffusion.max_text_tokens, limit)
            self.parts.text_encoder = LuminaTextEncoder.from_folder(path, dtype=self.dtype, max_length=length)
            if self.placement is None:  # no manager: everything lives on the model's device
                self.parts.text_encoder.to(self.device)
        return self.parts.text_encoder

    def _check(self, tokens: Tokens):
        if tokens.codebook_of != self.key:
            raise ValueError(f"these tokens come from another model ({tokens.codebook_of}); "
                             f"decode them with the model that made them")

    # -- the conveniences (what a script calls) ------------------------------------------------
    def generate(self, prompt: str, seed: int = 0, cfg: float | None = None, decoder: str = "vq",
                 reasoning: bool = False, num_images: int = 1, size: int | None = None,
                 callback: Callback | None = None, **sampling) -> list[Image.Image]:
        if decoder not in ("vq", "diffusion"):
            raise ValueError(f"decoder must be 'vq' or 'diffusion', not {decoder!r}")
        if not isinstance(prompt, str):
            raise TypeError(f"generate takes one prompt (a str), not {type(prompt).__name__}: "
                            f"for several prompts call sample_tokens(prompts) and decode_vq")
        text = self.reason(prompt) if reasoning else prompt
        tokens = self.sample_tokens([text] * num_images, seed=seed, cfg=cfg, callback=callback, **sampling)
        return to_pil(self._decode(tokens, decoder, size, seed))

    def edit(self, image: Image.Image, instruction: str, seed: int = 0, cfg: float | None = None,
             decoder: str = "vq", size: int | None = None, **sampling) -> list[Image.Image]:
        src = self.encode([image])
        tokens = self.sample_tokens([instruction], seed=seed, cfg=cfg, source=src, **sampling)
        return to_pil(self._decode(tokens, decoder, size, seed))

    def _decode(self, tokens, decoder, size, seed):
        if decoder == "vq":
            return self.decode_vq(tokens)
        return self.decode_diffusion(tokens, size=size, seed=seed)
