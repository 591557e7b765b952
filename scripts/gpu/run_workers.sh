#!/usr/bin/env bash
# On a GPU machine with 2 GPUs and no network (nvidia-h200-x2 lent by the device tool): the same
# wenet search once with one worker on one GPU and once with `--workers 2` (one worker per GPU),
# same experiment, same trial budget; wall-clock to the budget and each study's verified best.
#   usage: OUT=<dir> [RUNS="one-gpu two-gpus"] bash scripts/gpu/run_workers.sh [experiment file] [extra tuner search flags]
# RUNS picks the runs (each fits one 10-minute device call; the one-GPU run can share a call with
# scripts/gpu/run_ladder.sh on the other GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu}; mkdir -p "$OUT"
source scripts/gpu/env.sh  # installs the bundle once; sets PY and the binaries
EXP=${1:-experiments/wenet-gpu-workers.yaml}; shift || true
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"

run() {  # name, extra flags...
  local name=$1; shift
  local start; start=$(date +%s)
  $PY -m tuner search --model wenet-encoder --experiment "$EXP" --storage "sqlite:///$OUT/$name.db" --study "$name" \
    "$@" 2>&1 | tee "$OUT/$name.log"
  echo "$name: search wall-clock $(( $(date +%s) - start )) s" | tee -a "$OUT/walls.txt"
  $PY -m tuner report --study "$name" --storage "sqlite:///$OUT/$name.db" > "$OUT/$name-report.txt" 2>&1
}
for name in ${RUNS:-one-gpu two-gpus}; do
  case $name in
    one-gpu) CUDA_VISIBLE_DEVICES=0 run one-gpu "$@";;
    two-gpus) run two-gpus --workers 2 "$@";;
  esac
done
cat "$OUT/walls.txt"
