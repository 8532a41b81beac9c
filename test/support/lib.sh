#!/usr/bin/env bash
# Shared helpers for the shell integration tests (sourced, not run). They expect the
# environment of `test/support/services.sh exec` (RETRYQ_TEST_*) and of CTest
# (RETRYQ_CLI, RETRYQ_WORKER_BIN, RETRYQ_MOCK_ROUTER_BIN).

t_passed=0
t_failed=0
t_pids=()
t_dbs=()
t_tmp=$(mktemp -d "${TMPDIR:-/tmp}/retryq-test.XXXXXX")

check() { # <description> <command...>: passes when the command succeeds
  local what=$1; shift
  if "$@"; then
    t_passed=$((t_passed + 1)); echo "ok   - $what"
  else
    t_failed=$((t_failed + 1)); echo "FAIL - $what"
  fi
}

check_eq() { # <description> <expected> <actual>
  if [[ "$2" == "$3" ]]; then
    t_passed=$((t_passed + 1)); echo "ok   - $1"
  else
    t_failed=$((t_failed + 1)); echo "FAIL - $1: expected [$2], got [$3]"
  fi
}

t_finish() {
  echo "$t_passed passed, $t_failed failed"
  [[ $t_failed == 0 ]]
}

t_services=()
t_cleanup() {
  local pid db dir
  for pid in "${t_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${t_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for dir in "${t_services[@]}"; do
    "$(dirname "${BASH_SOURCE[0]}")/services.sh" stop "$dir" >/dev/null 2>&1 || true
  done
  for db in "${t_dbs[@]}"; do
    psql "$RETRYQ_TEST_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$t_tmp"
}
trap t_cleanup EXIT

# Starts private Redis + PostgreSQL for this test alone (tests that restart or kill the
# servers must not share them) and loads their environment. RETRYQ_TEST_REDIS_WORKER_URL
# is the URL the workers are given: the Redis itself, or with RETRYQ_CHAOS_REDIS=sentinel
# a redis+sentinel:// URL of three sentinels watching it (with one replica), so the chaos
# scenarios run unchanged against a Sentinel-managed primary. Their down-after is 60 s,
# longer than any outage a scenario makes: restarts and kills of that Redis stay outages
# of the primary the workers find again through the sentinels, not failovers
# (chaos/sentinel_failover covers those).
private_services() {
  local dir="$t_tmp/services"
  chmod 755 "$t_tmp"
  "$(dirname "${BASH_SOURCE[0]}")/services.sh" start "$dir" >/dev/null
  t_services+=("$dir")
  # shellcheck disable=SC1091
  source "$dir/env"
  RETRYQ_TEST_REDIS_WORKER_URL=$RETRYQ_TEST_REDIS_URL
  case ${RETRYQ_CHAOS_REDIS:-standalone} in
    standalone) ;;
    sentinel)
      # shellcheck source=test/support/redis_ha.sh
      source "$(dirname "${BASH_SOURCE[0]}")/redis_ha.sh"
      HA_DOWN_AFTER_MS=60000 ha_watch "$RETRYQ_TEST_REDIS_PORT" 1 3
      RETRYQ_TEST_REDIS_WORKER_URL=$HA_URL
      echo "workers reach Redis through the sentinels: $HA_URL"
      ;;
    *) echo "FAIL - RETRYQ_CHAOS_REDIS must be standalone or sentinel"; exit 2 ;;
  esac
}

need_env() {
  local v
  for v in "$@"; do
    if [[ -z ${!v:-} ]]; then echo "FAIL - $v is not set (run through ctest)"; exit 1; fi
  done
}

# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() { # <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.05
  done
}

