#!/usr/bin/env bash
# A team-style MLflow tracking server on this machine: PostgreSQL (Debian's) as the backend store, initialised into a
# project-local data directory, and `mlflow server` in front of it, both bound to 127.0.0.1 (loopback only).
#
#   scripts/server.sh start   # or: make server
#   scripts/server.sh stop    # or: make server-stop (stops what `start` started, by PID)
#   scripts/server.sh status
#
# Settings (environment): SERVER_DIR (default .server), MLFLOW_PORT (5001), PG_PORT (5433), HOST (127.0.0.1),
# PYTHON (.venv/bin/python), START_TIMEOUT (240 s). The tracking URI to use afterwards is printed: http://HOST:MLFLOW_PORT.
#
# Database access (no trust authentication anywhere):
# - the cluster's superuser (the OS user that owns it: `postgres` when run as root) connects only over a private Unix
#   socket in SERVER_DIR/socket, by peer authentication: no other OS user can become it;
# - MLflow connects over loopback TCP as the role `mlflow`, which is not a superuser (it owns the `mlflow` database and
#   nothing else), with scram-sha-256 and a generated password. The password lives only in SERVER_DIR/pgpass (mode
#   0600, libpq's password-file format, read through PGPASSFILE): never printed, never on a command line or in a URI,
#   and PostgreSQL receives only its SCRAM verifier. SERVER_DIR is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_DIR=$(realpath -m "${SERVER_DIR:-.server}")
MLFLOW_PORT=${MLFLOW_PORT:-5001}
PG_PORT=${PG_PORT:-5433}
HOST=${HOST:-127.0.0.1}
PYTHON=${PYTHON:-.venv/bin/python}
START_TIMEOUT=${START_TIMEOUT:-240}  # seconds to wait for mlflow server (≈13 s on an idle 2-core machine)
PGDATA="$SERVER_DIR/pgdata"
PGPASS="$SERVER_DIR/pgpass"  # the mlflow role's password (0600)
SOCKET="$SERVER_DIR/socket"
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
# The server's background job runner (huey workers for GenAI features) is not needed here and costs CPU.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ]; then
    echo "installing Debian's postgresql (apt-get)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } \
      || { echo "error: could not install postgresql" >&2; exit 1; }
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

# PostgreSQL refuses to run as root: run its tools as the `postgres` user then.
as_db_user() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The SCRAM-SHA-256 verifier of the password on stdin: PostgreSQL stores and receives only this, never the password.
scram_verifier() {
  "$PYTHON" -c '
import base64, hashlib, hmac, os, sys
password, salt, iterations = sys.stdin.read().strip().encode(), os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
server = hmac.new(salted, b"Server Key", "sha256").digest()
b64 = lambda raw: base64.b64encode(raw).decode()
print(f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}")'
}

init_cluster() {
  local bin=$1 owner
  owner=$(as_db_user id -un)
  as_db_user "$bin/initdb" -D "$PGDATA" --auth-local=peer --auth-host=scram-sha-256 --no-sync >/dev/null
  # Only two ways in: the owner over the private socket (peer), the mlflow role over loopback (scram).
  as_db_user tee "$PGDATA/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/server.sh. No trust authentication.
local  all     $owner                 peer
host   mlflow  mlflow  127.0.0.1/32   scram-sha-256
host   mlflow  mlflow  ::1/128        scram-sha-256
EOF
}

# The cluster's superuser, over the private socket: for the role and database set-up only.
as_superuser() { as_db_user "$1/psql" -h "$SOCKET" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA; }

ensure_password() {
  [ -s "$PGPASS" ] && return
  (umask 077 && printf '*:*:mlflow:mlflow:%s\n' "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >"$PGPASS")
}

ensure_role_and_database() {
  local verifier
  verifier=$(cut -d: -f5- "$PGPASS" | scram_verifier)
  as_superuser "$1" >/dev/null <<SQL
SELECT 'CREATE ROLE mlflow' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec
ALTER ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$verifier';
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SQL
}

start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$SERVER_DIR/artifacts" "$SOCKET"
  chmod 700 "$SERVER_DIR" "$SOCKET"
  [ "$(id -u)" = 0 ] && chown postgres "$SERVER_DIR" "$SOCKET"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    init_cluster "$bin"
  elif grep -Eq '^[^#]*[[:space:]]trust([[:space:]]|$)' "$PGDATA/pg_hba.conf"; then
    echo "error: $PGDATA accepts connections without a password (trust, from an older scripts/server.sh): stop it" \
      "(make server-stop), move it away (back up its runs with pg_dump first if you need them), then make server" >&2
    exit 1
  fi
  ensure_password
  if ! as_db_user "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_db_user "$bin/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/server.log" \
      -o "-h $HOST -p $PG_PORT -k $SOCKET -c unix_socket_permissions=0700" start >/dev/null
  fi
  ensure_role_and_database "$bin"
  if [ -f "$SERVER_DIR/mlflow.pid" ] && kill -0 "$(cat "$SERVER_DIR/mlflow.pid")" 2>/dev/null; then
    echo "mlflow server already running: http://$HOST:$MLFLOW_PORT"; return
  fi
  # No password in the URI (it would show in `ps`): libpq reads it from PGPASSFILE.
  PGPASSFILE="$PGPASS" setsid "$PYTHON" -m mlflow server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "postgresql+psycopg2://mlflow@$HOST:$PG_PORT/mlflow" \
    --artifacts-destination "$SERVER_DIR/artifacts" >"$SERVER_DIR/mlflow.log" 2>&1 &
  echo $! >"$SERVER_DIR/mlflow.pid"
  for _ in $(seq 1 "$((START_TIMEOUT * 2))"); do
    if "$PYTHON" - "$HOST" "$MLFLOW_PORT" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=2)
PY
      echo "mlflow server on PostgreSQL: http://$HOST:$MLFLOW_PORT  (export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT)"
      return
    fi
    kill -0 "$(cat "$SERVER_DIR/mlflow.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "error: mlflow server did not start; see $SERVER_DIR/mlflow.log" >&2
  tail -n 20 "$SERVER_DIR/mlflow.log" >&2 || true
  exit 1
}

stop() {
  if [ -f "$SERVER_DIR/mlflow.pid" ]; then
    local pid; pid=$(cat "$SERVER_DIR/mlflow.pid")
    # setsid made it a process group leader: stop the server and its workers together.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$SERVER_DIR/mlflow.pid"
  fi
  if [ -f "$PGDATA/postmaster.pid" ]; then
    as_db_user "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true
  fi
  echo "stopped"
}

status() {
  if [ -f "$SERVER_DIR/mlflow.pid" ] && kill -0 "$(cat "$SERVER_DIR/mlflow.pid")" 2>/dev/null; then
    echo "mlflow server running (pid $(cat "$SERVER_DIR/mlflow.pid")): http://$HOST:$MLFLOW_PORT"
  else
    echo "mlflow server not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
