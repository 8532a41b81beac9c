#!/usr/bin/env bash
# --exit-when-idle and a job the worker's own blocking pop has just moved: Redis has put
# it in the worker's processing list, the pop's reply is still on its way, and the idle
# check runs on the other connection meanwhile. Such a job is work: the worker must not
# call the queue empty with it there (before, the check counted every list but its own,
# the worker stopped, and its hand-back left the job in the queue, not run). Played by
# hand: while the worker runs one slow job, the test moves a second job straight into
# that worker's processing list; the worker must take it (its self-check adopts what it
# does not hold, at its next heartbeat: 5 s, so after the first job has ended and the
# idle check has run), record both, exit 0 and leave nothing in Redis.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup idle
start_router --latency-ms 1500
job=$(insert_job '{"id":"idle","questions":["math_basic"]}')
first=$(retrying "$(insert_execution "$job" us-east failed math_basic)")
second=$(retrying "$(insert_execution "$job" us-east failed math_basic)")
rcli LPUSH "$Q" "$(runner_job "$first")" >/dev/null

"$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --exit-when-idle --heartbeat-ms 5000 \
  --http-addr off >"$t_tmp/worker.log" 2>&1 &
pid=$!
t_pids+=("$pid")
worker_list() { rcli ZRANGE "{$Q}:workers" 0 -1 | head -n 1; }
taken() { [[ -n $(worker_list) ]] && [[ $(held_by "$Q" "$(worker_list)") == 1 ]]; }
check "the worker took the first job" wait_for 20 taken
rcli LPUSH "{$Q}:processing:$(worker_list)" "$(runner_job "$second")" >/dev/null

rc=0
wait_for 60 bash -c "! kill -0 $pid 2>/dev/null" || true
wait "$pid" || rc=$?
check_eq "the worker exits 0" 0 "$rc"
check_eq "both executions recorded" "completed completed" \
  "$(sql -c "SELECT string_agg(status, ' ' ORDER BY id) FROM executions WHERE id IN ($first, $second)")"
check_eq "nothing left in the queue" 0 "$(rcli LLEN "$Q")"
check_eq "no processing list or taken hash left" "" "$(held_keys "$Q")"
[[ $t_failed == 0 ]] || tail -n 20 "$t_tmp/worker.log"

t_finish
