"""The pack in a real ComfyUI server (`main.py --cpu`): it loads, lists its nodes, serves their
help pages and translations, serves its example workflows as templates, runs every one of them,
reports progress, and stops on interrupt.

One server for the session (tests/conftest.py); what the outputs must look like is checks.py's job.
"""
from __future__ import annotations

import json
import random
import time
import urllib.parse

import pytest

import checks
import comfy_harness as harness

PACK = harness.pack_dir()  # this repo, or $COMFY_STAR_TEST_PACK
WORKFLOWS = sorted(p.name for p in (PACK / "workflows").glob("*.json"))
PACK_NAME = harness.PACK_NAME


def _star_nodes(object_info: dict) -> dict:
    return {k: v for k, v in object_info.items() if str(v.get("category", "")).startswith("STAR")}


def _api(load_workflow, object_info, name: str) -> dict:
    return harness.ui_to_api(load_workflow(name), object_info)


# ----------------------------------------------------------------------------- loading

def test_pack_loads_without_import_errors(comfy_server):
    log = comfy_server.startup_log  # the log until the server answered: loading, not running
    problems = harness.pack_import_problems(log)
    assert not problems, "the pack failed to load:\n" + "\n\n".join(problems)
    loaded = [l for l in log.splitlines() if l.strip().endswith(f"custom_nodes/{PACK_NAME}")]
    assert loaded, f"ComfyUI's import times list no custom_nodes/{PACK_NAME}:\n{harness._tail(log)}"
    assert not any("(IMPORT FAILED)" in l for l in loaded), loaded


def test_one_comfy_star_module(comfy_server):
    """Exactly one `comfy_star` in the server: the pack never falls back to another copy."""
    assert "using the comfy_star already imported" not in comfy_server.log()


def test_star_nodes(object_info):
    star = _star_nodes(object_info)
    assert star, "no node in a STAR category in /object_info"
    if checks.EXPECTED_NODES:
        assert set(star) == set(checks.EXPECTED_NODES)
    for node_id, info in star.items():
        assert info.get("display_name"), f"{node_id} has no display name"
        assert info.get("python_module") == f"custom_nodes.{PACK_NAME}", info.get("python_module")


def test_node_help_pages_served(client, object_info):
    """The frontend's node help (Node Library, the selection toolbox's info button) fetches a custom
    node's page from /extensions/<pack>/docs/<node id>.md, <pack> read from the node's python_module
    ("custom_nodes.<folder>", anything after an "@" dropped), first as <node id>/<locale>.md. Each STAR
    node's page, and each translation of it, is served there."""
    for node_id, info in _star_nodes(object_info).items():
        parts = info["python_module"].split(".")
        assert parts[0] == "custom_nodes" and len(parts) >= 2, info["python_module"]
        pack = parts[1].split("@")[0]
        docs = PACK / "web" / "docs"
        for page in [docs / f"{node_id}.md", *sorted((docs / node_id).glob("*.md"))]:  # and /<id>/<lang>.md
            served = client.get(f"/extensions/{urllib.parse.quote(pack)}/docs/{page.relative_to(docs).as_posix()}")
            assert served.decode("utf-8") == page.read_text(encoding="utf-8"), page


def test_translations_served(client):
    """ComfyUI's /i18n merges every pack's locales/<lang>/*.json; the frontend reads node names and
    tooltips in the user's language from it. Each of the pack's languages arrives whole."""
    served = client.get("/i18n")
    for lang_dir in sorted(p for p in (PACK / "locales").iterdir() if p.is_dir()):
        ours = json.loads((lang_dir / "nodeDefs.json").read_text(encoding="utf-8"))
        got = served.get(lang_dir.name, {}).get("nodeDefs", {})
        assert {k: got.get(k) for k in ours} == ours, lang_dir.name


# ----------------------------------------------------------------------------- templates

def test_there_are_workflows():
    assert WORKFLOWS, f"no example workflow in {PACK / 'workflows'}"


