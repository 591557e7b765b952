#!/usr/bin/env bash
# Issue 13's check of exported claims: search -> export -> `tuner verify` N times, on one model.
#   bash scripts/verify_claims.sh MODEL OUTDIR [SLA_MS] [VERIFY_RUNS] [extra `tuner search` args...]
# MODEL: a zoo name or an .onnx file. Prints each verify run's verdict line and writes all output
# under OUTDIR (search.log, export.log, verify-<i>.log, summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
model=$1; out=$2; sla=${3:-}; runs=${4:-5}; shift 4 2>/dev/null || shift $#
mkdir -p "$out"
tuner=.venv/bin/tuner
study=claims-$(basename "$model" .onnx)
args=(--model "$model" --study "$study" --storage "sqlite:///$out/tuner.db" --fresh "$@")
[ -n "$sla" ] && args+=(--max-p99-ms "$sla")
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (+ uncommitted changes)')" | tee "$out/summary.txt"
# The machine's own state every 5 s (vmstat's us/sy/id/st: st is CPU time taken by other tenants of a
# shared host), to read each run's drift against.
vmstat -n -t 5 > "$out/vmstat.txt" 2>&1 &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
start=$(date +%s)
$tuner search "${args[@]}" > "$out/search.log" 2>&1; echo "search exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
grep -A12 "^verified:" "$out/search.log" | tee -a "$out/summary.txt"
rm -rf "$out/export"
$tuner export --study "$study" --storage "sqlite:///$out/tuner.db" --out "$out/export" > "$out/export.log" 2>&1
echo "export exit $?" | tee -a "$out/summary.txt"; head -3 "$out/export.log" | tee -a "$out/summary.txt"
bash scripts/verify_export.sh "$out/export" "$out" "$runs"
