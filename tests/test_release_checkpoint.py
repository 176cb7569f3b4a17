"""End to end: a complete authors'-style STAR checkpoint, tiny and random, written as the release lays it out.

    checkpoints/STAR-tiny.pt            {"state_dict": pixel_encoder.* pixel_adapter.* pixel_output_head.*
                                                       stacked_ar.model.* diffusion_decoder.transformer.* ...}
    checkpoints/STAR_Qwen2.5-VL-tiny.json   the release's config format, naming the two folders below
    checkpoints/Qwen2.5-VL-tiny-Instruct/   a Hugging Face Qwen2.5-VL folder: config, tiny random weights, and
                                            Qwen2.5's REAL tokenizer files (the copy ComfyUI ships in
                                            comfy/text_encoders/qwen25_tokenizer/); a small BPE with Qwen's
                                            special tokens only when no ComfyUI is installed
    checkpoints/lumina-tiny/                a Lumina-Image-2.0-like folder: text_encoder/ (Gemma2), tokenizer/,
                                            vae/ (AutoencoderKL), scheduler/, transformer/config.json

Nothing is downloaded: Qwen's tokenizer is read from the installed ComfyUI, Gemma's (and Qwen's without
ComfyUI) is a byte-level BPE trained here on a few sentences. What is
checked: the file loads with every tensor where it belongs, generates tokens, VQ-decodes, answers a
question, decodes through the diffusion decoder with Gemma2 text features, converts to our format
with the same outputs, and the folders can be overridden (with clear errors for wrong ones).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from comfy_star.checkpoint import CheckpointError, read_config
from comfy_star.config import VQConfig
from comfy_star.manager import ModelManager
from comfy_star.pipeline import STAR

def _comfyui_qwen_tokenizer() -> Path | None:
    import comfy_harness  # tests/conftest.py registers it
    comfy = comfy_harness.find_comfyui()
    folder = comfy / "comfy" / "text_encoders" / "qwen25_tokenizer" if comfy else None
    return folder if folder and (folder / "vocab.json").is_file() else None


QWEN_TOKENIZER = _comfyui_qwen_tokenizer()  # Qwen2.5's real vocab.json / merges.txt / tokenizer_config.json
TOKENIZER_SOURCE = f"Qwen2.5's real tokenizer from {QWEN_TOKENIZER}" if QWEN_TOKENIZER else \
    "a synthetic BPE with Qwen's special tokens (no ComfyUI found: run scripts/setup.sh for the real one)"
REAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}  # Qwen2.5's, as shipped
QWEN_SPECIALS = [  # Qwen2.5-VL's added tokens, in its order
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
CORPUS = ["a red circle to the left of a blue square", "what is in this image? a photo of a cute cat",
          "You are a helpful assistant.", "user assistant system", "Ultra HD, 4K, cinematic composition"] * 4
VOCAB = 151936 if QWEN_TOKENIZER else 320  # model vocab: Qwen2.5-VL-3B's (ids up to 151668 in ComfyUI's copy)
HIDDEN, CODES, CODE_DIM, GRID = 64, 64, 8, 4
VQ = VQConfig(codebook_size=CODES, codebook_dim=CODE_DIM, ch=32, ch_mult=(1, 2, 2), z_channels=16,
              num_res_blocks=1, attn_heads=2)  # 4 pixels a token: 16 x 16 images
LUMINA_TRANSFORMER = {
    "sample_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "num_layers": 1,
    "num_refiner_layers": 1, "num_attention_heads": 2, "num_kv_heads": 1, "multiple_of": 16,
    "ffn_dim_multiplier": None, "norm_eps": 1e-5, "scaling_factor": 1.0, "axes_dim_rope": [8, 12, 12],
    "axes_lens": [64, 32, 32], "cap_feat_dim": 32,
}


# --- the tiny release, written to disk ------------------------------------------------------------

def bpe_tokenizer(specials, bos: str | None = None, **kwargs):
    """A byte-level BPE trained on CORPUS, specials appended (as Qwen's and Gemma's fast tokenizers are);
    with `bos`, every text starts with it (Gemma's tokenizer does that: "" is one token, <bos>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=290, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(list(specials))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def write_qwen_folder(folder: Path) -> dict:
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    folder.mkdir(parents=True, exist_ok=True)
    write_qwen_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert len(tok) <= VOCAB
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    torch.manual_seed(1)
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=2048, rope_theta=10000.0,
                         rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": [4, 6, 6]},
                         tie_word_embeddings=True, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=None),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=HIDDEN,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[0], in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_qwen_tokenizer(folder: Path) -> None:
    """Qwen2.5's real tokenizer files (from ComfyUI), else a synthetic BPE saved as the real folder's are."""
    if QWEN_TOKENIZER:
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            shutil.copyfile(QWEN_TOKENIZER / name, folder / name)
        return
    tok = bpe_tokenizer(QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    # the real folder's tokenizer_config.json names Qwen2Tokenizer: AutoTokenizer must honour it as it does there
    cfg_path = folder / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc.update(tokenizer_class="Qwen2Tokenizer", bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
              errors="replace", model_max_length=32768, split_special_tokens=False)
    cfg_path.write_text(json.dumps(tc))


def write_lumina_folder(folder: Path):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import Gemma2Config, Gemma2Model
    torch.manual_seed(2)
    tok = bpe_tokenizer(["<pad>", "<eos>", "<bos>"], bos="<bos>", pad_token="<pad>", eos_token="<eos>",
                        bos_token="<bos>")
    tok.save_pretrained(folder / "tokenizer")
    gemma = Gemma2Model(Gemma2Config(vocab_size=len(tok), hidden_size=LUMINA_TRANSFORMER["cap_feat_dim"],
                                     intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=1, head_dim=16, pad_token_id=tok.pad_token_id))
    gemma.save_pretrained(folder / "text_encoder")
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.36,
                        shift_factor=0.11)
    vae.save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler(shift=6.0).save_pretrained(folder / "scheduler")
    (folder / "transformer").mkdir()
    (folder / "transformer/config.json").write_text(json.dumps({"_class_name": "Lumina2Transformer2DModel",
                                                                **LUMINA_TRANSFORMER}))