def test_workflows_served_as_templates(client):
    """The frontend's template browser lists custom-node templates from /api/workflow_templates
    ({pack folder name: [workflow names]}) and loads them from
    /api/workflow_templates/<pack folder name>/<name>.json."""
    listed = client.get("/api/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == sorted(n[:-5] for n in WORKFLOWS), listed
    for name in WORKFLOWS:
        served = client.get(f"/api/workflow_templates/{PACK_NAME}/{name}")
        if isinstance(served, bytes):
            served = json.loads(served)
        assert served == json.loads((PACK / "workflows" / name).read_text()), name


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_fits_the_nodes(name, load_workflow, object_info):
    """Every widget value of every node matches the server's inputs (count, combo choices)."""
    assert harness.widget_mismatches(load_workflow(name), object_info) == []


# ----------------------------------------------------------------------------- running

@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_runs(name, client, load_workflow, object_info):
    api = _api(load_workflow, object_info, name)
    t0 = time.time()
    history = client.run(api, timeout=checks.WORKFLOW_TIMEOUT)
    print(f"{name}: {time.time() - t0:.1f}s")
    assert history["status"]["status_str"] == "success", history["status"]
    images = client.output_images(history)
    # Saved and previewed images are found in the server's own folders, not downloaded
    # (a wrong temp folder once left a download folder in /tmp per preview, thousands per day).
    assert all(p.is_relative_to(client.base_dir) for p in images), images
    checks.check_outputs(name, history, images)
    checks.check_scenes(name, load_workflow(name), client.output_images_by_node(history))
    if name in checks.VQA_IMAGE_SIDE:
        checks.check_answer(name, load_workflow(name), history, images)


def _workflow_or_skip(name: str) -> str:
    if name not in WORKFLOWS:
        pytest.skip(f"{name} is not in workflows/ (checks.py names it)")
    return name


def test_progress_events(client, load_workflow, object_info):
    name = _workflow_or_skip(checks.PROGRESS_WORKFLOW)
    api = harness.reseed(_api(load_workflow, object_info, name), random.randrange(1, 2**31))
    prompt_id = client.queue(api)
    client.wait(prompt_id, timeout=checks.WORKFLOW_TIMEOUT)
    events = client.events(prompt_id)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress, f"no progress event on the websocket; events: {[e['type'] for e in events]}"
    star_ids = {k for k, v in api.items() if v["class_type"] in _star_nodes(object_info)}
    assert any(p.get("node") in star_ids for p in progress), "no progress from a STAR node"
    for p in progress:
        assert 0 <= p["value"] <= p["max"], p
    executing = [e["data"].get("node") for e in events if e["type"] == "executing"]
    assert executing and executing[-1] is None, executing  # the end-of-prompt marker


def test_interrupt_then_next_prompt_completes(client, load_workflow, object_info):
    name = _workflow_or_skip(checks.INTERRUPT_WORKFLOW)
    api = harness.set_inputs(harness.reseed(_api(load_workflow, object_info, name),
                                            random.randrange(1, 2**31)), checks.INTERRUPT_OVERRIDES)
    prompt_id = client.queue(api)
    deadline = time.time() + checks.WORKFLOW_TIMEOUT
    while not any(e["type"] == "progress" for e in client.events(prompt_id)):
        assert time.time() < deadline, "no progress event to interrupt at"
        if any(e["type"] in harness.TERMINAL_EVENTS for e in client.events(prompt_id)):
            client.wait(prompt_id, timeout=60)  # raises WorkflowError if the run failed
            pytest.fail(f"{name} finished before its first progress event could be interrupted: "
                        "make it longer with checks.INTERRUPT_OVERRIDES")
        time.sleep(0.05)
    t_interrupt = time.time()
    client.interrupt()
    history = client.wait(prompt_id, timeout=120, raise_on_error=False)
    if history["status"]["status_str"] == "success":
        pytest.fail(f"{name} finished before the interrupt reached it: make it longer with "
                    "checks.INTERRUPT_OVERRIDES")
    assert harness.interrupted(history), history["status"]
    stopped = [e for e in client.events(prompt_id) if e["type"] == "execution_interrupted"]
    if stopped:
        latency = stopped[0]["t"] - t_interrupt
        print(f"interrupt took {latency:.2f}s")
        assert latency < 30, f"the interrupt took {latency:.1f}s to stop the run"

    # The pack is still usable: the same workflow (another seed, normal settings) completes.
    api = harness.reseed(_api(load_workflow, object_info, name), random.randrange(1, 2**31))
    history = client.run(api, timeout=checks.WORKFLOW_TIMEOUT)
    checks.check_outputs(name, history, client.output_images(history))
    queue = client.queue_state()
    assert not queue["queue_running"] and not queue["queue_pending"], queue


def test_workflow_seeds_probe(client, load_workflow, object_info):
    """scripts/workflow_seeds.py's verdict: the bundled seeds pass; a seed set on the one sampler of
    text_to_image.json reaches it (seed 0 draws the square left of the circle, README's seed table)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("workflow_seeds", PACK / "scripts" / "workflow_seeds.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    wf = load_workflow("text_to_image.json")
    assert probe.verdict(client, "text_to_image.json", wf, object_info, None, set()) == []
    sampler = next(str(n["id"]) for n in wf["nodes"] if n["type"] == "STARStackedARSample")
    assert probe.verdict(client, "text_to_image.json", wf, object_info, 0, {sampler}) != []
    with pytest.raises(SystemExit, match="no node"):
        probe.verdict(client, "text_to_image.json", wf, object_info, 0, {"999"})
