"""The pack as a person meets it: the ComfyUI frontend (1.32) in headless Debian chromium.

- the page loads, knows every STAR node, and its console says nothing bad about the pack;
- the node search (double-click the canvas, type "STAR") lists the STAR nodes;
- the template browser lists the pack's example workflows under EXTENSIONS › comfy-star; one
  loads, runs from the Run button, and its image appears on the canvas;
- a selected STAR node's info button opens its help page (web/docs/<node id>.md) in the sidebar;
- with the UI in Chinese, the help page is the Chinese one, the STAR nodes carry their names from
  locales/zh and the search finds them.
Screenshots: test-artifacts/browser-*.png (and each page's console log beside them).
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
import time
from pathlib import Path

import pytest

import comfy_harness as harness

# tests/e2e/checks.py, the judge of the workflows' pictures (loaded by path: tests/e2e is on sys.path
# only when pytest collected it first)
if "checks" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("checks", Path(__file__).resolve().parents[1] / "e2e" / "checks.py")
    sys.modules["checks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["checks"])
checks = sys.modules["checks"]

PACK_NAME = harness.PACK_NAME
TEMPLATE = "text_to_image"  # the example workflow the browser runs (workflows/<TEMPLATE>.json)
WORKFLOW_TIMEOUT = 900


def _star_nodes(object_info: dict) -> dict:
    return {k: v for k, v in object_info.items() if str(v.get("category", "")).startswith("STAR")}


def pack_errors(errors: list[str], object_info: dict) -> list[str]:
    """The console errors that concern this pack: they name it, its module, or a STAR node.
    Left out: the frontend's look-ups of node packs on api.comfy.org, which an offline server
    (--disable-api-nodes sets a CSP that blocks them) always refuses."""
    terms = {PACK_NAME, "comfy_star", f"/extensions/{PACK_NAME}"}
    for node_id, info in _star_nodes(object_info).items():
        terms.add(node_id)
        if info.get("display_name"):
            terms.add(info["display_name"])
    return [e for e in errors if "api.comfy.org" not in e and any(t in e for t in terms)]


def test_page_loads_without_pack_errors(ui, object_info):
    ui.page.wait_for_timeout(2000)  # let extensions finish their setup
    ui.screenshot("loaded")
    known = ui.page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    missing = sorted(set(_star_nodes(object_info)) - set(known))
    assert _star_nodes(object_info) and not missing, f"the frontend does not know {missing}"
    assert pack_errors(ui.errors(), object_info) == []


def test_node_search_lists_star_nodes(ui, object_info):
    page = ui.page
    page.get_by_role("button", name="Create a new blank workflow").click()
    page.wait_for_timeout(500)
    vw, vh = page.viewport_size["width"], page.viewport_size["height"]
    page.mouse.dblclick(vw * 0.55, vh * 0.55)
    search = page.get_by_placeholder("Search Nodes...")
    search.wait_for(state="visible", timeout=10_000)
    search.fill("STAR")
    options = page.locator("[role=option]")
    options.first.wait_for(state="visible", timeout=10_000)
    page.wait_for_timeout(500)
    texts = [t for t in options.all_inner_texts() if t.strip()]
    ui.screenshot("search")
    star = _star_nodes(object_info)
    names = {info.get("display_name") or node_id for node_id, info in star.items()}
    shown = {n for n in names if any(t.split("\n")[0].strip() == n for t in texts)}
    assert shown, f"no STAR node in the search results: {texts[:20]}"
    assert shown == names, f"STAR nodes missing from the search: {sorted(names - shown)}"
    assert all(PACK_NAME in t for t in texts if t.split("\n")[0].strip() in names), texts[:20]
    # Enter adds the first result (a STAR node) to the graph.
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.app.graph.nodes.length > 0", timeout=10_000)
    added = page.evaluate("() => window.app.graph.nodes.map(n => n.type)")
    assert set(added) & set(star), added
    assert pack_errors(ui.errors(), object_info) == []


def _open_template(ui, name: str, screenshot: bool = False) -> dict:
    """Open workflows/<name>.json as a user does: sidebar "Templates" → EXTENSIONS › comfy-star →
    its card; wait until the canvas holds every node type of the file. Returns the file's workflow."""
    page = ui.page
    page.get_by_role("button", name="Templates").click()
    dialog = page.locator(".p-dialog").first
    dialog.wait_for(state="visible", timeout=15_000)
    dialog.get_by_text(PACK_NAME, exact=True).first.click()
    card = page.locator(f'[data-testid="template-workflow-{name}"]')
    card.wait_for(state="visible", timeout=15_000)
    if screenshot:
        ui.screenshot("templates")
    card.click()

    workflow = json.loads((harness.pack_dir() / "workflows" / f"{name}.json").read_text())
    expected_types = sorted({n["type"] for n in workflow["nodes"]})
    page.wait_for_function(
        "types => types.every(t => window.app.graph.nodes.some(n => n.type === t))",
        arg=expected_types, timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('.p-dialog').length === 0", timeout=15_000)
    if screenshot:
        ui.screenshot("template-loaded")
    return workflow


def test_every_template_opens_whole(ui, ui_server, object_info):
    """Each example workflow opens from the template browser with every node, and every STAR node
    keeps the widget values the file gives it (a frontend that misreads a schema shifts them)."""
    listed = ui_server.get("/api/workflow_templates").get(PACK_NAME, [])
    names = sorted(p.stem for p in (harness.pack_dir() / "workflows").glob("*.json"))
    assert sorted(listed) == names, listed
    for name in names:
        workflow = _open_template(ui, name)
        shown = ui.page.evaluate("""() => Object.fromEntries(window.app.graph.nodes.map(
            n => [String(n.id), {type: n.type, values: (n.widgets || []).map(w => w.value)}]))""")
        for node in workflow["nodes"]:
            assert shown.get(str(node["id"]), {}).get("type") == node["type"], (name, node["id"], shown)
            if node["type"].startswith("STAR"):
                assert shown[str(node["id"])]["values"] == node["widgets_values"], (name, node["type"])
        assert len(shown) == len(workflow["nodes"]), (name, sorted(shown))
    ui.screenshot("last-template")
    assert pack_errors(ui.errors(), object_info) == []


def test_template_loads_runs_and_shows_image(ui, ui_server, object_info):
    listed = ui_server.get("/api/workflow_templates").get(PACK_NAME, [])
    if TEMPLATE not in listed:
        pytest.skip(f"{TEMPLATE} is not among the pack's templates {listed}")
    page = ui.page
    views = []
    page.on("response", lambda r: "/api/view" in r.url and views.append((r.status, r.url)))

    workflow = _open_template(ui, TEMPLATE, screenshot=True)

    # The template runs as it comes, seeds included, so its picture must show its prompt. The same
    # graph with another seed, queued first through the API, leaves the server's cache without this
    # seed's results (ComfyUI keeps only the last prompt's), so Run makes the server sample anew.
    other = harness.reseed(harness.ui_to_api(workflow, object_info), random.randrange(1000, 2**31))
    ui_server.run(other, timeout=WORKFLOW_TIMEOUT)

    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST",
                              timeout=30_000) as queued:
        page.get_by_role("button", name="Run", exact=True).click()
    assert queued.value.ok, queued.value.text()
    prompt_id = queued.value.json()["prompt_id"]
    history = ui_server.wait(prompt_id, timeout=WORKFLOW_TIMEOUT)
    refs = harness.Client.image_refs(history)
    assert refs, f"the run made no image: {history.get('outputs')}"
    cached = {n for kind, msg in history["status"]["messages"] if kind == "execution_cached" for n in msg["nodes"]}
    samplers = {str(n["id"]) for n in workflow["nodes"] if n["type"] == "STARStackedARSample"}
    assert not samplers & cached, f"the server answered the sampler {samplers & cached} from its cache"
    checks.check_scenes(f"{TEMPLATE}.json", workflow, ui_server.output_images_by_node(history))

    deadline = time.time() + 30
    wanted = {r["filename"] for r in refs}
    while not any(status == 200 and any(f"filename={f}" in url for f in wanted) for status, url in views):
        assert time.time() < deadline, f"the UI never showed {sorted(wanted)}; /api/view calls: {views}"
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)  # let the canvas draw it
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press(".")  # fit the view to the whole graph
    page.wait_for_timeout(500)
    ui.screenshot("ran")
    assert pack_errors(ui.errors(), object_info) == []


