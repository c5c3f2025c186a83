#!/usr/bin/env bash
# A streaming (physical) replica of the local PostgreSQL (127.0.0.1:5432),
# for the tests that read from a hot standby. Sourced by services.sh (which
# brings one up on 5433); also runs on its own:
#
#   scripts/replica.sh [up] [port]          replica up and caught up (default port 5433)
#   scripts/replica.sh stop [port]          stop our replica on that port (pg_ctl stop -m fast)
#   scripts/replica.sh delay <ms> [port]    set its recovery_min_apply_delay (0 = none)
#   scripts/replica.sh status [port]        one line: port, pid, in recovery, replay LSN, lag
#
# A second one for the tests that want two: `scripts/replica.sh up 5434`.
#
# Each replica is a cluster of its own in target/services/replica-<port>/
# (or under /tmp when the `postgres` user cannot reach the project's
# directory), owned by `postgres`, cloned from the primary with
# `pg_basebackup -X stream -R` and run with the primary's own major version's
# binaries (/usr/lib/postgresql/<major>/bin) as `postgres`: hot_standby and
# hot_standby_feedback on, 127.0.0.1 and a unix socket in its data directory
# only (/var/run/postgresql is the primary's), pg_stat_statements preloaded
# (its view answers on a standby; the extension itself comes with the
# primary's databases), its log in replica.log. Its postgresql.conf is
# written by this script (the settings a hot standby must not have below the
# primary's are copied from the primary) and the running replica is
# restarted when it changes; its pid is the one in postmaster.pid, checked
# against /proc (a postgres whose working directory is that data directory),
# so a recycled pid is never mistaken for ours.
#
# The primary gets what streaming needs, each only when missing: a
# `host replication all 127.0.0.1/32 trust` line in its pg_hba.conf, and
# wal_keep_size = 1GB (ALTER SYSTEM + reload) so that a replica stopped for
# a while catches up without a replication slot (a slot nobody consumes
# would keep WAL until the disk is full; none is created; pg_basebackup's
# temporary one ends with it).
#
# `up` changes nothing when the replica runs and streams; starts it when
# stopped; clones it when missing; and removes and clones it again when its
# data directory is broken, belongs to another primary, or can no longer
# catch up (its log says the WAL it needs has been removed). It then waits
# (60 s at most) until the replica answers, is in recovery and has replayed
# past the primary's WAL insert position taken when the wait began. A
# recovery_min_apply_delay left by a test is set back to 0 first. A replica
# on the port that another checkout of this project runs (a live worktree's
# target/services/replica-<port>) is used, not stopped; anything else on the
# port is an error.
#
# Replay delay (tests switch between 0 and 2 s): the replica's postgresql.conf
# ends with `include_if_exists = 'delay.conf'`; `delay <ms>` rewrites
# delay.conf (`recovery_min_apply_delay = '<ms>ms'`), resets any value set
# with ALTER SYSTEM (postgresql.auto.conf is read after delay.conf and would
# win), reloads the replica and waits until new sessions show the value.
# From a test, without this script or its files: ALTER SYSTEM works on a
# PostgreSQL 15 hot standby (it writes a file, no WAL), so on the replica
#   ALTER SYSTEM SET recovery_min_apply_delay = '2000ms';  -- or RESET for 0
#   SELECT pg_reload_conf();
# then poll, in a new connection (a session sees a reload only between
# statements), `SELECT setting::int FROM pg_settings WHERE name =
# 'recovery_min_apply_delay'` until it shows the value. Lowering the delay
# also releases a commit already waiting out the old one. The delay holds
# back the replay of commits (their commit time + delay, by this machine's
# one clock); `up` sets it back to 0 whichever way it was set.

