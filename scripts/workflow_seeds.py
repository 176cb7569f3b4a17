"""For which seeds do the example workflows show what they ask for? Runs each workflow in a real
ComfyUI with every seed widget set to k, for k in 0..N-1, and judges its pictures (and VQA answers)
with the end-to-end tests' judge (tests/e2e/checks.py: the classical detector against each
workflow's prompt or edit). Prints each run's verdict and, per workflow, how many seeds pass.

    .venv/bin/python scripts/workflow_seeds.py --seeds 40                # every workflow
    .venv/bin/python scripts/workflow_seeds.py edit.json chain.json --seeds 20 --vary 7   # node 7's seed only
    .venv/bin/python scripts/workflow_seeds.py --bundled             # each once, with its own seeds

The bundled workflows carry a seed this finds passing (so the example shows the prompt, and the
e2e test holds it to that); the share of seeds that pass is what a user trying other seeds sees.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
import checks  # noqa: E402
import comfy_harness as harness  # noqa: E402


def verdict(client, name: str, workflow: dict, object_info: dict, seed: int | None, vary: set[str]) -> list[str]:
    """[] if workflow `name` run with seed `seed` (in the nodes `vary` names, else every seed widget;
    None: its own seeds) shows (and answers) what it asks for."""
    api = harness.ui_to_api(workflow, object_info)
    if vary - set(api):
        raise SystemExit(f"{name} has no node {sorted(vary - set(api))}; its nodes: {sorted(api, key=int)}")
    if seed is not None:
        harness.reseed({k: v for k, v in api.items() if k in vary} if vary else api, seed)
    history = client.run(api, timeout=checks.WORKFLOW_TIMEOUT)
    wrong = checks.scene_failures(name, workflow, client.output_images_by_node(history))
    if name in checks.VQA_IMAGE_SIDE:
        try:
            checks.check_answer(name, workflow, history, client.output_images(history))
        except AssertionError as e:
            wrong.append(str(e))
    return wrong


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflows", nargs="*", help="file names in workflows/ (default: every one SCENES names)")
    ap.add_argument("--seeds", type=int, default=20, help="try seeds 0..N-1")
    ap.add_argument("--bundled", action="store_true", help="run each workflow once, with the seeds it carries")
    ap.add_argument("--vary", nargs="+", default=[], metavar="NODE_ID",
                    help="set only these nodes' seeds (ids as in the workflow file); the rest keep theirs")
    args = ap.parse_args(argv)
    names = args.workflows or sorted(checks.SCENES)
    server = harness.start_server(pack=harness.pack_dir(), extra_args=["--disable-api-nodes"])
    try:
        object_info = server.object_info()
        summary = []
        for name in names:
            workflow = json.loads((harness.pack_dir() / "workflows" / name).read_text())
            passed, t0 = [], time.time()
            for seed in [None] if args.bundled else range(args.seeds):
                wrong = verdict(server, name, workflow, object_info, seed, set(args.vary))
                said = "shows it" if not wrong else "; ".join(wrong)
                print(f"{name} seed {'(its own)' if seed is None else seed}: {said}", flush=True)
                if not wrong:
                    passed.append(seed)
            if args.bundled:
                summary.append(f"{name}: {'shows it' if passed else 'does NOT show it'} with its own seeds")
                continue
            summary.append(f"{name}: {len(passed)} of {args.seeds} seeds show it "
                           f"({time.time() - t0:.0f} s); passing: {passed}")
        print("\n".join(summary))
    finally:
        server.stop(keep_files=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
