#!/usr/bin/env bash
# Host names in RETRYQ_REDIS_URL and RETRYQ_DATABASE_URL are resolved with evdns on the
# event loop, then the worker connects to the address (issue 12, item 12):
#  1. names known only to a test hosts file (--hosts-file: the system resolver has never
#     heard of them, so a libpq or hiredis lookup would fail) work for both services;
#  2. "localhost" works for both;
#  3. an unknown Redis host name stops the start with exit 69, naming the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

new_database
Q="dns_$$"
export RETRYQ_QUEUE=$Q RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_DATABASE_URL=$DB
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off
redis_port=${RETRYQ_TEST_REDIS_URL##*:}
redis_port=${redis_port%%/*}
name_url() { # <db url> <host>: the URL with its host replaced
  sed -E "s#@[^:/]+:#@$2:#" <<<"$1"
}
hosts="$t_tmp/hosts"
printf '127.0.0.1 retryq-db.test retryq-redis.test\n' >"$hosts"

job=$(insert_job '{"id":"dns","questions":["math_basic"]}')
seed() { # <n>: n executions retried through the CLI (addresses, not names)
  local i id
  for ((i = 0; i < $1; i++)); do
    id=$(insert_execution "$job" us-east failed math_basic)
    "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 0 >/dev/null
  done
}
completed() { sql -c "SELECT count(*) FROM executions WHERE status = 'completed'"; }

# ---- 1. names from the test hosts file
seed 3
set +e
timeout 60 "$RETRYQ_WORKER_BIN" --exit-when-idle --hosts-file "$hosts" \
  --redis-url "redis://retryq-redis.test:$redis_port" \
  --database-url "$(name_url "$DB" retryq-db.test)" >"$t_tmp/names.log" 2>&1
rc=$?
set -e
check_eq "hosts-file names: the worker ran and stopped when idle" 0 "$rc"
check_eq "hosts-file names: all 3 completed" 3 "$(completed)"
check "hosts-file names: the Redis name was resolved by the worker" \
  grep -q "Redis host retryq-redis.test is 127.0.0.1" "$t_tmp/names.log"

# ---- 2. localhost
seed 2
set +e
timeout 60 "$RETRYQ_WORKER_BIN" --exit-when-idle --redis-url "redis://localhost:$redis_port" \
  --database-url "$(name_url "$DB" localhost)" >"$t_tmp/localhost.log" 2>&1
rc=$?
set -e
check_eq "localhost: exit 0" 0 "$rc"
check_eq "localhost: all 5 completed" 5 "$(completed)"

# ---- 3. a name nobody knows
set +e
timeout 60 "$RETRYQ_WORKER_BIN" --hosts-file "$hosts" --connect-timeout-ms 3000 \
  --redis-url "redis://no-such-host.invalid:$redis_port" >"$t_tmp/unknown.log" 2>&1
rc=$?
set -e
check_eq "unknown Redis host: exit 69 (EX_UNAVAILABLE)" 69 "$rc"
check "unknown Redis host: named in the error" grep -q "no-such-host.invalid" "$t_tmp/unknown.log"

t_finish
