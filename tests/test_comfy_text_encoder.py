"""ComfyUI's Qwen2.5-VL text-encoder file (what Qwen-Image users have in models/text_encoders/
qwen_2.5_vl_7b*.safetensors) as STAR's frozen base, instead of a Hugging Face folder.

The key layout is checked against ComfyUI's own code (the installed ComfyUI's `Qwen25_7BVLI` module and
`comfy.sd.detect_te_model`), at the real 7B sizes on the meta device; then a tiny random Qwen2.5-VL is
written in that layout (bf16/fp32, and fp8 in both of ComfyUI's scaled formats) and loaded as the base
through the library: the same logits as the model it was written from, and the same STAR outputs as with
the Hugging Face folder. The tokenizer is ComfyUI's bundled Qwen2.5 one.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import comfy_harness  # tests/conftest.py registers it
import test_release_checkpoint as rel

COMFY = comfy_harness.find_comfyui()
if COMFY is None:
    pytest.skip("ComfyUI not installed: run scripts/setup.sh (or set COMFYUI_DIR)", allow_module_level=True)
if str(COMFY) not in sys.path:
    sys.path.insert(0, str(COMFY))
from comfy.cli_args import args as comfy_args  # noqa: E402

comfy_args.cpu = True  # before comfy.model_management is imported: no GPU probing

from comfy_star.ar import base_file  # noqa: E402
from comfy_star.ar.model import batch_equal_vision_chunks  # noqa: E402
from comfy_star.ar.understand import answer, question_ids, vision_inputs  # noqa: E402
from comfy_star.checkpoint import CheckpointError  # noqa: E402
from comfy_star.config import QWEN25VL_3B, QWEN25VL_7B  # noqa: E402
from comfy_star.pipeline import STAR  # noqa: E402

TINY_TEXT = dict(hidden_size=rel.HIDDEN, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=rel.VOCAB)  # as rel.write_qwen_folder's


def to_comfy(state: dict, vision: bool = True, lm_head: bool = False) -> dict:
    """transformers' names → ComfyUI's (this test's own inverse, checked against ComfyUI's module below)."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.language_model."):
            out["model." + k[len("model.language_model."):]] = v
        elif k.startswith("model.visual."):
            if vision:
                out[k[len("model."):]] = v
        elif k == "lm_head.weight":
            if lm_head:
                out[k] = v
        else:
            raise KeyError(k)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def comfy_module_state(**config) -> dict:
    """ComfyUI's own Qwen-Image text encoder module (comfy/text_encoders/llama.py), on the meta device."""
    import comfy.ops
    import comfy.text_encoders.llama as llama
    module = llama.Qwen25_7BVLI(config, dtype=torch.bfloat16, device="meta", operations=comfy.ops.manual_cast)
    return module.state_dict()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny release (rel's), converted to a comfy-star file naming its HF folder; and the same base as
    ComfyUI text-encoder files: with the vision tower, and without it."""
    root = tmp_path_factory.mktemp("te")
    qwen, lumina = root / "Qwen2.5-VL-tiny-Instruct", root / "lumina-tiny"
    base_state = rel.write_qwen_folder(qwen)
    rel.write_lumina_folder(lumina)
    pt = root / "STAR-tiny.pt"
    torch.save({"state_dict": rel.to_release(rel.our_modules(base_state, qwen), base_state)}, pt)
    (root / "STAR_Qwen2.5-VL-tiny.json").write_text(json.dumps(rel.release_json(str(qwen), str(lumina))))
    from comfy_star.convert import convert
    star_file = convert(pt, root / "star-tiny.safetensors")
    te = root / "text_encoders"
    te.mkdir()
    save_file(to_comfy(base_state), te / "qwen_2.5_vl_tiny.safetensors")
    save_file(to_comfy(base_state, vision=False), te / "qwen_2.5_vl_tiny_novision.safetensors")
    config = json.loads((qwen / "config.json").read_text())
    return SimpleNamespace(root=root, qwen=qwen, pt=pt, star_file=star_file, state=base_state, config=config,
                           file=te / "qwen_2.5_vl_tiny.safetensors",
                           novision=te / "qwen_2.5_vl_tiny_novision.safetensors")


@pytest.fixture(scope="module")
def from_folder(tiny):
    return STAR.from_pretrained(tiny.star_file, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def from_file(tiny):
    return STAR.from_pretrained(tiny.star_file, device="cpu", dtype=torch.float32, base_path=tiny.file)


# --- the layout, from ComfyUI's own code -----------------------------------------------------------

def test_comfyuis_7b_layout_maps_onto_transformers_qwen25vl_7b():
    """Every key of ComfyUI's Qwen-Image text encoder (7B sizes, meta) maps to a transformers
    Qwen2.5-VL-7B parameter of the same shape; all of them but lm_head (ComfyUI has none) are covered."""
    import comfy.sd
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    comfy_sd = comfy_module_state()
    assert comfy.sd.detect_te_model(comfy_sd) == comfy.sd.TEModel.QWEN25_7B
    with torch.device("meta"):
        hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25VL_7B)).state_dict()
    mapped = {base_file.comfy_to_transformers(k): tuple(v.shape) for k, v in comfy_sd.items()}
    assert None not in mapped
    assert {k: s for k, s in mapped.items() if tuple(hf[k].shape) != s} == {}
    assert set(hf) - set(mapped) == {"lm_head.weight"} and set(mapped) <= set(hf)
    # the shape check accepts it for STAR-7B's base and names the difference for STAR-3B's
    shapes = {k: tuple(v.shape) for k, v in comfy_sd.items()}
    assert base_file.base_config("qwen_2.5_vl_7b.safetensors", QWEN25VL_7B, shapes) == QWEN25VL_7B
    with pytest.raises(CheckpointError, match=r"qwen_2.5_vl_7b.safetensors: not the base this STAR checkpoint.*"
                                              r"hidden size 3584 \(expected 2048\).*layers 28 \(expected 36\)"):
        base_file.base_config("qwen_2.5_vl_7b.safetensors", QWEN25VL_3B, shapes)


def test_the_tiny_files_keys_are_comfyuis(tiny):
    """The tiny file's names are those of ComfyUI's module built at the tiny text sizes (its vision tower is
    fixed at 32 blocks: compared up to the block count)."""
    from safetensors import safe_open
    with safe_open(str(tiny.file), "pt") as f:
        ours = set(f.keys())
    theirs = set(comfy_module_state(**TINY_TEXT))
    def one_block(keys):
        return {k for k in keys if not re.match(r"visual\.blocks\.[1-9]", k)}
    assert one_block(theirs) == ours
    assert any(k.startswith("visual.") for k in ours) and "lm_head.weight" not in ours


# --- the tiny file as the base -------------------------------------------------------------------------

def test_same_logits_as_the_model_it_was_written_from(tiny, from_file):
    from transformers import Qwen2_5_VLForConditionalGeneration
    original = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.qwen, local_files_only=True,
                                                                  dtype=torch.float32).eval()
    batch_equal_vision_chunks(original)  # as the library does for every base
    base, chat = from_file.parts.ar.base, from_file.parts.chat
    assert Path(from_file.config.ar.base_path) == tiny.file
    for key, value in original.state_dict().items():
        assert torch.equal(base.state_dict()[key], value), key
    from PIL import Image
    pixel_values, grid, counts = vision_inputs(from_file.parts.image_proc, [Image.new("RGB", (40, 30), "red")])
    with torch.inference_mode():
        for n in (None, counts[0]):  # text only, then text and an image (the vision tower from the file)
            ids = torch.tensor([question_ids(chat, "what is in this image?", n)])
            kw = dict(pixel_values=pixel_values, image_grid_thw=grid) if n else {}
            kw["mm_token_type_ids"] = (ids == chat.ids["<|image_pad|>"]).int()
            a, b = original(input_ids=ids, **kw).logits, base(input_ids=ids, **kw).logits
            assert a.shape[-1] == rel.VOCAB and torch.equal(a, b)


def test_star_with_the_file_base_matches_star_with_the_folder(tiny, from_folder, from_file):
    """Generation, editing, answering: the same as with the HF folder; ComfyUI's bundled tokenizer."""
    tok = from_file.parts.chat.tok
    assert Path(tok.name_or_path) == COMFY / "comfy/text_encoders/qwen25_tokenizer"
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655 and len(tok) == len(from_folder.parts.chat.tok)
    a = from_folder.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES)
    b = from_file.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES)
    assert torch.equal(a.ids, b.ids)
    from PIL import Image
    src = Image.new("RGB", (16, 16), "blue")
    assert from_folder.edit(src, "make it red", seed=0, top_k=rel.CODES)[0].tobytes() == \
        from_file.edit(src, "make it red", seed=0, top_k=rel.CODES)[0].tobytes()
    q = Image.new("RGB", (40, 30), "red")
    assert from_folder.answer(q, "what is this?", max_new_tokens=4) == from_file.answer(q, "what is this?",
                                                                                        max_new_tokens=4)


