"""End-to-end fixtures: the session's real ComfyUI server (tests/conftest.py starts it), its
/object_info, and the pack's example workflows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import comfy_harness as harness

# The pack under test: this repo, or $COMFY_STAR_TEST_PACK (to test the harness on a dummy pack).
WORKFLOWS_DIR = harness.pack_dir() / "workflows"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def client(comfy_server):
    """The server's client (REST + websocket events); the same object as comfy_server."""
    return comfy_server


@pytest.fixture(scope="session")
def load_workflow():
    """load_workflow("text_to_image.json") -> the UI-format workflow dict."""
    def load(name: str) -> dict:
        return json.loads((WORKFLOWS_DIR / name).read_text())
    return load
