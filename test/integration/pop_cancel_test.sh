#!/usr/bin/env bash
# A cancelled job that reaches a worker through its blocking pop (the queue was empty, the
# worker waits in BLMOVE): the pop's check (LUA_POP_CHECK) drops it and consumes its
# tombstone, and the worker must count it as cancelled, not take the identity it is told
# for a job (before, the check's reply {identity} was handed out as a payload: an
# "invalid job" dead-lettered on the worker's side and no cancel counted). Then a job that
# may run, through the same path, is run and recorded. Checked on the worker that lived
# through both: its log, its metrics, Redis (tombstone consumed, no dead entry, nothing
# held) and the rows.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

private_services # a Redis of its own: its one blocked client is this test's worker
worker_test_setup popcancel
start_router --latency-ms 5
PORT=$(free_port)
job=$(insert_job '{"id":"pop-cancel","questions":["math_basic"]}')
cancelled=$(retrying "$(insert_execution "$job" us-east failed math_basic)")
runs=$(retrying "$(insert_execution "$job" us-east failed math_basic)")

"$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --http-addr "127.0.0.1:$PORT" \
  >"$t_tmp/worker.log" 2>&1 &
pid=$!
t_pids+=("$pid")
blocked() { rcli CLIENT LIST | grep -qE "name=retryq-worker-pop .*cmd=(blmove|brpoplpush)"; }
check "the worker waits in its blocking pop" wait_for 20 blocked
metric() { curl -fsS --max-time 5 "http://127.0.0.1:$PORT/metrics" | python3 "$here/prom_text.py" value "$@" || true; }

rcli ZADD "{$Q}:cancelled" "$(($(date +%s) * 1000))" "$cancelled:1" >/dev/null
rcli LPUSH "$Q" "$(runner_job "$cancelled")" >/dev/null
counted() { [[ $(metric retry_jobs_cancelled_total) == 1 ]]; }
check "the worker counts the job its blocking pop dropped as cancelled" wait_for 20 counted
check_eq "its tombstone is consumed" 0 "$(rcli ZCARD "{$Q}:cancelled")"
check_eq "no dead-letter entry" 0 "$(rcli LLEN "{$Q}:dead")"
check "the worker logged the cancel" grep -q "event=job.cancelled" "$t_tmp/worker.log"
check "and took nothing for a job" bash -c "! grep -q 'invalid job' '$t_tmp/worker.log'"
check_eq "the cancelled execution was not run" "retrying 0" \
  "$(sql -F' ' -c "SELECT status, jsonb_array_length(retry_history) - 1 FROM executions WHERE id = $cancelled")"

check "the worker waits in its blocking pop again" wait_for 20 blocked
rcli LPUSH "$Q" "$(runner_job "$runs")" >/dev/null
done_() { [[ $(sql -c "SELECT status FROM executions WHERE id = $runs") == completed ]]; }
check "a job the blocking pop hands out is run and recorded" wait_for 20 done_
acked() { [[ -z $(held_keys "$Q") ]]; }
check "and acknowledged: nothing held in Redis" wait_for 10 acked
check "the worker is the one that lived through both" kill -0 "$pid"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
check_eq "the worker stops with 0" 0 "$rc"
[[ $t_failed == 0 ]] || tail -n 30 "$t_tmp/worker.log"
t_finish
