#!/usr/bin/env bash
# Chaos tests for DESIGN §6: nothing lost, recorded once, outages are not failures,
# graceful stop. Each scenario runs on its own private Redis (AOF on) and PostgreSQL,
# with N executions in 'retrying' and N jobs queued, and ends by checking:
#   - every execution is terminal (none left 'retrying'): nothing lost;
#   - exactly one outcome entry per execution in retry_history: recorded once;
#   - the queue, delayed set, dead list, processing lists and worker set are empty;
# and prints the counts it checked. In the outage scenarios the worker that lived through
# the outage must finish the work itself before anything else runs.
#
#   chaos.sh kill9 | multi | redis_restart | redis_kill | pg_restart | sigterm | router_down
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=test/chaos/seed.sh
source "$here/seed.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
scenario=${1:?usage: chaos.sh SCENARIO}
N=${CHAOS_JOBS:-2000}

private_services
svc="$t_tmp/services"
new_database
Q="chaos_$scenario"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_WORKER_URL RETRYQ_QUEUE=$Q
export RETRYQ_HTTP_ADDR=off RETRYQ_HEARTBEAT_MS=300 RETRYQ_LEASE_MS=1500 RETRYQ_MAX_DELIVERIES=10
export RETRYQ_ORPHAN_INTERVAL_MS=2000 RETRYQ_ORPHAN_AGE_MS=15000 RETRYQ_LOG_LEVEL=warn
start_router --latency-ms 50 --jitter-ms 150
export RETRYQ_ROUTER_URL=$ROUTER_URL

