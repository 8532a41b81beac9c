#!/usr/bin/env bash
# One locked row must not hold up the other jobs (issue 12, item 11): another session holds
# an execution row FOR UPDATE (a transaction left open); the worker's outcome write for
# that row waits at most RETRYQ_DB_LOCK_TIMEOUT_MS, the other jobs complete meanwhile, and
# the locked job completes — not failed — once the lock is released, by the same worker.
#
# Then the write deadline (RETRYQ_DB_WRITE_DEADLINE_MS, 5 minutes by default, 2 s here): a
# row locked for longer than it has its job handed back to the queue as it is (no delivery
# counted, nothing delayed or dead-lettered), taken again, and completed with exactly one
# outcome entry once the lock is released.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup deadline
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

# ---- the write deadline: a row locked past it.
held=$(insert_execution "$job" us-east failed math_basic)
"$RETRYQ_CLI" retry --execution-id "$held" --region us-east --question-index 0 >/dev/null
mkfifo "$t_tmp/locker2"
psql "$DB" -X -q -At <"$t_tmp/locker2" >"$t_tmp/locker2.out" 2>&1 &
t_pids+=("$!")
exec 4>"$t_tmp/locker2"
echo "BEGIN; SELECT 'locked', id FROM executions WHERE id = $held FOR UPDATE;" >&4
check "write deadline: the row is locked by the other session" \
  wait_for 10 grep -q "^locked|$held$" "$t_tmp/locker2.out"
"$RETRYQ_WORKER_BIN" --concurrency 2 --db-lock-timeout-ms 300 --db-write-deadline-ms 2s \
  >"$t_tmp/worker2.log" 2>&1 &
pid=$!
t_pids+=("$pid")
requeued() { grep -c "event=job.requeued execution_id=$held .*before the write deadline" "$t_tmp/worker2.log" || true; }
requeued_twice() { [[ $(requeued) -ge 2 ]]; }
# Where the job is now: the queue or what a worker holds (its processing list, its taken
# hash), read in one script so a move between them cannot hide it or show it twice.
held_payloads() {
  local keys=("$Q") id
  for id in $(rcli ZRANGE "{$Q}:workers" 0 -1); do keys+=("{$Q}:processing:$id" "{$Q}:taken:$id"); done
  rcli EVAL "local out = {}
    for _, k in ipairs(KEYS) do
      local all = redis.call('TYPE', k).ok == 'hash' and redis.call('HKEYS', k) or redis.call('LRANGE', k, 0, -1)
      for _, v in ipairs(all) do out[#out + 1] = v end
    end
    return out" "${#keys[@]}" "${keys[@]}" | grep -E "\"execution_id\": *\"?$held[^0-9]" || true
}
check "write deadline: past 2 s the job is handed back to the queue (twice while locked)" \
  wait_for 30 requeued_twice
check "write deadline: the job was taken again after the hand-back (router called again)" \
  test "$(grep -c "event=job.started execution_id=$held " "$t_tmp/worker2.log")" -ge 2
check_eq "write deadline: the execution is still retrying (not failed)" retrying \
  "$(sql -c "SELECT status FROM executions WHERE id = $held")"
check_eq "write deadline: nothing delayed or dead-lettered" "0 0" \
  "$(rcli ZCARD "{$Q}:delayed") $(rcli LLEN "{$Q}:dead")"
held_now=$(held_payloads)
check_eq "write deadline: one job for it, still without a delivery count" "1 0" \
  "$(grep -c . <<<"$held_now" || true) $(grep -c '"delivery"' <<<"$held_now" || true)"
echo "COMMIT;" >&4
exec 4>&-
held_done() { [[ $(sql -c "SELECT status FROM executions WHERE id = $held") == completed ]]; }
check "write deadline: after the release the job completes" wait_for 30 held_done
check "write deadline: the same worker did it" kill -0 "$pid"
check_eq "write deadline: exactly one outcome entry" 1 \
  "$(sql -c "SELECT jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) FROM executions WHERE id = $held")"
echo "write deadline figures: handed back $(requeued) time(s) while the row was locked"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

t_finish
