#!/usr/bin/env bash
# Makes sure the services the test suite talks to are up and ready:
# PostgreSQL (with pg_stat_statements loaded and installed in the test
# database, wal_level = logical, max_slot_wal_keep_size = 1GB and, set by
# replica.sh, wal_keep_size = 1GB), Redis, our own PgBouncer in transaction mode on 127.0.0.1:6432
# in front of that PostgreSQL, our own Redis Cluster on
# 127.0.0.1:7000-7005, a streaming replica of that PostgreSQL (a hot
# standby on 127.0.0.1:5433, for the tests that read from one), and MariaDB
# on 127.0.0.1:3306 (root without a
# password, database `test`; installed when missing); installs headless
# Chromium and chromedriver for the browser tests when missing. Starts what is down; changes nothing that is
# fine. Idempotent; safe to run before every test run.
#
#   scripts/services.sh                  everything up
#   scripts/services.sh stop-pgbouncer   stop our PgBouncer (by its pid file)
#   scripts/services.sh stop-redis-cluster
#                                        stop our Redis Cluster (by its pid files)
#   scripts/services.sh stop-replica     stop our replica on 5433 (pg_ctl stop -m fast)
#   scripts/redis-cluster.sh [stop]      just the Redis Cluster, up (or stopped)
#   scripts/replica.sh [up|stop|delay <ms>|status] [port]
#                                        just a replica (5433 unless a port is
#                                        given, e.g. a second one on 5434), its
#                                        replay delay, its state
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
PGPORT_NUM=${PGPORT_NUM:-5432}
PGDB=${PGDB:-test}
psql_() { psql -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres -d "$1" -v ON_ERROR_STOP=1 -Atqc "$2"; }

pg_cluster_version() { ls /etc/postgresql | sort -V | tail -n1; }

start_postgres() {
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster_version)" main start || true
}

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "services: $name did not come up in 30 s" >&2
  return 1
}

# shellcheck source=scripts/pgbouncer.sh
source "$ROOT/scripts/pgbouncer.sh"
# shellcheck source=scripts/redis-cluster.sh
source "$ROOT/scripts/redis-cluster.sh"
# shellcheck source=scripts/replica.sh
source "$ROOT/scripts/replica.sh"
# shellcheck source=scripts/chromium.sh
source "$ROOT/scripts/chromium.sh"
# shellcheck source=scripts/mariadb.sh
source "$ROOT/scripts/mariadb.sh"

case "${1:-}" in
  "") ;;
  stop-pgbouncer) pgbouncer_stop; exit 0 ;;
  stop-redis-cluster) redis_cluster_stop; exit 0 ;;
  stop-replica) replica_stop; exit 0 ;;
  *) echo "usage: $0 [stop-pgbouncer|stop-redis-cluster|stop-replica]" >&2; exit 2 ;;
esac

if ! command -v psql >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "services: installing PostgreSQL and Redis clients/servers"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
fi

if ! pg_isready -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -q; then
  start_postgres
fi
wait_for PostgreSQL pg_isready -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -q

# Settings that need a restart are all set first, then PostgreSQL restarts
# once: pg_stat_statements, and logical replication for hpdb::changes (the
# change-stream invalidator: wal_level = logical) with a bound on the WAL a
# slot may retain (max_slot_wal_keep_size; a reload suffices for it), and
# WAL senders for it and the replicas (replica.sh).
restart=no
preload=$(psql_ postgres "SHOW shared_preload_libraries")
if [[ "$preload" != *pg_stat_statements* ]]; then
  echo "services: enabling pg_stat_statements (needs a PostgreSQL restart)"
  if [ -n "$preload" ]; then new="$preload,pg_stat_statements"; else new="pg_stat_statements"; fi
  psql_ postgres "ALTER SYSTEM SET shared_preload_libraries = '$new'"
  restart=yes
fi
if [ "$(psql_ postgres "SHOW wal_level")" != logical ]; then
  echo "services: setting wal_level = logical (needs a PostgreSQL restart)"
  psql_ postgres "ALTER SYSTEM SET wal_level = 'logical'"
  restart=yes
fi
if [ "$(psql_ postgres "SHOW max_wal_senders")" -lt 10 ]; then
  echo "services: setting max_wal_senders = 10 (needs a PostgreSQL restart)"
  psql_ postgres "ALTER SYSTEM SET max_wal_senders = 10"
  restart=yes
fi
if [ "$(psql_ postgres "SHOW max_slot_wal_keep_size")" = "-1" ]; then
  echo "services: setting max_slot_wal_keep_size = 1GB"
  psql_ postgres "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'"
  psql_ postgres "SELECT pg_reload_conf()" >/dev/null
fi
if [ "$restart" = yes ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster_version)" main restart
  wait_for PostgreSQL pg_isready -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -q
fi
psql_ "$PGDB" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping

pgbouncer_ensure
redis_cluster_ensure
replica_ensure
mariadb_ensure
chromium_ensure

echo "services: PostgreSQL ($(psql_ postgres 'SHOW server_version'), pg_stat_statements on, wal_level $(psql_ postgres 'SHOW wal_level')), Redis ($(redis-cli -h 127.0.0.1 ping)), PgBouncer ($(pgbouncer_version), transaction mode, $PGB_ADDR:$PGB_PORT), Redis Cluster ($(redis_cluster_version), 3 masters + 3 replicas, $RC_ADDR:$RC_FIRST_PORT-$RC_LAST_PORT), a PostgreSQL replica ($(replica_version), hot standby, $RP_ADDR:$RP_DEFAULT_PORT), MariaDB ($(mariadb_version), $MY_ADDR:$MY_PORT) and Chromium ($(chromium_version), chromedriver) ready"
