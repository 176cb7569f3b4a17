"""ui_to_api (scripts/comfy_harness.py) on a hand-made UI workflow of ComfyUI core nodes and a
V3-style node, against a fake /object_info of the same shape as ComfyUI 0.3.75's. No server."""
from __future__ import annotations

import copy

import pytest

import comfy_harness as harness

OBJECT_INFO = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["model.safetensors", "other.safetensors"], {}]}},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "CLIP", "VAE"], "category": "loaders", "output_node": False},
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                               "clip": ["CLIP", {}]}},
        "input_order": {"required": ["text", "clip"]},
        "output": ["CONDITIONING"], "category": "conditioning", "output_node": False},
    "EmptyLatentImage": {
        "input": {"required": {"width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                               "batch_size": ["INT", {"default": 1}]}},
        "input_order": {"required": ["width", "height", "batch_size"]},
        "output": ["LATENT"], "category": "latent", "output_node": False},
    "KSampler": {
        "input": {"required": {
            "model": ["MODEL", {}],
            "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}],
            "steps": ["INT", {"default": 20}],
            "cfg": ["FLOAT", {"default": 8.0}],
            "sampler_name": [["euler", "euler_ancestral"], {}],
            "scheduler": [["simple", "karras"], {}],
            "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
            "latent_image": ["LATENT", {}],
            "denoise": ["FLOAT", {"default": 1.0}]}},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                     "positive", "negative", "latent_image", "denoise"]},
        "output": ["LATENT"], "category": "sampling", "output_node": False},
    "VAEDecode": {
        "input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
        "input_order": {"required": ["samples", "vae"]},
        "output": ["IMAGE"], "category": "latent", "output_node": False},
    "ImageScale": {  # a spec without an options dict, as ComfyUI has it
        "input": {"required": {"image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear"]],
                               "width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                               "crop": [["disabled", "center"]]}},
        "input_order": {"required": ["image", "upscale_method", "width", "height", "crop"]},
        "output": ["IMAGE"], "category": "image/upscaling", "output_node": False},
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                  "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
        "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
        "output": [], "category": "image", "output_node": True},
    "LoadImage": {
        "input": {"required": {"image": [["example.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE", "MASK"], "category": "image", "output_node": False},
    "PrimitiveStringMultiline": {
        "input": {"required": {"value": ["STRING", {"multiline": True}]}},
        "input_order": {"required": ["value"]},
        "output": ["STRING"], "category": "utils/primitive", "output_node": False},
    # V3 shape: "COMBO" with options, a seed named otherwise, a forced socket, optional inputs.
    "V3Sampler": {
        "input": {"required": {"model": ["MODEL", {}],
                               "mode": ["COMBO", {"multiselect": False, "options": ["a", "b", "c"],
                                                  "control_after_generate": True}],
                               "noise": ["INT", {"default": 0, "control_after_generate": True}],
                               "steps": ["INT", {"default": 8, "control_after_generate": False}],
                               "text": ["STRING", {"forceInput": True}]},
                  "optional": {"image": ["IMAGE", {}], "strength": ["FLOAT", {"default": 0.5}]}},
        "input_order": {"required": ["model", "mode", "noise", "steps", "text"],
                        "optional": ["image", "strength"]},
        "output": ["IMAGE"], "category": "STAR/test", "output_node": False},
}


def _node(id, type, widgets=None, inputs=(), outputs=(), mode=0, **extra):
    node = {"id": id, "type": type, "pos": [0, 0], "size": [100, 100], "flags": {}, "order": id,
            "mode": mode, "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs],
            "properties": {}}
    if widgets is not None:
        node["widgets_values"] = widgets
    node.update(extra)
    return node


def _i(name, type, link=None, widget=False):
    d = {"name": name, "type": type, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def _o(name, type, links):
    return {"name": name, "type": type, "links": links}


def make_workflow() -> dict:
    """Checkpoint → CLIP encodes (one prompt from a Primitive node widget) → KSampler (seed from
    a PrimitiveNode, through a Reroute for the model) → VAEDecode → a bypassed ImageScale →
    SaveImage; a muted SaveImage; a V3 node; a Note and a MarkdownNote."""
    nodes = [
        _node(1, "Note", ["a note"]),
        _node(2, "MarkdownNote", ["# title"]),
        _node(3, "CheckpointLoaderSimple", ["model.safetensors"],
              outputs=[_o("MODEL", "MODEL", [1]), _o("CLIP", "CLIP", [2, 3]), _o("VAE", "VAE", [4])]),
        _node(4, "Reroute", inputs=[_i("", "*", 1)], outputs=[_o("", "MODEL", [5, 16])]),
        _node(5, "PrimitiveStringMultiline", ["a cat"], outputs=[_o("STRING", "STRING", [6])]),
        _node(6, "CLIPTextEncode", ["(ignored: linked)"],
              inputs=[_i("clip", "CLIP", 2), _i("text", "STRING", 6, widget=True)],
              outputs=[_o("CONDITIONING", "CONDITIONING", [7])]),
        _node(7, "CLIPTextEncode", ["ugly"], inputs=[_i("clip", "CLIP", 3)],
              outputs=[_o("CONDITIONING", "CONDITIONING", [8])]),
        _node(8, "EmptyLatentImage", [64, 64, 1], outputs=[_o("LATENT", "LATENT", [9])]),
        _node(9, "PrimitiveNode", [1234, "fixed"], outputs=[_o("INT", "INT", [10])]),
        _node(10, "KSampler", [1234, "randomize", 4, 7.5, "euler", "karras", 0.9],
              inputs=[_i("model", "MODEL", 5), _i("positive", "CONDITIONING", 7),
                      _i("negative", "CONDITIONING", 8), _i("latent_image", "LATENT", 9),
                      _i("seed", "INT", 10, widget=True)],
              outputs=[_o("LATENT", "LATENT", [11])]),
        _node(11, "VAEDecode", [], inputs=[_i("samples", "LATENT", 11), _i("vae", "VAE", 4)],
              outputs=[_o("IMAGE", "IMAGE", [12, 14])]),
        _node(12, "ImageScale", ["bilinear", 32, 32, "disabled"], mode=4,
              inputs=[_i("image", "IMAGE", 12)], outputs=[_o("IMAGE", "IMAGE", [13])]),
        _node(13, "SaveImage", ["out/cat"], inputs=[_i("images", "IMAGE", 13)]),
        _node(14, "SaveImage", ["muted"], mode=2, inputs=[_i("images", "IMAGE", 14)]),
        _node(15, "V3Sampler", ["b", "increment", "", 42, "fixed", 3, 0.25],
              inputs=[_i("model", "MODEL", 16), _i("text", "STRING", 17), _i("image", "IMAGE", None)],
              outputs=[_o("IMAGE", "IMAGE", [])]),
        _node(16, "PrimitiveStringMultiline", ["hello"], outputs=[_o("STRING", "STRING", [17])]),
    ]
    links = [
        [1, 3, 0, 4, 0, "MODEL"], [2, 3, 1, 6, 0, "CLIP"], [3, 3, 1, 7, 0, "CLIP"],
        [4, 3, 2, 11, 1, "VAE"], [5, 4, 0, 10, 0, "MODEL"], [6, 5, 0, 6, 1, "STRING"],
        [7, 6, 0, 10, 1, "CONDITIONING"], [8, 7, 0, 10, 2, "CONDITIONING"],
        [9, 8, 0, 10, 3, "LATENT"], [10, 9, 0, 10, 4, "INT"], [11, 10, 0, 11, 0, "LATENT"],
        [12, 11, 0, 12, 0, "IMAGE"], [13, 12, 0, 13, 0, "IMAGE"], [14, 11, 0, 14, 0, "IMAGE"],
        [16, 4, 0, 15, 0, "MODEL"], [17, 16, 0, 15, 1, "STRING"],
    ]
    return {"last_node_id": 16, "last_link_id": 17, "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


EXPECTED = {
    "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
    "5": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a cat"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["5", 0], "clip": ["3", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["3", 1]}},
    "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "10": {"class_type": "KSampler", "inputs": {
        "seed": 1234, "steps": 4, "cfg": 7.5, "sampler_name": "euler", "scheduler": "karras",
        "denoise": 0.9, "model": ["3", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["8", 0]}},
    "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["3", 2]}},
    "13": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out/cat", "images": ["11", 0]}},
    "15": {"class_type": "V3Sampler", "inputs": {"mode": "b", "noise": 42, "steps": 3, "strength": 0.25,
                                                 "model": ["3", 0], "text": ["16", 0]}},
    "16": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "hello"}},
}


def _strip_meta(api):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def test_converts_core_and_v3_nodes():
    api = harness.ui_to_api(make_workflow(), OBJECT_INFO)
    assert _strip_meta(api) == EXPECTED
    assert api["10"]["_meta"]["title"] == "KSampler"


def test_link_objects_and_titles():
    wf = make_workflow()
    wf["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], l))
                   for l in wf["links"]]
    wf["nodes"][2]["title"] = "My checkpoint"
    api = harness.ui_to_api(wf, OBJECT_INFO)
    assert _strip_meta(api) == EXPECTED
    assert api["3"]["_meta"]["title"] == "My checkpoint"


def test_widget_values_without_control_values():
    """Older workflows saved seeds without the control_after_generate value."""
    wf = make_workflow()
    wf["nodes"][9]["widgets_values"] = [1234, 4, 7.5, "euler", "karras", 0.9]
    assert _strip_meta(harness.ui_to_api(wf, OBJECT_INFO))["10"] == EXPECTED["10"]


def test_upload_widget_value_is_skipped():
    wf = {"nodes": [_node(1, "LoadImage", ["example.png", "image"], outputs=[_o("IMAGE", "IMAGE", [1])]),
                    _node(2, "SaveImage", ["x"], inputs=[_i("images", "IMAGE", 1)])],
          "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    api = harness.ui_to_api(wf, OBJECT_INFO)
    assert api["1"]["inputs"] == {"image": "example.png"}
    assert harness.widget_mismatches(wf, OBJECT_INFO) == []


def test_bypass_with_nothing_to_pass_drops_the_input():
    wf = make_workflow()
    wf["nodes"][10]["mode"] = 4  # bypass VAEDecode: it has no IMAGE input to pass on
    api = harness.ui_to_api(wf, OBJECT_INFO)
    assert "11" not in api and "images" not in api["13"]["inputs"]


def test_api_format_passes_through():
    api = copy.deepcopy(EXPECTED)
    assert harness.ui_to_api(api, OBJECT_INFO) == EXPECTED


def test_unknown_node_type_is_an_error():
    wf = make_workflow()
    wf["nodes"].append(_node(99, "NoSuchNode", []))
    with pytest.raises(harness.ConversionError, match="NoSuchNode"):
        harness.ui_to_api(wf, OBJECT_INFO)


def test_widget_mismatches():
    wf = make_workflow()
    assert harness.widget_mismatches(wf, OBJECT_INFO) == []
    wf["nodes"][7]["widgets_values"] = [64, 64]  # EmptyLatentImage lost a value
    wf["nodes"][9]["widgets_values"][4] = "dpmpp_9m"  # not a sampler
    problems = harness.widget_mismatches(wf, OBJECT_INFO)
    assert len(problems) == 2 and "EmptyLatentImage" in problems[0] and "dpmpp_9m" in problems[1]


def test_reseed_and_set_inputs():
    api = copy.deepcopy(EXPECTED)
    harness.reseed(api, 7)
    assert api["10"]["inputs"]["seed"] == 7
    harness.set_inputs(api, {"KSampler": {"steps": 1}})
    assert api["10"]["inputs"]["steps"] == 1
