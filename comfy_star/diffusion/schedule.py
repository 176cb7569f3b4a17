"""Flow-matching time: diffusers' FlowMatchEulerDiscreteScheduler, set up as Lumina2Pipeline does.

Convention (Lumina2 / the release): x_σ = σ·noise + (1 − σ)·x0, σ from 1 (noise) to 0 (image).
The transformer gets t = 1 − σ and predicts the velocity v = x0 − noise (toward the image), or
(`DiffusionConfig.prediction == "x"`) x0 itself, whose velocity is (x0 − x_σ) / σ; the scheduler
integrates dx/dσ = −v, so the velocity is negated before `scheduler.step`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ..config import DiffusionConfig

# Lumina-Image-2.0's scheduler/scheduler_config.json: a static shift of 6 (ComfyUI's Lumina2
# model sampling uses the same shift); used when no Lumina folder is at hand.
LUMINA2_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 6.0, "use_dynamic_shifting": False,
    "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}


def scheduler_config(config: DiffusionConfig) -> dict:
    """`<lumina_path>/scheduler/scheduler_config.json` when present, else Lumina-Image-2.0's values;
    `config.shift`, when set, replaces the shift."""
    out = dict(LUMINA2_SCHEDULER)
    if config.lumina_path:
        path = Path(config.lumina_path) / "scheduler" / "scheduler_config.json"
        if path.is_file():
            out = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    if config.shift is not None:  # the decoder's own static shift (config.shift)
        out.update(shift=float(config.shift), use_dynamic_shifting=False)
    return out


def make_scheduler(config: dict, steps: int, image_seq_len: int, device=None) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler (it keeps a step index) with σ = linspace(1, 1/steps, steps), shifted."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=dynamic_mu(config, image_seq_len),
                            device=device)
    scheduler.set_begin_index(0)
    return scheduler


# x-prediction divides by σ: below this the velocity's denominator is held (JiT clips 1 − t at 0.05)
X_PREDICTION_MIN_SIGMA = 0.05


def dynamic_mu(config: dict, image_seq_len: int) -> float:
    """Lumina2Pipeline's `calculate_shift`: mu linear in the number of image tokens. (Lumina2Pipeline
    and the release pass the latent's channel count here; Lumina-Image-2.0's static shift ignores mu.)"""
    n0, n1 = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    m0, m1 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (m1 - m0) / (n1 - n0)
    return image_seq_len * slope + (m0 - slope * n0)


def shift_sigmas(config: dict, u: torch.Tensor, image_seq_len: int) -> torch.Tensor:
    """Uniform u ∈ [0, 1] → training σ, shifted exactly as `make_scheduler` shifts its grid."""
    if config.get("use_dynamic_shifting", False):
        mu = dynamic_mu(config, image_seq_len)
        return np.exp(mu) / (np.exp(mu) + (1 / u - 1))  # the scheduler's exponential time shift
    s = float(config.get("shift", 1.0))
    return s * u / (1 + (s - 1) * u)
