"""Reliability and safety of the pack on the session's real ComfyUI server (issue 5).

- fuzz: for every STAR node, hypothesis queues prompts with wrong and extreme values through
  /prompt (wrong types, NaN images, RGBA / 1 px / 2048 px images, batch mismatches, empty, huge,
  non-Latin and invalid-Unicode text, out-of-range numbers, missing and dangling links). Each bad
  prompt must be refused at validation (400 with node_errors) or at execution (an
  execution_error raised by the STAR node), and the refusal must name the offending input; each
  good-but-extreme prompt must run. Then the server still serves a right image.
- load: 200 prompts mixing every example workflow, queued at once: all right, the server's RSS
  steady (no growth in the second half beyond the allocator's steps), the model read from disk
  at most once.
- determinism: the same workflow and seed twice gives the same PNG bytes (VQ and diffusion decode).
- cancel during AR sampling, diffusion decoding and training stops within seconds and leaves the
  model loaded and unchanged.
- bad model files and names outside the model folders are refused with the file named.

Figures (examples per node, wall times, RSS, loads) are printed (`pytest -s`) and written to
test-artifacts/reliability.json.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import checks
import comfy_harness as harness

PACK = harness.pack_dir()
WORKFLOWS = sorted(p.name for p in (PACK / "workflows").glob("*.json"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
EMBEDDED = "star-shapes (embedded)"
LOADED = "[comfy-star] loaded "  # comfy_star.manager logs this line on every read of a checkpoint
REPORT: dict = {"fuzz": {}}

pytestmark = pytest.mark.skipif(not (PACK / "comfy_star").is_dir(),
                                reason="tests the comfy-star pack itself, not a dummy pack ($COMFY_STAR_TEST_PACK)")


def _report(key, value):
    REPORT[key] = value
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "reliability.json").write_text(json.dumps(REPORT, indent=2, default=str))


# ============================================================================ prompt building

def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


M = ["1", 0]  # the loader's model output
TARGET = "9"  # the node under test (the loader is "1")
SAMPLE = dict(prompt="a red circle to the left of a blue square", seed=1, cfg=2.0, temperature=1.0, top_k=64,
              top_p=1.0, batch_size=1)


def loader(**kw) -> dict:
    return _n("STARModelLoader", **{"ckpt_name": EMBEDDED, "base_folder": "", "lumina_folder": "",
                                    "dtype": "auto", "device": "auto", **kw})


def sample(**kw) -> dict:
    return _n("STARStackedARSample", model=M, **{**SAMPLE, **kw})


def empty_image(width=64, height=64, batch=1, color=0x3366CC) -> dict:
    return _n("EmptyImage", width=width, height=height, batch_size=batch, color=color)


def train(dataset, **kw) -> dict:
    return _n("STARTrainStackedLayers", model=M, dataset=dataset,
              **{"steps": 1, "learning_rate": 0.0003, "batch_size": 1, "seed": 0, "save_prefix": "", **kw})


FUZZ_FOLDER = "comfy_star_fuzz_dataset"  # made in the server's input directory by the fuzz fixture


def graph(node: str) -> tuple[dict, str]:
    """A small good prompt around `node` → (prompt, id of the node under test)."""
    p = {"1": loader(), "6": empty_image(8, 8)}  # "6": an IMAGE to link where it does not belong
    if node == "STARModelLoader":
        p.update({"2": sample(), "3": _n("STARVQDecode", model=M, tokens=["2", 0]),
                  "4": _n("PreviewImage", images=["3", 0])})
        return p, "1"
    if node == "STARVQEncode":
        p.update({"5": empty_image(), TARGET: _n("STARVQEncode", model=M, image=["5", 0]),
                  "3": _n("STARVQDecode", model=M, tokens=[TARGET, 0]), "4": _n("PreviewImage", images=["3", 0])})
    elif node == "STARVQDecode":
        p.update({"2": sample(), TARGET: _n("STARVQDecode", model=M, tokens=["2", 0]),
                  "4": _n("PreviewImage", images=[TARGET, 0])})
    elif node == "STARImplicitReasoning":
        p.update({TARGET: _n("STARImplicitReasoning", model=M, prompt="a shape with three corners", max_tokens=8),
                  "2": sample(cond=[TARGET, 0]), "3": _n("STARVQDecode", model=M, tokens=["2", 0]),
                  "4": _n("PreviewImage", images=["3", 0])})
    elif node == "STARStackedARSample":
        p.update({TARGET: sample(), "3": _n("STARVQDecode", model=M, tokens=[TARGET, 0]),
                  "4": _n("PreviewImage", images=["3", 0])})
    elif node == "STARDiffusionDecode":
        p.update({"2": sample(), TARGET: _n("STARDiffusionDecode", model=M, tokens=["2", 0], seed=0, steps=2, size=0,
                                            cfg=2.0, image_cfg=1.0),
                  "4": _n("PreviewImage", images=[TARGET, 0])})
    elif node == "STARVQA":
        p.update({"5": empty_image(), TARGET: _n("STARVQA", model=M, image=["5", 0], question="what is it?",
                                                 max_tokens=4)})
    elif node == "STARFolderDataset":
        p.update({TARGET: _n("STARFolderDataset", folder=FUZZ_FOLDER, kind="caption"), "7": train([TARGET, 0]),
                  "4": _n("PreviewImage", images=["7", 1])})
    elif node == "STARShapesDataset":
        p.update({TARGET: _n("STARShapesDataset", count=2, kind="caption", seed=0, size=64),
                  "7": train([TARGET, 0]), "4": _n("PreviewImage", images=["7", 1])})
    elif node == "STARTrainStackedLayers":
        p.update({"8": _n("STARShapesDataset", count=2, kind="caption", seed=0, size=64), TARGET: train(["8", 0]),
                  "4": _n("PreviewImage", images=[TARGET, 1])})
    elif node == "STARSaveCheckpoint":
        p.update({TARGET: _n("STARSaveCheckpoint", model=M, filename_prefix="fuzz/never_written")})
    else:
        raise KeyError(node)
    return p, TARGET


@dataclass
class Case:
    kind: str  # the fault (or extreme) tried, for the coverage check and the report
    node: str  # class_type of the node under test
    prompt: dict
    refuse: tuple[str, ...] | None  # the refusal must name one of these inputs; None: the prompt must run
    raiser: str | None = None  # the node expected to raise at execution (default: the node under test)
    stage: str | None = None  # "validation": must be refused by /prompt itself


def _with(node: str, kind: str, edit, refuse=None, raiser=None, stage=None) -> Case:
    """A Case from the node's good graph changed by edit(prompt, target_id)."""
    p, t = graph(node)
    edit(p, t)
    return Case(kind, node, p, refuse, raiser, stage)


