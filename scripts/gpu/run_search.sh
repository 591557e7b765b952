#!/usr/bin/env bash
# On a GPU machine with no network (an H100/H200 lent by the device tool): install what
# scripts/gpu/make_bundle.sh packed into .carry/gpu, check the machine, run a short wenet search
# with GPU candidates through the real tritonserver, and write the study and its tables to $OUT.
#   usage: OUT=<dir> bash scripts/gpu/run_search.sh [extra tuner search flags]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu}; mkdir -p "$OUT"
BUNDLE=.carry/gpu; T=/tmp/tuner-gpu
export PYTHONUNBUFFERED=1
# The image's Python environment (torch, onnxruntime, numpy 2.x).
BASE_SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -x "$T/env/bin/python" ]; then
  mkdir -p "$T/server" "$T/tools" "$T/site"
  tar -C "$T/server" -xJf "$BUNDLE/server.tar.xz"
  tar -C "$T/tools" -xJf "$BUNDLE/tools.tar.xz"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$T/site" "$BUNDLE"/wheels/*.whl
  cp -r "$T/tools/tritonclient" "$T/site/"
  # A venv whose own numpy 1.26 comes before the image's packages (the python backend stub of
  # tritonserver 2.51 answered with empty tensors under numpy 2.5); tuner and the stub both use it.
  python3 -m venv --without-pip "$T/env"
  ENV_SITE=$("$T/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$ENV_SITE" "$BUNDLE"/stub-wheels/*.whl
  echo "$BASE_SITE" > "$ENV_SITE/image-packages.pth"  # after the venv's own numpy
fi
export PYTHONPATH=$T/site:$PWD
PY=$T/env/bin/python
export TUNER_TRITONSERVER=$T/server/pytriton/tritonserver/bin/tritonserver
export TUNER_PERF_ANALYZER=$T/tools/bin/perf_analyzer
export LD_LIBRARY_PATH=$T/tools/lib:${LD_LIBRARY_PATH:-}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import sys, numpy, torch, onnxruntime; print(sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "ort", onnxruntime.__version__)'
  ldd "$T/server/pytriton/tritonserver/backends/python/triton_python_backend_stub" | grep -i python
} 2>&1 | tee "$OUT/machine.txt"
$PY -m tuner doctor 2>&1 | tee "$OUT/doctor.txt"
start=$(date +%s)
$PY -m tuner search --model wenet --experiment experiments/wenet-gpu.yaml \
  --storage "sqlite:///$OUT/gpu.db" --study wenet-gpu "$@" 2>&1 | tee "$OUT/search.log"
echo "search wall-clock: $(( $(date +%s) - start )) s" | tee -a "$OUT/search.log"
$PY -m tuner report --study wenet-gpu --storage "sqlite:///$OUT/gpu.db" 2>&1 | tee "$OUT/report.txt"
cp results/wenet-gpu/server.log "$OUT/server.log" 2>/dev/null || true
