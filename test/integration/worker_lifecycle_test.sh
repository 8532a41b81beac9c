#!/usr/bin/env bash
# retryq-worker's life: a graceful stop under load loses nothing and exits 0 in time;
# a kill -9 leaves a processing list that another worker recovers by lease on its own;
# an execution left 'retrying' with no job anywhere is found by the orphan sweep; a stop
# whose hand-back Redis never confirms ends after RETRYQ_STOP_FLUSH_MS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup life
start_router --latency-ms 300 --jitter-ms 100
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off

job=$(insert_job '{"id":"life","questions":["math_basic"]}')
# n executions in 'failed', each retried through the real submit path.
seed() { # <n> -> ids in $t_tmp/ids.<tag>
  local n=$1 tag=$2 i id
  : >"$t_tmp/ids.$tag"
  for ((i = 0; i < n; i++)); do
    id=$(insert_execution "$job" us-east failed math_basic)
    "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 0 >/dev/null
    echo "$id" >>"$t_tmp/ids.$tag"
  done
}
ids_of() { paste -sd, "$t_tmp/ids.$1"; }
count_status() { sql -c "SELECT count(*) FROM executions WHERE id IN ($(ids_of "$1")) AND status = '$2'"; }
outcomes_ok() { # exactly one outcome entry per execution of the set
  sql -c "SELECT count(*) FROM executions WHERE id IN ($(ids_of "$1")) AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1"
}
in_processing() { held_jobs "$Q"; }
holds_at_least() { (($(in_processing) >= $1)); }

# ---- 1. SIGTERM under load: stop taking, finish in-flight, exit 0 within the deadline.
seed 60 term
"$RETRYQ_WORKER_BIN" --concurrency 8 --drain-timeout-ms 10000 >"$t_tmp/term.log" 2>&1 &
pid=$!
t_pids+=("$pid")
wait_for 30 bash -c "[[ \$(psql '$DB' -XAtc \"SELECT count(*) FROM executions WHERE status='completed'\") -ge 8 ]]"
kill -TERM "$pid"
start=$SECONDS
set +e; wait "$pid"; rc=$?; set -e
check_eq "SIGTERM: exit code 0" 0 "$rc"
check "SIGTERM: exited within the drain deadline" test $((SECONDS - start)) -le 12
done_n=$(count_status term completed)
left=$(rcli LLEN "$Q")
check "SIGTERM: stopped taking jobs (some left in the queue)" test "$left" -gt 0
check_eq "SIGTERM: every job is done or back in the queue" 60 $((done_n + left))
check_eq "SIGTERM: no processing list left behind" 0 "$(in_processing)"
check_eq "SIGTERM: worker left the worker set" 0 "$(rcli ZCARD "{$Q}:workers")"
echo "SIGTERM figures: $done_n completed before the stop, $left handed back"

timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --concurrency 32 >"$t_tmp/term2.log" 2>&1
check_eq "after restart: all 60 completed" 60 "$(count_status term completed)"
check_eq "after restart: exactly one outcome each" 0 "$(outcomes_ok term)"

# ---- 1b. a second SIGTERM stops at once; the jobs stay in the processing list.
seed 10 twice
curl -fsS -X POST -d '{"latency_ms":30000}' "$ROUTER_URL/config" >/dev/null
"$RETRYQ_WORKER_BIN" --concurrency 10 --drain-timeout-ms 60000 >"$t_tmp/twice.log" 2>&1 &
pid=$!
t_pids+=("$pid")
wait_for 30 holds_at_least 1
kill -TERM "$pid"
# Two signals sent back to back can merge into one: send the second once the first is seen.
wait_for 10 grep -q "worker.drain" "$t_tmp/twice.log"
kill -TERM "$pid"
start=$SECONDS
set +e; wait "$pid"; rc=$?; set -e
check_eq "second SIGTERM: exit code 0" 0 "$rc"
check "second SIGTERM: stopped at once (not after the 60 s drain)" test $((SECONDS - start)) -le 5
check "second SIGTERM: jobs left in the processing list for recovery" test "$(in_processing)" -gt 0
curl -fsS -X POST -d '{"latency_ms":300}' "$ROUTER_URL/config" >/dev/null
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --concurrency 32 --heartbeat-ms 200 --lease-ms 1500 >"$t_tmp/twice2.log" 2>&1
check_eq "second SIGTERM: all 10 completed after recovery" 10 "$(count_status twice completed)"
check_eq "second SIGTERM: exactly one outcome each" 0 "$(outcomes_ok twice)"