RP_ADDR=127.0.0.1
RP_DEFAULT_PORT=${REPLICA_PORT:-5433}
RP_PRIMARY_ADDR=${PGHOST_ADDR:-127.0.0.1}
RP_PRIMARY_PORT=${PGPORT_NUM:-5432}
# The first line of every postgresql.conf this script writes: how a data
# directory (ours or another checkout's) is recognised as one of ours.
RP_HEADER="# Written by scripts/replica.sh; changes here are overwritten."
# Log lines after which the replica cannot catch up by itself.
RP_RECLONE_PATTERN='requested WAL segment [0-9A-F]* has already been removed|is not in this server.s history|database system identifier differs|highest timeline [0-9]* of the primary is behind'

rp_psql() { # port, db, sql
  PGCONNECT_TIMEOUT=3 psql -X -h "$RP_ADDR" -p "$1" -U postgres -d "$2" -v ON_ERROR_STOP=1 -Atqc "$3"
}
rp_primary() { # sql
  PGCONNECT_TIMEOUT=3 psql -X -h "$RP_PRIMARY_ADDR" -p "$RP_PRIMARY_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -Atqc "$1"
}

# The user the replica runs as, and a command run as that user (from /, so
# that a working directory it cannot enter draws no warnings).
rp_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }
rp_as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# The binaries of the primary's major version (a standby must match it).
RP_BIN=""
rp_bin() {
  if [ -z "$RP_BIN" ]; then
    local num
    num=$(rp_primary "SHOW server_version_num") || return 1
    RP_BIN="/usr/lib/postgresql/$((num / 10000))/bin"
    [ -x "$RP_BIN/pg_ctl" ] || { echo "services: $RP_BIN/pg_ctl not found" >&2; RP_BIN=""; return 1; }
  fi
  echo "$RP_BIN"
}

rp_check_port() { # port
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" != "$RP_PRIMARY_PORT" ] && return 0
  echo "services: bad replica port '$1'" >&2
  return 1
}

# The data directory: <repo>/target/services/replica-<port>, or one under
# /tmp named after the repository when `postgres` cannot reach the
# project's directory (a repository under /root, say). Nothing is chmod-ed
# outside target/.
rp_dir() { # port
  local base="$ROOT/target/services"
  mkdir -p "$base" 2>/dev/null || true
  if ! rp_as_pg test -x "$base" 2>/dev/null; then
    base="/tmp/gistfans-services-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
    mkdir -p "$base" && chmod 755 "$base"
  fi
  echo "$base/replica-$1"
}

# One run per port at a time (two test runs starting at once would clone
# into one directory): a lock held until rp_unlock. The lock file lies
# beside the data directory, which a re-clone removes.
RP_LOCK_FD=""
rp_lock() { # port
  local lockfile
  lockfile="$(rp_dir "$1").lock"
  exec {RP_LOCK_FD}>"$lockfile"
  flock -w 180 "$RP_LOCK_FD" && return 0
  echo "services: another run still holds $lockfile after 180 s" >&2
  return 1
}
# Released as soon as we are done: services.sh goes on to start other
# daemons, which must not inherit (and so hold) it.
rp_unlock() { [ -n "$RP_LOCK_FD" ] && exec {RP_LOCK_FD}>&- ; RP_LOCK_FD=""; }

# The pid of our replica, if it runs: the first line of postmaster.pid, a
# process named postgres whose working directory is our data directory.
rp_pid() { # dir
  local pid
  pid=$(head -n1 "$1/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] \
    && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$1")" ] && echo "$pid"
}

rp_port_open() { (exec 3<>"/dev/tcp/$RP_ADDR/$1") 2>/dev/null; }

# The data directory of the server answering on port, when it is a replica
# this script made (ours or another checkout's): its postgresql.conf starts
# with our header.
rp_served_dir() { # port
  local dir
  dir=$(rp_psql "$1" postgres "SELECT current_setting('data_directory')" 2>/dev/null) || return 1
  [ "$(head -n1 "$dir/postgresql.conf" 2>/dev/null)" = "$RP_HEADER" ] && echo "$dir"
}

