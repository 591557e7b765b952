#!/usr/bin/env bash
# On a lent GPU machine (no network): the search-efficiency benchmark (benchmarks/search_efficiency.py)
# on CPU cores that nothing else uses, to tell the method's efficiency from the CI machine's drift.
# tritonserver, its python stubs and perf_analyzer are confined to CPUS (default 0-3: a 4-core
# slice, the server and the load generator sharing it as on a small machine); the benchmark
# resumes, so a call cut short by the time limit goes on where it stopped on the next call.
#   usage: OUT=<dir> CPUS=0-3 bash scripts/gpu/run_efficiency.sh --model results/bench/mlp.onnx [benchmark flags]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu-efficiency}; mkdir -p "$OUT"
CPUS=${CPUS:-0-3}
source scripts/gpu/env.sh
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Hypervisor" ; uptime; } 2>&1 | tee "$OUT/machine.txt"
taskset -c "$CPUS" $PY benchmarks/measurement_noise.py --host --seconds 30 2>&1 | tee "$OUT/host-noise.txt"
taskset -c "$CPUS" $PY benchmarks/search_efficiency.py "$@" 2>&1 | tee -a "$OUT/benchmark.log"
cp -r results/bench/search-efficiency/. "$OUT/" 2>/dev/null || true
find "$OUT" -name repository -type d -prune -exec rm -rf {} + 2>/dev/null || true
find "$OUT" -name "*.csv" -delete 2>/dev/null || true
