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
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_DIR=$(realpath -m "${SERVER_DIR:-.server}")
MLFLOW_PORT=${MLFLOW_PORT:-5001}
PG_PORT=${PG_PORT:-5433}
HOST=${HOST:-127.0.0.1}
PYTHON=${PYTHON:-.venv/bin/python}
START_TIMEOUT=${START_TIMEOUT:-240}  # seconds to wait for mlflow server (≈13 s on an idle 2-core machine)
PGDATA="$SERVER_DIR/pgdata"
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

start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$SERVER_DIR/artifacts" "$SERVER_DIR/socket"
  [ "$(id -u)" = 0 ] && chown postgres "$SERVER_DIR" "$SERVER_DIR/socket"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_db_user "$bin/initdb" -D "$PGDATA" -U mlflow -A trust --no-sync >/dev/null
  fi
  if ! as_db_user "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_db_user "$bin/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/server.log" \
      -o "-h $HOST -p $PG_PORT -k $SERVER_DIR/socket" start >/dev/null
  fi
  as_db_user "$bin/psql" -h "$HOST" -p "$PG_PORT" -U mlflow -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
    || as_db_user "$bin/createdb" -h "$HOST" -p "$PG_PORT" -U mlflow mlflow
  if [ -f "$SERVER_DIR/mlflow.pid" ] && kill -0 "$(cat "$SERVER_DIR/mlflow.pid")" 2>/dev/null; then
    echo "mlflow server already running: http://$HOST:$MLFLOW_PORT"; return
  fi
  setsid "$PYTHON" -m mlflow server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
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