# --- fp8 ---------------------------------------------------------------------------------------------

def _fp8(state: dict, fmt: str):
    """ComfyUI's fp8 files: the big Linear weights as float8_e4m3fn with a per-tensor scale; the old
    "scaled fp8" (scaled_fp8 marker, <layer>.scale_weight) or the new layout (<layer>.weight_scale and
    _quantization_metadata in the header). Returns (tensors, metadata, the dequantized weights)."""
    out, meta, layers, expect = dict(state), None, {}, {}
    for k, w in state.items():
        if k.endswith("_proj.weight") and k.startswith("model.layers."):
            layer = k[: -len(".weight")]
            scale = (w.abs().amax().float() / 448.0).reshape(())
            q = (w.float() / scale).to(torch.float8_e4m3fn)
            out[k] = q
            out[layer + (".scale_weight" if fmt == "old" else ".weight_scale")] = scale
            if fmt == "new":
                out[layer + ".input_scale"] = torch.ones(())
            layers[layer] = {"format": "float8_e4m3fn"}
            expect[k] = q.float() * scale
    if fmt == "old":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    else:
        meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    return out, meta, expect


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_fp8_scaled_files_are_dequantized(tiny, from_folder, tmp_path, fmt):
    tensors, meta, expect = _fp8(to_comfy(tiny.state), fmt)
    path = tmp_path / f"qwen_2.5_vl_tiny_fp8_scaled_{fmt}.safetensors"
    save_file(tensors, path, metadata=meta)
    read = base_file.read_base_file(path)
    assert len(expect) == 14 and all(read[base_file.comfy_to_transformers(k)].dtype == torch.float32 for k in expect)
    for k, w in expect.items():
        assert torch.equal(read[base_file.comfy_to_transformers(k)], w), k
        assert not torch.equal(w, to_comfy(tiny.state)[k])  # fp8 did change it: the check above means something
    star = STAR.from_pretrained(tiny.star_file, device="cpu", dtype=torch.float32, base_path=path)
    ref = star.parts.ar.base.state_dict()
    for k, w in expect.items():
        assert torch.equal(ref[base_file.comfy_to_transformers(k)], w), k
    assert star.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES).ids.shape == (1, rel.GRID, rel.GRID)


