#!/usr/bin/env bash
# On a lent GPU machine: benchmarks/measurement_noise.py on a CPU slice (default 0-3): the host
# probe, then where the spread of one configuration's throughput comes from (--loads).
#   usage: OUT=<dir> CPUS=0-3 bash scripts/gpu/run_noise.sh --model results/bench/mlp.onnx --loads 12
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu-noise}; mkdir -p "$OUT"
CPUS=${CPUS:-0-3}
source scripts/gpu/env.sh
taskset -c "$CPUS" $PY benchmarks/measurement_noise.py --host --seconds 30 2>&1 | tee "$OUT/host-noise.txt"
taskset -c "$CPUS" $PY benchmarks/measurement_noise.py "$@" 2>&1 | tee "$OUT/loads-noise.txt"
