#!/usr/bin/env bash
# One device call on a 2-GPU machine: the acceleration ladder (scripts/gpu/run_ladder.sh) on GPU 1
# while the one-worker search of scripts/gpu/run_workers.sh runs on GPU 0; everything packed into
# $OUT/results.tgz (the device tool brings back at most 8 files), the ladder table beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:?}; W=/tmp/session; mkdir -p "$W"
source scripts/gpu/env.sh
git rev-parse --short HEAD > "$W/commit.txt" 2>/dev/null; git status --short >> "$W/commit.txt" 2>/dev/null
# The zoo export once, before two processes would both start it.
$PY -c 'from pathlib import Path; from tuner import model_source; model_source.resolve("wenet-encoder", Path("results/cache"))' \
  > "$W/export.log" 2>&1
(CUDA_VISIBLE_DEVICES=1 OUT=$W/ladder timeout 330 bash scripts/gpu/run_ladder.sh > "$W/ladder-run.log" 2>&1) &
ladder=$!
OUT=$W/workers RUNS=one-gpu timeout 500 bash scripts/gpu/run_workers.sh > "$W/workers-run.log" 2>&1
wait $ladder
cp "$W/ladder/ladder.md" "$FINAL/" 2>/dev/null
cp "$W/workers/walls.txt" "$FINAL/" 2>/dev/null
tar czf "$FINAL/results.tgz" -C "$W" --exclude='*.csv' .
