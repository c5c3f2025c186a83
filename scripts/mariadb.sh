# MariaDB for hpdb's MySQL tests (127.0.0.1:3306, root without a password,
# database `test`). Sourced by services.sh (which defines wait_for); not run
# on its own.
#
# The Debian package's server: installed when missing, started when down
# (its init script, else mysqld_safe in the background), left alone when it
# answers. A fresh install lets root in only through the Unix socket
# (unix_socket authentication), so the TCP user the tests connect as,
# root@127.0.0.1 without a password, is created through the socket when it
# cannot connect; the `test` database is created if missing. Nothing that
# already works is changed.

MY_ADDR=${MY_ADDR:-127.0.0.1}
MY_PORT=${MY_PORT:-3306}
MY_DB=${MY_DB:-test}

mariadb_tcp() { mysql -h "$MY_ADDR" -P "$MY_PORT" -u root --connect-timeout=2 "$@"; }

mariadb_up() { mysqladmin -h "$MY_ADDR" -P "$MY_PORT" -u root --connect-timeout=2 ping >/dev/null 2>&1 \
  || mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }

mariadb_start() {
  echo "services: starting MariaDB"
  if [ -x /etc/init.d/mariadb ]; then
    /etc/init.d/mariadb start >/dev/null 2>&1 || service mariadb start >/dev/null 2>&1 || true
  fi
  if ! mariadb_up; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    (setsid mysqld_safe --bind-address="$MY_ADDR" --port="$MY_PORT" >/dev/null 2>&1 &)
  fi
}

mariadb_ensure() {
  if ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    echo "services: installing MariaDB"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
  if ! mariadb_up; then
    mariadb_start
  fi
  wait_for MariaDB mariadb_up
  if ! mariadb_tcp -e "SELECT 1" >/dev/null 2>&1; then
    echo "services: letting root@$MY_ADDR in without a password (through the socket)"
    mysql -u root -e "CREATE USER IF NOT EXISTS 'root'@'$MY_ADDR' IDENTIFIED BY '';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'$MY_ADDR' WITH GRANT OPTION; FLUSH PRIVILEGES;"
  fi
  mariadb_tcp -e "CREATE DATABASE IF NOT EXISTS \`$MY_DB\`"
  wait_for "MariaDB (TCP, database $MY_DB)" mariadb_tcp "$MY_DB" -e "SELECT 1"
}

mariadb_version() { mariadb_tcp -N -e "SELECT VERSION()"; }