# What the primary needs for streaming replicas; each only when missing.
rp_prepare_primary() {
  local hba senders
  hba=$(rp_primary "SHOW hba_file") || return 1
  if ! rp_primary_replication_ok; then
    if ! grep -Eq '^[[:space:]]*host[[:space:]]+replication[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
      echo "services: allowing replication connections from 127.0.0.1 in $hba"
      printf '%s\n' "# Added by scripts/replica.sh (gistfans): streaming replicas on this machine" \
        "host    replication     all             127.0.0.1/32            trust" >>"$hba" || return 1
      rp_primary "SELECT pg_reload_conf()" >/dev/null || return 1
      for _ in $(seq 1 20); do rp_primary_replication_ok && break; sleep 0.1; done
    fi
    if ! rp_primary_replication_ok; then
      echo "services: the primary refuses replication connections from 127.0.0.1 as postgres:" >&2
      rp_primary_replication_ok show >&2
      return 1
    fi
  fi
  if [ "$(rp_primary "SELECT setting FROM pg_settings WHERE name = 'wal_keep_size'")" = 0 ]; then
    echo "services: setting wal_keep_size = 1GB on the primary (a stopped replica catches up without a slot)"
    rp_primary "ALTER SYSTEM SET wal_keep_size = '1GB'" || return 1
    rp_primary "SELECT pg_reload_conf()" >/dev/null || return 1
  fi
  senders=$(rp_primary "SHOW max_wal_senders") || return 1
  if [ "$senders" -lt 4 ]; then
    echo "services: the primary has max_wal_senders = $senders; replicas and the change stream need more (scripts/services.sh sets 10)" >&2
    return 1
  fi
}

# True when a replication connection to the primary is accepted (with
# `show`, prints why not).
rp_primary_replication_ok() {
  local out
  out=$(PGCONNECT_TIMEOUT=3 psql -X "host=$RP_PRIMARY_ADDR port=$RP_PRIMARY_PORT user=postgres replication=true" \
    -Atqc IDENTIFY_SYSTEM 2>&1) && return 0
  [ "${1:-}" = show ] && echo "$out"
  return 1
}

# SQL quoting of a configuration value.
rp_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# The replica's postgresql.conf. Settings a hot standby must have at least
# as high as the primary's, those a query's result depends on (time zone,
# date style, locales), and those its speed depends on (memory, planner
# costs: a read routed to the replica should cost what it costs on the
# primary), are the primary's.
rp_config() { # port, dir
  local name value preload
  echo "$RP_HEADER"
  cat <<EOF
# A hot standby of $RP_PRIMARY_ADDR:$RP_PRIMARY_PORT (standby.signal).
port = $1
listen_addresses = '$RP_ADDR'
unix_socket_directories = $(rp_quote "$2")
cluster_name = 'replica-$1'
primary_conninfo = 'host=$RP_PRIMARY_ADDR port=$RP_PRIMARY_PORT user=postgres application_name=replica-$1'
hot_standby = on
hot_standby_feedback = on
ssl = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  while IFS='|' read -r name value; do
    if [ "$name" = shared_preload_libraries ]; then
      preload=$value
      [[ ",${preload// /}," == *,pg_stat_statements,* ]] || preload="${preload:+$preload,}pg_stat_statements"
      value=$preload
    fi
    echo "$name = $(rp_quote "$value")"
  done < <(rp_primary "SELECT name, setting FROM pg_settings WHERE name IN (
      'max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions',
      'max_locks_per_transaction', 'shared_preload_libraries', 'TimeZone', 'log_timezone',
      'DateStyle', 'lc_messages', 'lc_monetary', 'lc_numeric', 'lc_time',
      'default_text_search_config', 'shared_buffers', 'work_mem', 'effective_cache_size',
      'random_page_cost', 'seq_page_cost', 'jit') ORDER BY name")
  echo "# recovery_min_apply_delay, set by \`scripts/replica.sh delay <ms> $1\`; read last"
  echo "include_if_exists = 'delay.conf'"
}