# A fresh database: the runner's schema (cloned from the template nobody connects to)
# plus retryq's migration applied by `retryq migrate`. Sets DB to its URL.
new_database() {
  local name="t_$(basename "$0" .sh)_$$_${#t_dbs[@]}"
  name=${name//[^a-zA-Z0-9_]/_}
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE \"$name\" TEMPLATE \"$RETRYQ_TEST_TEMPLATE_DB\"" >/dev/null
  t_dbs+=("$name")
  DB="postgresql://retryq@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}/$name"
  "$RETRYQ_CLI" --database-url "$DB" migrate >/dev/null
}

# worker_test_setup [queue prefix]: how a test of the worker with a private database
# starts: the environment it needs, a database of its own (DB), the worker's and the CLI's
# settings for it (log level info) and, given a prefix, the queue Q=<prefix>_<pid>
# (RETRYQ_QUEUE).
worker_test_setup() {
  need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
  new_database
  export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_LOG_LEVEL=info
  if (($# > 0)); then
    Q="$1_$$"
    export RETRYQ_QUEUE=$Q
  fi
}

# json <python expression on d> < JSON: prints the expression's value.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

sql() { psql "$DB" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
rcli() { redis-cli -u "$RETRYQ_TEST_REDIS_URL" --no-auth-warning "$@"; }

# What the workers of queue <Q> hold: a worker's processing list (where a blocking pop
# lands) and its taken hash {Q}:taken:<id> (job text -> copies). held_jobs counts the jobs
# (copies included), held_keys names those keys, held_by <Q> <worker id> counts one worker's.
HELD_LUA="local n = 0
for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':processing:' .. ARGV[2])) do n = n + redis.call('LLEN', k) end
for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':taken:' .. ARGV[2])) do
  for _, c in ipairs(redis.call('HVALS', k)) do n = n + tonumber(c) end
end
return n"
held_jobs() { rcli EVAL "$HELD_LUA" 0 "{$1}" '*'; }
held_by() { rcli EVAL "$HELD_LUA" 0 "{$1}" "$2"; }
held_keys() { rcli --scan --pattern "{$1}:processing:*"; rcli --scan --pattern "{$1}:taken:*"; }

# retrying <id>: puts execution <id> in 'retrying' at attempt 1, as the runner's API leaves
# it, and prints its id. runner_job <id>: the four-field job the runner pushes for it
# (region us-east, question 0).
retrying() {
  sql -c "UPDATE executions SET status = 'retrying', retry_count = 1, last_retry_at = now(),
            retry_history = '[{\"attempt\":1,\"status\":\"retrying\"}]' WHERE id = $1 RETURNING id"
}
runner_job() { echo "{\"execution_id\":$1,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}"; }

# Starts the mock router with the given flags; sets ROUTER_URL and ROUTER_PID.
start_router() {
  local port_file="$t_tmp/router.$RANDOM.port"
  "$RETRYQ_MOCK_ROUTER_BIN" --listen 127.0.0.1:0 --port-file "$port_file" --quiet "$@" &
  ROUTER_PID=$!
  t_pids+=("$ROUTER_PID")
  wait_for 10 test -s "$port_file" || { echo "FAIL - mock router did not start"; exit 1; }
  ROUTER_URL="http://127.0.0.1:$(cat "$port_file")"
}

# Inserts a job with the given spec JSON; prints its id.
insert_job() {
  sql -v spec="$1" -v sid="spec-$RANDOM-$RANDOM" <<'SQL'
INSERT INTO jobs (jobspec_id, jobspec_data) VALUES (:'sid', :'spec'::jsonb) RETURNING id;
SQL
}

# insert_execution <job_id> <region> <status> <question_id or ''> [model] -> id
insert_execution() {
  sql -v job="$1" -v region="$2" -v status="$3" -v qid="$4" -v model="${5:-llama3.2-1b}" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, original_error)
VALUES (:job, 'router', :'region', :'status', NULLIF(:'qid', ''), :'model', 'first failure') RETURNING id;
SQL
}

# Headless Chromium (scripts/deps.sh installs it): chrome_bin prints its path ("" when
# missing); chrome_run <args...> is one headless run with a fresh profile, its complaints
# in $t_tmp/chrome.log.
chrome_bin() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
chrome_run() {
  local profile
  profile=$(mktemp -d "$t_tmp/chrome.XXXXXX")
  timeout 120 "$(chrome_bin)" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" "$@" 2>>"$t_tmp/chrome.log"
}

# A TCP port free on loopback now (the OS's pick).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
