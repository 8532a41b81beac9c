#!/usr/bin/env bash
# Private Redis + PostgreSQL for retryq's integration tests, the demo and the chaos tests.
#
#   services.sh start DIR         start both servers under DIR, write DIR/env
#   services.sh stop DIR          stop both and remove DIR (idempotent)
#   services.sh exec DIR -- CMD   run CMD with DIR/env loaded
#   services.sh run -- CMD        start in a fresh temporary dir, run CMD, always stop;
#                                 exits with CMD's status
#   services.sh stop-redis|start-redis|restart-redis|kill-redis DIR
#   services.sh stop-pg|start-pg|restart-pg DIR
#                                 (chaos) same port and data; kill-redis is SIGKILL
#   services.sh ports N           print N distinct free loopback TCP ports
#
# Redis: appendonly yes / appendfsync everysec, bound to 127.0.0.1 on a free port, data in
# DIR/redis. PostgreSQL 15+: initdb -U retryq --auth=trust into DIR/pg, 127.0.0.1 on a
# free port, unix socket inside the data dir, fsync off (test data only). As root the
# cluster runs as `postgres` (else `nobody`). Databases: retryq_template (the runner's
# schema, sql/runner/*.up.sql; never connect to it, it is cloned) and retryq (template +
# sql/migrations/*.up.sql). DIR/env exports RETRYQ_TEST_* for tests.
#
# `start` leaves a watcher in its own session: when the process that ran `start` (ctest,
# the demo, a shell; override with RETRYQ_SERVICES_WATCH_PID, 0 = none) exits, it tears
# everything down, so an interrupted run leaves no servers behind. `stop` ends it.
# Every wait polls with a deadline; nothing sleeps a fixed time.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
root=$(cd "$(dirname "$self")/../.." && pwd)
marker=.retryq-services
pg_user=""
pg_bin=""

die() { echo "services.sh: $*" >&2; exit 1; }
log() { echo "services.sh: $*" >&2; }

usage() {
  sed -n '2,14p' "$self" | sed 's/^# \{0,1\}//'
  exit 2
}

# ------------------------------------------------------------------ helpers

now_ms() { date +%s%3N; }

