#!/usr/bin/env bash
# On one GPU machine (H200, no network), in about 5 minutes: the pytorch backend's acceleration
# ladder in-process (benchmarks/gpu_ladder.py -> $OUT/ladder.md), then a short search through the
# real tritonserver whose space holds the ladder's knobs (experiments/wenet-gpu-ladder.yaml).
#   usage: OUT=<dir> bash scripts/gpu/run_ladder.sh [extra benchmarks/gpu_ladder.py flags]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu}; mkdir -p "$OUT"
source scripts/gpu/env.sh  # installs the bundle once; sets PY and the binaries

describe_machine | tee "$OUT/machine.txt"
start=$(date +%s)
# --budget-s: no new ladder step starts after it; the latency table follows (~30 s).
timeout 300 $PY benchmarks/gpu_ladder.py --model wenet --device cuda --seconds 5 --streams 4 --batch 16 \
  --budget-s 170 --out "$OUT/ladder.md" "$@" 2>&1 | tee "$OUT/ladder.log"
echo "ladder wall-clock: $(( $(date +%s) - start )) s" | tee -a "$OUT/ladder.log"
left=$(( 290 - ($(date +%s) - start) ))
if [ "$left" -gt 45 ]; then
  timeout "$left" $PY -m tuner search --model wenet-encoder --experiment experiments/wenet-gpu-ladder.yaml \
    --storage "sqlite:///$OUT/ladder.db" --study wenet-gpu-ladder --timeout $(( left - 30 )) 2>&1 | tee "$OUT/search.log"
  $PY -m tuner report --study wenet-gpu-ladder --storage "sqlite:///$OUT/ladder.db" 2>&1 | tee "$OUT/report.txt"
  cp results/wenet-gpu-ladder/server.log "$OUT/server.log" 2>/dev/null || true
else
  echo "no time left for the search smoke ($left s)" | tee "$OUT/search.log"
fi