def release_json(base: str, lumina: str) -> dict:
    """The release's STAR_Qwen2.5-VL-*.json format, sized for the tiny model."""
    return {
        "model_name": "STAR_Qwen2.5-tiny_VQGAN", "model_type": "STARMultiModalityConfig",
        "language_model": {"model_name": "Qwen2.5-VL", "model_path": base},
        "pixel_encoder": {"model_name": "VQ_Model", "model_path": "checkpoints/VQ-Model.pt",
                          "image_token_size": CODES, "n_embed": CODE_DIM, "num_tokens": GRID * GRID,
                          "num_heads": VQ.attn_heads},
        "pixel_adapter": {"model_name": "MLP_GELU", "depth": 2, "input_dim": CODE_DIM, "n_embed": HIDDEN},
        "stacked_ar": {"num_layers": 2},
        "pixel_output_head": {"image_token_embed": 4096, "image_token_size": CODES, "n_embed": HIDDEN},
        "pixel_decoder": {"model_name": "LUMINA2", "model_path": lumina},
        "torch_dtype": "bfloat16",
    }


def our_modules(base_state: dict, qwen_dir: Path) -> dict:
    """Random STAR parts built with our modules: what the release's STAR-*.pt would hold, under our names."""
    from transformers import Qwen2_5_VLConfig

    from comfy_star.ar.model import GenerationAdapter, build_stack
    from comfy_star.diffusion.transformer import STARDiffusionTransformer
    from comfy_star.vq import STARVQ
    torch.manual_seed(3)
    text = Qwen2_5_VLConfig.from_pretrained(qwen_dir).text_config
    parts = {"ar.stack.": build_stack(text, 2), "ar.adapter.": GenerationAdapter(CODE_DIM, HIDDEN, 2),
             "ar.head.": torch.nn.Linear(HIDDEN, CODES), "vq.": STARVQ(VQ),
             "diffusion.transformer.": STARDiffusionTransformer(
                 in_channels=4 + CODE_DIM, out_channels=4,
                 **{k: v for k, v in LUMINA_TRANSFORMER.items() if k != "in_channels"})}
    with torch.no_grad():  # the refiner's last layer starts at zero: make it count
        parts["diffusion.transformer."].ori_inp_refiner[2].weight.normal_(0, 0.02)
        parts["vq."].quantize.embedding.weight.normal_()  # a spread-out codebook (LlamaGen's init is ~1/K)
    return {p + k: v.clone() for p, m in parts.items() for k, v in m.state_dict().items()}


TO_RELEASE = [("vq.", "pixel_encoder."), ("ar.adapter.", "pixel_adapter."), ("ar.head.", "pixel_output_head."),
              ("ar.stack.", "stacked_ar.model."), ("diffusion.transformer.", "diffusion_decoder.transformer.")]


