#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against its own /openapi.json, on
# SQLite and on PostgreSQL, with a fixed budget and a fixed seed.
#
# Passes only with: no 5xx, every response matching the document (status
# code, content type, headers, body schema), and every error body (4xx/5xx)
# JSON (the custom check in scripts/fuzz_hooks.py). Exits non-zero and prints
# each failure with a curl line that reproduces it otherwise.
#
# schemathesis comes from PyPI, pinned, in a virtual environment under
# target/ (created once, reused). The server is built in release mode unless
# GISTFANS_BIN names a binary. Each backend gets a fresh database: a
# temporary SQLite file (seeded by the server on first start) and a
# temporary PostgreSQL database (seeded with `gistfans seed`, dropped at the
# end); DIRECT_URL is ignored so that nothing else is ever migrated. Only
# processes this script started are ever stopped.
#
# Knobs (environment): GISTFANS_BIN, FUZZ_BACKENDS ("sqlite postgres"),
# FUZZ_MAX_EXAMPLES (60), FUZZ_SEED (42), FUZZ_WORKERS (1), FUZZ_VENV,
# PGHOST_ADDR (127.0.0.1), PGPORT_NUM (5432), FUZZ_KEEP (1: keep the logs).
# One worker keeps a run reproducible (the server's state, hence 204 or 409,
# depends on the order of requests); more workers are threads, and Python
# 3.11's ast module is not thread-safe (hypothesis then fails with "AST
# constructor recursion depth mismatch", a tooling error, not a server bug).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
VENV=${FUZZ_VENV:-$ROOT/target/fuzz-venv}
BACKENDS=${FUZZ_BACKENDS:-sqlite postgres}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-60}
SEED=${FUZZ_SEED:-42}
WORKERS=${FUZZ_WORKERS:-1}
PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
PGPORT_NUM=${PGPORT_NUM:-5432}
HOOKS=$ROOT/scripts/fuzz_hooks.py

log() { echo "fuzz: $*"; }

# --- schemathesis, pinned, in a project-local virtual environment ----------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- the server -------------------------------------------------------------
if [ -n "${GISTFANS_BIN:-}" ]; then
  BIN=$GISTFANS_BIN
else
  cargo build --release -p gistfans
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/gistfans
fi
[ -x "$BIN" ] || { echo "fuzz: no gistfans binary at $BIN" >&2; exit 1; }

# --- state and clean-up -----------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gistfans-fuzz.XXXXXX")
# Both backends test the same build, even if target/ is rebuilt meanwhile.
cp "$BIN" "$WORK/gistfans"
BIN=$WORK/gistfans
ADMIN_TOKEN_VALUE=fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
SERVER_PID=""
PG_DB=""
FAILED=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server $SERVER_PID ignored SIGTERM for 10 s: killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

drop_pg_db() {
  [ -n "$PG_DB" ] || return 0
  dropdb -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres --if-exists --force "$PG_DB" || true
  PG_DB=""
}

