#!/usr/bin/env bash
# Sentinel failover under load (issue 16): one primary, one replica, three sentinels
# (down-after 1000 ms, failover-timeout 5000 ms), N runner-shaped executions in
# 'retrying' with their jobs queued, the mock router at 100 ms, two workers on
# redis+sentinel://. The primary is killed with SIGKILL a third of the way through; once
# the sentinels have promoted the replica, the old primary comes back as a replica and,
# two thirds through, SENTINEL FAILOVER moves the primary back. The two workers that
# lived through both failovers must finish everything themselves. Checks:
#   - every execution terminal, exactly one outcome entry in retry_history;
#   - no worker went longer than the failover time + 10 s without recording an outcome
#     (the longest gap per worker is printed, from the workers' own job.recorded lines);
#   - each worker followed both primary changes (retry_redis_failovers_total);
#   - no job left in any list or set of the queue on the final primary;
#   - what the Redis side lost and how it came back: jobs pushed again by the orphan
#     sweep (retry_orphans_requeued_total) and deliveries the guard turned away
#     (retry_stale_total), printed.
# CHAOS_JOBS overrides N (default 3000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=test/support/redis_ha.sh
source "$here/../support/redis_ha.sh"
# shellcheck source=test/chaos/seed.sh
source "$here/seed.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
N=${CHAOS_JOBS:-3000}

private_services # PostgreSQL (its standalone Redis is not used)
new_database
ha_start 1 3
echo "sentinels: $HA_URL; data nodes on ${HA_NODE_PORTS[*]}"
Q=sentinel_failover
pcli() { redis-cli -h 127.0.0.1 -p "$(ha_primary_port)" "$@"; }

export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$HA_URL RETRYQ_QUEUE=$Q
export RETRYQ_HEARTBEAT_MS=300 RETRYQ_LEASE_MS=3000 RETRYQ_MAX_DELIVERIES=10
export RETRYQ_ORPHAN_INTERVAL_MS=2000 RETRYQ_ORPHAN_AGE_MS=15000 RETRYQ_LOG_LEVEL=info
export RETRYQ_CONCURRENCY=${SENTINEL_CONCURRENCY:-8}
start_router --latency-ms 100
export RETRYQ_ROUTER_URL=$ROUTER_URL

