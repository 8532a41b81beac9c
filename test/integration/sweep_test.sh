#!/usr/bin/env bash
# The orphan sweep (janitor.c) finds every execution left 'retrying' with no job anywhere:
#  1. a row whose own max_retries (7) is above the worker's RETRYQ_MAX_RETRIES (3) is
#     still swept (issue 11, item 2);
#  2. during a backlog — more than 500 old 'retrying' rows that all have their job in the
#     queue — an orphan that sorts after them is still found (the sweep pages through the
#     rows with a cursor), and none of the backlogged rows is pushed a second time;
#  3. the Redis side reads the queue in bounded pages: no single sweep script call on a
#     20,000-job queue shows up in Redis's slow log (issue 12, item 8);
#  4. the page is RETRYQ_SWEEP_PAGE: at 100 the same queue takes ten times the calls;
#  5. rows finished while the passes run (their jobs acked, so missing from Redis too) are
#     not pushed: the suspects' rows are read again before anything is pushed (a sweep
#     overlapping a fast drain pushed a stale job for nearly each of its candidates).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup sweep
# A router that never answers within the test: whatever the worker takes stays in flight,
# so the backlog stays in the queue.
start_router --latency-ms 600000
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off

job=$(insert_job '{"id":"sweep","questions":["math_basic"]}')
swept() { grep -c "event=sweep.orphan execution_id=$1 " "$t_tmp/$2.log" || true; }

# ---- 1. max_retries 7, retry_count 6, worker RETRYQ_MAX_RETRIES=3, no job anywhere.
high=$(insert_execution "$job" us-east failed math_basic)
sql -c "UPDATE executions SET status = 'retrying', max_retries = 7, retry_count = 6,
        last_retry_at = now() - interval '1 hour' WHERE id = $high"
RETRYQ_MAX_RETRIES=3 "$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 \
  --concurrency 1 >"$t_tmp/high.log" 2>&1 &
pid=$!
t_pids+=("$pid")
check "max_retries 7 above RETRYQ_MAX_RETRIES=3: the sweep re-enqueues the row" \
  wait_for 20 bash -c "grep -q 'event=sweep.orphan execution_id=$high ' '$t_tmp/high.log'"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
rcli DEL "$Q" "{$Q}:dead" "{$Q}:delayed" >/dev/null

# ---- 2. a backlog of 600 old rows with their jobs queued, and one orphan after them.
sql -c "INSERT INTO executions (job_id, provider_id, region, status, question_id, retry_count,
                                last_retry_at)
        SELECT $job, 'router', 'us-east', 'retrying', 'math_basic', 1,
               now() - interval '2 hours' - g * interval '1 second'
        FROM generate_series(1, 600) g"
sql -c "SELECT id FROM executions WHERE status = 'retrying' AND id <> $high ORDER BY id" >"$t_tmp/backlog"
while read -r id; do
  printf 'LPUSH %s "{\\"execution_id\\":%s,\\"region\\":\\"us-east\\",\\"question_index\\":0,\\"retry_attempt\\":1}"\n' "$Q" "$id"
done <"$t_tmp/backlog" | rcli >/dev/null
# The orphan is younger than every backlogged row (it sorted after the 500 oldest before).
orphan=$(insert_execution "$job" us-east failed math_basic)
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1,
        last_retry_at = now() - interval '1 hour' WHERE id = $orphan"
sql -c "UPDATE executions SET status = 'failed' WHERE id = $high"
check_eq "backlog queued" 600 "$(rcli LLEN "$Q")"
"$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 --concurrency 1 --drain-timeout-ms 100 \
  >"$t_tmp/backlog.log" 2>&1 &
pid=$!
t_pids+=("$pid")
check "backlog of 600: the orphan after the 500 oldest rows is found" \
  wait_for 30 bash -c "grep -q 'event=sweep.orphan execution_id=$orphan ' '$t_tmp/backlog.log'"
# Let a few more sweeps run: the orphan's job is now queued, nothing else is missing.
wait_for 20 bash -c "[[ \$(grep -c 'event=sweep.done' '$t_tmp/backlog.log') -ge 3 ]]" || true
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
check "backlog: several sweeps ran" test "$(grep -c 'event=sweep.done' "$t_tmp/backlog.log")" -ge 3
check_eq "backlog: only the orphan was pushed, once" 1 "$(grep -c 'event=sweep.orphan ' "$t_tmp/backlog.log")"
check_eq "backlog: the orphan was pushed once" 1 "$(swept "$orphan" backlog)"

# ---- 3. a 20,000-job queue is read in bounded pages. The one candidate left has its job
# next to the tail of the queue (pushed second), so every page is read before it is seen.
# At the very tail is the job of a row too young to be a candidate: the worker
# (concurrency 1) takes that one and holds it (the router never answers), so it takes
# nothing else and the candidate's job stays where it is.
sql -c "UPDATE executions SET status = 'failed' WHERE status = 'retrying' AND id <> $orphan"
blocker=$(insert_execution "$job" us-east failed math_basic)
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1,
        last_retry_at = now() + interval '1 day' WHERE id = $blocker"