cleanup() {
  stop_server
  drop_pg_db
  if [ -n "$FAILED" ] || [ "${FUZZ_KEEP:-0}" = 1 ]; then
    log "logs and reports kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME DATABASE_URL: starts the server in the background on a
# free port, waits for /readyz; sets SERVER_PID and PORT.
start_server() {
  local name=$1 url=$2 attempt
  for attempt in 1 2 3; do
    PORT=$(free_port)
    local server_log=$WORK/$name-server.log
    env -u DIRECT_URL NO_COLOR=1 ADMIN_TOKEN=$ADMIN_TOKEN_VALUE "$BIN" serve --database-url "$url" --bind "127.0.0.1:$PORT" \
      >"$server_log" 2>&1 &
    SERVER_PID=$!
    log "$name: server pid $SERVER_PID on 127.0.0.1:$PORT (log: $server_log)"
    # The SQLite database is seeded on first start: allow for a slow machine.
    for _ in $(seq 1 600); do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then
        return 0
      fi
      sleep 0.5
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "fuzz: $name: server not ready after 300 s; its log:" >&2
      tail -n 50 "$server_log" >&2
      stop_server
      return 1
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    if grep -qi "cannot listen\|address already in use" "$server_log"; then
      log "$name: port $PORT was taken meanwhile (attempt $attempt), retrying"
      continue
    fi
    echo "fuzz: $name: server exited during start-up; its log:" >&2
    tail -n 50 "$server_log" >&2
    return 1
  done
  echo "fuzz: $name: could not find a free port" >&2
  return 1
}

# The schemathesis configuration: no state carried between runs (no example
# database, no cache), so a run depends on the seed alone.
CONFIG=$WORK/schemathesis.toml
cat >"$CONFIG" <<EOF
[cache]
enabled = false

[generation]
database = "none"
EOF

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,error_body_is_json

# run_schemathesis NAME: fuzzes the server on $PORT; returns its exit code.
# The dashboard's status stream is left out: with the token (the hooks add
# it) it answers by design for minutes, which a fuzzer reads as a timeout;
# tests/dashboard.rs covers its refusals and bounds.
run_schemathesis() {
  local name=$1
  local started=$SECONDS rc=0
  log "$name: schemathesis $SCHEMATHESIS_VERSION, $MAX_EXAMPLES examples per operation, seed $SEED"
  # Run from $WORK so nothing is written into the repository.
  (
    cd "$WORK"
    PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS=$HOOKS FUZZ_ADMIN_TOKEN=$ADMIN_TOKEN_VALUE FUZZ_SEED=$SEED \
      "$VENV/bin/schemathesis" --config-file "$CONFIG" --no-color run \
      "http://127.0.0.1:$PORT/openapi.json" \
      --checks "$CHECKS" \
      --exclude-path /api/admin/stream \
      --max-examples "$MAX_EXAMPLES" \
      --seed "$SEED" \
      --workers "$WORKERS" \
      --continue-on-failure \
      --request-timeout 30 \
      --output-sanitize false \
      --report junit,har --report-dir "$WORK/$name-report"
  ) || rc=$?
  log "$name: schemathesis finished in $((SECONDS - started)) s (exit $rc)"
  if [ "$rc" -ne 0 ] && grep -qa "ERROR" "$WORK/$name-server.log"; then
    echo "fuzz: $name: errors in the server log:" >&2
    grep -a "ERROR" "$WORK/$name-server.log" | tail -n 20 >&2
  fi
  return "$rc"
}

fuzz_sqlite() {
  local url="sqlite://$WORK/gistfans.db"
  start_server sqlite "$url" || return 1
  local rc=0
  run_schemathesis sqlite || rc=$?
  stop_server
  return "$rc"
}

fuzz_postgres() {
  if ! pg_isready -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -q; then
    bash scripts/services.sh
  fi
  PG_DB=gistfans_fuzz_$$
  createdb -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres "$PG_DB" || { PG_DB=""; return 1; }
  local url="postgres://postgres@$PGHOST_ADDR:$PGPORT_NUM/$PG_DB"
  log "postgres: seeding $PG_DB"
  env -u DIRECT_URL "$BIN" seed --database-url "$url" >"$WORK/postgres-seed.log" 2>&1 || {
    echo "fuzz: postgres: seeding failed:" >&2
    tail -n 30 "$WORK/postgres-seed.log" >&2
    return 1
  }
  start_server postgres "$url" || return 1
  local rc=0
  run_schemathesis postgres || rc=$?
  stop_server
  drop_pg_db
  return "$rc"
}

for backend in $BACKENDS; do
  started=$SECONDS
  case $backend in
    sqlite) fuzz_sqlite || FAILED="$FAILED $backend" ;;
    postgres) fuzz_postgres || FAILED="$FAILED $backend" ;;
    *) echo "fuzz: unknown backend $backend" >&2; exit 2 ;;
  esac
  log "$backend: $((SECONDS - started)) s in all"
done

if [ -n "$FAILED" ]; then
  echo "fuzz: FAILED on:$FAILED (the failures and their curl reproducers are above)" >&2
  exit 1
fi
log "passed on: $BACKENDS"
