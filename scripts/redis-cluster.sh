#!/usr/bin/env bash
# A local Redis Cluster, for the tests that talk to a cluster rather than to
# the single Redis on 6379: six `redis-server --cluster-enabled yes` nodes on
# 127.0.0.1:7000-7005 (three masters, one replica each). Sourced by
# services.sh; also runs on its own, to start or stop just the cluster:
#
#   scripts/redis-cluster.sh          cluster up (a no-op when it is)
#   scripts/redis-cluster.sh stop     stop our nodes (by their pid files)
#
# Each node runs daemonized from its own directory under the project's
# scratch directory, target/services/redis-cluster/<port>/ (nodes.conf,
# redis.log, redis.pid; it is also the node's working directory), and is
# stopped by the pid in its pid file, checked against /proc (a redis-server
# whose working directory is that very directory) so a recycled pid is never
# mistaken for ours. Nothing is saved: no RDB, no AOF.
#
# When all six are ours (or another live checkout's on this machine, with
# the same options) and the cluster is healthy, nothing is done.
# Otherwise the cluster is made again from scratch: our nodes are stopped,
# and so is any other redis-server in cluster mode on one of the six ports
# (a cluster an earlier clone of this project left behind, its directory
# perhaps deleted), found by the `process_id` its port reports and stopped
# by that pid; the nodes.conf files are deleted; six fresh nodes are started
# and joined with `redis-cli --cluster create`. Anything else on those ports
# (or on their cluster-bus ports, +10000) is an error, and the Redis on 6379
# is never touched.

RC_ADDR=127.0.0.1
RC_FIRST_PORT=${RC_FIRST_PORT:-7000}
RC_PORTS=()
for _rc_i in 0 1 2 3 4 5; do RC_PORTS+=($((RC_FIRST_PORT + _rc_i))); done
unset _rc_i
RC_LAST_PORT=${RC_PORTS[5]}

rc_dir() { echo "$ROOT/target/services/redis-cluster"; }

# The options of every node (beside its port and its files); a cluster
# started with other options is made again.
rc_options() {
  printf '%s\n' --bind "$RC_ADDR" --cluster-enabled yes --cluster-node-timeout 2000 \
    --save "" --appendonly no --repl-diskless-sync-delay 0
}

# redis-cli against one node, never hanging on a port that does not answer.
rc_cli() { # port, args...
  local port=$1; shift
  timeout 3 redis-cli -h "$RC_ADDR" -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

# One `field:value` line of INFO or CLUSTER INFO output (on stdin).
rc_field() { sed -n "s/^$1://p" | head -n1; }

rc_port_open() { (exec 3<>"/dev/tcp/$RC_ADDR/$1") 2>/dev/null; }

# True when pid is a live redis-server process (by its comm: Debian's
# /usr/bin/redis-server is a symlink, so /proc/<pid>/exe names redis-check-rdb).
rc_is_redis_server() { rc_running "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = redis-server ]; }

# The pid of the Redis on 6379, which is never ours to stop.
rc_protected_pid() { rc_cli 6379 info server | rc_field process_id; }

# The pid of our node on port, if it runs: the pid in its pid file, a
# redis-server whose working directory is the node's directory (not a
# deleted one, which /proc shows with a " (deleted)" suffix).
rc_our_pid() { # port
  local dir pid
  dir="$(rc_dir)/$1"
  pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && rc_is_redis_server "$pid" \
    && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$dir")" ] && echo "$pid"
}

# True while pid runs: a zombie has ended (it holds no port any more; an
# init that reaps its orphans late would otherwise make every stop wait).
rc_running() { # pid
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) && [ -n "$state" ] && [ "$state" != Z ]
}

# Sends TERM to the given pids and waits (10 s at most) until all have ended.
rc_kill_wait() { # pids...
  local protected pid left
  protected=$(rc_protected_pid) || protected=""
  for pid in "$@"; do
    if [ -n "$protected" ] && [ "$pid" = "$protected" ]; then
      echo "services: refusing to stop pid $pid: it is the Redis on 6379" >&2
      return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    left=""
    for pid in "$@"; do rc_running "$pid" && left="$left $pid"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  echo "services: Redis Cluster node(s) (pid$left) did not stop in 10 s" >&2
  return 1
}

