"""Configs for every part of STAR, and the presets.

One dataclass per component, one `STARConfig` that holds them, and one `SamplingConfig`
that is the single home of every sampling default (the authors' release has three
disagreeing sets: cfg 5.0 / 20.0 / 1.1; we keep one).

Presets:
  star-3b      Qwen2.5-VL-3B base, 16 stacked layers (paper Table 8, release STAR_Qwen2.5-VL-3B.json)
  star-7b      Qwen2.5-VL-7B base, 14 stacked layers (release STAR_Qwen2.5-VL-7B.json)
  star-shapes  the small embedded default, trained by `python -m comfy_star train` on the Shapes world
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields


@dataclass
class VQConfig:
    """STAR-VQ: a VQGAN-style encoder/decoder (LlamaGen layout, as in the release)."""
    codebook_size: int = 65536
    codebook_dim: int = 512
    ch: int = 256
    ch_mult: tuple = (1, 2, 2, 4, 8)
    z_channels: int = 512
    num_res_blocks: int = 2
    attn_heads: int = 8
    # "vqgan": the release's conv encoder (every token sees the whole image, through convs,
    # attention and GroupNorm's image-wide statistics); "patch": each downsample² patch alone,
    # so a token is a function of its patch only and the same patch is the same code anywhere.
    encoder: str = "vqgan"
    # training-time codebook projector (FVQ / VQGAN-LC): codebook = proj(frozen_init).
    # Exported to a plain codebook after training, so inference never needs it.
    projector_dim: int = 0  # 0: no projector
    projector_depth: int = 0  # 0: a linear projector; 2: FVQ's VQBridge in miniature (2 transformer blocks)
    # training-time dead-code restarts for a plain codebook: every N training forwards, codes no
    # latent chose since the last restart are re-seeded from the batch's latents (0: off)
    restart_every: int = 0

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


EDIT_LAYOUTS = ("release", "source_last")  # where an edit row puts the source (ar/prompts.py)


@dataclass
class ARConfig:
    """The frozen base VLM (a Qwen2.5-VL config dict) and the stacked layers above it."""
    base: dict = field(default_factory=dict)  # Qwen2_5_VLConfig.to_dict(): text_config + vision_config
    base_path: str | None = None  # a Hugging Face Qwen2.5-VL folder, when the base is not in the file
    num_stacked_layers: int = 16
    stack_init: str = "vlm"  # "vlm": copy the base's last N layers; "llm": same weights, text-only base; "random"
    adapter_depth: int = 2  # MLP_GELU depth of the generation adapter (release: 2 for 3B, 4 for 7B)
    tokenizer: str = "qwen"  # "qwen": the base folder's tokenizer; "bytes": our byte-level tokenizer
    image_patch_size: int = 14  # Qwen2.5-VL image processor, for understanding and editing inputs
    image_merge_size: int = 2
    system_prompt: str | None = "You are a helpful assistant."
    reasoning_suffix: str = " Ultra HD, 4K, cinematic composition"  # release's "magic prompt"
    # where an edit row puts the source: "release" (before the instruction) or "source_last" (after it,
    # a fixed offset from the output; ar/prompts.py)
    edit_layout: str = "release"
    # 0 (the release): an image token's only position is its text-like one, so where it sits in its grid
    # (its column above all) must be worked out from distances; N: each image token's embedding also
    # gets a learned row and column embedding of an N × N grid (zero at first, so a model trained
    # without them computes the same), as LlamaGen gives image tokens 2-D positions (its 2-D RoPE)
    image_cells: int = 0

    def __post_init__(self):
        if self.edit_layout not in EDIT_LAYOUTS:
            raise ValueError(f"ar.edit_layout {self.edit_layout!r}: expected one of {EDIT_LAYOUTS}")
        if not (isinstance(self.image_cells, int) and self.image_cells >= 0):
            raise ValueError(f"ar.image_cells {self.image_cells!r}: expected 0 (off) or the token grid's side")


@dataclass
class DiffusionConfig:
    """Lumina2-style DiT decoder: VQ embeddings on channels, source latent on the sequence."""
    transformer: dict = field(default_factory=dict)  # Lumina2Transformer2DModel kwargs, before widening
    vq_channels: int = 512  # channels appended to the latent (codebook_dim)
    latent: str = "vae"  # "vae": AutoencoderKL from `vae_path`; "pixels": pixel-unshuffle (small models)
    latent_channels: int = 16
    latent_factor: int = 8  # pixels per latent cell
    text_encoder: str = "gemma2"  # "gemma2": Lumina-Image-2.0's text encoder folder; "base": the frozen base
    lumina_path: str | None = None  # Lumina-Image-2.0 folder (text_encoder/, tokenizer/, vae/, scheduler/)
    max_text_tokens: int = 256
    # what the transformer predicts: "v", the velocity x0 − noise (Lumina2, the release), or "x", the
    # clean latent x0, turned into a velocity by the sampler (JiT, Li & He 2025: a small pixel-space
    # decoder need not carry each token's noise through the network to cancel it)
    prediction: str = "v"
    # the flow-matching time shift; None: the scheduler config's (Lumina-Image-2.0's static 6, made
    # for ≈ 4k latent tokens; a 64-token decoder spends most of its steps on almost pure noise at 6)
    shift: float | None = None
    # how the (h', w') code grid is resized to the latent grid: "bilinear" (the release's E_vq, which
    # blends each code with its neighbours) or "nearest" (each latent cell gets its own token's code)
    vq_upsample: str = "bilinear"

    def __post_init__(self):
        if self.vq_upsample not in ("bilinear", "nearest"):
            raise ValueError(f"diffusion vq_upsample must be 'bilinear' or 'nearest', not {self.vq_upsample!r}")
        if self.prediction not in ("v", "x"):
            raise ValueError(f"diffusion prediction must be 'v' or 'x', not {self.prediction!r}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"diffusion shift must be positive, not {self.shift!r}")


@dataclass
class SamplingConfig:
    """Every sampling default lives here (and only here)."""
    cfg: float = 5.0
    temperature: float = 1.0
    top_k: int = 1000
    top_p: float = 1.0
    # edits (a source image given) copy most of the source, and sample better colder: None = as above
    edit_cfg: float | None = None
    edit_temperature: float | None = None
    diffusion_steps: int = 40
    diffusion_cfg: float = 4.5
    diffusion_image_cfg: float = 1.05
    diffusion_size: int = 1024
    reasoning_max_tokens: int = 256


@dataclass
class STARConfig:
    name: str = "star"
    image_size: int = 384  # the AR token grid covers image_size / vq.downsample cells a side
    vq: VQConfig = field(default_factory=VQConfig)
    ar: ARConfig = field(default_factory=ARConfig)
    diffusion: DiffusionConfig | None = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @property
    def grid(self) -> int:
        return self.image_size // self.vq.downsample

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "STARConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: dict) -> "STARConfig":
        d = dict(d)
        sub = {"vq": VQConfig, "ar": ARConfig, "diffusion": DiffusionConfig, "sampling": SamplingConfig}
        for key, klass in sub.items():
            if d.get(key) is not None:
                d[key] = _dataclass_from(klass, d[key])
        return _dataclass_from(cls, d)


def _dataclass_from(klass, d: dict):
    known = {f.name for f in fields(klass)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{klass.__name__}: unknown fields {sorted(unknown)}")
    d = {k: tuple(v) if isinstance(v, list) and k == "ch_mult" else v for k, v in d.items()}
    return klass(**d)


# --- base VLM configs (Qwen2.5-VL-3B/7B-Instruct config.json, the parts that size the model) ---

def _qwen25vl(hidden, layers, heads, kv_heads, intermediate, vocab, tie, vision_out, rope_theta=1000000.0):
    return {
        "model_type": "qwen2_5_vl",
        "text_config": {
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "intermediate_size": intermediate, "vocab_size": vocab,
            "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "tie_word_embeddings": tie,
            "rope_theta": rope_theta,
            "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24]},
            "hidden_act": "silu",
        },
        "vision_config": {
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "out_hidden_size": vision_out, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
            "in_chans": 3, "hidden_act": "silu",
        },
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "tie_word_embeddings": tie,
    }


QWEN25VL_3B = _qwen25vl(2048, 36, 16, 2, 11008, 151936, True, 2048)
QWEN25VL_7B = _qwen25vl(3584, 28, 28, 4, 18944, 152064, False, 3584)

# Lumina-Image-2.0's transformer (diffusers Lumina2Transformer2DModel, ~2.6 B).
LUMINA2_TRANSFORMER = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "hidden_size": 2304, "num_layers": 26,
    "num_refiner_layers": 2, "num_attention_heads": 24, "num_kv_heads": 8, "multiple_of": 256,
    "ffn_dim_multiplier": None, "norm_eps": 1e-5, "scaling_factor": 1.0,
    "axes_dim_rope": [32, 32, 32], "axes_lens": [300, 512, 512], "cap_feat_dim": 2304,
}


def _star_full(name, base, layers, adapter_depth):
    return STARConfig(
        name=name, image_size=384,
        vq=VQConfig(),
        ar=ARConfig(base=copy.deepcopy(base), num_stacked_layers=layers, adapter_depth=adapter_depth),
        diffusion=DiffusionConfig(transformer=dict(LUMINA2_TRANSFORMER)),
        sampling=SamplingConfig(),
    )


# --- star-shapes: the embedded default. Sized to train in minutes and sample in well under 1 s on a CPU. ---

SHAPES_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|fim_pad|>",
]
SHAPES_VOCAB = 256 + len(SHAPES_SPECIAL_TOKENS)  # byte-level: every byte, then the specials
# ids of the specials in our byte tokenizer follow the 256 byte ids in the order above
SHAPES_BASE = {
    "model_type": "qwen2_5_vl",
    "text_config": {
        "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 512, "vocab_size": SHAPES_VOCAB, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [8, 8, 8]},
        "hidden_act": "silu", "bos_token_id": None, "eos_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|im_end|>"),
        "pad_token_id": 256,
    },
    "vision_config": {
        "depth": 4, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "out_hidden_size": 192,
        "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32,
        "fullatt_block_indexes": [1, 3], "in_chans": 3, "hidden_act": "silu",
    },
    "image_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|image_pad|>"),
    "video_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|vision_pad|>"),
    "vision_start_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|vision_start|>"),
    "vision_end_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|vision_end|>"),
    "tie_word_embeddings": True, "bos_token_id": None,
    "eos_token_id": 256 + SHAPES_SPECIAL_TOKENS.index("<|im_end|>"), "pad_token_id": 256,
}

SHAPES_TRANSFORMER = {
    # width 256 > patch² × latent channels (192): each token must carry its patch's whole noise
    "sample_size": 16, "patch_size": 2, "in_channels": 48, "hidden_size": 256, "num_layers": 3,
    "num_refiner_layers": 1, "num_attention_heads": 4, "num_kv_heads": 2, "multiple_of": 32,
    "ffn_dim_multiplier": 0.5, "norm_eps": 1e-5, "scaling_factor": 1.0,
    "axes_dim_rope": [16, 24, 24], "axes_lens": [512, 128, 128], "cap_feat_dim": 192,
}


def _star_shapes():
    return STARConfig(
        name="star-shapes", image_size=64,
        # the conv encoder with a projector; the shipped file has the patch-local encoder with 4,096 codes
        # (`train all --vq-encoder patch --codebook-size 4096`: docs/star-shapes-training.md)
        vq=VQConfig(codebook_size=1024, codebook_dim=32, ch=32, ch_mult=(1, 2, 2, 4), z_channels=64,
                    num_res_blocks=1, attn_heads=1, projector_dim=32, projector_depth=2),
        # 4 stacked layers: the shipped stack was trained at 2, then grown (`train all --stack-layers`)
        ar=ARConfig(base=copy.deepcopy(SHAPES_BASE), num_stacked_layers=4, adapter_depth=2, tokenizer="bytes",
                    image_patch_size=8, image_merge_size=2, system_prompt=None, reasoning_suffix="",
                    edit_layout="source_last"),  # edits copy the source at one fixed offset (ar/prompts.py)
        diffusion=DiffusionConfig(transformer=dict(SHAPES_TRANSFORMER), vq_channels=32, latent="pixels",
                                  latent_channels=48, latent_factor=4, text_encoder="base", max_text_tokens=128),
        # cfg 1.5: the shipped stack (runs/p8kP's) met the prompt strictly 65 times of 240 against 58 at cfg 2
        # and 69 at cfg 1 (scripts/sampling_sweep.py, selection seed 777), and 219 of 840 against 202 and 214 on
        # the report sets, drawing the named colours nearly as often as at cfg 2 (0.75 / 0.65 / 0.64 against
        # 0.74 / 0.69 / 0.68; at cfg 1: 0.67 / 0.54 / 0.58): docs/star-shapes-training.md § Less guidance
        # edits at cfg 1.5, temperature 0.25: runs/p8kO's edits succeeded 0.25 of the time against 0.15 at
        # cfg 2, temperature 1 (scripts/sampling_sweep.py --task edit, selection seed 777, 120 edits)
        # 3 decoder steps: runs/p8kY's diffusion decoder read back as many scenes as at 12 (240 scenes,
        # seed 555: 122 / 122 against 122 / 121 at cfg 1 / 2; selection seed 777: 58 / 58 against 51 / 51;
        # 24 steps: 47 / 48; scripts/decoder_compare.py --steps) in a quarter of the time (134 against
        # 558 ms an image, benchmarks/diffusion_steps.py)
        sampling=SamplingConfig(cfg=1.5, temperature=1.0, top_k=64, top_p=1.0, edit_cfg=1.5, edit_temperature=0.25,
                                diffusion_steps=3,
                                diffusion_cfg=2.0, diffusion_image_cfg=1.0, diffusion_size=64,
                                reasoning_max_tokens=48),
    )


PRESETS = {
    "star-3b": lambda: _star_full("star-3b", QWEN25VL_3B, 16, 2),
    "star-7b": lambda: _star_full("star-7b", QWEN25VL_7B, 14, 4),
    "star-shapes": _star_shapes,
}


def preset(name: str) -> STARConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
