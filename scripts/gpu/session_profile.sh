#!/usr/bin/env bash
# One device call on one GPU (issue 16): where the WeNet ensemble's time goes around the b241430
# winner. The feature extractor's in-process breakdown per batch size (benchmarks/feature_extractor.py),
# then `tuner search --experiment experiments/wenet-gpu-fe.yaml` (encoder and scoring held at that
# winner, the feature extractor and the client load searched) with the host's CPU sampled every
# 5 s (scripts/gpu/cpu_sampler.py) and the GPU's use (nvidia-smi). All packed into $OUT/results.tgz.
#   usage: OUT=<dir> bash scripts/gpu/session_profile.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:?}; W=/tmp/session-profile; rm -rf "$W"; mkdir -p "$W"  # a warm machine keeps /tmp
source scripts/gpu/env.sh
describe_machine > "$W/machine.txt"
$PY -c 'from pathlib import Path; from tuner.pipeline import source; source.resolve("wenet-gpu", Path("results/cache"))' \
  > "$W/prepare.log" 2>&1
echo "prepare: $SECONDS s" >> "$W/walls.txt"
CUDA_VISIBLE_DEVICES=0 $PY benchmarks/feature_extractor.py --device cuda > "$W/feature-extractor.md" 2>&1
echo "feature extractor benchmark: done at $SECONDS s" >> "$W/walls.txt"
$PY scripts/gpu/cpu_sampler.py --every 5 > "$W/cpu.txt" 2>&1 &
sampler=$!
( while true; do nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,power.draw --format=csv,noheader; sleep 5; done ) \
  > "$W/gpu-usage.txt" 2>&1 &
monitor=$!
start=$(date +%s)
CUDA_VISIBLE_DEVICES=0 timeout 450 $PY -m tuner search --experiment experiments/wenet-gpu-fe.yaml \
  --storage "sqlite:///$W/fe.db" --study fe > "$W/fe.log" 2>&1
echo "search: exit $? in $(( $(date +%s) - start )) s" >> "$W/walls.txt"
kill $sampler $monitor 2>/dev/null
$PY -m tuner report --study fe --storage "sqlite:///$W/fe.db" > "$W/fe-report.txt" 2>&1
cp "$W/fe-report.txt" "$W/walls.txt" "$W/feature-extractor.md" "$W/cpu.txt" "$FINAL/" 2>/dev/null
tar czf "$FINAL/results.tgz" -C "$W" --exclude='*.csv' .