def to_release(ours: dict, base_state: dict) -> dict:
    """Our names → the release's STARMultiModal.state_dict() names (the converter's mapping, reversed),
    plus what the release saves and we ignore: the frozen llm, the VQ usage counter, the decoder's VAE."""
    out = {}
    for k, v in ours.items():
        ours_prefix, theirs = next((o, t) for o, t in TO_RELEASE if k.startswith(o))
        out[theirs + k[len(ours_prefix):]] = v
    out["pixel_encoder.quantize.codebook_used"] = torch.zeros(65536)
    out["llm.model.language_model.embed_tokens.weight"] = base_state["model.language_model.embed_tokens.weight"]
    out["diffusion_decoder.vae.decoder.conv_out.bias"] = torch.zeros(3)
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("STAR")
    ckpts = root / "checkpoints"
    ckpts.mkdir()
    qwen, lumina = ckpts / "Qwen2.5-VL-tiny-Instruct", ckpts / "lumina-tiny"
    base_state = write_qwen_folder(qwen)
    write_lumina_folder(lumina)
    ours = our_modules(base_state, qwen)
    state = to_release(ours, base_state)
    pt = ckpts / "STAR-tiny.pt"
    torch.save({"state_dict": state}, pt)
    # as in the release repo: paths relative to its root (STAR/checkpoints/...), the JSON in star/configs/
    # beside the checkpoint here, so that the loader finds it
    (ckpts / "STAR_Qwen2.5-VL-tiny.json").write_text(json.dumps(release_json(
        "checkpoints/Qwen2.5-VL-tiny-Instruct", "checkpoints/lumina-tiny")))
    return SimpleNamespace(root=root, pt=pt, qwen=qwen, lumina=lumina, ours=ours, state=state, base=base_state)


@pytest.fixture(scope="module")
def star(release):
    return STAR.from_pretrained(release.pt, device="cpu", dtype=torch.float32)


# --- the tests ----------------------------------------------------------------------------------

