#!/usr/bin/env bash
# `tuner verify` run N times on one exported folder (issue 13's check of a claim): one summary
# line per run (exit status, the figures verified here, the verdicts), appended to OUTDIR/summary.txt.
#   bash scripts/verify_export.sh EXPORT_DIR OUTDIR [VERIFY_RUNS] [extra `tuner verify` args...]
set -uo pipefail
cd "$(dirname "$0")/.."
export_dir=$1; out=$2; runs=${3:-5}; shift 3 2>/dev/null || shift $#
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  .venv/bin/tuner verify "$export_dir" "$@" > "$out/verify-$i.log" 2>&1; rc=$?
  echo "verify $i: exit $rc in $(( $(date +%s) - start )) s | $(grep -E '^verified here' "$out/verify-$i.log") | $(grep -E '^throughput:' "$out/verify-$i.log") | $(grep -E '^p99:' "$out/verify-$i.log")" | tee -a "$out/summary.txt"
done
