#!/usr/bin/env bash
# Builds .carry/gpu/: everything a GPU machine with no network needs beyond what it has
# (Python 3.12, torch, numpy, onnxruntime CPU): the tritonserver files with the 3.12 python stub,
# perf_analyzer with its two libraries, tritonclient's Python package, and cp312 wheels of
# tuner's pure dependencies. Run here (with network), after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.carry/gpu
VENV=.venv
rm -rf "$OUT"; mkdir -p "$OUT/wheels"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# tritonserver from the nvidia-pytriton wheel, 3.12 stub, minus the 3.13 interpreter it bundles.
"$VENV/bin/pip" download -q --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 -d "$tmp" nvidia-pytriton==0.7.0
"$VENV/bin/python" - "$tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheel = next(tmp.glob("nvidia_pytriton-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        name = info.filename
        keep = name.startswith("nvidia_pytriton.libs/") or name.startswith("pytriton/tritonserver/")
        if not keep or "libpython3-" in name:
            continue
        if "python_backend_stubs/" in name and "/3.12/" not in name:
            continue
        zf.extract(info, tmp / "server")
PY
stubs=$tmp/server/pytriton/tritonserver/python_backend_stubs
mv "$stubs/3.12/triton_python_backend_stub" "$tmp/server/pytriton/tritonserver/backends/python/"
rm -rf "$stubs"
chmod +x "$tmp/server/pytriton/tritonserver/bin/tritonserver" "$tmp/server/pytriton/tritonserver/backends/python/triton_python_backend_stub"
tar -C "$tmp/server" -cJf "$OUT/server.tar.xz" .

# perf_analyzer + libcudart.so.12 + libb64.so.0d, and tritonclient's Python package.
mkdir -p "$tmp/tools/bin" "$tmp/tools/lib"
cp "$VENV/bin/perf_analyzer" "$tmp/tools/bin/"
cp "$("$VENV/bin/python" -c 'import nvidia.cuda_runtime as m, pathlib; print(pathlib.Path(list(m.__path__)[0]) / "lib")')"/libcudart.so.12 "$tmp/tools/lib/"
cp -L /usr/lib/x86_64-linux-gnu/libb64.so.0d "$tmp/tools/lib/"
cp -r "$VENV/lib/python3.11/site-packages/tritonclient" "$tmp/tools/"
find "$tmp/tools/tritonclient" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$tmp/tools" -cJf "$OUT/tools.tar.xz" .

# Pure-Python (or cp312) wheels of what tuner imports and the GPU image lacks.
"$VENV/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT/wheels" \
  optuna==$("$VENV/bin/python" -c 'import optuna; print(optuna.__version__)') \
  sqlalchemy alembic mako colorlog tqdm greenlet \
  typer click shellingham rich markdown-it-py mdurl pygments \
  "pydantic==$("$VENV/bin/python" -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic-core==$("$VENV/bin/python" -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated-types typing-inspection typing-extensions annotated-doc \
  python-rapidjson
# numpy 1.x for the python backend stub: tritonserver 2.51's stub returned empty output tensors
# with the GPU image's numpy 2.5 (seen on an H200); tuner runs from a venv that puts it first.
mkdir -p "$OUT/stub-wheels"
"$VENV/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$OUT/stub-wheels" numpy==1.26.4
du -sh "$OUT"/*
