#!/usr/bin/env bash
# Makes a Docker engine answer on /var/run/docker.sock, idempotently (needs root):
#   installs Debian's docker.io when dockerd is missing, and starts
#   `dockerd --bridge=none --iptables=false --ip-masq=false` in the background when the socket
#   does not answer. No bridge network exists then: containers run with host networking
#   (tuner's docker mode does), which keeps all traffic on loopback.
# A second run finds the engine answering and returns at once.
# Environment: TUNER_DOCKERD_LOG (default /var/log/tuner-dockerd.log), TUNER_DOCKERD_WAIT_S (60).
set -euo pipefail

SOCKET=/var/run/docker.sock
LOG=${TUNER_DOCKERD_LOG:-/var/log/tuner-dockerd.log}
WAIT_S=${TUNER_DOCKERD_WAIT_S:-60}

log() { printf '\033[1m[docker-engine]\033[0m %s\n' "$*"; }

answering() {
  # The engine's /_ping answers "OK" once it serves the API; no docker CLI needed for this.
  [ -S "$SOCKET" ] && python3 - "$SOCKET" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
sys.exit(0 if b"OK" in s.recv(4096) else 1)
EOF
}

if answering; then
  log "engine already answering on $SOCKET"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "the Docker engine is not running and starting it needs root: run this script as root" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "apt-get install docker.io"
  # Other jobs may hold the dpkg lock for a while: wait for it instead of failing.
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (log: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  # containerd is started by dockerd itself when none is running.
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq "$WAIT_S"); do
  if answering; then
    log "engine answering on $SOCKET"
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer on $SOCKET within ${WAIT_S} s; its log $LOG ends with:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
