"""STAR's diffusion decoder: a Lumina2 DiT over VQ embeddings (channels) and a source latent (sequence).

    transformer.py  STARDiffusionTransformer (the model), widen_patch_embedding
    latents.py      VAELatents (Lumina-Image-2.0's VAE), PixelLatents (small models)
    schedule.py     diffusers' FlowMatchEulerDiscreteScheduler, set up as Lumina2 does
    pipeline.py     DiffusionDecoder (decode: the sampling loop), training_loss
    text.py         LuminaTextEncoder: Lumina-Image-2.0's Gemma2 text features, for real checkpoints
"""
from .latents import PixelLatents, VAELatents, make_latents
from .pipeline import DiffusionDecoder, guidance_weights, training_loss
from .transformer import STARDiffusionTransformer, build_transformer, widen_patch_embedding

__all__ = ["DiffusionDecoder", "training_loss", "guidance_weights", "STARDiffusionTransformer", "build_transformer",
           "widen_patch_embedding", "PixelLatents", "VAELatents", "make_latents"]
