"""Input checks shared by the nodes. Every error names the input and says what to change.

ComfyUI already enforces a widget's min/max for prompts queued through the UI or the API; these
checks also hold when a node's `execute` is called directly, and cover what min/max cannot say
(an empty prompt, a batch mismatch, a size this particular model cannot make).
"""
from __future__ import annotations

from .schema import SEED_MAX

MODEL_DEFAULT = -1  # a sampling widget at -1 means "the loaded model's own default"


def prompt(text, name: str = "prompt") -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected text, got a {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ValueError(f"{name}: is empty; write what to draw, e.g. 'a red circle to the left of a blue square'")
    return encodable(text, name)


def encodable(text: str, name: str) -> str:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate, which JSON can carry but no
    tokenizer or file system takes), naming the input and the position, rather than fail deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name}: holds a character that is not valid text ({text[e.start]!r} at position "
                         f"{e.start}, a lone UTF-16 surrogate); delete it or retype the text") from None
    return text


def seed(value, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name}: must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return value


def number(value, name: str, lo, hi, default=None, allow_default: bool = True):
    """A sampling number, or None (→ the model's default) when it is MODEL_DEFAULT."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if allow_default and value == MODEL_DEFAULT:
        return default
    if value != value or not lo <= value <= hi:  # NaN fails the range too
        extra = f", or {MODEL_DEFAULT} for the model's default" if allow_default else ""
        raise ValueError(f"{name}: must be between {lo} and {hi}{extra}; got {value!r}")
    return value


def positive_int(value, name: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValueError(f"{name}: must be a whole number from 1 to {hi}, got {value!r}")
    return value


def batches(n_a: int, name_a: str, n_b: int, name_b: str) -> int:
    """Two batch sizes that must agree, or one of them is 1 (it is repeated). → the common size."""
    if n_a == n_b or n_b == 1:
        return n_a
    if n_a == 1:
        return n_b
    raise ValueError(f"batch mismatch: {name_a} has {n_a} items but {name_b} has {n_b}; "
                     f"give both the same batch size, or one of them a batch of 1")


def diffusion_size(star, size: int, name: str = "size") -> int | None:
    """0 → the model's default; otherwise a side the decoder can make (a multiple of its
    latent factor × patch size, within the range its position embedding covers)."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"{name}: expected a whole number of pixels, got {size!r}")
    if size == 0:
        return None
    d = star.config.diffusion
    if d is None:
        raise ValueError("this checkpoint has no diffusion decoder; use STAR VQ Decode instead")
    step = d.latent_factor * int(d.transformer.get("patch_size", 2))
    axes = d.transformer.get("axes_lens")
    hi = step * int(axes[1]) if axes else 4096
    lo = step * 2
    if not lo <= size <= hi or size % step:
        near = min(max(lo, round(size / step) * step), hi)
        raise ValueError(f"{name}: this model makes square images whose side is a multiple of {step} "
                         f"between {lo} and {hi} pixels (or 0 for its default, "
                         f"{star.defaults.diffusion_size}); {size} is not one, try {near}")
    return size


def prompt_fits(star, text: str, name: str, reserved: int, budget: tuple[str, int] | None = None) -> str:
    """Refuse a prompt longer than the model's context leaves room for (`reserved`: the image or
    answer tokens that must follow it), rather than run out of memory or positions mid-way.
    `budget`: (input name, value) of the widget that sets part of `reserved` (e.g. max_tokens):
    when the prompt would fit with a smaller value, the error names that input instead."""
    limit = (star.config.ar.base or {}).get("text_config", {}).get("max_position_embeddings")
    if not limit:
        return text
    room = limit - reserved - 64  # 64: the chat template around the prompt
    n = len(star.parts.chat.encode(text))
    if n > room:
        if budget is not None:
            budget_name, value = budget
            most = value - (n - room)  # the largest value that leaves room for this prompt
            if most >= 1:
                raise ValueError(f"{budget_name}: {value} leaves no room for the {n}-token {name} in this model's "
                                 f"{limit}-token context; set it to {most} or less")
        raise ValueError(f"{name}: is {n} tokens long, but this model has room for {max(room, 0)} here "
                         f"(its context is {limit} tokens); shorten it")
    return text


def image_tokens(star) -> int:
    """Tokens an image takes as a source: its VQ grid plus its ViT features."""
    a = star.config.ar
    return star.config.grid ** 2 + (star.config.image_size // (a.image_patch_size * a.image_merge_size)) ** 2
