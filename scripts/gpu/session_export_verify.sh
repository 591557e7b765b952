#!/usr/bin/env bash
# The second device call after scripts/gpu/session_pipeline.sh (issue 16): the study's verified
# winner exported (`tuner export --no-html`: the device bundle has no plotly) and measured again by
# `tuner verify` on a fresh tritonserver, in the form it was exported. On the same warm machine it
# uses the search's study and Inductor cache in /tmp; on a fresh one, the study carried in
# STUDY_DB (results/gpu-carry/pipeline-1gpu.db from the first call's results.tgz), with the
# Inductor cache filled first. A verification the first call's limit cut is resumed first.
#   usage: OUT=<dir> ROUNDS=3 bash scripts/gpu/session_export_verify.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:?}; W=/tmp/session-pipeline; mkdir -p "$W"
EXPERIMENT=${EXPERIMENT:-experiments/wenet-gpu-compiled.yaml}
source scripts/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/tuner-inductor-cache
DB=$W/pipeline-1gpu.db
if [ -f "$DB" ]; then
  echo "warm machine: the study and the Inductor cache of the first call" | tee "$W/b-walls.txt"
else
  echo "fresh machine: the carried study; the Inductor cache filled first" | tee "$W/b-walls.txt"
  cp "${STUDY_DB:-results/gpu-carry/pipeline-1gpu.db}" "$DB"
  CUDA_VISIBLE_DEVICES=0 $PY scripts/gpu/prewarm_inductor.py --precision fp16 --max-batch 32 > "$W/b-prewarm.log" 2>&1 &
  prewarm=$!
  $PY -c 'from pathlib import Path; from tuner.pipeline import source; source.resolve("wenet-gpu", Path("results/cache"))' \
    > "$W/b-prepare.log" 2>&1
  wait $prewarm
fi
echo "ready: $SECONDS s" >> "$W/b-walls.txt"
storage=sqlite:///$DB
finished=$($PY -c "import optuna; from tuner.study import finished_count; print(finished_count(optuna.load_study(study_name='pipeline-1gpu', storage='$storage')))")
unfinished=$($PY -c "from tuner.verification import stored; import optuna; v = stored(optuna.load_study(study_name='pipeline-1gpu', storage='$storage')); print(v is None or v['stopped'] == 'unfinished')")
if [ "$unfinished" = True ]; then  # resume the stage only: no further trial (--trials: those finished)
  CUDA_VISIBLE_DEVICES=0 timeout 300 $PY -m tuner search --experiment "$EXPERIMENT" --storage "$storage" \
    --study pipeline-1gpu --trials "$finished" > "$W/b-verification-resumed.log" 2>&1
  echo "verification resumed: exit $? at $SECONDS s" >> "$W/b-walls.txt"
fi
$PY -m tuner report --study pipeline-1gpu --storage "$storage" > "$W/b-report.txt" 2>&1
rm -rf "$W/export"
$PY -m tuner export --study pipeline-1gpu --storage "$storage" --out "$W/export" --no-html > "$W/b-export.log" 2>&1
echo "export: exit $? at $SECONDS s" >> "$W/b-walls.txt"
( while true; do nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,power.draw --format=csv,noheader; sleep 5; done ) \
  > "$W/b-gpu-usage.txt" 2>&1 &
monitor=$!
CUDA_VISIBLE_DEVICES=0 timeout "${VERIFY_S:-420}" $PY -m tuner verify "$W/export" --rounds "${ROUNDS:-3}" > "$W/b-verify.log" 2>&1
echo "verify: exit $? at $SECONDS s" >> "$W/b-walls.txt"
kill $monitor 2>/dev/null
cp "$W"/b-*.txt "$W"/b-*.log "$FINAL/" 2>/dev/null
tar czf "$FINAL/results-b.tgz" -C "$W" --exclude='*.csv' --exclude='*.db' --exclude='*.onnx' b-walls.txt export $(cd "$W" && ls b-* 2>/dev/null)