# One run at a time (two test runs starting at once would otherwise each
# stop the other's half-made cluster): a lock held from rc_lock to
# rc_unlock, never longer. Whatever starts while it is held (the nodes)
# must not inherit its descriptor, and it is released before services.sh
# goes on: a daemon started later in the same shell (the replica, MariaDB)
# would otherwise inherit it and hold it for its whole life, so the next
# run would wait for it in vain.
RC_LOCK_FD=""
rc_lock() {
  [ -n "$RC_LOCK_FD" ] && return 0
  mkdir -p "$(rc_dir)"
  exec {RC_LOCK_FD}>"$(rc_dir)/lock"
  flock -w 120 "$RC_LOCK_FD" && return 0
  echo "services: another run still holds $(rc_dir)/lock after 120 s" >&2
  rc_unlock
  return 1
}
rc_unlock() { [ -n "$RC_LOCK_FD" ] && exec {RC_LOCK_FD}>&- ; RC_LOCK_FD=""; }

# Runs "$@" under the lock (taken here unless the caller holds it already)
# and releases it afterwards when it was taken here.
rc_locked() {
  local rc=0
  if [ -n "$RC_LOCK_FD" ]; then "$@"; return; fi
  rc_lock || return 1
  "$@" || rc=$?
  rc_unlock
  return "$rc"
}