def _set(**inputs):
    def edit(p, t):
        p[t]["inputs"].update(inputs)
    return edit


# ============================================================================ fault strategies

LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
NON_LATIN = st.one_of(
    st.sampled_from(["三个绿色三角形", "красный круг слева", "دائرة حمراء", "🟥 ➜ 🔵", "ｒｅｄ　ｃｉｒｃｌｅ",
                     "a\x00red\x07circle", "שלושה משולשים ירוקים", "\u202eelcric der a"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80)
    .filter(lambda s: s.strip()))
BLANK = st.text(" \t\n\r\u3000\u00a0", max_size=12)
WRONG_WIDGET_VALUES = st.sampled_from(["abc", None, {}, [1, 2, 3], "1e3x", {"nested": [1]}])


def _spec(info: dict, node: str) -> tuple[dict, dict]:
    i = info[node]["input"]
    return i.get("required", {}), i.get("optional", {})


def _kind_of(spec) -> str:
    t = spec[0]
    return "COMBO" if isinstance(t, list) or t == "COMBO" else t


def generic_faults(info: dict, node: str) -> dict[str, st.SearchStrategy]:
    """Faults any node can get, from its /object_info: a required input left out, a widget of the
    wrong type or out of its range (NaN for floats), a combo value not in the list, a link from an
    output of another type, or to a node that is not there."""
    required, optional = _spec(info, node)
    everything = {**required, **optional}
    faults: dict[str, st.SearchStrategy] = {}

    def drop(name):
        def edit(p, t):
            del p[t]["inputs"][name]
        return _with(node, "missing input", edit, (name,))
    faults["missing input"] = st.sampled_from(sorted(required)).map(drop)

    numbers = {k: v for k, v in everything.items() if _kind_of(v) in ("INT", "FLOAT")}
    if numbers:
        faults["widget of a wrong type"] = st.tuples(st.sampled_from(sorted(numbers)), WRONG_WIDGET_VALUES).map(
            lambda a: _with(node, "widget of a wrong type", _set(**{a[0]: a[1]}), (a[0],)))

        def out_of_range(draw_name_value):
            name, value = draw_name_value
            return _with(node, "number out of range", _set(**{name: value}), (name,))

        @st.composite
        def bad_number(draw):
            name = draw(st.sampled_from(sorted(numbers)))
            kind, opts = _kind_of(numbers[name]), (numbers[name][1] if len(numbers[name]) > 1 else {})
            lo, hi = opts.get("min"), opts.get("max")
            choices = []
            if kind == "INT":
                if lo is not None:
                    choices.append(st.integers(max_value=lo - 1, min_value=lo - 2 ** 70))
                if hi is not None:
                    choices.append(st.integers(min_value=hi + 1, max_value=hi + 2 ** 70))
            else:
                choices.append(st.just(math.nan))  # passes ComfyUI's min/max check: the node must refuse it
                if lo is not None:
                    choices.append(st.floats(max_value=lo, exclude_max=True))
                if hi is not None:
                    choices.append(st.floats(min_value=hi, exclude_min=True))
            return name, draw(st.one_of(choices))
        faults["number out of range"] = bad_number().map(out_of_range)

    combos = {k: v for k, v in everything.items() if _kind_of(v) == "COMBO"}
    if combos:
        def options(name):
            s = combos[name]
            return s[0] if isinstance(s[0], list) else s[1].get("options", [])
        faults["combo value not in the list"] = st.sampled_from(sorted(combos)).flatmap(
            lambda name: st.one_of(st.text(max_size=30), st.sampled_from(["../" + str(o) for o in options(name)]))
            .filter(lambda v, name=name: v not in options(name))
            .map(lambda v, name=name: _with(node, "combo value not in the list", _set(**{name: v}), (name,))))

    links = {k: v for k, v in everything.items() if _kind_of(v) not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")}
    if links:
        def wrong_link(name):
            source = ["6", 0] if _kind_of(everything[name]) != "IMAGE" else ["1", 0]
            return _with(node, "link from an output of another type", _set(**{name: source}), (name,))
        faults["link from an output of another type"] = st.sampled_from(sorted(links)).map(wrong_link)
        # ComfyUI's validator reports a link to a missing node or slot on the link into the node
        # that holds it ("Exception when validating inner node '99'"): refused at /prompt, but
        # named after the downstream input or the missing node, not always after this input.
        faults["dangling link"] = st.tuples(st.sampled_from(sorted(links)),
                                            st.sampled_from([["99", 0], ["1", 7], ["1"], ["1", 0, 0]])).map(
            lambda a: _with(node, "dangling link", _set(**{a[0]: a[1]}),
                            (a[0], "'99'", "Exception when validating"), stage="validation"))
    return faults


def text_faults(node: str, name: str) -> dict[str, st.SearchStrategy]:
    """A text input: blank → refused; longer than the context → refused; a lone surrogate
    (valid JSON, invalid Unicode) → refused; any other text, non-Latin too → runs."""
    return {
        f"{name}: blank": BLANK.map(lambda s: _with(node, f"{name}: blank", _set(**{name: s}), (name,))),
        f"{name}: longer than the context": st.tuples(st.integers(4100, 200_000), st.sampled_from("x界🟥")).map(
            lambda a: _with(node, f"{name}: longer than the context", _set(**{name: "a" + a[1] * a[0]}), (name,))),
        f"{name}: invalid Unicode": st.tuples(st.text(max_size=10), LONE_SURROGATES, st.text(max_size=10)).map(
            lambda a: _with(node, f"{name}: invalid Unicode", _set(**{name: "x" + "".join(a)}), (name,))),
        f"{name}: non-Latin text": NON_LATIN.map(lambda s: _with(node, f"{name}: non-Latin text", _set(**{name: s}))),
    }


def _image_source(p: dict, node_id: str, how: tuple) -> list:
    """Put an IMAGE-making chain of core nodes at node_id (+ helpers); → its output link."""
    kind = how[0]
    if kind == "empty":
        _, w, h, b, color = how
        p[node_id] = empty_image(w, h, b, color)
    elif kind == "nan":  # a NaN factor passes ComfyUI's validation (NaN < min is False): a NaN image
        p[node_id + "0"] = empty_image(16, 16, how[1])
        p[node_id] = _n("AdjustBrightness", images=[node_id + "0", 0], factor=math.nan)
    elif kind == "rgba":
        p[node_id + "0"] = empty_image(32, 24, 1, 0xFF0000)
        p[node_id + "1"] = _n("SolidMask", value=how[1], width=32, height=24)
        p[node_id] = _n("JoinImageWithAlpha", image=[node_id + "0", 0], alpha=[node_id + "1", 0])
    elif kind == "overshoot":  # values far outside [0, 1]: clamped
        p[node_id + "0"] = empty_image(16, 16, 1, how[1])
        p[node_id] = _n("NormalizeImages", images=[node_id + "0", 0], mean=0.5, std=0.001)
    else:
        raise KeyError(kind)
    return [node_id, 0]


EXTREME_IMAGES = st.one_of(
    st.tuples(st.just("empty"), st.sampled_from([1, 2, 3, 63, 64, 65, 257, 1000, 2048]),
              st.sampled_from([1, 2, 7, 64, 333, 2048]), st.integers(1, 2), st.integers(0, 0xFFFFFF))
    .filter(lambda a: a[1] * a[2] * a[3] <= 2048 * 2048),
    st.tuples(st.just("rgba"), st.floats(0.0, 1.0)),
    st.tuples(st.just("overshoot"), st.integers(0, 0xFFFFFF)))


def image_faults(node: str, name: str, image_node: str | None = "5", one: bool = False) -> dict[str, st.SearchStrategy]:
    """An IMAGE input fed by core nodes: NaN → refused naming it; 1 px, 2048 px, non-square, RGBA,
    values far outside [0, 1] → run. A 0-sized image cannot be made: EmptyImage refuses it."""
    def put(how, kind, refuse=None):
        def edit(p, t):
            p[t]["inputs"][name] = _image_source(p, "50", how)
        return _with(node, kind, edit, refuse)

    out = {
        f"{name}: NaN image": st.integers(1, 2).map(lambda b: put(("nan", b), f"{name}: NaN image", (name,))),
        f"{name}: extreme image": EXTREME_IMAGES.filter(lambda how: not one or how[0] != "empty" or how[3] == 1)
        .map(lambda how: put(how, f"{name}: extreme image")),
    }
    if image_node:
        out["0-sized image"] = st.tuples(st.sampled_from(["width", "height"]), st.integers(-5, 0)).map(
            lambda a: _with(node, "0-sized image", lambda p, t: p[image_node]["inputs"].update({a[0]: a[1]}),
                            (a[0],)))
    return out


PATH_ATTACKS = st.one_of(
    st.sampled_from(["..", "../", "../../etc", "a/../../b", "/etc", "/tmp", "C:\\Windows", "..\\..\\x",
                     "/dev/null", "./../x"]),
    st.text(max_size=8).map(lambda s: "../" + s),
    st.text(max_size=8).map(lambda s: "/" + s))


def folder_name_faults(node: str, name: str, blank_refused: bool) -> dict[str, st.SearchStrategy]:
    out = {
        f"{name}: '..' or absolute path": PATH_ATTACKS.map(
            lambda s: _with(node, f"{name}: '..' or absolute path", _set(**{name: s}), (name,))),
        f"{name}: invalid Unicode": st.tuples(st.text(max_size=6), LONE_SURROGATES).map(
            lambda a: _with(node, f"{name}: invalid Unicode", _set(**{name: "f" + "".join(a)}), (name,))),
    }
    if blank_refused:
        out[f"{name}: blank"] = BLANK.map(lambda s: _with(node, f"{name}: blank", _set(**{name: s}), (name,)))
    else:
        out[f"{name}: no such folder"] = st.text("abcxyz_", min_size=1, max_size=12).map(
            lambda s: _with(node, f"{name}: no such folder", _set(**{name: "no_such_" + s}), (name,)))
    return out


def node_faults(info: dict, node: str) -> dict[str, st.SearchStrategy]:
    faults = generic_faults(info, node)
    if node == "STARModelLoader":
        faults["ckpt_name: path outside models/star"] = st.sampled_from(
            ["../star-shapes.safetensors", "/etc/passwd", str(Path(PACK, "comfy_star/assets/star-shapes.safetensors")),
             "no_such.safetensors", "..\\x.safetensors", "star-shapes"]).map(
            lambda s: _with(node, "ckpt_name: path outside models/star", _set(ckpt_name=s), ("ckpt_name",)))
        faults["device: cuda without a GPU"] = st.just(None).map(
            lambda _: _with(node, "device: cuda without a GPU", _set(device="cuda"), ("device",)))
        faults["good dtype/device"] = st.tuples(st.sampled_from(["auto", "float32"]), st.sampled_from(["auto", "cpu"])).map(
            lambda a: _with(node, "good dtype/device", _set(dtype=a[0], device=a[1])))
        for name in ("base_folder", "lumina_folder"):
            faults.update(folder_name_faults(node, name, blank_refused=False))
    elif node == "STARVQEncode":
        faults.update(image_faults(node, "image"))
        faults["image batch"] = st.integers(1, 4).map(
            lambda b: _with(node, "image batch", lambda p, t: p["5"]["inputs"].update(batch_size=b)))
    elif node == "STARVQDecode":
        faults["tokens of a batch"] = st.integers(1, 3).map(
            lambda b: _with(node, "tokens of a batch", lambda p, t: p["2"]["inputs"].update(batch_size=b)))
    elif node == "STARImplicitReasoning":
        faults.update(text_faults(node, "prompt"))
        faults["max_tokens: leaves no room"] = st.integers(4033, 4096).map(
            lambda n: _with(node, "max_tokens: leaves no room", _set(max_tokens=n), ("max_tokens",)))
    elif node == "STARStackedARSample":
        faults.update(text_faults(node, "prompt"))
        faults.update({k: v for k, v in image_faults(node, "source_image", None).items() if "NaN" in k})
        faults["model defaults and edge values"] = st.fixed_dictionaries({
            "cfg": st.sampled_from([-1.0, 0.0, 1.0, 100.0]), "temperature": st.sampled_from([-1.0, 0.0, 10.0]),
            "top_k": st.sampled_from([-1, 0, 1, 1 << 20]), "top_p": st.sampled_from([-1.0, 0.01, 1.0]),
            "seed": st.sampled_from([0, 2 ** 64 - 1]), "batch_size": st.integers(1, 2)}).map(
            lambda kw: _with(node, "model defaults and edge values", _set(**kw)))
        faults["top_p: 0"] = st.floats(0.0, 0.0099).map(
            lambda v: _with(node, "top_p: 0", _set(top_p=v), ("top_p",)))

        def edit_batches(a):
            n_tok, n_img, n = a
            ok = (n_tok == n_img or 1 in (n_tok, n_img))
            common = max(n_tok, n_img)
            ok = ok and (n == common or n == 1 or common == 1)

            def edit(p, t):
                p["51"] = empty_image(64, 64, n_tok, 0x22AA44)
                p["52"] = _n("STARVQEncode", model=M, image=["51", 0])
                p["53"] = empty_image(48, 48, n_img, 0xAA2244)
                p[t]["inputs"].update(source_tokens=["52", 0], source_image=["53", 0], batch_size=n,
                                      prompt="make the circle green")
            return _with(node, "edit batches" if ok else "edit batch mismatch", edit,
                         None if ok else ("source_tokens", "source_image", "batch_size"))
        faults["edit batch mismatch"] = st.tuples(st.integers(2, 3), st.integers(2, 3), st.integers(1, 3)).filter(
            lambda a: a[0] != a[1] or (a[2] not in (1, a[0]))).map(edit_batches)
        faults["edit batches"] = st.sampled_from([(1, 1, 1), (2, 2, 1), (1, 2, 2), (2, 1, 1), (1, 1, 2)]).map(edit_batches)
        faults["source_tokens: sampled, no image"] = st.just(None).map(lambda _: _with(
            node, "source_tokens: sampled, no image",
            lambda p, t: p.update({"55": sample(seed=5)}) or p[t]["inputs"].update(source_tokens=["55", 0]),
            ("source_tokens",)))
    elif node == "STARDiffusionDecode":
        faults.update(image_faults(node, "source_image", None, one=True))
        faults["size: not one the decoder makes"] = st.integers(1, 8192).filter(
            lambda s: s % 8 or s < 16 or s > 1024).map(
            lambda s: _with(node, "size: not one the decoder makes", _set(size=s), ("size",)))
        faults["small sizes and steps"] = st.tuples(st.sampled_from([0, 16, 24, 40]), st.integers(0, 3),
                                                    st.sampled_from([-1.0, 0.0, 1.0, 7.5])).map(
            lambda a: _with(node, "small sizes and steps", _set(size=a[0], steps=a[1] or 1, cfg=a[2])))

        def source_batches(a):
            n_tok, n_img = a
            ok = n_img in (1, n_tok)

            def edit(p, t):
                p["51"] = empty_image(64, 64, n_tok, 0x22AA44)
                p["52"] = _n("STARVQEncode", model=M, image=["51", 0])
                p["53"] = empty_image(40, 40, n_img, 0xAA2244)
                p[t]["inputs"].update(tokens=["52", 0], source_image=["53", 0], size=16)
            return _with(node, "source batches" if ok else "source batch mismatch", edit, None if ok else ("source_image",))
        faults["source batch mismatch"] = st.tuples(st.integers(1, 3), st.integers(2, 3)).filter(
            lambda a: a[1] != a[0]).map(source_batches)
    elif node == "STARVQA":
        faults.update(text_faults(node, "question"))
        faults.update(image_faults(node, "image"))
        faults["max_tokens: leaves no room"] = st.integers(4050, 4096).map(
            lambda n: _with(node, "max_tokens: leaves no room", _set(max_tokens=n), ("max_tokens",)))
    elif node == "STARFolderDataset":
        faults.update(folder_name_faults(node, "folder", blank_refused=True))
        faults["folder: no such folder"] = st.text("abcxyz_", min_size=1, max_size=12).map(
            lambda s: _with(node, "folder: no such folder", _set(folder="no_such_" + s), ("folder",)))
        faults["folder: a file, not a folder"] = st.just(None).map(lambda _: _with(
            node, "folder: a file, not a folder", _set(folder=FUZZ_FOLDER + "/a.png"), ("folder",)))
        faults["folder with a corrupt image"] = st.sampled_from([FUZZ_FOLDER, FUZZ_FOLDER + "/", "./" + FUZZ_FOLDER]).map(
            lambda s: _with(node, "folder with a corrupt image", _set(folder=s)))
    elif node == "STARShapesDataset":
        faults["small and odd sizes"] = st.tuples(st.integers(1, 3), st.sampled_from(["caption", "edit", "mixed"]),
                                                  st.sampled_from([16, 17, 64, 333])).map(
            lambda a: _with(node, "small and odd sizes", _set(count=a[0], kind=a[1], size=a[2])))
    elif node == "STARTrainStackedLayers":
        faults.update({k: v for k, v in folder_name_faults(node, "save_prefix", blank_refused=False).items()
                       if "no such" not in k})
        faults["batch larger than the dataset"] = st.integers(3, 16).map(
            lambda b: _with(node, "batch larger than the dataset", _set(batch_size=b)))
    elif node == "STARSaveCheckpoint":
        faults.update(folder_name_faults(node, "filename_prefix", blank_refused=True))
    return faults


# ============================================================================ running a case

def _validation_text(details: dict) -> list[str]:
    texts = []
    for ne in (details.get("node_errors") or {}).values():
        for e in ne.get("errors", []):
            extra = e.get("extra_info") or {}
            texts.append(f"{e.get('message')} | {e.get('details')} | input_name={extra.get('input_name')}")
    return texts


def run_case(client, case: Case, timeout: float = 180) -> str:
    """Queue the case; assert the server's answer is the right one. → 'validation', 'execution' or 'ran'."""
    what = f"{case.node} / {case.kind}"
    try:
        prompt_id = client.queue(case.prompt)
    except harness.WorkflowError as e:
        texts = _validation_text(e.details)
        assert case.refuse is not None, f"{what}: a good prompt was refused: {e}"
        assert texts, f"{what}: refused without node_errors: {e.details}"
        assert any(n in t for t in texts for n in case.refuse), \
            f"{what}: the refusal does not name {case.refuse}: {texts}"
        return "validation"
    assert case.stage != "validation", f"{what}: /prompt accepted it"
    history = client.wait(prompt_id, timeout=timeout, raise_on_error=False)
    status = history["status"]
    errors = [d for kind, d in status.get("messages", []) if kind == "execution_error"]
    if case.refuse is None:
        assert status["status_str"] == "success", f"{what}: a good prompt failed: {errors or status}"
        assert client.image_refs(history) or client.output_texts(history), f"{what}: no output: {history['outputs']}"
        for path in client.output_images(history):
            from PIL import Image
            with Image.open(path) as im:
                assert min(im.size) >= 1 and im.mode in ("RGB", "RGBA"), f"{what}: {path} {im.size} {im.mode}"
        return "ran"
    assert status["status_str"] == "error" and errors, \
        f"{what}: a bad prompt ran: {status['status_str']}; {json.dumps(case.prompt)[:1500]}"
    err = errors[0]
    message = err.get("exception_message", "")
    assert err.get("node_type") == (case.raiser or case.node), \
        f"{what}: {err.get('node_type')} raised, not the node under test: {err.get('exception_type')}: {message}"
    assert any(n in message for n in case.refuse), \
        f"{what}: the error does not name {case.refuse}: {err.get('exception_type')}: {message}"
    return "execution"


@pytest.fixture(scope="module")
def fuzz_folder(comfy_server):
    """A caption folder in the server's input directory: two pictures with captions, one corrupt."""
    from PIL import Image
    folder = comfy_server.input_dir / FUZZ_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {name} picture")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "broken.txt").write_text("a broken picture")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


FUZZ_PER_KIND = int(os.environ.get("COMFY_STAR_FUZZ_PER_KIND", "3"))  # hypothesis examples per fault kind


@pytest.mark.parametrize("node", sorted(checks.EXPECTED_NODES))
def test_fuzz_node_through_prompt(node, client, object_info, fuzz_folder):
    """Hypothesis (derandomized: the same examples on every run) queues wrong and extreme prompts
    around `node`, FUZZ_PER_KIND of each fault kind the node has (fewer where a kind has fewer)."""
    faults = node_faults(object_info, node)
    tried: Counter = Counter()
    outcomes: Counter = Counter()
    seconds: Counter = Counter()
    t0 = time.time()
    for kind in sorted(faults):
        @settings(max_examples=FUZZ_PER_KIND, deadline=None, derandomize=True, database=None,
                  phases=(Phase.explicit, Phase.generate), print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(faults[kind])
        def check(case: Case):
            tried[case.kind] += 1
            outcomes[run_case(client, case)] += 1
        t_kind = time.time()
        check()
        seconds[kind] = round(time.time() - t_kind, 1)
    wall = time.time() - t0
    REPORT["fuzz"][node] = {"examples": sum(tried.values()), "kinds": dict(tried), "outcomes": dict(outcomes),
                            "wall_s": round(wall, 1), "slowest_s": dict(seconds.most_common(3))}
    _report("fuzz", REPORT["fuzz"])
    print(f"{node}: {sum(tried.values())} inputs, {len(tried)} kinds, {dict(outcomes)}, {wall:.1f}s; "
          f"slowest {seconds.most_common(3)}")
    assert client.alive(), "the server died"
    missed = set(faults) - set(tried)
    assert not missed, f"{node}: fault kinds never tried: {sorted(missed)}"


def test_server_still_serves_a_right_image_after_the_fuzz(client, load_workflow, object_info):
    assert client.alive(), "the server died"
    api = harness.reseed(harness.ui_to_api(load_workflow("text_to_image.json"), object_info), 424242)
    history = client.run(api, timeout=checks.WORKFLOW_TIMEOUT)
    checks.check_outputs("text_to_image.json", history, client.output_images(history))
    queue = client.queue_state()
    assert not queue["queue_running"] and not queue["queue_pending"], queue
    if REPORT["fuzz"]:
        total = sum(v["examples"] for v in REPORT["fuzz"].values())
        print(f"fuzz: {total} prompts over {len(REPORT['fuzz'])} nodes, "
              f"{sum(v['wall_s'] for v in REPORT['fuzz'].values()):.0f}s")


# ============================================================================ helpers for the rest

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _loads(server) -> list[str]:
    return [l for l in server.log().splitlines() if LOADED in l]


LEAK = "Potential memory leak detected"  # ComfyUI: a model patcher died while its module lives on


def _leaks(server) -> int:
    return server.log().count(LEAK)


def _api(load_workflow, object_info, name: str, seed: int, overrides: dict | None = None) -> dict:
    api = harness.reseed(harness.ui_to_api(load_workflow(name), object_info), seed)
    return harness.set_inputs(api, overrides or {})


# ============================================================================ load

LOAD_PROMPTS = 200
TRAINING_RUNS = 4  # finetune.json costs a few seconds: in the mix, but only a few times
RSS_EVERY = 10  # prompts between two reads of the server's RSS
LEAK_MIB_PER_PROMPT = 0.25  # the median growth per prompt in the second half may not exceed this


def test_load_200_mixed_prompts(comfy_server, load_workflow, object_info):
    if not hasattr(comfy_server, "proc") or not Path(f"/proc/{comfy_server.proc.pid}/status").exists():
        pytest.skip("needs the server's process (Linux /proc)")
    pid = comfy_server.proc.pid
    loads_before, leaks_before = len(_loads(comfy_server)), _leaks(comfy_server)
    rng = random.Random(5)
    # Warm-up: every workflow once, so that every code path has allocated what it keeps.
    for name in WORKFLOWS:
        comfy_server.run(_api(load_workflow, object_info, name, rng.randrange(1, 2 ** 31)),
                         timeout=checks.WORKFLOW_TIMEOUT)
    rss_first = _rss_kib(pid)
    loads_warm = len(_loads(comfy_server))

    others = [n for n in WORKFLOWS if n != "finetune.json"]
    mix = ["finetune.json"] * TRAINING_RUNS if "finetune.json" in WORKFLOWS else []
    mix += [others[i % len(others)] for i in range(LOAD_PROMPTS - len(mix))]
    rng.shuffle(mix)
    seeds = rng.sample(range(1, 2 ** 31), len(mix))  # all different: none answered from the cache
    t0 = time.time()
    ids = [comfy_server.queue(_api(load_workflow, object_info, name, seed)) for name, seed in zip(mix, seeds)]
    queued_s = time.time() - t0
    held = len(comfy_server.queue_state()["queue_pending"])  # prompts waiting while the first ones run
    results, rss_by_prompts = [], {}
    for done, (prompt_id, name) in enumerate(zip(ids, mix), 1):
        results.append((name, comfy_server.wait(prompt_id, timeout=checks.WORKFLOW_TIMEOUT, raise_on_error=False)))
        if done % RSS_EVERY == 0:  # prompts run in queue order: `done` of them have finished
            rss_by_prompts[done] = round(_rss_kib(pid) / 1024)
    wall = time.time() - t0
    rss_after = _rss_kib(pid)
    second_half = [mib for done, mib in sorted(rss_by_prompts.items()) if done >= len(mix) // 2]
    growth_per_prompt = statistics.median(b - a for a, b in zip(second_half, second_half[1:])) / RSS_EVERY
    loads_after = len(_loads(comfy_server))
    leaks = _leaks(comfy_server) - leaks_before

    failed = [(n, h["status"]) for n, h in results if h["status"]["status_str"] != "success"]
    assert not failed, f"{len(failed)} of {len(mix)} prompts failed, first: {failed[0]}"
    for name, history in results:
        checks.check_outputs(name, history, comfy_server.output_images(history))
    figures = {"prompts": len(mix), "held_in_queue": held, "mix": dict(Counter(mix)), "queue_s": round(queued_s, 1), "wall_s": round(wall, 1),
               "rss_after_first_mib": round(rss_first / 1024), "rss_mib_after_n_prompts": rss_by_prompts,
               "rss_after_mib": round(rss_after / 1024), "median_growth_mib_per_prompt_second_half": growth_per_prompt,
               "loads_during_warmup": loads_warm - loads_before, "loads_during_load": loads_after - loads_warm,
               "comfy_leak_warnings": leaks}
    _report("load", figures)
    print(f"load: {figures}")
    assert loads_after - loads_warm == 0, f"the model was read from disk again under load: {_loads(comfy_server)[-3:]}"
    assert loads_warm - loads_before <= 1, f"the model was read more than once: {_loads(comfy_server)[-3:]}"
    # each of these warnings costs a full garbage collection on every later model load
    assert leaks == 0, f"ComfyUI logged {leaks} '{LEAK}' warnings: a STAR part's patcher died before its module"
    # A leak grows with every prompt, so it shows in most 10-prompt steps of the second half.
    # glibc's arenas grow in single steps while two threads allocate at once (the HTTP thread
    # validating queued prompts, the worker running them) and then hold: measured, queued at once,
    # 400 prompts rose 1,192 → 1,277 MiB by the 40th prompt, stayed flat, and ended at 1,211; single
    # before/after pairs over 200 prompts moved -2 to +126 MiB, and one CI run stepped +113 MiB
    # between the 100th and 150th prompt and then held (1,519 → 1,632 → 1,632). Read every 10
    # prompts, the steps follow the training runs (with seed 5 the mix puts finetune.json at 127,
    # 167, 168 and 182; measured: flat at 1,194 MiB to the 120th, +10 by the 130th, +18 by the
    # 170th, flat to the end), whose autograd and optimizer buffers widen the arenas. A total over the
    # second half cannot tell that step from a leak; the median of its ten steps can: steps like these
    # leave it at 0, a leak of 0.25 MiB a prompt or more fails it. The whole run may add 20%.
    assert growth_per_prompt <= LEAK_MIB_PER_PROMPT, \
        f"RSS kept growing by {growth_per_prompt:.2f} MiB a prompt (median over the second half): " \
        f"{rss_by_prompts} MiB after that many of {len(mix)} prompts (first {rss_first / 1024:.0f})"
    assert rss_after <= rss_first * 1.20, \
        f"RSS grew from {rss_first / 1024:.0f} MiB to {rss_after / 1024:.0f} MiB over {len(mix)} prompts"
    queue = comfy_server.queue_state()
    assert not queue["queue_running"] and not queue["queue_pending"], queue


# ============================================================================ determinism

def _image_bytes(client, history) -> list[bytes]:
    return [Path(p).read_bytes() for p in client.output_images(history)]


@pytest.mark.parametrize("name", ["text_to_image.json", "vq_vs_diffusion.json"])
def test_same_seed_same_png_bytes(name, client, load_workflow, object_info):
    if name not in WORKFLOWS:
        pytest.skip(f"{name} is not in workflows/")
    a = client.run(_api(load_workflow, object_info, name, 1234), timeout=checks.WORKFLOW_TIMEOUT)
    other = client.run(_api(load_workflow, object_info, name, 98765), timeout=checks.WORKFLOW_TIMEOUT)
    b = client.run(_api(load_workflow, object_info, name, 1234), timeout=checks.WORKFLOW_TIMEOUT)
    refs_a, refs_b = client.image_refs(a), client.image_refs(b)
    assert refs_a and len(refs_a) == len(refs_b)
    # new files: the second run really ran (it was not answered from ComfyUI's cache)
    assert {r["filename"] for r in refs_a}.isdisjoint(r["filename"] for r in refs_b), (refs_a, refs_b)
    assert _image_bytes(client, a) == _image_bytes(client, b), f"{name}: the same seed gave other PNG bytes"
    assert client.image_refs(other)
    REPORT.setdefault("determinism", {})[name] = "identical PNG bytes"
    _report("determinism", REPORT["determinism"])


# ============================================================================ cancel

CANCELS = {  # what to interrupt: (workflow, node to catch in progress, overrides that make it long)
    "AR sampling": ("text_to_image.json", "STARStackedARSample", {"STARStackedARSample": {"batch_size": 64}}),
    "diffusion decoding": ("vq_vs_diffusion.json", "STARDiffusionDecode", {"STARDiffusionDecode": {"steps": 500, "size": 256}}),
    "training": ("finetune.json", "STARTrainStackedLayers", {"STARTrainStackedLayers": {"steps": 5000}}),
}
CANCEL_SLACK_S = 5.0  # "within a second or so", with slack for a busy 2-core CI machine


@pytest.mark.parametrize("what", sorted(CANCELS))
def test_interrupt_stops_quickly_and_leaves_the_model_alone(what, comfy_server, load_workflow, object_info):
    name, class_type, overrides = CANCELS[what]
    if name not in WORKFLOWS:
        pytest.skip(f"{name} is not in workflows/")
    client = comfy_server
    # the model's output before: the same seed must give the same bytes after the interrupt
    before = client.run(_api(load_workflow, object_info, "text_to_image.json", 777), timeout=checks.WORKFLOW_TIMEOUT)
    loads = len(_loads(comfy_server))

    api = _api(load_workflow, object_info, name, random.Random(what).randrange(1, 2 ** 31), overrides)
    node_ids = {k for k, v in api.items() if v["class_type"] == class_type}
    prompt_id = client.queue(api)
    deadline = time.time() + checks.WORKFLOW_TIMEOUT
    while not any(e["type"] == "progress" and e["data"].get("node") in node_ids for e in client.events(prompt_id)):
        assert time.time() < deadline, f"no progress from {class_type}"
        assert not any(e["type"] in harness.TERMINAL_EVENTS for e in client.events(prompt_id)), \
            f"{name} ended before {class_type} reported progress: {client.history(prompt_id)}"
        time.sleep(0.02)
    t_interrupt = time.time()
    client.interrupt()
    history = client.wait(prompt_id, timeout=120, raise_on_error=False)
    assert history["status"]["status_str"] != "success", f"{what} finished before the interrupt reached it"
    assert harness.interrupted(history), history["status"]
    stopped = [e for e in client.events(prompt_id) if e["type"] == "execution_interrupted"]
    assert stopped, "no execution_interrupted event"
    assert stopped[0]["data"].get("node_type") == class_type, stopped[0]["data"]
    latency = stopped[0]["t"] - t_interrupt
    REPORT.setdefault("cancel_s", {})[what] = round(latency, 2)
    _report("cancel_s", REPORT["cancel_s"])
    print(f"interrupt during {what}: stopped in {latency:.2f}s")
    assert latency < CANCEL_SLACK_S, f"the interrupt took {latency:.1f}s to stop {what}"

    after = client.run(_api(load_workflow, object_info, "text_to_image.json", 777), timeout=checks.WORKFLOW_TIMEOUT)
    checks.check_outputs("text_to_image.json", after, client.output_images(after))
    assert {r["filename"] for r in client.image_refs(before)}.isdisjoint(r["filename"] for r in client.image_refs(after))
    assert _image_bytes(client, after) == _image_bytes(client, before), \
        f"after an interrupted {what} the same seed gives another image: the model was changed"
    assert len(_loads(comfy_server)) == loads, f"the model was read from disk again after the interrupt"
    queue = client.queue_state()
    assert not queue["queue_running"] and not queue["queue_pending"], queue


# ============================================================================ bad model files

@pytest.fixture
def star_models(comfy_server, tmp_path):
    """models/star of the server; files the test puts there are removed afterwards."""
    folder = comfy_server.base_dir / "models" / "star"
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    yield folder, made
    for p in made:
        if p.is_symlink() or p.exists():
            p.unlink()


def _embedded() -> Path:
    return PACK / "comfy_star" / "assets" / "star-shapes.safetensors"


def _other_shape(target: Path):
    """A comfy-star file whose config says one model and whose tensors are of another shape."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(_embedded()), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in sorted(tensors) if k.startswith("ar.head.") and tensors[k].ndim == 2)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 3, tensors[key].shape[1])
    save_file(tensors, str(target), metadata=meta)


def _refused_naming(client, ckpt_name: str, words: tuple[str, ...]) -> str:
    api = {"1": loader(ckpt_name=ckpt_name), "2": sample(), "3": _n("STARVQDecode", model=M, tokens=["2", 0]),
           "4": _n("PreviewImage", images=["3", 0])}
    case = Case("bad file", "STARModelLoader", api, words)
    return run_case(client, case)


def test_bad_checkpoint_files_are_refused_naming_the_file(client, star_models, load_workflow, object_info):
    folder, made = star_models
    data = _embedded().read_bytes()
    files = {
        "fuzz_truncated.safetensors": lambda p: p.write_bytes(data[: len(data) // 2]),
        "fuzz_wrong_header.safetensors": lambda p: p.write_bytes(b"\x00" * 8 + b"this is not a safetensors file" * 50),
        "fuzz_empty.safetensors": lambda p: p.write_bytes(b""),
        "fuzz_other_shape.safetensors": _other_shape,
    }
    loads = len(_loads(client))
    outcomes = {}
    for name, make in files.items():
        path = folder / name
        made.append(path)
        make(path)
        outcomes[name] = _refused_naming(client, name, (name,))
    REPORT["bad_files"] = outcomes
    _report("bad_files", outcomes)
    assert len(_loads(client)) == loads, "a bad file was loaded"
    history = client.run(_api(load_workflow, object_info, "text_to_image.json", 31337), timeout=checks.WORKFLOW_TIMEOUT)
    checks.check_outputs("text_to_image.json", history, client.output_images(history))


def test_checkpoint_names_outside_the_model_folders_are_refused(client, star_models, tmp_path):
    folder, made = star_models
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(_embedded(), outside)
    link = folder / "fuzz_link_out.safetensors"
    made.append(link)
    link.symlink_to(outside)
    assert _refused_naming(client, "fuzz_link_out.safetensors", ("fuzz_link_out.safetensors",)) == "execution"
    for name in ("../fuzz_link_out.safetensors", "../../user/comfyui.db", str(outside), str(_embedded()),
                 "star/../../" + outside.name):
        assert _refused_naming(client, name, ("ckpt_name",)) in ("validation", "execution"), name
    assert not any("outside.safetensors" in l for l in _loads(client)), "a file outside models/ was loaded"
