#!/usr/bin/env bash
# Signals and exit codes (issue 12, item 13):
#  1. SIGHUP while jobs are in flight is logged and ignored: the same worker finishes them;
#  2. a failed start says why in its exit code: 78 for a bad setting, 69 when the HTTP
#     address cannot be bound (docs/operations.md, "Exit codes").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup signals
start_router --latency-ms 1500
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off

# ---- 1. SIGHUP mid-flight
job=$(insert_job '{"id":"signals","questions":["math_basic"]}')
for ((i = 0; i < 5; i++)); do
  id=$(insert_execution "$job" us-east failed math_basic)
  "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 0 >/dev/null
done
"$RETRYQ_WORKER_BIN" --concurrency 5 >"$t_tmp/hup.log" 2>&1 &
pid=$!
t_pids+=("$pid")
in_flight() { [[ -z $(rcli LRANGE "$Q" 0 -1) && -n $(held_keys "$Q") ]]; }
check "SIGHUP: jobs in flight" wait_for 20 in_flight
kill -HUP "$pid"
check "SIGHUP: logged as ignored" wait_for 10 grep -q "SIGHUP ignored" "$t_tmp/hup.log"
kill -HUP "$pid"
completed() { [[ $(sql -c "SELECT count(*) FROM executions WHERE status = 'completed'") == 5 ]]; }
check "SIGHUP: the jobs in flight complete" wait_for 30 completed
check "SIGHUP: the same worker is still running" kill -0 "$pid"
check_eq "SIGHUP: nothing failed" 0 "$(sql -c "SELECT count(*) FROM executions WHERE status <> 'completed'")"
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check_eq "SIGHUP: a later SIGTERM still stops it with 0" 0 "$rc"

# ---- 2. exit codes of a failed start
set +e
"$RETRYQ_WORKER_BIN" --concurrency abc >"$t_tmp/bad.log" 2>&1
rc=$?
set -e
check_eq "bad setting: exit 78 (EX_CONFIG)" 78 "$rc"
check "bad setting: one line naming it" grep -q "^retryq-worker: --concurrency" "$t_tmp/bad.log"
taken=${ROUTER_URL##*:}
set +e
timeout 30 "$RETRYQ_WORKER_BIN" --http-addr "127.0.0.1:$taken" >"$t_tmp/busy.log" 2>&1
rc=$?
set -e
check_eq "HTTP address in use: exit 69 (EX_UNAVAILABLE)" 69 "$rc"

t_finish
