"""Text features for real STAR checkpoints: Lumina-Image-2.0's Gemma2 encoder, as Lumina2Pipeline uses it.

The prompt is prefixed with Lumina's system prompt and " <Prompt Start> "; the feature is Gemma2's
penultimate hidden state (B, L, 2304). The unconditional text is "" without the prefix, which is
what Lumina2Pipeline (and the release's sampler) encode as the negative prompt.
Small models (`DiffusionConfig.text_encoder == "base"`) use the frozen base's hidden states instead.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

LUMINA_SYSTEM_PROMPT = ("You are an assistant designed to generate superior images with the superior degree "
                        "of image-text alignment based on textual prompts or user prompts.")


class LuminaTextEncoder(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, max_length: int = 256,
                 system_prompt: str = LUMINA_SYSTEM_PROMPT):
        super().__init__()
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.max_length, self.system_prompt = max_length, system_prompt

    @classmethod
    def from_folder(cls, path: str, dtype=torch.bfloat16, max_length: int = 256) -> "LuminaTextEncoder":
        """`<path>/text_encoder` (Gemma2Model) and `<path>/tokenizer` of a Lumina-Image-2.0 folder."""
        from transformers import AutoTokenizer, Gemma2Model
        if not (Path(path) / "text_encoder").is_dir():
            raise FileNotFoundError(f"{path}: not a Lumina-Image-2.0 folder (no text_encoder/ inside)")
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        model = Gemma2Model.from_pretrained(path, subfolder="text_encoder", dtype=dtype, local_files_only=True)
        return cls(model, tokenizer, max_length)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """→ embeds (B, L, hidden), mask (B, L) bool, right-padded."""
        return self._features([f"{self.system_prompt} <Prompt Start> {p}" for p in prompts])

    @torch.no_grad()
    def null(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return self._features([""] * batch)

    def _features(self, texts: list[str]):
        self.tokenizer.padding_side = "right"
        tok = self.tokenizer(texts, padding="longest", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        if ids.shape[1] == 0:  # Gemma's tokenizer starts every text with <bos>; this one gave nothing for ""
            raise ValueError("the Lumina folder's tokenizer/ gives no tokens for an empty prompt; expected "
                             "Lumina-Image-2.0's Gemma tokenizer, which starts every text with <bos>")
        hidden = self.model(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        return hidden, mask.bool()