# Stops our nodes (those our pid files name) and removes their pid and
# nodes.conf files, so the next start makes a fresh cluster.
redis_cluster_stop() { rc_locked rc_stop_locked; }
rc_stop_locked() {
  local port pid pids=() dir
  dir=$(rc_dir)
  for port in "${RC_PORTS[@]}"; do
    pid=$(rc_our_pid "$port") && pids+=("$pid")
  done
  if [ ${#pids[@]} = 0 ]; then
    echo "services: our Redis Cluster is not running"
  else
    echo "services: stopping Redis Cluster (pids ${pids[*]})"
    rc_kill_wait "${pids[@]}"
  fi
  for port in "${RC_PORTS[@]}"; do
    rm -f "$dir/$port/redis.pid" "$dir/$port/nodes.conf"
  done
}

# Stops whatever redis-server in cluster mode answers on one of our ports
# and is not ours (found by the process_id it reports); nothing else.
rc_stop_others() {
  local port info pid mode pids=() what=() dirs=()
  for port in "${RC_PORTS[@]}"; do
    rc_port_open "$port" || continue
    info=$(rc_cli "$port" info) || continue
    pid=$(rc_field process_id <<<"$info")
    mode=$(rc_field cluster_enabled <<<"$info")
    [ -n "$pid" ] && [ "$mode" = 1 ] && rc_is_redis_server "$pid" || continue
    [ "$pid" = "$(rc_our_pid "$port")" ] && continue
    pids+=("$pid"); what+=("$port pid $pid")
    dirs+=("$({ readlink "/proc/$pid/cwd" 2>/dev/null || echo '?'; } | sed 's|/[0-9]*\( (deleted)\)\{0,1\}$|\1|')")
  done
  [ ${#pids[@]} = 0 ] && return 0
  echo "services: stopping Redis Cluster nodes this checkout did not start ($(IFS=,; echo "${what[*]}" | sed 's/,/, /g'); run from $(printf '%s\n' "${dirs[@]}" | sort -u | paste -sd' '))"
  rc_kill_wait "${pids[@]}"
}

# The pid of the node on port if another checkout of this project on this
# machine runs it (a clone or a worktree whose directory still exists),
# with our options: several checkouts share one healthy cluster instead of
# each stopping the other's, mid-test.
rc_shared_pid() { # port
  local pid cwd
  pid=$(rc_cli "$1" info server | rc_field process_id)
  [ -n "$pid" ] && rc_is_redis_server "$pid" || return 1
  cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
  [ -d "$cwd" ] && [ -f "$cwd/redis.pid" ] || return 1 # a deleted directory reads "<dir> (deleted)"
  rc_options | cmp -s - "$(dirname "$cwd")/options" && echo "$pid"
}

# The pid of the node on port: ours (started with our options), or a live
# checkout's (rc_shared_pid).
rc_node_pid() { # port
  local pid
  if pid=$(rc_our_pid "$1"); then
    rc_options | cmp -s - "$(rc_dir)/options" && echo "$pid"
  else
    rc_shared_pid "$1"
  fi
}

# True when every node is ours or a live checkout's, and says the cluster
# is ok, all 16384 slots served, six nodes known.
rc_healthy() {
  local port pid
  for port in "${RC_PORTS[@]}"; do
    pid=$(rc_node_pid "$port") || return 1
    [ "$(rc_cli "$port" info server | rc_field process_id)" = "$pid" ] || return 1
    rc_cluster_ok "$port" || return 1
  done
}

rc_cluster_ok() { # port
  local info
  info=$(rc_cli "$1" cluster info) || return 1
  [ "$(rc_field cluster_state <<<"$info")" = ok ] \
    && [ "$(rc_field cluster_slots_ok <<<"$info")" = 16384 ] \
    && [ "$(rc_field cluster_known_nodes <<<"$info")" = 6 ]
}

# True once every replica has its master link up (so a test may fail over
# at once).
rc_replicas_synced() {
  local port info
  for port in "${RC_PORTS[@]}"; do
    info=$(rc_cli "$port" info replication) || return 1
    if [ "$(rc_field role <<<"$info")" = slave ]; then
      [ "$(rc_field master_link_status <<<"$info")" = up ] || return 1
    fi
  done
}

# Polls a command every 0.1 s, at most the given number of seconds.
rc_wait() { # seconds, command...
  local tries=$(($1 * 10)); shift
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

rc_all_answer() {
  local port
  for port in "${RC_PORTS[@]}"; do
    [ "$(rc_cli "$port" ping)" = PONG ] || return 1
  done
}

# Prints what went wrong, with the end of each node's log, and fails.
rc_fail() { # message
  local dir port
  dir=$(rc_dir)
  echo "services: $1" >&2
  [ -s "$dir/create.log" ] && { echo "--- redis-cli --cluster create:" >&2; tail -n 20 "$dir/create.log" >&2; }
  for port in "${RC_PORTS[@]}"; do
    echo "--- $port: $(rc_cli "$port" cluster info | grep -E '^cluster_(state|slots_ok|known_nodes):' | tr '\n' ' ')" >&2
    tail -n 10 "$dir/$port/redis.log" 2>/dev/null >&2 || true
  done
  return 1
}

redis_cluster_version() { redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }

# Installs redis-server and redis-cli if missing; leaves a healthy cluster
# of ours (or a live checkout's) alone; otherwise makes one from scratch
# and waits until it is ok.
redis_cluster_ensure() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "services: installing Redis (Debian's redis-server, redis-tools)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }
  fi
  rc_locked rc_ensure_locked
}
rc_ensure_locked() {
  rc_healthy && return 0

  local dir port p ours=() nodes=() options=()
  dir=$(rc_dir)
  # A half-broken cluster of ours is stopped; then whatever else in cluster
  # mode holds our ports.
  for port in "${RC_PORTS[@]}"; do rc_our_pid "$port" >/dev/null && ours+=("$port"); done
  if [ ${#ours[@]} -gt 0 ]; then
    echo "services: our Redis Cluster is not healthy (nodes up: ${ours[*]}); making it again"
    redis_cluster_stop
  fi
  rc_stop_others
  for port in "${RC_PORTS[@]}"; do
    for p in "$port" $((port + 10000)); do
      if rc_port_open "$p"; then
        echo "services: $RC_ADDR:$p is taken by a process that is not a Redis Cluster node; stop it:" >&2
        ss -ltnpH "sport = :$p" >&2 2>/dev/null || true
        return 1
      fi
    done
  done

  echo "services: starting Redis Cluster on $RC_ADDR:$RC_FIRST_PORT-$RC_LAST_PORT (files in $dir)"
  mapfile -t options < <(rc_options)
  rc_options >"$dir/options"
  for port in "${RC_PORTS[@]}"; do
    mkdir -p "$dir/$port"
    rm -f "$dir/$port/nodes.conf" "$dir/$port/redis.pid" "$dir/$port/redis.log"
    redis-server "${options[@]}" --daemonize yes --port "$port" \
      --cluster-config-file "$dir/$port/nodes.conf" \
      --dir "$dir/$port" --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" \
      {RC_LOCK_FD}>&- \
      || { rc_fail "redis-server on $port did not start"; return 1; }
    nodes+=("$RC_ADDR:$port")
  done
  rm -f "$dir/create.log"
  rc_wait 10 rc_all_answer || { rc_fail "Redis Cluster nodes did not answer in 10 s"; return 1; }
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { rc_fail "redis-cli --cluster create failed"; return 1; }
  rc_wait 30 rc_all_ok \
    || { rc_fail "Redis Cluster did not reach cluster_state:ok with all slots covered in 30 s"; return 1; }
  rc_wait 10 rc_replicas_synced \
    || { rc_fail "Redis Cluster replicas did not sync with their masters in 10 s"; return 1; }
}

rc_all_ok() {
  local port
  for port in "${RC_PORTS[@]}"; do rc_cluster_ok "$port" || return 1; done
}

# Run on its own rather than sourced by services.sh.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "$0")/.." && pwd)
  case "${1:-}" in
    "") redis_cluster_ensure
        echo "services: Redis Cluster ($(redis_cluster_version), 3 masters + 3 replicas, $RC_ADDR:$RC_FIRST_PORT-$RC_LAST_PORT) ready" ;;
    stop) redis_cluster_stop ;;
    *) echo "usage: $0 [stop]" >&2; exit 2 ;;
  esac
fi