def test_other_quantizations_are_refused_by_name(tiny, tmp_path):
    tensors, _, _ = _fp8(to_comfy(tiny.state), "new")
    meta = {"_quantization_metadata": json.dumps({"layers": {"model.layers.0.mlp.up_proj": {"format": "nvfp4"}}})}
    save_file(tensors, tmp_path / "nvfp4.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=r"nvfp4.safetensors: quantized as 'nvfp4'.*cannot dequantize"):
        base_file.read_base_file(tmp_path / "nvfp4.safetensors")
    tensors, _, _ = _fp8(to_comfy(tiny.state), "old")
    tensors["model.layers.1.mlp.up_proj.scale_weight"] = torch.ones(96, 1)
    save_file(tensors, tmp_path / "blockwise.safetensors")
    with pytest.raises(CheckpointError, match=r"blockwise.safetensors: model.layers.1.mlp.up_proj.weight has a "
                                              r"\(96, 1\) scale \(block-wise fp8\)"):
        base_file.read_base_file(tmp_path / "blockwise.safetensors")


# --- missing parts and wrong files ---------------------------------------------------------------------

def test_no_vision_tower_generates_but_refuses_editing_and_image_questions(tiny):
    star = STAR.from_pretrained(tiny.star_file, device="cpu", dtype=torch.float32, base_path=tiny.novision)
    assert star.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES).ids.shape == (1, rel.GRID, rel.GRID)
    assert isinstance(star.reason("a cat", max_new_tokens=2), str)  # text in, text out: no vision needed
    from PIL import Image
    words = r"novision.safetensors: holds no vision tower \(visual.\* tensors\).*editing and answering questions"
    with pytest.raises(CheckpointError, match=words):
        star.edit(Image.new("RGB", (16, 16), "blue"), "make it red", seed=0)
    with pytest.raises(CheckpointError, match=words):
        star.answer(Image.new("RGB", (16, 16), "blue"), "what is this?")


