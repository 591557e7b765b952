#!/usr/bin/env bash
# On a GPU machine with no network (an H100/H200 lent by the device tool): install what
# scripts/gpu/make_bundle.sh packed into .carry/gpu, check the machine, run a short wenet search
# with GPU candidates through the real tritonserver, and write the study and its tables to $OUT.
#   usage: OUT=<dir> bash scripts/gpu/run_search.sh [extra tuner search flags]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu}; mkdir -p "$OUT"
source scripts/gpu/env.sh  # installs the bundle once; sets PY and the binaries

describe_machine | tee "$OUT/machine.txt"
$PY -m tuner doctor 2>&1 | tee "$OUT/doctor.txt"
start=$(date +%s)
$PY -m tuner search --model wenet-encoder --experiment experiments/wenet-gpu-encoder.yaml \
  --storage "sqlite:///$OUT/gpu.db" --study wenet-gpu "$@" 2>&1 | tee "$OUT/search.log"
echo "search wall-clock: $(( $(date +%s) - start )) s" | tee -a "$OUT/search.log"
$PY -m tuner report --study wenet-gpu --storage "sqlite:///$OUT/gpu.db" 2>&1 | tee "$OUT/report.txt"
cp results/wenet-gpu/server.log "$OUT/server.log" 2>/dev/null || true
