#!/usr/bin/env bash
# The whole test suite, with its set-up: starts PostgreSQL (with
# pg_stat_statements), Redis, our PgBouncer (127.0.0.1:6432, transaction
# mode), a local Redis Cluster (127.0.0.1:7000-7005) and headless Chromium
# if they are down, then runs every test of every crate (unit, integration,
# doc). No test skips: one that needs a service fails when it cannot reach it.
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