def test_an_untied_base_without_lm_head_generates_but_cannot_write_text(tiny, from_file):
    """Qwen2.5-VL-7B does not tie its LM head, and ComfyUI's files may leave it out."""
    config = json.loads(json.dumps(tiny.config))
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = False
    base = base_file.load_base_file(tiny.file, config)
    assert isinstance(base.lm_head, base_file.MissingPart)
    ids = torch.tensor([[151644, 872, 198]])
    h = base.model.language_model(input_ids=ids).last_hidden_state
    assert torch.equal(h, from_file.parts.ar.base_text(input_ids=ids).last_hidden_state)  # what generation uses
    with pytest.raises(CheckpointError, match=r"tiny.safetensors: holds no lm_head.weight.*answering questions "
                                              r"and implicit reasoning need it"):
        answer(base, from_file.parts.chat, ["hi"], max_new_tokens=2)
    # with lm_head in the file, it is loaded
    path = tiny.root / "with_head.safetensors"
    save_file(to_comfy(tiny.state, lm_head=True), path)
    base = base_file.load_base_file(path, config)
    assert torch.equal(base.lm_head.weight, tiny.state["lm_head.weight"])


def test_wrong_files_are_refused_by_name(tiny, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"not the base this STAR checkpoint was trained on: hidden size 64 "
                                              r"\(expected 2048\)"):  # the release .pt: the star-3b preset's base
        STAR.from_pretrained(tiny.pt, device="cpu", dtype=torch.float32, base_path=tiny.file)
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}, tmp_path / "llama.safetensors")
    with pytest.raises(CheckpointError, match=r"llama.safetensors: not a Qwen2.5-VL text encoder"):
        STAR.from_pretrained(tiny.star_file, device="cpu", base_path=tmp_path / "llama.safetensors")
    with pytest.raises(CheckpointError, match=r"base file '.*nowhere.safetensors' does not exist"):
        STAR.from_pretrained(tiny.star_file, device="cpu", base_path=tmp_path / "nowhere.safetensors")
    monkeypatch.setattr(base_file, "_comfyui_tokenizer_dirs", lambda: [])
    with pytest.raises(CheckpointError, match=r"holds no tokenizer.*qwen25_tokenizer/ folder beside the file"):
        STAR.from_pretrained(tiny.star_file, device="cpu", base_path=tiny.file)


def test_a_tokenizer_folder_beside_the_file_is_used(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(base_file, "_comfyui_tokenizer_dirs", lambda: [])
    shutil.copyfile(tiny.file, tmp_path / "qwen.safetensors")
    shutil.copytree(COMFY / "comfy/text_encoders/qwen25_tokenizer", tmp_path / "qwen25_tokenizer")
    assert base_file.tokenizer_folder(tmp_path / "qwen.safetensors") == str(tmp_path / "qwen25_tokenizer")
    assert base_file.tokenizer_folder(tiny.qwen) == str(tiny.qwen)  # a folder keeps its own
