#!/usr/bin/env bash
# Installs everything tuner needs on a fresh Debian machine, idempotently:
#   Debian packages (PostgreSQL 15 among them, for scripts/postgres.sh), a virtual environment in
#   .venv with tuner and its Python packages (the postgres extra: psycopg),
#   the tritonserver binary (from the nvidia-pytriton wheel) inside .venv/opt/pytriton,
#   and perf_analyzer (from the tritonclient 2.48.0 wheel) in .venv/bin.
# A second run checks stamps and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
PYTRITON_VERSION=0.7.0

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Debian packages: libb64 for perf_analyzer; chromium for the dashboard's browser test; postgresql-15
# for scripts/postgres.sh (the tests of studies shared by several workers start it).
need_apt=()
for pkg in libb64-0d chromium postgresql-15; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Python environment; reinstalled only when pyproject.toml or the extras change.
EXTRAS=zoo,test,postgres
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
stamp=$VENV/.tuner-deps-$({ cat pyproject.toml; echo "$EXTRAS"; } | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  log "installing Python packages (first run takes a few minutes)"
  pip_args=(-q --disable-pip-version-check)
  # The local PyTorch CPU build lives here on these machines; without it torch==2.13.0
  # resolves to the registry's CUDA build.
  [ -d /opt/wheels ] && pip_args+=(--find-links /opt/wheels)
  "$VENV/bin/pip" install "${pip_args[@]}" --upgrade pip
  "$VENV/bin/pip" install "${pip_args[@]}" -e ".[$EXTRAS]"
  rm -f "$VENV"/.tuner-deps-*
  touch "$stamp"
fi

# tritonserver: unpacked from the nvidia-pytriton wheel (not pip-installed: that wheel pins a
# tritonclient without perf_analyzer). Only the server, its libraries and one python stub are kept.
# The binaries find their libraries at $ORIGIN/../../../nvidia_pytriton.libs: keep the wheel's layout.
SERVER_ROOT=$VENV/opt/pytriton
SERVER_DIR=$SERVER_ROOT/pytriton/tritonserver
if [ ! -x "$SERVER_DIR/bin/tritonserver" ]; then
  log "unpacking tritonserver from nvidia-pytriton==$PYTRITON_VERSION"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_35_x86_64 -d "$tmp" "nvidia-pytriton==$PYTRITON_VERSION"
  rm -rf "$SERVER_ROOT"; mkdir -p "$SERVER_ROOT/pytriton"
  "$VENV/bin/python" -m zipfile -e "$tmp"/nvidia_pytriton-*.whl "$tmp/unz"
  mv "$tmp/unz/pytriton/tritonserver" "$SERVER_ROOT/pytriton/"
  mv "$tmp/unz/nvidia_pytriton.libs" "$SERVER_ROOT/"
  pyver=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  stub=$SERVER_DIR/python_backend_stubs/$pyver/triton_python_backend_stub
  [ -f "$stub" ] || { echo "no python backend stub for Python $pyver in nvidia-pytriton" >&2; exit 1; }
  cp "$stub" "$SERVER_DIR/backends/python/"
  rm -rf "$SERVER_DIR/python_backend_stubs" "$tmp"
  chmod +x "$SERVER_DIR/bin/tritonserver" "$SERVER_DIR/backends/python/triton_python_backend_stub"
fi
log "ready: $("$VENV/bin/tuner" --version)"
