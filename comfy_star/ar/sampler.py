"""One sampler for every image-token path (text-to-image, reasoning, editing), LlamaGen-style:
`prefill` the prompt, `decode_one_token` in a loop, `generate` ties them together.

Classifier-free guidance runs the conditional and unconditional rows as one batch
[cond_0..cond_B-1, uncond_0..uncond_B-1] through base and stack, each with its own KV cache:
    logits = uncond + cfg * (cond - uncond)                         (release, Janus, LlamaGen)
With cfg == 1 the unconditional rows are not run at all (same result, half the work).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from .sequence import Batch


@dataclass
class SampleParams:
    cfg: float = 5.0
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    def __post_init__(self):  # a negative temperature would silently mean greedy: say what is wrong
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("cfg", self.cfg, self.cfg >= 0, "≥ 0 (1: no guidance)"),
            ("temperature", self.temperature, self.temperature >= 0, "≥ 0 (0: greedy)"),
            ("top_k", self.top_k, self.top_k >= 0 and float(self.top_k).is_integer(), "a whole number ≥ 0 (0: off)"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1] (1: off)")) if not ok]
        if bad:
            raise ValueError("; ".join(bad))


def logits_processors(p: SampleParams) -> LogitsProcessorList:
    procs = LogitsProcessorList()
    if p.temperature > 0 and p.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(p.temperature))
    if p.top_k > 0:
        procs.append(TopKLogitsWarper(p.top_k))
    if p.top_p < 1.0:
        procs.append(TopPLogitsWarper(p.top_p))
    return procs


def guide(logits: torch.Tensor, cfg: float, batch: int) -> torch.Tensor:
    """(2B, K) or (B, K) → (B, K) guided logits."""
    if logits.shape[0] == batch:
        return logits
    cond, uncond = logits[:batch], logits[batch:]
    return uncond + cfg * (cond - uncond)


def pick(logits: torch.Tensor, p: SampleParams, procs, generator) -> torch.Tensor:
    """(B, K) float32 logits → (B,) ids."""
    if p.temperature <= 0:
        return logits.argmax(-1)
    for proc in procs:  # what LogitsProcessorList.__call__ does for warpers, without its per-call inspect.signature
        logits = proc(None, logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Caches:
    def __init__(self, model):
        self.base = DynamicCache(config=model.base_text.config)
        self.stack = DynamicCache(config=model.stack.config)


def prefill(model, batch: Batch, caches: Caches) -> torch.Tensor:
    """Run the whole prompt; return the last position's logits (rows, K)."""
    mask = batch.attention_mask if not bool(batch.attention_mask.all()) else None
    h = model.hidden(batch.embeds, batch.position_ids, mask, caches.base, caches.stack)
    return model.head(h[:, -1]).float()


def decode_one_token(model, code_vectors, position, mask, caches: Caches, index: int) -> torch.Tensor:
    """code_vectors: (rows, d) of the previous token, the image's token `index`; position: (rows,).
    → (rows, K) logits."""
    embeds = model.embed_codes(code_vectors, index)[:, None]  # (rows, 1, D)
    pos = position.view(1, -1, 1).expand(3, -1, 1)
    h = model.hidden(embeds, pos, mask, caches.base, caches.stack)
    return model.head(h[:, -1]).float()


FAST = True  # decode with `fast.generate_fast` (same tokens, static KV cache, no transformers per step)


@torch.inference_mode()
def generate(model, batch: Batch, codebook: torch.Tensor, num_tokens: int, params: SampleParams,
             generator: torch.Generator | None = None,
             callback: Callable[[int, int, torch.Tensor], None] | None = None,
             fast: bool | None = None) -> torch.Tensor:
    """batch: rows built by `prompts.*_rows` (cond rows first). Returns (B, num_tokens) ids.
    fast None: the module flag FAST. fast=False: this transformers loop, the reference."""
    if FAST if fast is None else fast:
        from .fast import generate_fast, supported
        if supported(model):
            return generate_fast(model, batch, codebook, num_tokens, params, generator, callback)
    rows = batch.embeds.shape[0]
    b = rows // 2
    if params.cfg == 1.0:  # no guidance: drop the unconditional rows
        batch = Batch(batch.embeds[:b], batch.position_ids[:, :b], batch.attention_mask[:b], batch.next_position[:b])
        rows = b
    procs = logits_processors(params)
    caches = Caches(model)
    out = torch.empty(b, num_tokens, dtype=torch.long, device=batch.embeds.device)
    mask = batch.attention_mask
    padded = not bool(mask.all())
    logits = prefill(model, batch, caches)
    for i in range(num_tokens):
        ids = pick(guide(logits, params.cfg, b), params, procs, generator)  # (B,)
        out[:, i] = ids
        if callback is not None:
            callback(i + 1, num_tokens, out[:, : i + 1])
        if i + 1 == num_tokens:
            break
        if padded:
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
        vectors = codebook[ids].repeat(rows // b, 1)  # the same token feeds cond and uncond rows
        logits = decode_one_token(model, vectors, batch.next_position + i, mask if padded else None, caches, i)
    return out
