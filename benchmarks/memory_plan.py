"""GPU memory plan and HBM roofline for star-3b / star-7b, from modules built on the `meta` device.

Nothing is downloaded or allocated: every part is built on `meta` (shapes only) and its real
parameter count is read from the built module. Bytes are bf16 (2 bytes a parameter), except the
Lumina VAE, which the pipeline runs in float32.

Per stage, what has to be on the GPU while it runs:
  AR sampling      base (Qwen2.5-VL, vision tower and LM head included) + stack + adapter + head,
                   and the VQ codebook (sample_tokens reads it: `_use("ar", "vq")` places the whole VQ),
                   + the KV cache of base and stack for the prompt + 576 image tokens, 2 rows (guidance)
  VQ decode        the VQ (`_use("vq")`)
  diffusion decode the Lumina2-style DiT, the Gemma2-2B text encoder and the VAE of Lumina-Image-2.0
                   (their configs are not in the repo's presets: the sizing fields are copied below)
The manager's offload (`manager._offload_placement`, and ComfyUI's `load_models_gpu`) keeps only the
parts a call names on the GPU, so the peak is the largest stage, not the sum. The table also shows
what the code places today where it is more than the stage needs: decode_diffusion names ar too, and
the Gemma2 encoder and the VAE are not managed parts (moved to the GPU on first use, never offloaded).
Activations and allocator workspace are not counted: measure them on a GPU.

Roofline: one image-token step must read every weight it uses once (base layers + norm, stack,
adapter, head; not the embedding table, the vision tower or the LM head) and the KV prefix of
every layer for both rows; time = bytes / 3.35 TB/s (H100 SXM HBM3 spec).

    python benchmarks/memory_plan.py [--prompt-tokens 64] [--image-tokens 576]
"""
from __future__ import annotations

import argparse
import copy

import torch

from comfy_star.ar.model import StackedAR, build_base
from comfy_star.config import preset

H100_BW = 3.35e12
BF16 = 2
GiB = 2 ** 30

# Lumina-Image-2.0 text_encoder/config.json (google/gemma-2-2b): the fields that size it
GEMMA2_2B = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=256)
# Lumina-Image-2.0 vae/config.json (the FLUX.1 16-channel AutoencoderKL)
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, use_quant_conv=False,
                use_post_quant_conv=False)


def count(module) -> int:
    """Parameters (tied ones once: `parameters()` de-duplicates) + buffers."""
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def build(name):
    cfg = preset(name)
    with torch.device("meta"):
        base = build_base(cfg.ar, dtype=torch.bfloat16)
        ar = StackedAR(base, cfg.ar, cfg.vq.codebook_dim, cfg.vq.codebook_size, init="random")
        from comfy_star.vq import STARVQ
        vq = STARVQ(cfg.vq)
        from comfy_star.diffusion.transformer import build_transformer
        dit = build_transformer(cfg.diffusion)
        from transformers import Gemma2Config, Gemma2Model
        gemma = Gemma2Model(Gemma2Config(**GEMMA2_2B))
        from diffusers import AutoencoderKL
        vae = AutoencoderKL(**copy.deepcopy(FLUX_VAE))
    return cfg, ar, vq, dit, gemma, vae


def kv_bytes_per_token(text_model, rows: int) -> int:
    c = text_model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return len(text_model.layers) * 2 * c.num_key_value_heads * head_dim * BF16 * rows


