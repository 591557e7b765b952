#!/usr/bin/env bash
# One device call on a GPU machine (issues 15 and 16): `tuner search --model wenet-gpu`, the WeNet
# audio-to-text ensemble (experiments/wenet-gpu.yaml) with GPU 0 visible; with TWO_GPU=1 instead,
# the same search with GPUs 0 and 1 visible (every KIND_GPU step gets its instances on each GPU);
# with LADDER=1 (one GPU), the encoder alone searched over the pytorch ladder on GPU 1 at the same
# time (experiments/wenet-gpu-ladder-search.yaml; it shares the host's cores with the ensemble).
# Everything is packed into $OUT/results.tgz (the device tool brings back at most 8 files).
# EXPERIMENT names another experiment; PREWARM="tf32 fp16" first fills Inductor's on-disk cache for
# the compiled encoder at those precisions (scripts/gpu/prewarm_inductor.py, beside the prepare
# step), so that each instance's compile at load is a cache hit.
#   usage: OUT=<dir> bash scripts/gpu/session_pipeline.sh          # one GPU
#          OUT=<dir> TWO_GPU=1 bash scripts/gpu/session_pipeline.sh
#          OUT=<dir> EXPERIMENT=experiments/wenet-gpu-compiled.yaml PREWARM="tf32 fp16" SEARCH_S=440 \
#            bash scripts/gpu/session_pipeline.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:?}; W=/tmp/session-pipeline; mkdir -p "$W"
source scripts/gpu/env.sh
describe_machine > "$W/machine.txt"
EXPERIMENT=${EXPERIMENT:-experiments/wenet-gpu.yaml}
export TORCHINDUCTOR_CACHE_DIR=/tmp/tuner-inductor-cache  # the prewarm's and the server's stubs' alike
prewarms=()
for precision in ${PREWARM:-}; do
  CUDA_VISIBLE_DEVICES=0 $PY scripts/gpu/prewarm_inductor.py --precision "$precision" --max-batch 32 \
    > "$W/prewarm-$precision.log" 2>&1 &
  prewarms+=($!)
done
# The zoo's export and the pipeline's repository once, before two processes would both start them.
$PY -c 'from pathlib import Path; from tuner.pipeline import source; source.resolve("wenet-gpu", Path("results/cache"))' \
  > "$W/prepare.log" 2>&1
echo "prepare: $SECONDS s" >> "$W/walls.txt"
# The search starts without waiting for the prewarm: its first trial is Triton's default pipeline
# (nothing compiled), which runs while the prewarm finishes.
search() {  # name, experiment, devices, timeout
  local name=$1 exp=$2 devices=$3 limit=$4 start
  start=$(date +%s)
  CUDA_VISIBLE_DEVICES=$devices timeout "$limit" $PY -m tuner search --experiment "$exp" \
    --storage "sqlite:///$W/$name.db" --study "$name" > "$W/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - start )) s" >> "$W/walls.txt"
  $PY -m tuner report --study "$name" --storage "sqlite:///$W/$name.db" > "$W/$name-report.txt" 2>&1
}
( while true; do nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,power.draw --format=csv,noheader; sleep 5; done ) \
  > "$W/gpu-usage.txt" 2>&1 &
monitor=$!
if [ "${TWO_GPU:-0}" = 1 ]; then
  search pipeline-2gpu "$EXPERIMENT" 0,1 540
elif [ "${LADDER:-0}" = 1 ]; then
  search ladder-1gpu experiments/wenet-gpu-ladder-search.yaml 1 470 &
  ladder=$!
  search pipeline-1gpu "$EXPERIMENT" 0 475
  wait $ladder
else
  search pipeline-1gpu "$EXPERIMENT" 0 "${SEARCH_S:-475}"
fi
for pid in "${prewarms[@]}"; do wait "$pid"; done
kill $monitor 2>/dev/null
for d in results/*/; do [ -f "$d/server.log" ] && cp "$d/server.log" "$W/$(basename "$d")-server.log"; done
cp "$W"/*-report.txt "$W/walls.txt" "$FINAL/" 2>/dev/null
tar czf "$FINAL/results.tgz" -C "$W" --exclude='*.csv' .