rp_write() { # file (content on stdin): written as root, owned by the replica's user
  cat >"$1" && chown "$(rp_user)" "$1" && chmod 600 "$1"
}

# True when dir holds a usable standby data directory of this very primary.
rp_dir_ok() { # dir
  local bin ours theirs
  bin=$(rp_bin) || return 1
  [ -f "$1/PG_VERSION" ] && [ -f "$1/global/pg_control" ] && [ -f "$1/standby.signal" ] \
    && [ "$(head -n1 "$1/postgresql.conf" 2>/dev/null)" = "$RP_HEADER" ] || return 1
  [ "$(cat "$1/PG_VERSION")" = "$(basename "$(dirname "$bin")")" ] || return 1
  ours=$(rp_as_pg "$bin/pg_controldata" -D "$1" 2>/dev/null | sed -n 's/^Database system identifier: *//p')
  theirs=$(rp_primary "SELECT system_identifier FROM pg_control_system()") || return 1
  [ -n "$ours" ] && [ "$ours" = "$theirs" ]
}

# Removes our data directory (never while our replica runs in it).
rp_remove() { # dir
  [[ "$1" == */replica-[0-9]* ]] || return 1
  if rp_pid "$1" >/dev/null; then echo "services: refusing to remove $1: its replica runs" >&2; return 1; fi
  rm -rf "$1"
}

# A fresh clone of the primary in dir, with our configuration.
rp_clone() { # port, dir
  local bin start
  bin=$(rp_bin) || return 1
  rp_remove "$2" || return 1
  mkdir -p "$2" && chown "$(rp_user)" "$2" && chmod 700 "$2" || return 1
  echo "services: cloning the primary into $2 (pg_basebackup)"
  start=$(date +%s.%N)
  # -c fast: the checkpoint the backup starts from is taken at once rather
  # than spread over minutes.
  if ! rp_as_pg "$bin/pg_basebackup" -h "$RP_PRIMARY_ADDR" -p "$RP_PRIMARY_PORT" -U postgres \
      -D "$2" -X stream -R -c fast --no-password {RP_LOCK_FD}>&- >"$2.basebackup.log" 2>&1; then
    echo "services: pg_basebackup into $2 failed:" >&2
    tail -n 20 "$2.basebackup.log" >&2
    return 1
  fi
  rm -f "$2.basebackup.log"
  # The primary's ALTER SYSTEM settings came along (wal_level, ...), and -R
  # appended a primary_conninfo: postgresql.conf is the one place for both.
  printf '%s\n' "# Do not edit this file manually!" "# It will be overwritten by the ALTER SYSTEM command." \
    | rp_write "$2/postgresql.auto.conf" || return 1
  rp_config "$1" "$2" | rp_write "$2/postgresql.conf" || return 1
  printf '%s\n' "local all all trust" "host all all $RP_ADDR/32 trust" "host replication all $RP_ADDR/32 trust" \
    | rp_write "$2/pg_hba.conf" || return 1
  : | rp_write "$2/pg_ident.conf" || return 1
  echo "recovery_min_apply_delay = '0ms'" | rp_write "$2/delay.conf" || return 1
  echo "services: cloned in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s ($(du -sh "$2" | cut -f1))"
}

rp_start() { # port, dir
  local bin
  bin=$(rp_bin) || return 1
  echo "services: starting the replica on $RP_ADDR:$1 (files in $2)"
  # -W: our own wait (rp_wait) also watches the log for a replica that
  # cannot catch up.
  rp_as_pg "$bin/pg_ctl" -D "$2" -l "$2/replica.log" -W start {RP_LOCK_FD}>&- >/dev/null
}

rp_stop_dir() { # dir, pid
  local bin
  bin=$(rp_bin) || return 1
  echo "services: stopping the replica in $1 (pid $2)"
  rp_as_pg "$bin/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null
}

