#!/usr/bin/env bash
# Replays the runs that made the shipped comfy_star/assets/star-shapes.safetensors, each stage with the
# step count it was recorded with (the table in docs/star-shapes-training.md), with the same schedules,
# data seeds and warm starts: the same recipe step for step, though not the same bits (float sums round
# differently with the thread count and the CPU, and hundreds of steps amplify that).
#
#   bash scripts/reproduce_star_shapes.sh             # ≈ 18 h 48 min on a 2-core CPU (the recorded runs: 18 h 41 min of training)
#   OUT=runs/mine bash scripts/reproduce_star_shapes.sh
#   QUICK=1 bash scripts/reproduce_star_shapes.sh     # 2 steps a stage: checks the chain runs (≈ 7 min)
#
# It starts where the patch-tokenizer model began: the conv-tokenizer model committed before 3af5f21
# (read from git history): its base (stage 0) as it is, its VQ decoder, stack layers and diffusion
# decoder as warm starts. That model's own
# lineage (stage 0 on an H100, then CPU runs) is in docs/star-shapes-training.md; `python -m comfy_star
# train all --vq-encoder patch --codebook-size 4096` trains the same architecture from nothing.
# Resumable: a finished stage's file is kept and loaded, an interrupted stage resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && source .venv/bin/activate
if [ "${QUICK:-0}" = 1 ]; then OUT=${OUT:-runs/reproduce-quick}; else OUT=${OUT:-runs/reproduce}; fi
mkdir -p "$OUT"
steps() { if [ "${QUICK:-0}" = 1 ]; then echo 2; else echo "$1"; fi; }
train() { python -m comfy_star train all --device cpu --batch 32 "$@"; }

# 1. runs/p8k: the patch-local tokenizer (new encoder and 4,096 codes under the old VQ decoder), then a
#    new adapter and head under the old stack's layers, then stages 3 and 4
start="$OUT/conv-tokens.safetensors"
if [ ! -f "$start" ]; then
    git show 3af5f21~1:comfy_star/assets/star-shapes.safetensors > "$start.tmp" && mv "$start.tmp" "$start"
fi
python scripts/warm_start_files.py "$OUT/p8k" --from "$start" stage0 stage1:decoder stage2:stack stage3
P=(--out "$OUT/p8k" --vq-encoder patch --codebook-size 4096)
train "${P[@]}" --stages stage1 --steps "$(steps 1210)"
# stages 1b (the VQ decoder on stage 1's fixed tokens) and 3 (the diffusion decoder) do not need the
# stack, so they run beside stage 2, one thread each, as they did
OMP_NUM_THREADS=1 train "${P[@]}" --stages stage2 --warmup 30 --steps "$(steps 658)" & stage2=$!
OMP_NUM_THREADS=1 train "${P[@]}" --stages stage1b --steps "$(steps 506)"
OMP_NUM_THREADS=1 train "${P[@]}" --stages stage3 --batch 16 --warmup 30 --steps "$(steps 698)"
wait "$stage2"  # its exit status: a failed stage 2 stops the script here
train "${P[@]}" --stages stage4,final --warmup 30 --steps "$(steps 714)"

# 2. seven rounds: stage 2 again from the model so far's whole stack at twice the learning rate, then a
#    short stage 4; the last five on fresh data seeds with the onsets weighed up (--onset-weight)
round() {  # round PREVIOUS NAME SEED ONSET_WEIGHT STAGE2_STEPS STAGE4_STEPS
    local prev="$OUT/$1/star-shapes.safetensors" out="$OUT/$2"
    python scripts/warm_start_files.py "$out" --from "$prev" stage2
    local R=(--out "$out" --start-from "$prev" --warmup 30 --lr-scale 2 --seed "$3" --onset-weight "$4")
    train "${R[@]}" --stages stage2 --steps "$(steps "$5")"
    train "${R[@]}" --stages stage4,final --steps "$(steps "$6")"
}
round p8k  p8kC 0 1 1318 218
round p8kC p8kD 0 1 937  251
round p8kD p8kE 1 5 1114 283
round p8kE p8kG 3 2 878  249
round p8kG p8kH 4 2 464  130
round p8kH p8kI 5 2 725  127
round p8kI p8kJ 6 2 700  125

# 3. editing in the "source_last" row layout (the source a fixed distance before the output): stage 4
#    only, on edits alone, then three edits to one text-to-image row, then one to one twice
edit() {  # edit PREVIOUS NAME SEED BATCH EDIT_FRACTION STEPS
    train --out "$OUT/$2" --start-from "$OUT/$1/star-shapes.safetensors" --stages stage4,final --warmup 20 \
        --lr-scale 2 --onset-weight 2 --edit-layout source_last --seed "$3" --batch "$4" \
        --edit-fraction "$5" --steps "$(steps "$6")"
}
edit p8kJ  edit600 8  16 1.0  600
edit edit600 p8kL  9  16 0.75 2000
edit p8kL  p8kM    10 32 0.5  300
edit p8kM  p8kN    11 32 0.5  450
edit p8kN  p8kO    12 32 0.5  1000
edit p8kO  p8kP    13 32 0.5  1800

# 4. the diffusion decoder alone (stage 3), seven times, on the finished model (its stack stands in for stage 4)
decoder() {  # decoder PREVIOUS NAME SEED STEPS [train options, e.g. --batch 64]
    python scripts/warm_start_files.py "$OUT/$2" --from "$OUT/$1/star-shapes.safetensors" stage3
    train --out "$OUT/$2" --start-from "$OUT/$1/star-shapes.safetensors" --stages stage3,final --warmup 30 \
        --seed "$3" --steps "$(steps "$4")" "${@:5}"
}
OMP_NUM_THREADS=1 decoder p8kP p8kQ 14 620  # one thread: it ran beside an A/B arm (docs/star-shapes-training.md)
decoder p8kQ p8kS 15 1508
OMP_NUM_THREADS=1 decoder p8kS p8kT 16 616  # one thread, beside the nearest-map arm (runs/p8kU)
decoder p8kT p8kV 17 700
decoder p8kV p8kW 18 1200
decoder p8kW p8kX 19 1400
decoder p8kX p8kY 20 600 --batch 64  # twice the batch: 600 x 64 samples

# 5. two more stage 4 runs (half edits) on the finished model: its stack, with the decoder of p8kY
edit p8kY  p9A     31 32 0.5  2000
edit p9A   p9B     32 32 0.5  2000

# 6. the VQ decoder alone (stage 1b) once more, on the finished model's tokens (encoder and codebook frozen)
train --out "$OUT/q1b" --start-from "$OUT/p9B/star-shapes.safetensors" --stages stage1b,final --warmup 100 \
    --lr-scale 0.5 --seed 11 --steps "$(steps 1976)"

echo "reproduced: $OUT/q1b/star-shapes.safetensors (shipped: comfy_star/assets/star-shapes.safetensors)"
echo "compare:    python -m comfy_star eval --model $OUT/q1b/star-shapes.safetensors --n 20"