def plan(name, prompt_tokens, image_tokens, rows=2):
    cfg, ar, vq, dit, gemma, vae = build(name)
    t = ar.base_text
    n = {
        "base: text layers + norm": count(t.layers) + count(t.norm),
        "base: embed_tokens": count(t.embed_tokens),
        "base: lm_head (untied)": 0 if ar.base.lm_head.weight is t.embed_tokens.weight else count(ar.base.lm_head),
        "base: vision tower": count(ar.base.model.visual),
        "stack": count(ar.stack),
        "adapter": count(ar.adapter),
        "head": count(ar.head),
        "vq": count(vq),
        "diffusion DiT": count(dit),
        "Gemma2-2B text encoder": count(gemma),
        "VAE (fp32)": count(vae),
    }
    b = {k: v * (4 if "fp32" in k else BF16) for k, v in n.items()}
    base_all = sum(v for k, v in b.items() if k.startswith("base:"))
    ar_all = base_all + b["stack"] + b["adapter"] + b["head"]
    kv_tok = kv_bytes_per_token(t, rows) + kv_bytes_per_token(ar.stack, rows)
    length = prompt_tokens + image_tokens
    kv = kv_tok * length
    diff = b["diffusion DiT"] + b["Gemma2-2B text encoder"] + b["VAE (fp32)"]
    stages = [  # (stage, on the GPU, weights, cache)
        ("AR sampling", "ar + vq", ar_all + b["vq"], kv),
        ("VQ decode", "vq", b["vq"], 0),
        ("diffusion decode", "DiT + Gemma2 + VAE", diff, 0),
        ("diffusion decode, as placed today", "ar + vq + DiT + Gemma2 + VAE", diff + ar_all + b["vq"], 0),
        ("AR sampling after a diffusion decode, today", "ar + vq + Gemma2 + VAE", ar_all + b["vq"]
         + b["Gemma2-2B text encoder"] + b["VAE (fp32)"], kv),
    ]
    # roofline: the weights one decode step reads, and the mean KV prefix over the image tokens
    step_w = b["base: text layers + norm"] + b["stack"] + b["adapter"] + b["head"]
    kv_total = sum(kv_tok * (prompt_tokens + i) for i in range(image_tokens))  # step i attends prompt + i
    return cfg, n, b, stages, step_w, kv_tok, kv_total, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length (chat template + caption)")
    p.add_argument("--image-tokens", type=int, default=576, help="24 x 24 at 384 px")
    a = p.parse_args()
    print(f"bf16 weights (VAE fp32), KV cache for {a.prompt_tokens} prompt + {a.image_tokens} image tokens x 2 rows "
          f"(guidance); built on the meta device\n")
    for name in ("star-3b", "star-7b"):
        cfg, n, b, stages, step_w, kv_tok, kv_total, rows = plan(name, a.prompt_tokens, a.image_tokens)
        print(f"### {name}\n")
        print("| part | parameters | bytes |")
        print("|---|---:|---:|")
        for k in n:
            if n[k]:
                print(f"| {k} | {n[k] / 1e6:,.1f} M | {b[k] / GiB:.2f} GiB |")
        print()
        print("| stage | on the GPU | weights | KV cache | stage peak (weights + KV) |")
        print("|---|---|---:|---:|---:|")
        for stage, parts, w, kv in stages:
            print(f"| {stage} | {parts} | {w / GiB:.2f} GiB | {kv / 2**20:.0f} MiB | {(w + kv) / GiB:.2f} GiB |")
        peak = max(w + kv for s, _, w, kv in stages if "today" not in s)
        today = max(w + kv for _, _, w, kv in stages)
        everything = sum(b.values()) + stages[0][3]
        print(f"\npeak with offload (largest stage): {peak / GiB:.2f} GiB; as the code places parts today: "
              f"{today / GiB:.2f} GiB; everything resident at once: {everything / GiB:.2f} GiB")
        mean_kv = kv_total / a.image_tokens
        per_step = (step_w + mean_kv) / H100_BW
        total = (a.image_tokens * step_w + kv_total) / H100_BW
        print(f"roofline (H100, 3.35 TB/s): a step reads {step_w / 1e9:.2f} GB of weights + {mean_kv / 1e6:.0f} MB of KV "
              f"(mean prefix, {kv_tok / 1024:.0f} KiB per token for both rows) = {per_step * 1e3:.2f} ms per image "
              f"token; {a.image_tokens} tokens: {total:.2f} s ({a.image_tokens / total:.0f} tokens/s at best)\n")


if __name__ == "__main__":
    main()