job=$(insert_job '{"id":"sentinel","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" "$N"
# the jobs go in through libretryq's client, which finds the primary through the sentinels
seed_job_file "$job" "$t_tmp/jobs.jsonl"
"$RETRYQ_CLI" enqueue --from "$t_tmp/jobs.jsonl" >/dev/null 2>"$t_tmp/enqueue.err" ||
  { cat "$t_tmp/enqueue.err"; echo "FAIL - enqueue through the sentinels"; exit 1; }
check_eq "seeded $N jobs through the sentinels" "$N" "$(pcli LLEN "$Q")"

finished() { ha_finished "$job"; }
wait_finished() { ha_wait_finished "$job" "$1" "${2:-120}"; }
ha_two_workers sentinel
metric() { ha_metric "$@"; }
now_ms() { date +%s%3N; }
start=$SECONDS

# ---- failover 1: SIGKILL of the primary a third of the way through
wait_finished $((N / 3)) 120 || true
old=$(ha_primary_port)
t0=$(now_ms)
ha_kill "$(ha_node_of_port "$old")"
echo "killed the primary (port $old) at $(finished) finished"
check "the sentinels promoted the replica" ha_wait_primary_not "$old" 30
failover1_ms=$(($(now_ms) - t0))
new=$(ha_primary_port)
echo "failover 1: $old -> $new in $failover1_ms ms, at $(finished) finished"
ha_restart "$(ha_node_of_port "$old")"
check "the old primary came back as a replica in sync" ha_wait_replicas 1 60

# ---- failover 2: SENTINEL FAILOVER back, two thirds through
wait_finished $((2 * N / 3)) 180 || true
stale1=$(( $(metric "$mport1" retry_stale_total) + $(metric "$mport2" retry_stale_total) ))
t0=$(now_ms)
check "SENTINEL FAILOVER moved the primary" ha_failover
failover2_ms=$(($(now_ms) - t0))
echo "failover 2: $new -> $(ha_primary_port) in $failover2_ms ms, at $(finished) finished"

# ---- the workers that lived through both must finish the work
check "the workers that lived through both failovers finished every job" wait_finished "$N" 240
check "worker a still running" kill -0 "$wa"
check "worker b still running" kill -0 "$wb"
elapsed=$((SECONDS - start))
fa=$(metric "$mport1" retry_redis_failovers_total)
fb=$(metric "$mport2" retry_redis_failovers_total)
orphans=$(( $(metric "$mport1" retry_orphans_requeued_total) + $(metric "$mport2" retry_orphans_requeued_total) ))
stale=$(( $(metric "$mport1" retry_stale_total) + $(metric "$mport2" retry_stale_total) ))
selfcheck=$(cat "$t_tmp"/worker-?.log | grep -c 'event=redis.self_check' || true)
kill -TERM "$wa" "$wb"
wait "$wa" 2>/dev/null || true
wait "$wb" 2>/dev/null || true

# ---- the longest time each worker went without recording an outcome
worst=$(( (failover1_ms > failover2_ms ? failover1_ms : failover2_ms) + 10000 ))
gaps() { ha_gaps "$@"; }
read -r gap_a n_a <<<"$(gaps "$t_tmp/worker-a.log")"
read -r gap_b n_b <<<"$(gaps "$t_tmp/worker-b.log")"
echo "worker a: $n_a outcomes, longest gap $gap_a ms, failovers followed $fa"
echo "worker b: $n_b outcomes, longest gap $gap_b ms, failovers followed $fb"
grep -h 'event=redis.failover' "$t_tmp"/worker-?.log || true

# ---- the invariants
read -r retrying completed not_once <<<"$(ha_outcomes "$job")"
calls=$(curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])')
left_pending=$(pcli LLEN "$Q")
left_delayed=$(pcli ZCARD "{$Q}:delayed")
left_dead=$(pcli LLEN "{$Q}:dead")
left_processing=0
for key in $(pcli --scan --pattern "{$Q}:processing:*"); do
  left_processing=$((left_processing + $(pcli LLEN "$key")))
done
for key in $(pcli --scan --pattern "{$Q}:taken:*"); do
  left_processing=$((left_processing + $(pcli HLEN "$key")))
done
leftover=$((left_pending + left_delayed + left_dead + left_processing))
echo "sentinel failover: $N jobs, $elapsed s, completed=$completed retrying=$retrying outcomes!=1: $not_once," \
     "router calls=$calls (repeated: $((calls - N))), failover times $failover1_ms ms / $failover2_ms ms"
echo "redis side: pending=$left_pending delayed=$left_delayed dead=$left_dead processing=$left_processing;" \
     "lost jobs pushed again by the orphan sweep: $orphans; deliveries turned away by the guard (stale):" \
     "$stale ($stale1 after the SIGKILL failover, $((stale - stale1)) after SENTINEL FAILOVER);" \
     "self-check retakes logged: $selfcheck"
check_eq "nothing lost: no execution left retrying" 0 "$retrying"
check_eq "recorded once: one outcome entry per execution" 0 "$not_once"
check_eq "every execution completed" "$N" "$completed"
check_eq "no job left in any list or set of the queue" 0 "$leftover"
check "worker a followed both primary changes" test "$fa" -ge 2
check "worker b followed both primary changes" test "$fb" -ge 2
check "worker a never stalled longer than the failover + 10 s ($worst ms)" test "$gap_a" -le "$worst"
check "worker b never stalled longer than the failover + 10 s ($worst ms)" test "$gap_b" -le "$worst"
check "both workers recorded outcomes after the failovers" test "$n_a" -gt 0 -a "$n_b" -gt 0
t_finish
