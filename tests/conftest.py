"""Shared by the end-to-end (tests/e2e) and browser (tests/browser) tests: the harness module and
ONE real ComfyUI server for the whole session (started lazily, only when a test asks for it)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every in-process model here is tiny: one intra-op thread is fastest, and immune to a busy
    CPU (with two, OpenMP threads spin-waiting on each other cost up to 30x when other jobs share
    the cores; seen: a 2×64×96 linear at 15 ms instead of 4 µs). Servers run in their own process."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# scripts/comfy_harness.py, importable in tests as `comfy_harness` (loaded by path: scripts/ is
# not put on sys.path, and ComfyUI's own `comfy` package is never shadowed).
if "comfy_harness" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("comfy_harness", REPO / "scripts" / "comfy_harness.py")
    harness = importlib.util.module_from_spec(_spec)
    sys.modules["comfy_harness"] = harness
    _spec.loader.exec_module(harness)
harness = sys.modules["comfy_harness"]


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI (`main.py --cpu`, 127.0.0.1, a free port), every folder it writes to in a
    temp dir, this pack linked into its custom_nodes as a user installs it. $COMFY_STAR_TEST_PACK
    names another pack folder to test the harness itself. Its log is copied to
    test-artifacts/comfyui.log at the end."""
    if harness.find_comfyui() is None:
        reason = "ComfyUI not installed: run scripts/setup.sh (or set COMFYUI_DIR)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    server = harness.start_server(base_dir=tmp_path_factory.mktemp("comfyui"), pack=harness.pack_dir(),
                                  extra_args=["--disable-api-nodes"], timeout=300)
    try:
        yield server
    finally:
        server.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(server.log_path, ARTIFACTS / "comfyui.log")


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    """The server's /object_info (node definitions, as the frontend receives them)."""
    return comfy_server.object_info()
