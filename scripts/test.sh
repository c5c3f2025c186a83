#!/usr/bin/env bash
# The whole test suite, with its set-up: starts PostgreSQL (with
# pg_stat_statements), Redis, our PgBouncer (127.0.0.1:6432, transaction
# mode), a local Redis Cluster (127.0.0.1:7000-7005), a streaming replica
# of that PostgreSQL (hot standby, 127.0.0.1:5433), MariaDB
# (127.0.0.1:3306) and headless Chromium if they are down, then runs every test of every crate (unit, integration,
# doc). No test skips: one that needs a service fails when it cannot reach it.
# Every stage runs even when an earlier one fails (the exit status says
# whether all passed), so one failing test never hides the doc tests or the
# fuzzing. The pressure tests (three servers saturating both cores; three
# servers reading from the replica through 100,000 write → read pairs) run
# after the rest, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: cargo-nextest not found, installing it"
  cargo install cargo-nextest --locked
fi

failed=()
stage() { # name, command...
  local name=$1; shift
  echo "test: $name"
  if ! "$@"; then failed+=("$name"); fi
}
stage "tests" cargo nextest run --workspace --no-fail-fast -E 'not test(/^pressure_/)'
stage "pressure test" cargo nextest run --workspace --no-fail-fast -E 'test(/^pressure_/)'
stage "doc tests" cargo test --workspace --doc
# The fuzzing drives the server the tests just built (the test profile), so
# the suite builds the workspace once, not a second time in release mode.
stage "fuzzing" env GISTFANS_BIN="${CARGO_TARGET_DIR:-target}/debug/gistfans" bash scripts/fuzz.sh

if [ ${#failed[@]} -gt 0 ]; then
  echo "test: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test: all passed"