# ---- seed: N executions already 'retrying' (as the API leaves them) and N jobs queued
job=$(insert_job '{"id":"chaos","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" "$N"
sql -c "SELECT 'LPUSH $Q ''' || json_build_object('execution_id', id, 'region', region,
          'question_index', (id - 1) % 3, 'retry_attempt', 1)::text || ''''
        FROM executions WHERE job_id = $job ORDER BY id" | rcli >/dev/null
check_eq "seeded $N jobs" "$N" "$(rcli LLEN "$Q")"

finished() { sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status <> 'retrying'"; }
worker() { # [flags...]: start a worker in the background; sets WPID
  "$RETRYQ_WORKER_BIN" "$@" >>"$t_tmp/worker.log" 2>&1 &
  WPID=$!
  t_pids+=("$WPID")
}
rand_ms() { echo $((RANDOM % ($2 - $1) + $1)); }
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# Waits (deadline) until at least n executions are finished.
wait_finished() { wait_for "${2:-120}" bash -c "(( \$(psql '$DB' -XAtc \"SELECT count(*) FROM executions WHERE job_id = $job AND status <> 'retrying'\") >= $1 ))"; }
# The worker that lived through the fault must finish the work itself (a fresh worker
# started afterwards would hide a worker that never recovers); then it is stopped.
lived_through() { # <what>
  check "the worker that lived through $1 finished every job" wait_finished "$N" 180
  check "and it is still running" kill -0 "$WPID"
  kill -TERM "$WPID"; wait "$WPID" 2>/dev/null || true
}
finish_run() { # run one worker until the queue is drained
  timeout 300 "$RETRYQ_WORKER_BIN" --exit-when-idle >>"$t_tmp/worker.log" 2>&1
}

start=$SECONDS
case $scenario in
  kill9)
    for round in 1 2 3 4 5; do
      worker
      wait_finished $((round * N / 7)) 120 || true
      sleep_ms "$(rand_ms 0 400)"
      kill -9 "$WPID"; wait "$WPID" 2>/dev/null || true
      echo "round $round: killed at $(finished) finished"
    done
    finish_run
    ;;
  multi)
    worker --worker-id steady-1
    steady1=$WPID
    worker --worker-id steady-2
    steady2=$WPID
    for round in 1 2 3 4 5; do
      worker
      wait_finished $((round * N / 7)) 120 || true
      sleep_ms "$(rand_ms 0 300)"
      kill -9 "$WPID"; wait "$WPID" 2>/dev/null || true
      echo "round $round: killed the third worker at $(finished) finished"
    done
    wait_finished "$N" 180 || true
    kill -TERM "$steady1" "$steady2"
    wait "$steady1" "$steady2" 2>/dev/null || true
    finish_run
    ;;
  redis_restart|redis_kill)
    worker
    wait_finished $((N / 3)) 120 || true
    before=$(finished)
    if [[ $scenario == redis_restart ]]; then
      "$here/../support/services.sh" restart-redis "$svc"
    else
      # SIGKILL: AOF (everysec) may lose the last second of writes; the orphan sweep
      # (PostgreSQL is the record of truth) re-enqueues whatever Redis forgot.
      "$here/../support/services.sh" kill-redis "$svc"
      sleep 1
      "$here/../support/services.sh" start-redis "$svc"
    fi
    echo "Redis restarted at $before finished"
    lived_through "the Redis restart"
    finish_run
    check "the worker reconnected to Redis" grep -q "redis.ready\|redis.disconnected\|redis.connect" "$t_tmp/worker.log"
    ;;
  pg_restart)
    worker
    wait_finished $((N / 3)) 120 || true
    before=$(finished)
    "$here/../support/services.sh" restart-pg "$svc"
    echo "PostgreSQL restarted at $before finished"
    lived_through "the PostgreSQL restart"
    finish_run
    ;;
  sigterm)
    worker --drain-timeout-ms 3000
    wait_finished $((N / 3)) 120 || true
    kill -TERM "$WPID"
    t0=$SECONDS
    set +e; wait "$WPID"; rc=$?; set -e
    check_eq "SIGTERM under load: exit 0" 0 "$rc"
    check "SIGTERM under load: exited within the drain deadline (3 s + flush)" test $((SECONDS - t0)) -le 9
    echo "stopped at $(finished) finished, $(rcli LLEN "$Q") back in the queue"
    finish_run
    ;;
  router_down)
    worker --backoff 2s,5s,10s,20s
    wait_finished $((N / 3)) 120 || true
    curl -fsS -X POST -d '{"mode":"reset"}' "$ROUTER_URL/config" >/dev/null
    echo "router down at $(finished) finished"
    sleep 20
    curl -fsS -X POST -d '{"mode":"ok"}' "$ROUTER_URL/config" >/dev/null
    delayed=$(rcli ZCARD "{$Q}:delayed")
    echo "router back at $(finished) finished, $delayed delayed"
    lived_through "the router outage"
    finish_run
    check "transient failures went through the delayed set" test "$delayed" -gt 0
    ;;
  *) echo "unknown scenario $scenario"; exit 2 ;;
esac
elapsed=$((SECONDS - start))

# ---- the invariants
retrying=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'retrying'")
completed=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'")
failed=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status NOT IN ('completed','retrying')")
not_once=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1")
dups=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) > 1")
calls=$(curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])')
left_pending=$(rcli LLEN "$Q")
left_delayed=$(rcli ZCARD "{$Q}:delayed")
left_dead=$(rcli LLEN "{$Q}:dead")
left_workers=$(rcli ZCARD "{$Q}:workers")
leftover=$((left_pending + left_delayed + left_dead + left_workers))
[[ $leftover == 0 ]] || echo "leftovers: pending=$left_pending delayed=$left_delayed dead=$left_dead workers=$left_workers"
processing=$(held_keys "$Q" | wc -l)

echo "chaos $scenario: $N jobs, $elapsed s, completed=$completed failed=$failed retrying=$retrying," \
     "outcomes!=1: $not_once (duplicates: $dups), router calls=$calls, redis leftovers=$leftover," \
     "processing lists and taken hashes=$processing"
check_eq "nothing lost: no execution left retrying" 0 "$retrying"
check_eq "recorded once: one outcome entry per execution" 0 "$not_once"
check_eq "outages are not failures: every execution completed" "$N" "$completed"
check_eq "Redis lists and sets of the queue empty" 0 "$leftover"
check_eq "no processing list or taken hash left" 0 "$processing"
check "router called at least once per job" test "$calls" -ge "$N"
t_finish
