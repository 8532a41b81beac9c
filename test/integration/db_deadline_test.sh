#!/usr/bin/env bash
# One locked row must not hold up the other jobs (issue 12, item 11): another session holds
# an execution row FOR UPDATE (a transaction left open); the worker's outcome write for
# that row waits at most RETRYQ_DB_LOCK_TIMEOUT_MS, the other jobs complete meanwhile, and
# the locked job completes — not failed — once the lock is released, by the same worker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

new_database
Q="deadline_$$"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_QUEUE=$Q
start_router --latency-ms 50
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off

job=$(insert_job '{"id":"deadline","questions":["math_basic"]}')
ids=()
for ((i = 0; i < 10; i++)); do
  ids+=("$(insert_execution "$job" us-east failed math_basic)")
  "$RETRYQ_CLI" retry --execution-id "${ids[-1]}" --region us-east --question-index 0 >/dev/null
done
locked=${ids[4]}
others=$(printf '%s\n' "${ids[@]}" | grep -vx "$locked" | paste -sd,)

# The other session: a psql reading from a FIFO, so its transaction stays open.
mkfifo "$t_tmp/locker"
psql "$DB" -X -q -At <"$t_tmp/locker" >"$t_tmp/locker.out" 2>&1 &
t_pids+=("$!")
exec 3>"$t_tmp/locker"
echo "BEGIN; SELECT 'locked', id FROM executions WHERE id = $locked FOR UPDATE;" >&3
check "the row is locked by the other session" wait_for 10 grep -q "^locked|$locked$" "$t_tmp/locker.out"

"$RETRYQ_WORKER_BIN" --concurrency 10 --db-lock-timeout-ms 500 >"$t_tmp/worker.log" 2>&1 &
pid=$!
t_pids+=("$pid")
others_done() { [[ $(sql -c "SELECT count(*) FROM executions WHERE id IN ($others) AND status = 'completed'") == 9 ]]; }
check "the 9 other jobs complete while the row is locked" wait_for 30 others_done
check_eq "the locked execution is still retrying (not failed)" retrying \
  "$(sql -c "SELECT status FROM executions WHERE id = $locked")"
check "the lock wait was seen and retried" wait_for 10 grep -q "55P03\|lock timeout" "$t_tmp/worker.log"
echo "COMMIT;" >&3
exec 3>&-
locked_done() { [[ $(sql -c "SELECT status FROM executions WHERE id = $locked") == completed ]]; }
check "after the release the locked job completes" wait_for 60 locked_done
check "the same worker did it" kill -0 "$pid"
check_eq "nothing failed" 0 "$(sql -c "SELECT count(*) FROM executions WHERE status <> 'completed'")"
check_eq "exactly one outcome entry each" 0 "$(sql -c "SELECT count(*) FROM executions WHERE jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1")"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

t_finish