# The primary's WAL insert position, as an LSN a replica that has replayed
# everything reaches: an insert position just past a page header (the last
# record ended at the page's end) is taken back to the page's start, where
# the last record's replay ends.
rp_target_lsn() {
  rp_primary "SELECT CASE WHEN o <= 40 THEN l - o ELSE l END
      FROM (SELECT l, (l - '0/0'::pg_lsn) % current_setting('wal_block_size')::int AS o
            FROM (SELECT pg_current_wal_insert_lsn() AS l) s) t"
}

# Waits (60 s at most) until the replica on port answers, is in recovery and
# has replayed past the primary's position at the start. Returns 3 when its
# log (after byte `from`) says it must be cloned again, 2 when it died.
rp_wait() { # port, dir, log offset (empty: not ours, its log is not watched)
  local port=$1 dir=$2 from=$3 target state gone=0
  target=$(rp_target_lsn) || return 1
  for _ in $(seq 1 300); do
    state=$(rp_psql "$port" postgres "SELECT pg_is_in_recovery(),
        coalesce(pg_last_wal_replay_lsn() >= '$target'::pg_lsn, false)" 2>/dev/null) || state=""
    [ "$state" = "t|t" ] && return 0
    if [ -n "$from" ] && tail -c +"$((from + 1))" "$dir/replica.log" 2>/dev/null | grep -Eq "$RP_RECLONE_PATTERN"; then
      return 3
    fi
    # Gone for 3 s: not just a postmaster.pid not written yet.
    if [ -n "$from" ] && ! rp_pid "$dir" >/dev/null; then
      gone=$((gone + 1)); [ "$gone" -ge 15 ] && return 2
    else
      gone=0
    fi
    [ "$state" = "f|f" ] || [ "$state" = "f|t" ] && {
      echo "services: the server on $RP_ADDR:$port is not in recovery (promoted?)" >&2; return 1; }
    sleep 0.2
  done
  echo "services: the replica on $RP_ADDR:$port did not catch up with the primary (LSN $target) in 60 s;" \
    "now: $(replica_status "$port" 2>&1)" >&2
  [ -f "$dir/replica.log" ] && { echo "--- end of $dir/replica.log:" >&2; tail -n 15 "$dir/replica.log" >&2; }
  return 1
}

rp_log_size() { stat -c %s "$1/replica.log" 2>/dev/null || echo 0; }

# Sets the recovery_min_apply_delay of the replica that runs in dir on port
# and waits until new sessions see it.
# A value a test set with ALTER SYSTEM (postgresql.auto.conf, read after
# delay.conf) is reset, so that the one in delay.conf holds.
rp_set_delay() { # port, dir, ms
  echo "recovery_min_apply_delay = '$3ms'" | rp_write "$2/delay.conf" || return 1
  if grep -q '^recovery_min_apply_delay' "$2/postgresql.auto.conf" 2>/dev/null; then
    rp_psql "$1" postgres "ALTER SYSTEM RESET recovery_min_apply_delay" || return 1
  fi
  rp_psql "$1" postgres "SELECT pg_reload_conf()" >/dev/null || return 1
  for _ in $(seq 1 50); do
    [ "$(rp_delay_now "$1")" = "$3" ] && return 0
    sleep 0.1
  done
  echo "services: the replica on $RP_ADDR:$1 did not take recovery_min_apply_delay = $3ms" >&2
  return 1
}
rp_delay_now() { rp_psql "$1" postgres "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'"; }

# Up, under the lock (see the header). Every failure is returned, not left
# to `set -e`, which does not apply in a function called from `||`.
rp_ensure_locked() { # port
  local port=$1 dir pid other from rc delay attempt
  dir=$(rp_dir "$port") || return 1
  rp_prepare_primary || return 1
  pid=$(rp_pid "$dir") || pid=""

  if [ -z "$pid" ] && rp_port_open "$port"; then
    other=$(rp_served_dir "$port") || other=""
    # A standby reports its primary's system identifier.
    if [ -n "$other" ] && [ "$other" != "$(readlink -f "$dir")" ] && [ -d "$other" ] \
       && [ "$(rp_psql "$port" postgres "SELECT pg_is_in_recovery(), system_identifier FROM pg_control_system()")" \
            = "t|$(rp_primary "SELECT system_identifier FROM pg_control_system()")" ]; then
      echo "services: the replica on $RP_ADDR:$port is another checkout's ($other); using it"
      rp_wait "$port" "$other" ""
      return
    fi
    echo "services: $RP_ADDR:$port is taken by a server that is not our replica; stop it:" >&2
    ss -ltnpH "sport = :$port" >&2 2>/dev/null || true
    return 1
  fi

  if [ -n "$pid" ]; then
    if ! rp_config "$port" "$dir" | cmp -s - "$dir/postgresql.conf"; then
      echo "services: the replica's configuration changed (the primary's settings?); restarting it"
      rp_stop_dir "$dir" "$pid" || return 1
      rp_config "$port" "$dir" | rp_write "$dir/postgresql.conf" || return 1
      pid=""
    else
      delay=$(rp_delay_now "$port" 2>/dev/null) || delay=""
      if [ -n "$delay" ] && [ "$delay" != 0 ]; then
        echo "services: the replica on $RP_ADDR:$port had recovery_min_apply_delay = ${delay}ms (left by a test?); setting it to 0"
        rp_set_delay "$port" "$dir" 0 || return 1
      fi
      # Running: caught up means it streams; a receiver that keeps failing
      # for want of removed WAL shows in the end of the log.
      from=$(( $(rp_log_size "$dir") > 20000 ? $(rp_log_size "$dir") - 20000 : 0 ))
      rp_wait "$port" "$dir" "$from"
      rc=$?
      [ "$rc" = 0 ] && return 0
      [ "$rc" = 3 ] || return 1
      echo "services: the replica on $RP_ADDR:$port can no longer catch up (its WAL is gone from the primary); cloning it again"
      rp_stop_dir "$dir" "$pid" || return 1
      rp_clone "$port" "$dir" || return 1
      pid=""
    fi
  fi

  for attempt in 1 2; do
    if [ ! -e "$dir" ]; then
      rp_clone "$port" "$dir" || return 1
    elif ! rp_dir_ok "$dir"; then
      echo "services: $dir is not a usable replica of this primary; cloning it again"
      rp_clone "$port" "$dir" || return 1
    else
      rp_config "$port" "$dir" | cmp -s - "$dir/postgresql.conf" \
        || rp_config "$port" "$dir" | rp_write "$dir/postgresql.conf" || return 1
      # No delay left by a test: neither in delay.conf nor by ALTER SYSTEM.
      echo "recovery_min_apply_delay = '0ms'" | rp_write "$dir/delay.conf" || return 1
      sed -i '/^recovery_min_apply_delay/d' "$dir/postgresql.auto.conf" || return 1
    fi
    from=$(rp_log_size "$dir")
    rp_start "$port" "$dir" || {
      echo "services: pg_ctl start failed; end of $dir/replica.log:" >&2; tail -n 15 "$dir/replica.log" >&2; return 1; }
    rp_wait "$port" "$dir" "$from"
    rc=$?
    [ "$rc" = 0 ] && return 0
    if [ "$attempt" = 2 ] || { [ "$rc" != 3 ] && [ "$rc" != 2 ]; }; then
      [ "$rc" = 2 ] && { echo "services: the replica on $RP_ADDR:$port stopped while starting:" >&2; tail -n 15 "$dir/replica.log" >&2; }
      return 1
    fi
    if [ "$rc" = 3 ]; then
      echo "services: the replica on $RP_ADDR:$port can no longer catch up (its WAL is gone from the primary); cloning it again"
    else
      echo "services: the replica on $RP_ADDR:$port did not start (end of its log below); cloning it again"
      tail -n 5 "$dir/replica.log"
    fi
    pid=$(rp_pid "$dir") && { rp_stop_dir "$dir" "$pid" || return 1; }
    rp_clone "$port" "$dir" || return 1
  done
}

replica_ensure() { # [port]
  local port=${1:-$RP_DEFAULT_PORT} rc=0
  rp_check_port "$port" || return 1
  rp_lock "$port" || return 1
  rp_ensure_locked "$port" || rc=$?
  rp_unlock
  return "$rc"
}

replica_stop() { # [port]
  local port=${1:-$RP_DEFAULT_PORT} dir pid rc=0
  rp_check_port "$port" || return 1
  dir=$(rp_dir "$port") || return 1
  rp_lock "$port" || return 1
  if pid=$(rp_pid "$dir"); then
    rp_stop_dir "$dir" "$pid" || rc=1
  elif rp_port_open "$port" && rp_served_dir "$port" >/dev/null; then
    echo "services: the replica on $RP_ADDR:$port is another checkout's ($(rp_served_dir "$port")); not stopping it"
  else
    echo "services: our replica on $RP_ADDR:$port is not running"
  fi
  rp_unlock
  return "$rc"
}

replica_delay() { # ms, [port]
  local ms=${1:-} port=${2:-$RP_DEFAULT_PORT} dir rc=0
  [[ "$ms" =~ ^[0-9]+$ ]] || { echo "usage: replica.sh delay <ms> [port]" >&2; return 2; }
  rp_check_port "$port" || return 1
  dir=$(rp_served_dir "$port") || {
    echo "services: no replica of ours answers on $RP_ADDR:$port (scripts/replica.sh up $port)" >&2; return 1; }
  rp_lock "$port" || return 1
  rp_set_delay "$port" "$dir" "$ms" || rc=1
  rp_unlock
  [ "$rc" = 0 ] && echo "services: replica $RP_ADDR:$port recovery_min_apply_delay = ${ms}ms"
  return "$rc"
}

# One line; exit status 3 when no replica answers on the port.
replica_status() { # [port]
  local port=${1:-$RP_DEFAULT_PORT} row recv replay lag
  row=$(rp_psql "$port" postgres "SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1),
      pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, 'none'),
      coalesce((SELECT status FROM pg_stat_wal_receiver), 'no receiver'),
      current_setting('recovery_min_apply_delay'), current_setting('data_directory')" 2>/dev/null) || {
    echo "replica $RP_ADDR:$port: not running"; return 3; }
  IFS='|' read -r pid recovery replay recv delay dir <<<"$row"
  if [ "$replay" = none ]; then lag="?"; else
    lag=$(rp_primary "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$replay')" 2>/dev/null) || lag="?"
  fi
  echo "replica $RP_ADDR:$port: pid $pid, in recovery $recovery, replay lsn $replay, lag $lag bytes (receiver $recv, delay $delay, $dir)"
}

replica_version() { rp_psql "${1:-$RP_DEFAULT_PORT}" postgres "SHOW server_version" | cut -d' ' -f1; }

# Run on its own rather than sourced by services.sh.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "$0")/.." && pwd)
  case "${1:-up}" in
    up) replica_ensure "${2:-}"
        echo "services: replica ($(replica_version "${2:-}"), hot standby of $RP_PRIMARY_ADDR:$RP_PRIMARY_PORT, $RP_ADDR:${2:-$RP_DEFAULT_PORT}) ready" ;;
    stop) replica_stop "${2:-}" ;;
    delay) replica_delay "${2:-}" "${3:-}" ;;
    status) replica_status "${2:-}" ;;
    *) echo "usage: $0 [up|stop|delay <ms>|status] [port]" >&2; exit 2 ;;
  esac
fi