# Polls `cmd...` every 20 ms until it succeeds; fails after `ms` milliseconds.
poll() { # <ms> <cmd...>
  local deadline=$(($(now_ms) + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (($(now_ms) > deadline)) && return 1
    sleep 0.02
  done
}

# Prints `count` free loopback TCP ports (held open together, so they are distinct).
free_ports() { # <count>
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
    return
  fi
  local ports=() p
  while ((${#ports[@]} < $1)); do
    p=$((20000 + RANDOM % 40000))
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    ss -Htln "sport = :$p" | grep -q . || ports+=("$p")
  done
  echo "${ports[*]}"
}

find_pg_bin() {
  local d
  for d in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then pg_bin=$d; return; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    pg_bin=$(dirname "$(command -v pg_ctl)")
    return
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql (scripts/deps.sh)"
}

# The unprivileged user that owns and runs the cluster when we are root.
choose_pg_user() {
  if [[ $(id -u) != 0 ]]; then pg_user=""; return; fi
  if id -u postgres >/dev/null 2>&1; then pg_user=postgres; else pg_user=nobody; fi
}

# Runs a command as the cluster's owner, in its own session (so a Ctrl-C aimed at the
# caller's process group never reaches the postmaster).
as_pg() {
  if [[ -n $pg_user ]]; then
    (cd / && setsid -w setpriv --reuid="$(id -u "$pg_user")" --regid="$(id -g "$pg_user")" \
      --clear-groups env HOME=/ "$@")
  else
    setsid -w "$@"
  fi
}

load_env() { # <dir>: sources DIR/env
  [[ -f $1/env ]] || die "$1/env not found: services not started in $1"
  # shellcheck disable=SC1091
  source "$1/env"
}

# The cluster's data directory. When the pg user cannot reach DIR (a checkout under /root,
# or in a 0700 `mktemp -d` dir) the cluster lives in a traversable dir under /tmp owned by
# that user (DIR/pg-outside names it; DIR/pg is only a symlink for people): every command
# run as that user must get the real path, since it cannot resolve the symlink itself.
pg_data() {
  if [[ -f $1/pg-outside ]]; then echo "$(cat "$1/pg-outside")/pg"; else echo "$1/pg"; fi
}

pg_ctl_() { as_pg "$pg_bin/pg_ctl" "$@"; }

redis_cli() { # <port> <args...>
  redis-cli -h 127.0.0.1 -p "$1" "${@:2}"
}

redis_ping() { [[ $(redis_cli "$1" ping 2>/dev/null) == PONG ]]; }

redis_gone() { # <pidfile>
  local pid
  [[ -f $1 ]] || return 0
  pid=$(cat "$1" 2>/dev/null) || return 0
  [[ -n $pid ]] || return 0
  ! kill -0 "$pid" 2>/dev/null
}

# ------------------------------------------------------------------ Redis

redis_start() { # <dir> <port>: returns 1 when it did not come up (port taken?)
  local dir=$1 port=$2
  mkdir -p "$dir/redis"
  rm -f "$dir/redis/redis.pid"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir/redis" \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
    --appendonly yes --appendfsync everysec --save '' --protected-mode yes \
    --maxmemory-policy noeviction >/dev/null || return 1
  poll 5000 redis_ping "$port" && return 0
  log "redis did not answer on port $port; last log lines:"
  tail -n 5 "$dir/redis/redis.log" >&2 2>/dev/null || true
  redis_kill "$dir"
  return 1
}

redis_stop() { # <dir> <port>: graceful (AOF is flushed on shutdown)
  local dir=$1 port=$2
  redis_gone "$dir/redis/redis.pid" && return 0
  redis_cli "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  poll 5000 redis_gone "$dir/redis/redis.pid" || redis_kill "$dir"
}

redis_kill() { # <dir>: SIGKILL, then wait until it is gone
  local pid
  pid=$(cat "$1/redis/redis.pid" 2>/dev/null) || return 0
  [[ -n $pid ]] || return 0
  kill -9 "$pid" 2>/dev/null || true
  poll 5000 redis_gone "$1/redis/redis.pid" || log "redis pid $pid did not exit"
}

# ------------------------------------------------------------------ PostgreSQL

pg_ready() { # <port>
  pg_isready -q -h 127.0.0.1 -p "$1" -U retryq -d postgres
}

# Creates the cluster under DIR/pg (or a world-traversable temp dir linked from there
# when the pg user cannot reach DIR).
pg_init() { # <dir>
  local dir=$1 data
  data=$(pg_data "$dir")
  mkdir -p "$data"
  if [[ -n $pg_user ]]; then
    chown "$pg_user:" "$data"
    if ! as_pg test -w "$data"; then
      rmdir "$data"
      local alt
      # Not $TMPDIR: it may sit inside the unreachable tree too.
      alt=$(mktemp -d /tmp/retryq-pg.XXXXXX)
      chmod 755 "$alt"
      mkdir "$alt/pg"
      chown "$pg_user:" "$alt/pg"
      ln -s "$alt/pg" "$data"
      echo "$alt" >"$dir/pg-outside"
      data=$alt/pg
      as_pg test -w "$data" || die "the cluster owner ($pg_user) cannot write $data"
      log "the $pg_user user cannot reach $dir: the cluster lives in $alt"
    fi
  fi
  chmod 700 "$data"
  as_pg "$pg_bin/initdb" -D "$data" -U retryq --auth=trust -E UTF8 --locale=C --no-sync \
    --no-instructions >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  }
}

pg_configure() { # <dir> <port>
  local data sockdir
  data=$(readlink -f "$(pg_data "$1")")
  sockdir=$data
  # A unix socket path is limited to 107 bytes; use TCP only when the dir is too deep.
  ((${#sockdir} + 20 > 100)) && sockdir=""
  as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF
# retryq test cluster (test/support/services.sh): speed over durability
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$sockdir'
max_connections = 200
shared_buffers = ${RETRYQ_TEST_PG_SHARED_BUFFERS:-32MB}
fsync = off
full_page_writes = off
synchronous_commit = off
logging_collector = off
log_min_messages = warning
log_min_error_statement = panic
EOF
}

pg_start() { # <dir>: returns 1 when it did not come up
  local data
  data=$(pg_data "$1")
  if ! pg_ctl_ -D "$data" -l "$data/server.log" -w -t 30 start >/dev/null 2>&1; then
    log "postgres did not start; last log lines:"
    tail -n 10 "$data/server.log" >&2 2>/dev/null || true
    return 1
  fi
  poll 10000 pg_ready "$(pg_port "$1")"
}

pg_port() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$(pg_data "$1")/postgresql.conf" | tail -n 1; }

pg_running() { [[ -f $(pg_data "$1")/postmaster.pid ]]; }

pg_stop() { # <dir>
  local data pid
  data=$(pg_data "$1")
  [[ -f $data/postmaster.pid ]] || return 0
  pg_ctl_ -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 && return 0
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null) || return 0
  log "pg_ctl stop failed; killing postmaster $pid"
  kill -9 "$pid" 2>/dev/null || true
}

psql_() { # <port> <db> <psql args...>
  psql -X -q -h 127.0.0.1 -p "$1" -U retryq -d "$2" -v ON_ERROR_STOP=1 "${@:3}"
}

pg_create_databases() { # <port>
  local port=$1 f
  psql_ "$port" postgres -c 'CREATE DATABASE retryq_template' >/dev/null
  for f in "$root"/sql/runner/*.up.sql; do
    [[ -e $f ]] || continue
    psql_ "$port" retryq_template -1 -f "$f" >/dev/null || die "applying $f failed"
  done
  psql_ "$port" postgres -c 'CREATE DATABASE retryq TEMPLATE retryq_template' >/dev/null
  for f in "$root"/sql/migrations/*.up.sql; do
    [[ -e $f ]] || continue
    psql_ "$port" retryq -1 -f "$f" >/dev/null || die "applying $f failed"
  done
}

# ------------------------------------------------------------------ watcher

# Runs in its own session: waits for `pid` to exit, then tears DIR down. `stop` kills the
# watcher's process group first.
watch_main() { # <dir> <pid>
  local dir=$1 pid=$2 waiter
  echo $$ >"$dir/watcher.pid"
  tail --pid="$pid" -f /dev/null &
  waiter=$!
  trap 'kill "$waiter" 2>/dev/null; exit 0' TERM INT HUP
  wait "$waiter" || true
  trap - TERM INT HUP
  [[ -f $dir/$marker ]] || exit 0
  RETRYQ_SERVICES_IN_WATCHER=1 "$self" stop "$dir" >/dev/null 2>&1 || true
}

watcher_start() { # <dir> <pid>
  local dir=$1 pid=$2
  [[ $pid =~ ^[0-9]+$ && $pid -gt 1 ]] || return 0
  rm -f "$dir/watcher.pid"
  setsid "$self" __watch "$dir" "$pid" </dev/null >/dev/null 2>&1 &
  poll 5000 test -s "$dir/watcher.pid" || log "warning: the watcher did not start"
}

watcher_stop() { # <dir>
  local pid
  [[ -n ${RETRYQ_SERVICES_IN_WATCHER:-} ]] && return 0
  pid=$(cat "$1/watcher.pid" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  # The watcher leads its own process group (setsid): end it and its `tail`.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
}

# ------------------------------------------------------------------ commands

write_env() { # <dir> <redis port> <pg port>
  local dir=$1 rport=$2 pport=$3 tmp
  tmp=$dir/env.tmp
  {
    echo "# written by test/support/services.sh start; source it"
    printf 'export RETRYQ_TEST_REDIS_URL=%q\n' "redis://127.0.0.1:$rport"
    printf 'export RETRYQ_TEST_REDIS_PORT=%q\n' "$rport"
    printf 'export RETRYQ_TEST_PG_HOST=%q\n' 127.0.0.1
    printf 'export RETRYQ_TEST_PG_PORT=%q\n' "$pport"
    printf 'export RETRYQ_TEST_DATABASE_URL=%q\n' "postgresql://retryq@127.0.0.1:$pport/retryq"
    printf 'export RETRYQ_TEST_ADMIN_URL=%q\n' "postgresql://retryq@127.0.0.1:$pport/postgres"
    printf 'export RETRYQ_TEST_TEMPLATE_DB=%q\n' retryq_template
    printf 'export RETRYQ_TEST_SERVICES_DIR=%q\n' "$dir"
  } >"$tmp"
  mv "$tmp" "$dir/env"
}

cmd_start() { # <dir> [watch pid]
  local dir=$1 watch=${2:-${RETRYQ_SERVICES_WATCH_PID:-$PPID}} ports rport pport attempt
  command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh)"
  find_pg_bin
  choose_pg_user
  if [[ -e $dir ]]; then
    if [[ -f $dir/$marker ]]; then
      log "cleaning up an earlier run in $dir"
      cmd_stop "$dir"
    elif [[ -n $(ls -A "$dir" 2>/dev/null) ]]; then
      die "$dir exists and was not made by services.sh; refusing to use it"
    fi
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  touch "$dir/$marker"
  # The cluster's owner must be able to reach DIR (mktemp makes 0700 dirs).
  chmod 755 "$dir"
  watcher_start "$dir" "$watch"

  read -r rport pport <<<"$(free_ports 2)"
  for attempt in 1 2 3; do
    redis_start "$dir" "$rport" && break
    ((attempt == 3)) && die "redis-server would not start (see $dir/redis/redis.log)"
    read -r rport <<<"$(free_ports 1)"
  done
  pg_init "$dir"
  for attempt in 1 2 3; do
    pg_configure "$dir" "$pport"
    pg_start "$dir" && break
    ((attempt == 3)) && die "postgres would not start (see $(pg_data "$dir")/server.log)"
    pg_stop "$dir"
    read -r pport <<<"$(free_ports 1)"
  done
  pg_create_databases "$pport"
  write_env "$dir" "$rport" "$pport"
  echo "$dir/env"
}

cmd_stop() { # <dir>
  local dir=$1 outside=""
  [[ -e $dir ]] || return 0
  [[ -f $dir/$marker ]] || die "$dir was not made by services.sh; refusing to remove it"
  find_pg_bin
  choose_pg_user
  watcher_stop "$dir"
  local rport
  rport=$(sed -n 's/^export RETRYQ_TEST_REDIS_PORT=//p' "$dir/env" 2>/dev/null || true)
  if [[ -n $rport ]]; then
    redis_stop "$dir" "$rport"
  else
    redis_kill "$dir"
  fi
  pg_stop "$dir"
  [[ -f $dir/pg-outside ]] && outside=$(cat "$dir/pg-outside")
  rm -rf "$dir"
  if [[ -n $outside && -d $outside && $outside == */retryq-pg.* ]]; then rm -rf "$outside"; fi
}

cmd_exec() { # <dir> -- cmd...
  local dir=$1; shift
  [[ ${1:-} == -- ]] && shift
  (($# > 0)) || die "exec: no command given"
  load_env "$dir"
  exec "$@"
}

cmd_run() { # -- cmd...
  [[ ${1:-} == -- ]] && shift
  (($# > 0)) || die "run: no command given"
  local dir status=0 child signal=""
  dir=$(mktemp -d "${TMPDIR:-/tmp}/retryq-services.XXXXXX")
  # shellcheck disable=SC2064 # expand $dir now
  trap "\"$self\" stop '$dir' >/dev/null 2>&1 || true" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  cmd_start "$dir" $$ >/dev/null
  # CMD runs as a child we wait for, so a signal reaches this shell at once: it is passed
  # on as SIGTERM (a background child ignores SIGINT) and the servers are stopped after
  # CMD has exited. The explicit <&0 keeps CMD's stdin (else bash gives it /dev/null).
  (load_env "$dir" && exec "$@") <&0 &
  child=$!
  trap 'signal=130; kill -TERM "$child" 2>/dev/null' INT
  trap 'signal=143; kill -TERM "$child" 2>/dev/null' TERM
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do
    status=0
    wait "$child" || status=$?
  done
  [[ -n $signal ]] && exit "$signal"
  return "$status"
}

chaos() { # <command> <dir>
  local what=$1 dir=$2 rport
  load_env "$dir"
  rport=$RETRYQ_TEST_REDIS_PORT
  case $what in
    stop-redis) redis_stop "$dir" "$rport" ;;
    kill-redis) redis_kill "$dir" ;;
    start-redis) redis_gone "$dir/redis/redis.pid" || return 0
                 redis_start "$dir" "$rport" || die "redis would not start on port $rport" ;;
    restart-redis) redis_stop "$dir" "$rport"
                   redis_start "$dir" "$rport" || die "redis would not start on port $rport" ;;
    stop-pg) find_pg_bin; choose_pg_user; pg_stop "$dir" ;;
    start-pg) find_pg_bin; choose_pg_user
              pg_running "$dir" && poll 10000 pg_ready "$RETRYQ_TEST_PG_PORT" && return 0
              pg_start "$dir" || die "postgres would not start" ;;
    restart-pg) find_pg_bin; choose_pg_user
                pg_ctl_ -D "$(pg_data "$dir")" -m fast -w -t 30 restart >/dev/null 2>&1 ||
                  die "pg_ctl restart failed (see $(pg_data "$dir")/server.log)"
                poll 10000 pg_ready "$RETRYQ_TEST_PG_PORT" || die "postgres not ready after restart" ;;
  esac
}

main() {
  local cmd=${1:-}
  (($# > 0)) && shift
  case $cmd in
    start) (($# >= 1)) || usage; cmd_start "$1" ;;
    stop) (($# >= 1)) || usage; cmd_stop "$1" ;;
    exec) (($# >= 1)) || usage; cmd_exec "$@" ;;
    run) cmd_run "$@" ;;
    stop-redis | start-redis | restart-redis | kill-redis | stop-pg | start-pg | restart-pg)
      (($# >= 1)) || usage; chaos "$cmd" "$1" ;;
    ports) (($# >= 1)) || usage; free_ports "$1" ;;
    __watch) watch_main "$1" "$2" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