def test_info_button_shows_the_node_help_page(ui, object_info):
    """Select a STAR node, press the selection toolbox's info button: the sidebar shows the pack's
    help page for it (fetched from /extensions/<pack>/docs/), not only the generic description."""
    node_id = "STARStackedARSample"
    doc = (harness.pack_dir() / "web" / "docs" / f"{node_id}.md").read_text(encoding="utf-8")
    assert _lead(doc) not in object_info[node_id]["description"]  # so seeing it means the page was shown
    _open_help(ui.page, node_id)
    ui.screenshot("node-help")
    assert pack_errors(ui.errors(), object_info) == []


def _lead(doc: str) -> str:
    """A help page's first sentence (the paragraph under its title, up to the first full stop)."""
    return re.split(r"[.。]", doc.split("\n\n")[1])[0]


def _open_help(page, node_id: str, lang: str = ""):
    """Put a workflow with `node_id` on the canvas, select that node, press the selection toolbox's
    info button, and wait for the first sentence of the pack's help page (in `lang`) to show."""
    page_file = harness.pack_dir() / "web" / "docs" / (f"{node_id}/{lang}.md" if lang else f"{node_id}.md")
    fetched = []
    page.on("response", lambda r: "/docs/" in r.url and fetched.append((r.status, r.url)))
    workflow = json.loads((harness.pack_dir() / "workflows" / f"{TEMPLATE}.json").read_text())
    page.evaluate("w => window.app.loadGraphData(w)", workflow)
    page.wait_for_function("t => window.app.graph.nodes.some(n => n.type === t)", arg=node_id, timeout=30_000)
    page.evaluate("""t => { const node = window.app.graph.nodes.find(n => n.type === t);
        window.app.canvas.deselectAll(); window.app.canvas.selectNode(node); window.app.canvas.setDirty(true, true); }""",
                  node_id)
    info = page.locator('[data-testid="info-button"]')
    info.wait_for(state="visible", timeout=15_000)
    info.click()
    page.get_by_text(_lead(page_file.read_text(encoding="utf-8")), exact=False).first.wait_for(state="visible",
                                                                                              timeout=15_000)
    wanted = page_file.relative_to(page_file.parents[1 if lang else 0]).as_posix()
    assert any(s == 200 and url.endswith(f"/docs/{wanted}") for s, url in fetched), (wanted, fetched)