# ---- 2. kill -9: another worker recovers the dead worker's list after the lease.
seed 40 kill
"$RETRYQ_WORKER_BIN" --concurrency 16 --heartbeat-ms 200 --lease-ms 1500 >"$t_tmp/kill.log" 2>&1 &
pid=$!
t_pids+=("$pid")
wait_for 30 holds_at_least 1
wait_for 10 holds_at_least 4
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
stranded=$(in_processing)
check "kill -9: jobs stranded in the dead worker's list" test "$stranded" -gt 0
start=$SECONDS
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --concurrency 32 --heartbeat-ms 200 --lease-ms 1500 \
  >"$t_tmp/recover.log" 2>&1
echo "kill -9 figures: $stranded stranded, recovered and finished in $((SECONDS - start)) s"
check_eq "kill -9: all 40 completed" 40 "$(count_status kill completed)"
check_eq "kill -9: exactly one outcome each" 0 "$(outcomes_ok kill)"
check_eq "kill -9: dead worker's list gone" 0 "$(in_processing)"
check_eq "kill -9: dead worker removed from the set" 0 "$(rcli ZCARD "{$Q}:workers")"
check "kill -9: recovery logged" grep -q "moved .* job(s) back to the queue" "$t_tmp/recover.log"

# ---- 3. orphan sweep: 'retrying' committed, job never pushed.
orphan=$(insert_execution "$job" us-east failed math_basic)
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1, last_retry_at = now() - interval '1 hour' WHERE id = $orphan"
timeout 60 "$RETRYQ_WORKER_BIN" --orphan-interval-ms 300 --orphan-age-ms 1000 >"$t_tmp/orphan.log" 2>&1 &
pid=$!
t_pids+=("$pid")
check "orphan: found and retried" wait_for 30 bash -c "[[ \$(psql '$DB' -XAtc \"SELECT status FROM executions WHERE id = $orphan\") == completed ]]"
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
check "orphan: sweep logged" grep -q "sweep.orphan" "$t_tmp/orphan.log"
check_eq "orphan: exactly one outcome" 1 "$(sql -c "SELECT jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) FROM executions WHERE id = $orphan")"

# ---- 4. an unsafe Redis (no AOF) is refused with --require-safe-redis, warned about without.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$t_tmp" >/dev/null 2>&1 &
rpid=$!
t_pids+=("$rpid")
wait_for 10 redis-cli -p "$port" ping >/dev/null
set +e
timeout 30 "$RETRYQ_WORKER_BIN" --redis-url "redis://127.0.0.1:$port" --require-safe-redis >"$t_tmp/unsafe.log" 2>&1
rc=$?
set -e
check_eq "unsafe Redis refused with --require-safe-redis: exit 78 (configuration)" 78 "$rc"
check "the refusal names the reason" grep -q "without AOF" "$t_tmp/unsafe.log"
timeout 30 "$RETRYQ_WORKER_BIN" --redis-url "redis://127.0.0.1:$port" --exit-when-idle >"$t_tmp/unsafe2.log" 2>&1
check "without the flag it warns and runs" grep -q "redis.unsafe" "$t_tmp/unsafe2.log"

# ---- 5. Redis stops answering (its process frozen) just before a stop: the hand-back is
# never confirmed, and the worker exits after the stop flush (1 s here, 5 s by default);
# what its list still holds would be recovered by lease.
"$RETRYQ_WORKER_BIN" --redis-url "redis://127.0.0.1:$port" --stop-flush-ms 1s >"$t_tmp/flush.log" 2>&1 &
pid=$!
t_pids+=("$pid")
check "stop flush: the worker is ready" wait_for 30 grep -q "event=worker.ready" "$t_tmp/flush.log"
kill -STOP "$rpid"
start_ns=$(date +%s%N)
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
took_ms=$((($(date +%s%N) - start_ns) / 1000000))
kill -CONT "$rpid"
check_eq "stop flush: exit code 0" 0 "$rc"
check "stop flush: the unconfirmed hand-back is logged" \
  grep -q "did not confirm the hand-back in time" "$t_tmp/flush.log"
check "stop flush: exited after the 1 s flush, not the 5 s default (took $took_ms ms)" \
  test "$took_ms" -ge 900 -a "$took_ms" -lt 4500

t_finish
