# Sourced by the scripts/gpu/run_*.sh: installs what scripts/gpu/make_bundle.sh packed into
# .carry/gpu (once per machine), then exports PY, PYTHONPATH and the tritonserver / perf_analyzer
# paths tuner reads.
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


# What the machine is, for the measurement's record: GPUs, driver, the Python stack, the stub's Python.
describe_machine() {
  { nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
    $PY -c 'import sys, numpy, torch, onnxruntime; print(sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "ort", onnxruntime.__version__)'
    ldd "$T/server/pytriton/tritonserver/backends/python/triton_python_backend_stub" | grep -i python
    nproc
    git rev-parse HEAD 2>/dev/null
  } 2>&1
}
