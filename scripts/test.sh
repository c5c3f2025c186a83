#!/usr/bin/env bash
# The whole test suite, with its set-up: starts PostgreSQL (with
# pg_stat_statements), Redis and our PgBouncer (127.0.0.1:6432, transaction
# mode) if they are down, then runs every test of every crate (unit,
# integration, doc). PostgreSQL and PgBouncer tests never skip: they fail
# when the server cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: cargo-nextest not found, installing it"
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc
bash scripts/fuzz.sh
