# Our own PgBouncer, for the tests that go through a transaction-mode pooler.
# Sourced by services.sh (which defines wait_for); not run on its own.
#
# Why our own instance and not the Debian package's service: the package's
# instance reads /etc/pgbouncer (md5 auth, no databases) and is started by
# systemd where there is one, so its settings are not ours to rely on. Ours
# runs from a config, pid file, log and auth file under the project's scratch
# directory, daemonized, as the `postgres` user when run by root (PgBouncer
# refuses to run as root), and is stopped by the pid in its pid file. The
# package's own service, if it runs, holds the same port: it is stopped and
# disabled (it is a unit of the package we installed; nothing else is
# touched). Anything else on the port is an error.

PGB_ADDR=${PGB_ADDR:-127.0.0.1}
PGB_PORT=${PGB_PORT:-6432}

# The user PgBouncer runs as.
pgb_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }

# Runs a command as that user.
pgb_as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The scratch directory: <repo>/target/services/pgbouncer, or a directory
# under /tmp named after the repository when that user cannot write there
# (a repository under /root, say).
pgb_dir() {
  local dir="$ROOT/target/services/pgbouncer"
  mkdir -p "$dir" 2>/dev/null || true
  [ "$(id -u)" = 0 ] && chown "$(pgb_user)" "$dir" 2>/dev/null
  if ! pgb_as_user test -w "$dir" 2>/dev/null; then
    dir="/tmp/gistfans-services-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)/pgbouncer"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$(pgb_user)" "$dir"
  fi
  echo "$dir"
}

# Our config: transaction pooling in front of the local PostgreSQL.
pgb_config() { # dir
  cat <<EOF
; Written by scripts/services.sh; changes here are overwritten.
[databases]
test = host=$PGHOST_ADDR port=$PGPORT_NUM dbname=test
postgres = host=$PGHOST_ADDR port=$PGPORT_NUM dbname=postgres
; databases the tests create
* = host=$PGHOST_ADDR port=$PGPORT_NUM

[pgbouncer]
listen_addr = $PGB_ADDR
listen_port = $PGB_PORT
; TCP only: the package's instance owns /var/run/postgresql/.s.PGSQL.6432
unix_socket_dir =
pool_mode = transaction
default_pool_size = 10
max_client_conn = 2000
auth_type = trust
auth_file = $1/userlist.txt
admin_users = postgres
; sqlx sends it at start-up; PgBouncer 1.18 would refuse the connection
ignore_startup_parameters = extra_float_digits
logfile = $1/pgbouncer.log
pidfile = $1/pgbouncer.pid
EOF
}

# The pid of our running PgBouncer, if any (from the pid file, checked
# against /proc so a recycled pid is not mistaken for ours).
pgb_pid() { # dir
  local pid
  pid=$(cat "$1/pgbouncer.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "pgbouncer.*$1/pgbouncer.ini" \
    && echo "$pid"
}

pgb_port_open() { (exec 3<>"/dev/tcp/$PGB_ADDR/$PGB_PORT") 2>/dev/null; }

# Stops a PgBouncer that an earlier checkout of this project started on our
# port (CI runs from a fresh clone while an earlier clone's instance may
# still run, its directory perhaps deleted, perhaps at the same path): found
# by its command line, which names a config written by this script
# (".../services/pgbouncer/pgbouncer.ini"); stopped by its pid. Called only
# when our own pid file names no running instance. Nothing else is touched.
pgb_stop_other_checkouts() {
  local cmd pid ini
  for cmd in /proc/[0-9]*/cmdline; do
    pid=${cmd#/proc/}; pid=${pid%/cmdline}
    ini=$(tr '\0' '\n' 2>/dev/null <"$cmd" | grep -m1 '/services/pgbouncer/pgbouncer.ini$') || continue
    tr '\0' ' ' 2>/dev/null <"$cmd" | grep -Eq '^([^ ]*/)?pgbouncer ' || continue
    # One on another port is left alone; one whose files are gone (a
    # deleted clone, or an earlier clone at this very path whose pid file
    # went with it) is a leftover on ours.
    if [ -f "$ini" ] && ! grep -q "^listen_port = $PGB_PORT\$" "$ini"; then continue; fi
    echo "services: stopping a PgBouncer an earlier checkout of this project started (pid $pid, $ini)"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
}

pgb_answers() {
  psql -h "$PGB_ADDR" -p "$PGB_PORT" -U postgres -d test -v ON_ERROR_STOP=1 -Atqc 'select 1' >/dev/null 2>&1
}

pgbouncer_version() { pgbouncer --version | head -n1 | awk '{print $2}'; }

# Stops and disables the Debian package's own pgbouncer service if it runs
# (systemd starts it on installation where systemd is the init).
pgb_stop_package_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if systemctl is-active --quiet pgbouncer.service pgbouncer.socket 2>/dev/null \
       || systemctl is-enabled --quiet pgbouncer.service 2>/dev/null; then
      echo "services: stopping and disabling the pgbouncer package's own service (port $PGB_PORT is ours)"
      systemctl disable --now pgbouncer.service pgbouncer.socket >/dev/null 2>&1 || true
    fi
  elif [ -s /var/run/postgresql/pgbouncer.pid ] && [ -x /etc/init.d/pgbouncer ] \
       && kill -0 "$(cat /var/run/postgresql/pgbouncer.pid)" 2>/dev/null; then
    echo "services: stopping the pgbouncer package's own instance (port $PGB_PORT is ours)"
    /etc/init.d/pgbouncer stop >/dev/null || true
  fi
}

pgbouncer_stop() {
  local dir pid
  dir=$(pgb_dir)
  pid=$(pgb_pid "$dir") || { echo "services: our PgBouncer is not running"; return 0; }
  echo "services: stopping PgBouncer (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pgbouncer.pid"; return 0; }
    sleep 0.2
  done
  echo "services: PgBouncer (pid $pid) did not stop in 10 s" >&2
  return 1
}

# Installs PgBouncer if missing; starts ours unless it already runs with
# the current config; waits until it answers.
pgbouncer_ensure() {
  if ! command -v pgbouncer >/dev/null; then
    echo "services: installing PgBouncer"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
  fi
  pgb_stop_package_service
  local dir pid
  dir=$(pgb_dir)
  pid=$(pgb_pid "$dir") || pid=""
  if [ -n "$pid" ] && pgb_config "$dir" | cmp -s - "$dir/pgbouncer.ini"; then
    wait_for PgBouncer pgb_answers
    return
  fi
  [ -n "$pid" ] && pgbouncer_stop
  pgb_port_open && pgb_stop_other_checkouts
  if pgb_port_open; then
    echo "services: $PGB_ADDR:$PGB_PORT is taken by a process that is not our PgBouncer; stop it" >&2
    return 1
  fi
  pgb_config "$dir" >"$dir/pgbouncer.ini"
  printf '"postgres" ""\n' >"$dir/userlist.txt"
  echo "services: starting PgBouncer on $PGB_ADDR:$PGB_PORT (as $(pgb_user), files in $dir)"
  pgb_as_user pgbouncer -d -q "$dir/pgbouncer.ini"
  wait_for PgBouncer pgb_answers
}
