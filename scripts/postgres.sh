#!/usr/bin/env bash
# A PostgreSQL server for studies shared by several workers (docs/scale-out.md), run from a data
# directory of the project's own, for tests and for users:
#   scripts/postgres.sh          start it (installing Debian's postgresql 15 if missing; initdb, the
#                                role and the database on the first run); a second run finds it
#                                running and only prints the URL
#   scripts/postgres.sh status   exit 0 when it is running (prints the URL), 3 when it is not
#   scripts/postgres.sh stop     stop it (the data stays)
# The last line printed by start and status is the storage URL to pass to `tuner search --storage`.
#
# Settings (environment):
#   TUNER_PG_DIR       data directory (default results/postgres)
#   TUNER_PG_PORT      port (default 55432)
#   TUNER_PG_LISTEN    address to listen on (default 127.0.0.1). Any other address (0.0.0.0 for
#                      workers on other hosts) needs TUNER_PG_PASSWORD: connections that are not
#                      from loopback must then give it
#   TUNER_PG_PASSWORD  the password of the role `tuner` (needed with TUNER_PG_LISTEN only)
#   TUNER_PG_HOST      the host name put in the printed URL (default: the listen address, or this
#                      machine's name when listening on every address)
# Loopback connections are trusted: the server is meant for one user's machine or a private network.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
DATA=${TUNER_PG_DIR:-$PWD/results/postgres}
PORT=${TUNER_PG_PORT:-55432}
LISTEN=${TUNER_PG_LISTEN:-127.0.0.1}
PASSWORD=${TUNER_PG_PASSWORD:-}
ROLE=tuner
DB=tuner
ACTION=${1:-start}

die() { echo "postgres.sh: $*" >&2; exit 1; }
log() { echo "[postgres] $*" >&2; }

case "$ACTION" in start|stop|status) ;; *) die "unknown argument '$ACTION': use start (default), status or stop";; esac
[[ "$PORT" =~ ^[0-9]+$ ]] || die "TUNER_PG_PORT must be a port number, not '$PORT'"
case "$LISTEN" in
  127.0.0.1|localhost) ;;
  *) [ -n "$PASSWORD" ] || die "TUNER_PG_LISTEN=$LISTEN accepts connections from other hosts: set TUNER_PG_PASSWORD too";;
esac
[[ "$PASSWORD" != *"'"* ]] || die "TUNER_PG_PASSWORD must not contain a single quote"
mkdir -p "$(dirname "$DATA")"
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")

url() {
  local host=${TUNER_PG_HOST:-$LISTEN} auth=$ROLE
  case "$host" in 0.0.0.0|'*') host=$(hostname -f 2>/dev/null || hostname);; esac
  [ -z "$PASSWORD" ] || auth="$ROLE:$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PASSWORD")"
  echo "postgresql+psycopg://$auth@$host:$PORT/$DB"
}

# postgres refuses to run as root: root runs it as the package's `postgres` user.
if [ "$(id -u)" = 0 ]; then as_owner() { runuser -u postgres -- "$@"; }; else as_owner() { "$@"; }; fi

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

# psql over TCP as the superuser (the Unix socket is off: data directory paths can be too long for one).
psql_super() { as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tA "$@"; }

# One start or stop at a time (two test sessions, two workers of one host starting together). The
# lock's descriptor is closed for pg_ctl: the server it starts must not hold the lock.
exec 9>"$(dirname "$DATA")/.$(basename "$DATA").lock"
flock -w 120 9 || die "another scripts/postgres.sh has held $(dirname "$DATA")/.$(basename "$DATA").lock for 2 minutes"

if [ "$ACTION" = stop ]; then
  if running; then as_owner "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -s; log "stopped ($DATA)"; else log "not running ($DATA)"; fi
  exit 0
fi
if [ "$ACTION" = status ]; then
  if running; then url; exit 0; fi
  log "not running ($DATA)"; exit 3
fi

if running; then url; exit 0; fi

if [ ! -x "$PG_BIN/pg_ctl" ]; then
  log "installing Debian's postgresql 15"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  # Never initialise over files tuner did not write.
  if [ -e "$DATA" ] && [ -n "$(ls -A "$DATA" 2>/dev/null)" ]; then
    die "$DATA exists, is not empty and is not a PostgreSQL data directory: choose another TUNER_PG_DIR"
  fi
  log "initialising $DATA"
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$DATA"
    # The postgres user must reach the data directory through the folders above it.
    runuser -u postgres -- test -x "$DATA" || die "the postgres user cannot reach $DATA (a folder above it is not searchable): choose another TUNER_PG_DIR"
  fi
  chmod 700 "$DATA"
  as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null \
    || die "initdb failed for $DATA"
  {
    echo "# scripts/postgres.sh: loopback is trusted; any other address needs the role's password."
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    echo "host all all 0.0.0.0/0 scram-sha-256"
    echo "host all all ::/0 scram-sha-256"
  } | as_owner tee "$DATA/pg_hba.conf" >/dev/null
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port $PORT is taken by another program (or another data directory's server): set TUNER_PG_PORT"
fi
log "starting on $LISTEN:$PORT ($DATA)"
# Many workers each keep a few connections: 200 leaves room for a dozen hosts and the dashboard.
if ! as_owner "$PG_BIN/pg_ctl" start -D "$DATA" -l "$DATA/server.log" -w -t 60 -s \
     -o "-c listen_addresses='$LISTEN' -p $PORT -c unix_socket_directories='' -c max_connections=200" 9>&-; then
  die "the server did not start: $(tail -n 3 "$DATA/server.log" 2>/dev/null | tr '\n' ' ')(log: $DATA/server.log)"
fi

if [ -z "$(psql_super -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]; then
  psql_super -c "CREATE ROLE $ROLE LOGIN CREATEDB"
fi
if [ -n "$PASSWORD" ]; then
  psql_super -c "ALTER ROLE $ROLE PASSWORD '$PASSWORD'"
fi
if [ -z "$(psql_super -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  psql_super -c "CREATE DATABASE $DB OWNER $ROLE"
fi
url
