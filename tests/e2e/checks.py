"""What the end-to-end tests expect of the pack: the lead fills these in as the nodes settle.

Kept apart from the tests so that judging outputs (image content, answers) is one file's job.
"""
from __future__ import annotations

from pathlib import Path

# The exact set of node ids in the STAR category (checked by test_server.test_star_nodes).
# Empty: only "at least one" is checked.
EXPECTED_NODES: set[str] = set()

# The workflow (a file name in workflows/) whose run must report progress on the websocket.
PROGRESS_WORKFLOW = "text_to_image.json"

# The workflow that test_interrupt starts and interrupts at its first progress event, and input
# overrides {class_type: {input: value}} that make it run long enough to be interrupted.
INTERRUPT_WORKFLOW = "text_to_image.json"
INTERRUPT_OVERRIDES: dict[str, dict] = {}

# Seconds one workflow may take on a 2-core CPU (the default model).
WORKFLOW_TIMEOUT = 900


def check_outputs(name: str, history: dict, images: list[Path]) -> None:
    """Judge what workflow `name` (a file name in workflows/) produced.

    history: its /history entry ('outputs' per node id: 'images', 'text', ...).
    images:  local paths of every image it saved or previewed, in node-id order.
    Default: at least one image or one text. Raise AssertionError to fail the test.
    """
    texts = [t for out in (history.get("outputs") or {}).values() for t in (out.get("text") or [])]
    assert images or texts, f"{name}: no output image and no output text: {history.get('outputs')}"
    for path in images:
        assert Path(path).is_file() and Path(path).stat().st_size > 0, f"{name}: empty output {path}"