big_queue() { # the queue as described above, from scratch
  rcli DEL "$Q" "{$Q}:delayed" >/dev/null
  rcli LPUSH "$Q" "{\"execution_id\":$blocker,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}" \
    "{\"execution_id\":$orphan,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}" >/dev/null
  for ((i = 0; i < 20; i++)); do
    for ((k = 0; k < 1000; k++)); do
      printf 'LPUSH %s "{\\"execution_id\\":%d,\\"region\\":\\"us-east\\",\\"question_index\\":0,\\"retry_attempt\\":1}"\n' "$Q" $((900000000 + i * 1000 + k))
    done
  done | rcli >/dev/null
}
# Redis calls of the sweeps of a log, one number per sweep.
pages_of() { sed -n 's/.*event=sweep.done .* \([0-9]*\) Redis page(s).*/\1/p' "$t_tmp/$1.log"; }
big_queue
check_eq "big queue loaded" 20002 "$(rcli LLEN "$Q")"
old_slow=$(rcli CONFIG GET slowlog-log-slower-than | tail -n 1)
rcli CONFIG SET slowlog-log-slower-than 50000 >/dev/null
rcli SLOWLOG RESET >/dev/null
"$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 --concurrency 1 --drain-timeout-ms 100 \
  >"$t_tmp/big.log" 2>&1 &
pid=$!
t_pids+=("$pid")
wait_for 60 bash -c "[[ \$(grep -c 'event=sweep.done' '$t_tmp/big.log') -ge 2 ]]" || true
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
slow=$(rcli SLOWLOG GET 128 | grep -c -- "$Q" || true)
rcli CONFIG SET slowlog-log-slower-than "$old_slow" >/dev/null
check "big queue: two sweeps completed" test "$(grep -c 'event=sweep.done' "$t_tmp/big.log")" -ge 2
check "big queue: the worker held the job at the tail, not the candidate's" \
  grep -q "event=job.started execution_id=$blocker " "$t_tmp/big.log"
check "big queue: each sweep read the whole queue, 1000 entries a call (21 pages and more)" \
  test "$(pages_of big | sort -n | head -n 1)" -ge 21
check_eq "big queue: no sweep call on this queue took 50 ms or more (a loaded machine can hold Redis off the CPU for a while; the page counts above prove the paging)" 0 "$slow"
check_eq "big queue: the job near the tail was seen (nothing pushed)" 0 "$(grep -c 'event=sweep.orphan ' "$t_tmp/big.log")"

# ---- 4. --sweep-page 100: the same queue in calls of 100 entries.
big_queue
"$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 --concurrency 1 --drain-timeout-ms 100 \
  --sweep-page 100 >"$t_tmp/page.log" 2>&1 &
pid=$!
t_pids+=("$pid")
wait_for 60 bash -c "[[ \$(grep -c 'event=sweep.done' '$t_tmp/page.log') -ge 2 ]]" || true
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
echo "sweep figures: Redis pages per sweep $(pages_of big | head -n 1) at 1000 a call, $(pages_of page | head -n 1) at 100"
check "sweep page 100: two sweeps completed" test "$(grep -c 'event=sweep.done' "$t_tmp/page.log")" -ge 2
check "sweep page 100: ten times the calls (201 pages and more)" \
  test "$(pages_of page | sort -n | head -n 1)" -ge 201
check_eq "sweep page 100: the job near the tail was seen (nothing pushed)" 0 \
  "$(grep -c 'event=sweep.orphan ' "$t_tmp/page.log")"

# ---- 5. 30 candidates without a job whose rows are finished while the sweep reads a
# 50,000-entry queue 10 entries a call (two passes: 10,000 calls and more).
sql -c "UPDATE executions SET status = 'failed' WHERE status = 'retrying' AND id <> $blocker"
sql -c "INSERT INTO executions (job_id, provider_id, region, status, question_id, retry_count,
                                last_retry_at)
        SELECT $job, 'router', 'us-east', 'retrying', 'math_basic', 1, now() - interval '1 hour'
        FROM generate_series(1, 30)"
rcli DEL "$Q" "{$Q}:delayed" >/dev/null
rcli LPUSH "$Q" "{\"execution_id\":$blocker,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}" >/dev/null
for ((i = 0; i < 50; i++)); do
  for ((k = 0; k < 1000; k++)); do
    printf 'LPUSH %s "{\\"execution_id\\":%d,\\"region\\":\\"us-east\\",\\"question_index\\":0,\\"retry_attempt\\":1}"\n' "$Q" $((800000000 + i * 1000 + k))
  done
done | rcli >/dev/null
check_eq "finishing: queue loaded" 50001 "$(rcli LLEN "$Q")"
# The first read of the queue comes after the candidates were read.
timeout 60 redis-cli -u "$RETRYQ_TEST_REDIS_URL" --no-auth-warning MONITOR >"$t_tmp/monitor" 2>/dev/null &
mon=$!
t_pids+=("$mon")
wait_for 10 test -s "$t_tmp/monitor" || true
"$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 --concurrency 1 --drain-timeout-ms 100 \
  --sweep-page 10 >"$t_tmp/finishing.log" 2>&1 &
pid=$!
t_pids+=("$pid")
check "finishing: the sweep reads the queue" \
  wait_for 30 bash -c "grep -q '\"LRANGE\" \"$Q\"' '$t_tmp/monitor'"
kill "$mon" 2>/dev/null || true
sql -c "UPDATE executions SET status = 'completed', completed_at = now()
        WHERE status = 'retrying' AND id <> $blocker"
check "finishing: the sweep ended" wait_for 60 grep -q 'event=sweep.done' "$t_tmp/finishing.log"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
first=$(grep -m1 'event=sweep.done' "$t_tmp/finishing.log")
echo "finishing: $first"
check "finishing: 30 candidates, none re-enqueued, 30 finished meanwhile" \
  grep -q '30 candidate(s), 0 re-enqueued, 30 finished meanwhile' <<<"$first"
check_eq "finishing: no stale job pushed" 0 "$(grep -c 'event=sweep.orphan ' "$t_tmp/finishing.log")"

t_finish
