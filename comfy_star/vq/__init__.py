"""STAR-VQ: the image tokenizer (encoder, quantizer with its training-time codebook projector, decoder).

    vq = STARVQ(preset("star-shapes").vq)
    ids = vq.encode(images)        # (B, 3, H, W) in [-1, 1] → (B, h, w) long
    images = vq.decode(ids)        # → (B, 3, H, W) in [-1, 1]
    vectors = vq.embed(ids)        # → (B, h, w, d), rows of vq.codebook() (K, d)
"""
from .model import STARVQ, Decoder, Encoder, check_state_dict, count_params
from .quantizer import CodebookProjector, VectorQuantizer, codebook_perplexity, codebook_utilisation

__all__ = ["STARVQ", "Encoder", "Decoder", "VectorQuantizer", "CodebookProjector", "check_state_dict",
           "count_params", "codebook_utilisation", "codebook_perplexity"]
