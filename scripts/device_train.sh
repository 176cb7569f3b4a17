#!/usr/bin/env bash
# Train the embedded default on a lent GPU box (see README § Training; docs/star-shapes-training.md has what was run).
# Runs stages in parallel where they are independent; each stage gets a time budget.
#   bash scripts/device_train.sh PHASE OUT_DIR SECONDS [TRAIN ARGS...]
#   (e.g. `... b runs/patch 600 --vq-encoder patch`: the extra arguments go to every `train all`)
#   PHASE a: stage0 (base VLM) ∥ stage1 (VQ)
#   PHASE b: stage2→stage4 (AR) ∥ stage1b (VQ decoder) → stage3 (diffusion decoder), then final
set -euo pipefail
phase=$1; out=$2; secs=$3; shift 3
extra=("$@")
if [ -d .whl ]; then  # the box's transformers is older than ours; bring ours as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
train() { python3 -m comfy_star train all --out "$out" --workers 6 "${extra[@]}" "$@"; }
case $phase in
  a) train --stages stage0 --batch 128 --seconds "$secs" > "$out.stage0.log" 2>&1 &
     train --stages stage1 --batch 64 --seconds "$secs" > "$out.stage1.log" 2>&1 &
     wait ;;
  b) train --stages stage2,stage4 --batch 128 --seconds $((secs * 45 / 100)) > "$out.stage24.log" 2>&1 &
     { train --stages stage1b --batch 64 --seconds $((secs * 30 / 100)) &&
       train --stages stage3 --batch 64 --seconds $((secs * 70 / 100)); } > "$out.stage13.log" 2>&1 &
     wait
     train --stages final ;;
esac