def test_qwen_folder_tokenizer_loads_like_the_real_one(release, star, record_property):
    from transformers import AutoTokenizer
    print(f"Qwen tokenizer: {TOKENIZER_SOURCE}")
    record_property("qwen_tokenizer", TOKENIZER_SOURCE)
    tok = AutoTokenizer.from_pretrained(release.qwen, local_files_only=True)
    assert type(tok).__name__.startswith("Qwen2Tokenizer")
    ids = tok.encode("<|im_start|>user\na red circle<|im_end|>", add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "user\na red circle"
    assert tok.pad_token == "<|endoftext|>"
    if QWEN_TOKENIZER:  # the real vocabulary: Qwen2.5's ids, which the base's config and the chat format use
        assert {t: tok.convert_tokens_to_ids(t) for t in REAL_IDS} == REAL_IDS
        assert ids == [151644, 872, 198, 64, 2518, 12671, 151645]  # "user" "\n" "a" " red" " circle"
        assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
        base = star.parts.ar.base.config
        assert (base.image_token_id, base.vision_start_token_id, base.vision_end_token_id) == (151655, 151652, 151653)
        assert star.parts.chat.ids["<|image_pad|>"] == 151655 and star.parts.chat.ids["<|im_end|>"] == 151645
        assert star.parts.ar.base_text.embed_tokens.num_embeddings == VOCAB > max(tok.get_vocab().values())


def test_release_checkpoint_loads_every_tensor_where_it_belongs(release, star):
    cfg = star.config
    assert Path(cfg.ar.base_path).resolve() == release.qwen.resolve()  # "checkpoints/..." found from the JSON
    assert Path(cfg.diffusion.lumina_path).resolve() == release.lumina.resolve()
    assert cfg.image_size == 16 and cfg.grid == GRID and cfg.vq.ch_mult == (1, 2, 2) and cfg.vq.ch == 32
    assert cfg.diffusion.text_encoder == "gemma2" and cfg.diffusion.latent_factor == 2
    assert cfg.diffusion.latent_channels == 4
    loaded = {"ar.stack.": star.parts.ar.stack, "ar.adapter.": star.parts.ar.adapter, "ar.head.": star.parts.ar.head,
              "vq.": star.parts.vq, "diffusion.": star.parts.diffusion}
    for key, value in release.ours.items():
        prefix = next(p for p in loaded if key.startswith(p))
        got = loaded[prefix].state_dict()[key[len(prefix):]]
        assert torch.equal(got, value), key
    for key, value in release.base.items():  # the base comes from the Qwen folder, untouched
        assert torch.equal(star.parts.ar.base.state_dict()[key], value), key


def test_generates_vq_decodes_and_answers(star):
    tokens = star.sample_tokens(["a red circle"], seed=0, top_k=CODES)
    assert tokens.ids.shape == (1, GRID, GRID) and 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < CODES
    again = star.sample_tokens(["a red circle"], seed=0, top_k=CODES)
    other = star.sample_tokens(["a red circle"], seed=1, top_k=CODES)
    assert torch.equal(tokens.ids, again.ids) and not torch.equal(tokens.ids, other.ids)
    images = star.decode_vq(tokens)
    assert images.shape == (1, 3, 16, 16) and images.abs().max() <= 1 and images.std() > 0
    pil = star.generate("a red circle", seed=0, top_k=CODES)[0]
    assert pil.size == (16, 16)
    reply = star.answer(Image.new("RGB", (40, 30), "red"), "what is in this image?", max_new_tokens=3)
    assert isinstance(reply, str)
    assert star.reason("a cat", max_new_tokens=3).endswith(star.config.ar.reasoning_suffix)
    # editing: the source enters as VQ codes and as Qwen2.5-VL ViT features (3-D M-RoPE positions)
    edited = star.edit(Image.new("RGB", (16, 16), "blue"), "make it red", seed=0, top_k=CODES)[0]
    assert edited.size == (16, 16)


def test_diffusion_decoder_with_gemma2_text_and_the_lumina_vae(star):
    tokens = star.sample_tokens(["a red circle"], seed=0, top_k=CODES)
    text, mask = star.text_features(tokens.prompts)
    assert text.shape[-1] == LUMINA_TRANSFORMER["cap_feat_dim"] and mask.all()
    # Lumina's system prompt alone is longer than the tiny DiT's 64 caption positions: cut to fit its RoPE
    assert text.shape[1] == LUMINA_TRANSFORMER["axes_lens"][0] - 1
    seen = []
    out = star.decode_diffusion(tokens, size=16, steps=2, seed=0, callback=lambda i, n, p: seen.append(i))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all() and seen == [1, 2]
    assert torch.equal(out, star.decode_diffusion(tokens, size=16, steps=2, seed=0))
    with pytest.raises(ValueError, match="multiple of 4"):
        star.decode_diffusion(tokens, size=18, steps=1)


def test_diffusion_decoding_with_gemma2_lets_the_ar_model_stay_offloaded(star):
    tokens = star.sample_tokens(["a red circle"], seed=0, top_k=CODES)
    asked = []
    star.placement = lambda model, names: asked.append(set(names))
    try:
        star.decode_diffusion(tokens, size=16, steps=1, seed=0)
    finally:
        star.placement = None
    # Gemma2 encodes the text alone, then makes room for the decoder: the AR is never asked for
    assert asked == [{"text_encoder"}, {"vq", "diffusion"}]
    assert "text_encoder" in star.parts.modules()  # a managed part like the others


def test_convert_gives_the_same_model(release, star, tmp_path):
    from comfy_star.__main__ import main
    dst = tmp_path / "star-tiny.safetensors"
    assert main(["convert", str(release.pt), str(dst)]) == 0
    cfg = read_config(dst)
    assert Path(cfg.ar.base_path).resolve() == release.qwen.resolve() and cfg.vq.ch_mult == (1, 2, 2)
    converted = STAR.from_pretrained(dst, device="cpu", dtype=torch.float32)
    a = star.sample_tokens(["a blue square"], seed=3, top_k=CODES)
    b = converted.sample_tokens(["a blue square"], seed=3, top_k=CODES)
    assert torch.equal(a.ids, b.ids)
    assert torch.equal(star.decode_vq(a), converted.decode_vq(b))
    with pytest.raises(FileExistsError, match="not overwriting"):
        main(["convert", str(release.pt), str(dst)])
    # the JSON's folders are not on this machine: the base folder fixes the stack's sizes, so say so
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(release.pt, moved / "STAR-tiny.pt")
    (moved / "STAR_Qwen2.5-VL-tiny.json").write_text(json.dumps(release_json("/nowhere/Qwen", "/nowhere/lumina")))
    with pytest.raises(CheckpointError, match="base folder '/nowhere/Qwen' is not here.*--base"):
        main(["convert", str(moved / "STAR-tiny.pt"), str(tmp_path / "b.safetensors")])
    main(["convert", str(moved / "STAR-tiny.pt"), str(tmp_path / "c.safetensors"), "--base", str(release.qwen),
          "--lumina", str(release.lumina)])
    assert read_config(tmp_path / "c.safetensors").ar.base_path == str(release.qwen)


def test_manager_overrides_the_folders_and_keys_on_them(release, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    pt = moved / "STAR-tiny.pt"
    shutil.copy(release.pt, pt)
    # a JSON naming folders that are not on this machine, as the release's own paths usually are not
    (moved / "STAR_Qwen2.5-VL-tiny.json").write_text(json.dumps(release_json("/nowhere/Qwen2.5-VL-3B-Instruct",
                                                                               "/nowhere/lumina-image2")))
    manager = ModelManager()
    with pytest.raises(CheckpointError, match="Qwen2.5-VL-3B-Instruct.*does not exist.*Qwen2.5-VL"):
        manager.get(pt, dtype="float32", device="cpu")
    star = manager.get(pt, dtype="float32", device="cpu", base_path=release.qwen, lumina_path=release.lumina)
    assert star is manager.get(pt, dtype="float32", device="cpu", base_path=str(release.qwen),
                               lumina_path=release.lumina)
    assert star.config.ar.base_path == str(release.qwen) and star.config.diffusion.lumina_path == str(release.lumina)
    assert star.manager_key[-2:] == (str(release.qwen.resolve()), str(release.lumina.resolve()))
    assert star.sample_tokens(["a red circle"], seed=0, top_k=CODES).ids.shape == (1, GRID, GRID)
    copy = tmp_path / "qwen-copy"
    shutil.copytree(release.qwen, copy)
    other = manager.get(pt, dtype="float32", device="cpu", base_path=copy, lumina_path=release.lumina)
    assert other is not star and manager.load_count[other.manager_key] == 1


@pytest.mark.parametrize("which, words", [
    ("missing", r"base folder '.*no-such' does not exist; it must be a Qwen2.5-VL-Instruct folder"),
    ("gemma", r"base folder '.*text_encoder' holds a 'gemma2' model; .*Qwen2.5-VL"),
    ("no-tokenizer", r"base folder '.*' has no tokenizer files"),
])
def test_wrong_base_folders_are_named(release, tmp_path, which, words):
    folder = {"missing": tmp_path / "no-such", "gemma": release.lumina / "text_encoder"}.get(which)
    if which == "no-tokenizer":
        folder = tmp_path / "qwen-weights-only"
        folder.mkdir()
        for f in release.qwen.iterdir():
            if f.name in ("config.json", "model.safetensors"):
                shutil.copy(f, folder / f.name)
    with pytest.raises(CheckpointError, match=words):
        STAR.from_pretrained(release.pt, device="cpu", dtype=torch.float32, base_path=folder)


def test_wrong_lumina_folder_is_named(release, tmp_path):
    with pytest.raises(CheckpointError, match=r"Lumina folder '.*' has no vae/, text_encoder/, tokenizer/.*"
                                              r"Lumina-Image-2.0"):
        STAR.from_pretrained(release.pt, device="cpu", dtype=torch.float32, lumina_path=tmp_path)


def test_vq_from_a_separate_vq_model_file(release, tmp_path):
    """STAR-*.pt without pixel_encoder.*: the VQ comes from VQ-Model.pt (a bare VQ state dict), as the release
    loads it."""
    folder = tmp_path / "split"
    folder.mkdir()
    torch.save({"state_dict": {k: v for k, v in release.state.items() if not k.startswith("pixel_encoder.")}},
               folder / "STAR-tiny.pt")
    json_path = folder / "STAR_Qwen2.5-VL-tiny.json"
    json_path.write_text(json.dumps(release_json(str(release.qwen), str(release.lumina))))
    with pytest.raises(CheckpointError, match="no VQ tensors.*VQ-Model.pt"):
        STAR.from_pretrained(folder / "STAR-tiny.pt", device="cpu", dtype=torch.float32)
    torch.save({k[len("pixel_encoder."):]: v for k, v in release.state.items() if k.startswith("pixel_encoder.")},
               folder / "VQ-Model.pt")
    star = STAR.from_pretrained(folder / "STAR-tiny.pt", device="cpu", dtype=torch.float32)
    for key, value in star.parts.vq.state_dict().items():
        assert torch.equal(value, release.ours["vq." + key]), key