# The 1.32 frontends drop every pack's translations when they lazily load a locale's own messages
# (vue-i18n setLocaleMessage over the packs' merged ones; ComfyUI_frontend issue #6748, reported on
# 1.32.3 and seen here on 1.32.9; fixed by PR #7214, merged December 2025). ComfyUI 0.3.75 pins
# 1.32.9, so there the Chinese UI shows the pack's English names; /i18n still serves the Chinese ones
# (tests/e2e/test_server.py). On a later frontend (COMFYUI_DIR) this test asserts them.
FIXED_I18N_FRONTEND = (1, 33)


def test_chinese_ui_names_the_star_nodes(ui, ui_server, object_info):
    """Switch the UI to Chinese (the Comfy.Locale setting, as the settings dialog does, then reload):
    a node's info button shows its Chinese help page (web/docs/<node id>/zh.md); every STAR node is
    created with its title from locales/zh/nodeDefs.json, and searching in Chinese finds one."""
    zh = json.loads((harness.pack_dir() / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    page = ui.page
    ui_server.post("/settings/Comfy.Locale", "zh")
    try:
        ui.load()
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") or "0"
        core = page.evaluate("() => window.LiteGraph.createNode('KSampler').title")
        assert core != "KSampler", "the UI did not switch to Chinese"  # the frontend's own nodes are translated
        titles = page.evaluate("ids => Object.fromEntries(ids.map(id => [id, window.LiteGraph.createNode(id).title]))",
                               sorted(_star_nodes(object_info)))
        _open_help(page, "STARStackedARSample", "zh")  # help pages are fetched per locale: no i18n involved
        ui.screenshot("zh-help")
        assert pack_errors(ui.errors(), object_info) == []
        if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < FIXED_I18N_FRONTEND:
            pytest.xfail(f"frontend {version} drops custom nodes' translations (ComfyUI_frontend #6748)")
        assert titles == {k: zh[k]["display_name"] for k in titles}
        page.get_by_role("button", name=re.compile("新建空白工作流|Create a new blank workflow")).click()
        page.wait_for_timeout(500)
        vw, vh = page.viewport_size["width"], page.viewport_size["height"]
        page.mouse.dblclick(vw * 0.55, vh * 0.55)
        search = page.locator("input[placeholder]").last
        search.wait_for(state="visible", timeout=10_000)
        search.fill("视觉问答")
        option = page.locator("[role=option]").filter(has_text=zh["STARVQA"]["display_name"]).first
        option.wait_for(state="visible", timeout=10_000)
        ui.screenshot("zh-search")
        assert pack_errors(ui.errors(), object_info) == []
    finally:
        ui_server.post("/settings/Comfy.Locale", "en")
