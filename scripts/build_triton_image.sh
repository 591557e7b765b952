#!/usr/bin/env bash
# Builds the tritonserver image tuner's docker mode runs here, without any registry, idempotently:
#   1. a minbase Debian bookworm root filesystem (debootstrap) with python3, python3-numpy
#      (1.24, numpy < 2 as the python backend stub needs) and libpython3.11, plus the Python
#      packages the python-backend adapters import (onnxruntime, at the version in .venv)
#      installed into it; cached as a tarball in $TUNER_CACHE_DIR;
#   2. `docker import` of that tarball as the base image;
#   3. `docker build` of scripts/tritonserver.Dockerfile on it, copying in the tritonserver that
#      scripts/setup.sh unpacked into .venv/opt/pytriton (its 3.11 python stub included).
# Nothing is done when the image exists (built from the same packages); with the tarball cached a
# rebuild takes seconds.
# Needs: root (debootstrap, chroot), a Docker engine (scripts/docker_engine.sh), scripts/setup.sh run.
# Environment: TUNER_TRITON_IMAGE (tag, default tuner-tritonserver:2.51-py311),
#              TUNER_CACHE_DIR (default /var/cache/tuner), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TAG=${TUNER_TRITON_IMAGE:-tuner-tritonserver:2.51-py311}
CACHE=${TUNER_CACHE_DIR:-/var/cache/tuner}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VENV=$ROOT/.venv
SERVER_ROOT=$VENV/opt/pytriton
STUB=$SERVER_ROOT/pytriton/tritonserver/backends/python/triton_python_backend_stub
PACKAGES=python3,python3-numpy,libpython3.11
# What templates/python/onnxruntime_model.py imports besides numpy. (The openvino adapter would
# add openvino here.)
PIP_PACKAGES=(onnxruntime)
SITE=usr/local/lib/python3.11/dist-packages

log() { printf '\033[1m[triton-image]\033[0m %s\n' "$*"; }
die() { echo "error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "no docker command: run scripts/docker_engine.sh first"
docker version >/dev/null 2>&1 || die "the Docker engine does not answer: run scripts/docker_engine.sh (as root)"
[ -x "$SERVER_ROOT/pytriton/tritonserver/bin/tritonserver" ] \
  || die "no tritonserver in $SERVER_ROOT: run scripts/setup.sh first"
# Pinned to the versions in .venv, which the search was tested with.
mapfile -t PINS < <("$VENV/bin/python" -c 'import importlib.metadata as m, sys
for name in sys.argv[1:]: print(f"{name}=={m.version(name)}")' "${PIP_PACKAGES[@]}")
key=$(printf '%s\n' bookworm "$PACKAGES" "${PINS[@]}" | sha1sum | cut -c1-12)
ROOTFS_TAR=$CACHE/rootfs-bookworm-py311-$key.tar
BASE=tuner-debian-py311:$key

if [ "$(docker image inspect -f '{{ index .Config.Labels "tuner.rootfs" }}' "$TAG" 2>/dev/null)" = "$key" ]; then
  log "image $TAG exists"
  exit 0
fi

# The image's Python is Debian 12's 3.11, so the stub must be the 3.11 one (setup.sh copies the
# stub of the venv's Python, 3.11 on Debian 12).
grep -aq 'libpython3\.11\.so' "$STUB" || die "$STUB is not the Python 3.11 stub; run scripts/setup.sh with Python 3.11"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if [ ! -f "$ROOTFS_TAR" ]; then
    [ "$(id -u)" = 0 ] || die "building the root filesystem needs root (debootstrap, chroot)"
    if ! command -v debootstrap >/dev/null; then
      log "apt-get install debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null
    fi
    work=$(mktemp -d /var/tmp/tuner-rootfs.XXXXXX)
    cleanup() {
      # debootstrap mounts proc and sys inside the tree; never delete through a mount.
      grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l || true
      rm -rf --one-file-system "$work"
    }
    trap cleanup EXIT
    log "debootstrap bookworm minbase with $PACKAGES (one to two minutes)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/rootfs" "$MIRROR" \
      >"$work/debootstrap.log" 2>&1 \
      || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    log "${PINS[*]} into the root filesystem"
    # Debian's numpy (1.24) stays: the packages go in without dependencies, then their import is checked.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 --implementation cp --target "$work/rootfs/$SITE" "${PINS[@]}"
    chroot "$work/rootfs" python3 -c 'import importlib, sys, numpy
assert numpy.__version__ < "2", numpy.__version__
for name in sys.argv[1:]: importlib.import_module(name)' "${PIP_PACKAGES[@]}" \
      2>"$work/check.log" || { cat "$work/check.log" >&2; die "${PINS[*]} do not import in the image's Python"; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/$SITE/bin"
    mkdir -p "$CACHE"
    tar -C "$work/rootfs" --numeric-owner -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  fi
  log "docker import $ROOTFS_TAR as $BASE"
  docker import "$ROOTFS_TAR" "$BASE" >/dev/null
fi

log "docker build $TAG"
# The classic builder: it needs no buildx plugin, and the build has no RUN step that would need BuildKit.
build_log=$(mktemp)
DOCKER_BUILDKIT=0 docker build -f scripts/tritonserver.Dockerfile --build-arg "BASE=$BASE" --label "tuner.rootfs=$key" \
  -t "$TAG" "$SERVER_ROOT" \
  >"$build_log" 2>&1 || { tail -n 20 "$build_log" >&2; rm -f "$build_log"; die "docker build failed (log above)"; }
rm -f "$build_log"
log "built $TAG"
