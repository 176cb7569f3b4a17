"""Run an example workflow (UI format, as saved by the ComfyUI frontend) on a real ComfyUI.

    python scripts/run_workflow.py workflows/text_to_image.json --out out/text_to_image.png
    python scripts/run_workflow.py workflows/vqa.json --url http://127.0.0.1:8188   # a running ComfyUI

Without --url it starts ComfyUI (`main.py --cpu` on 127.0.0.1, a free port, every folder in a
temp dir, this pack linked into its custom_nodes), runs the workflow, copies the first output
image to --out, prints any output text and the timings, and stops the server.
Exit status: 0 on success, 1 if the workflow failed (the error and the log's tail are printed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_harness as harness  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", type=Path, help="a workflow JSON (UI or API format)")
    ap.add_argument("--out", type=Path, help="where to copy the first output image "
                    "(default: out/<workflow name>.png)")
    ap.add_argument("--url", help="use this running ComfyUI instead of starting one "
                    "(it must have the pack installed)")
    ap.add_argument("--seed", type=int, help="set every seed widget to this value")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds the run may take")
    ap.add_argument("--keep", action="store_true", help="keep the server's temp folder")
    args = ap.parse_args(argv)

    out = args.out or Path("out") / f"{args.workflow.stem}.png"
    workflow = json.loads(args.workflow.read_text())
    t0 = time.time()
    if args.url:
        client = harness.Client(args.url)
        server = None
    else:
        print("starting ComfyUI (--cpu) ...", flush=True)
        client = server = harness.start_server(pack=harness.pack_dir(), extra_args=["--disable-api-nodes"])
        print(f"ComfyUI {server.url} ready in {server.startup_s:.1f}s (log: {server.log_path})", flush=True)
    try:
        problems = harness.pack_import_problems(server.log()) if server else []
        if problems:
            print("the pack did not load:\n" + "\n".join(problems), file=sys.stderr)
            return 1
        api = harness.ui_to_api(workflow, client.object_info())
        if args.seed is not None:
            harness.reseed(api, args.seed)
        t_queue = time.time()
        prompt_id = client.queue(api)
        titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in api.items()}
        last = {"node": None, "pct": -1}

        def show(event):
            data = event.get("data") or {}
            if event["type"] == "executing" and data.get("node") is not None:
                last["node"], last["pct"] = data["node"], -1
                print(f"  running {titles.get(data['node'], data['node'])}", flush=True)
            elif event["type"] == "progress" and data.get("max"):
                pct = int(100 * data["value"] / data["max"])
                if pct // 10 != last["pct"] // 10 or data["value"] == data["max"]:
                    last["pct"] = pct
                    print(f"    {data['value']}/{data['max']}", flush=True)

        history = client.wait(prompt_id, timeout=args.timeout, on_event=show)
        t_done = time.time()
        if harness.interrupted(history):
            args.keep = True
            print(f"the run was interrupted (log: {server.log_path if server else args.url})", file=sys.stderr)
            return 1
        images = client.output_images(history)
        for text in client.output_texts(history):
            print(f"text: {text}")
        if images:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(images[0], out)
            print(f"image: {out}" + (f" (+{len(images) - 1} more: {', '.join(map(str, images[1:]))})"
                                      if len(images) > 1 else ""))
        else:
            print("the workflow made no image")
        startup = f"server start {server.startup_s:.1f}s, " if server else ""
        print(f"time: {startup}workflow {t_done - t_queue:.1f}s, total {time.time() - t0:.1f}s")
        return 0
    except (harness.WorkflowError, harness.ConversionError, TimeoutError) as e:
        args.keep = True  # keep the log to read
        print(f"the workflow failed: {e}", file=sys.stderr)
        if server:
            print(f"--- ComfyUI log ({server.log_path}), last lines:\n{harness._tail(server.log(), 40)}",
                  file=sys.stderr)
        return 1
    finally:
        if server:
            server.stop(keep_files=args.keep)


if __name__ == "__main__":
    sys.exit(main())
