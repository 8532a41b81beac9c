#!/usr/bin/env bash
# Redis Cluster under load (issue 16): three primaries and three replicas
# (redis-server --cluster-enabled yes, joined by redis-cli --cluster create, node timeout
# 2000 ms), N runner-shaped executions in 'retrying' with their jobs queued through
# redis+cluster://, the mock router at 75 ms, two workers given only the seed URL. While
# they run:
#   1. a quarter through, the queue's slot moves to another primary with its keys, as
#      redis-cli --cluster reshard moves a slot (SETSLOT IMPORTING/MIGRATING, MIGRATE in
#      batches, SETSLOT NODE on every primary), the pending list first; a bulk
#      `retryq enqueue --from` started once the old owner refuses LPUSH (-ASK) must wait out
#      the migration and follow MOVED, `retryq stats --watch` runs across it on one client
#      (without an error) and `retryq enqueue` of one job follows it;
#   2. halfway, CLUSTER FAILOVER on a replica of the primary that now owns the slot;
#   3. three quarters through, SIGKILL of the primary that then owns it (its replica is
#      promoted by the cluster itself).
# Checks:
#   - the slot the workers computed for the queue is CLUSTER KEYSLOT's;
#   - every execution terminal, exactly one outcome entry in retry_history;
#   - no worker went longer than the longest of the three changes + 10 s without
#     recording an outcome (the longest gap per worker is printed);
#   - each worker followed the three changes (retry_redis_failovers_total, MOVED counted);
#   - no job left in any list or set of the queue on the final owner;
#   - then `retryq cancel` through the seed URL: a retry held by a worker's list is
#     running, one waiting in the queue is cancelled (row restored, a tombstone).
# CHAOS_JOBS overrides N (default 3000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=test/support/redis_ha.sh
source "$here/../support/redis_ha.sh"
# shellcheck source=test/chaos/seed.sh
source "$here/../chaos/seed.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
N=${CHAOS_JOBS:-3000}
LATE=20 # jobs enqueued only after the slot moved

private_services # PostgreSQL (its standalone Redis is not used)
new_database
cl_start 3 1
echo "cluster: $CL_URL; nodes on ${CL_PORTS[*]}"
Q=cluster_test
slot=$(cl_cli "${CL_PORTS[0]}" CLUSTER KEYSLOT "$Q")
ocli() { cl_cli "$(cl_owner_port "$slot")" "$@"; }

export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$CL_URL RETRYQ_QUEUE=$Q
export RETRYQ_HEARTBEAT_MS=300 RETRYQ_LEASE_MS=3000 RETRYQ_MAX_DELIVERIES=10
export RETRYQ_ORPHAN_INTERVAL_MS=2000 RETRYQ_ORPHAN_AGE_MS=15000 RETRYQ_LOG_LEVEL=info
export RETRYQ_CONCURRENCY=${CLUSTER_CONCURRENCY:-8}
start_router --latency-ms 75
export RETRYQ_ROUTER_URL=$ROUTER_URL

job=$(insert_job '{"id":"cluster","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" "$N"
seed_job_file "$job" "$t_tmp/all.jsonl"
head -n $((N - LATE)) "$t_tmp/all.jsonl" >"$t_tmp/jobs.jsonl"
tail -n $((LATE - 1)) "$t_tmp/all.jsonl" >"$t_tmp/late.jsonl"
last=$(tail -n 1 "$t_tmp/all.jsonl")
"$RETRYQ_CLI" enqueue --from "$t_tmp/jobs.jsonl" >/dev/null 2>"$t_tmp/enqueue.err" ||
  { cat "$t_tmp/enqueue.err"; echo "FAIL - enqueue through the cluster"; exit 1; }
check_eq "seeded $((N - LATE)) jobs through the cluster URL" "$((N - LATE))" "$(ocli LLEN "$Q")"

finished() { ha_finished "$job"; }
wait_finished() { ha_wait_finished "$job" "$1" "${2:-120}"; }
ha_two_workers cluster
now_ms() { date +%s%3N; }
start=$SECONDS
check "worker a computed the queue's slot as CLUSTER KEYSLOT ($slot)" \
  wait_for 20 grep -q "the primary of the queue's slot $slot is" "$t_tmp/worker-a.log"

# ---- 1: the slot moves to another primary, a quarter through
wait_finished $((N / 4)) 120 || true
"$RETRYQ_CLI" stats --watch --interval 0.2 --json >"$t_tmp/watch.out" 2>"$t_tmp/watch.err" &
watch=$!
t_pids+=("$watch")
wait_for 10 test -s "$t_tmp/watch.out" || true
from=$(cl_owner_port "$slot")
to=$(cl_primaries | grep -vx "$from" | head -n 1 || true)
t0=$(now_ms)
check "the move of slot $slot from $from to $to began" cl_migrate_begin "$slot" "$to"
# the pending list first: the old owner now answers an LPUSH with -ASK (the key is gone
# from it), and a bulk enqueue started now must wait out the migration (ASK, then MOVED)
check "the pending list migrated first" cl_migrate_keys "$slot" "$Q"
"$RETRYQ_CLI" enqueue --from "$t_tmp/late.jsonl" >"$t_tmp/late.out" 2>&1 &
late=$!
t_pids+=("$late")
lpush_refused() { cl_cli "$from" CLIENT LIST | grep -q 'cmd=lpush'; }
check "the bulk enqueue met the half-migrated slot on $from" wait_for 10 lpush_refused
check "the slot's other keys migrated" cl_migrate_keys "$slot"
cl_migrate_end "$slot"
move_ms=$(($(now_ms) - t0))
check_eq "the cluster names the new owner" "$to" "$(cl_owner_port "$slot")"
echo "move: slot $slot $from -> $to in $move_ms ms, at $(finished) finished"
lines_at_move=$(wc -l <"$t_tmp/watch.out")
late_rc=0
wait "$late" || late_rc=$?
cat "$t_tmp/late.out"
check_eq "retryq enqueue --from (bulk) across the migration queued every job" 0 "$late_rc"
check "retryq enqueue (one job) right after the move" "$RETRYQ_CLI" enqueue --raw "$last"
check "retryq stats through the cluster URL" "$RETRYQ_CLI" stats
watch_grows() { (($(wc -l <"$t_tmp/watch.out") >= lines_at_move + 5)); }
check "retryq stats --watch kept refreshing across the move (MOVED followed)" wait_for 20 watch_grows
kill "$watch" 2>/dev/null || true
wait "$watch" 2>/dev/null || true
check "retryq stats --watch printed no error across the move" test ! -s "$t_tmp/watch.err"

# ---- 2: CLUSTER FAILOVER on a replica of the new owner, halfway
wait_finished $((N / 2)) 180 || true
old=$(cl_owner_port "$slot")
t0=$(now_ms)
check "CLUSTER FAILOVER promoted a replica of $old" cl_failover "$old"
failover_ms=$(($(now_ms) - t0))
echo "failover: $old -> $(cl_owner_port "$slot") in $failover_ms ms, at $(finished) finished"

# ---- 3: SIGKILL of the owner, three quarters through
wait_finished $((3 * N / 4)) 180 || true
old=$(cl_owner_port "$slot")
t0=$(now_ms)
cl_kill "$old"
echo "killed the owner (port $old) at $(finished) finished"
owner_not() { local p; p=$(cl_owner_port "$slot"); [[ -n $p && $p != "$1" ]] && cl_is_primary "$p"; }
check "the cluster promoted a replica of the killed owner" wait_for 60 owner_not "$old"
kill_ms=$(($(now_ms) - t0))
echo "kill: $old -> $(cl_owner_port "$slot") in $kill_ms ms, at $(finished) finished"

# ---- the workers that lived through all three must finish the work
check "the workers finished every job" wait_finished "$N" 240
check "worker a still running" kill -0 "$wa"
check "worker b still running" kill -0 "$wb"
elapsed=$((SECONDS - start))
fa=$(ha_metric "$mport1" retry_redis_failovers_total)
fb=$(ha_metric "$mport2" retry_redis_failovers_total)
orphans=$(( $(ha_metric "$mport1" retry_orphans_requeued_total) + $(ha_metric "$mport2" retry_orphans_requeued_total) ))
stale=$(( $(ha_metric "$mport1" retry_stale_total) + $(ha_metric "$mport2" retry_stale_total) ))
kill -TERM "$wa" "$wb"
wait "$wa" 2>/dev/null || true
wait "$wb" 2>/dev/null || true

longest=$move_ms
((failover_ms > longest)) && longest=$failover_ms
((kill_ms > longest)) && longest=$kill_ms
worst=$((longest + 10000))
read -r gap_a n_a <<<"$(ha_gaps "$t_tmp/worker-a.log")"
read -r gap_b n_b <<<"$(ha_gaps "$t_tmp/worker-b.log")"
echo "worker a: $n_a outcomes, longest gap $gap_a ms, failovers followed $fa"
echo "worker b: $n_b outcomes, longest gap $gap_b ms, failovers followed $fb"
grep -h 'event=redis.failover' "$t_tmp"/worker-?.log || true

read -r retrying completed not_once <<<"$(ha_outcomes "$job")"
calls=$(curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])')
leftover=$(ha_queue_left ocli "$Q")
echo "cluster: $N jobs, $elapsed s, completed=$completed retrying=$retrying outcomes!=1: $not_once," \
     "router calls=$calls (repeated: $((calls - N))); slot move $move_ms ms, CLUSTER FAILOVER" \
     "$failover_ms ms, SIGKILL to promotion $kill_ms ms; jobs pushed again by the orphan sweep:" \
     "$orphans; deliveries turned away by the guard (stale): $stale; left in the queue: $leftover"
check_eq "nothing lost: no execution left retrying" 0 "$retrying"
check_eq "recorded once: one outcome entry per execution" 0 "$not_once"
check_eq "every execution completed" "$N" "$completed"
check_eq "no job left in any list or set of the queue" 0 "$leftover"
check "worker a followed the move and both failovers" test "$fa" -ge 3
check "worker b followed the move and both failovers" test "$fb" -ge 3
check "worker a never stalled longer than the longest change + 10 s ($worst ms)" test "$gap_a" -le "$worst"
check "worker b never stalled longer than the longest change + 10 s ($worst ms)" test "$gap_b" -le "$worst"
check "no worker log holds a sanitizer report" bash -c "! grep -l 'runtime error\|AddressSanitizer' '$t_tmp'/worker-?.log"

# ---- retryq cancel through the seed URL on the final owner: one retry waiting in the
# queue (cancelled, a tombstone), one held by a worker's list (running, none).
cjob=$(insert_job '{"id":"cluster-cancel","questions":["math_basic"]}')
held=$(insert_execution "$cjob" us-east failed math_basic)
queued=$(insert_execution "$cjob" us-east failed math_basic)
"$RETRYQ_CLI" retry --execution-id "$held" --region us-east --question-index 0 >/dev/null
"$RETRYQ_CLI" retry --execution-id "$queued" --region us-east --question-index 0 >/dev/null
ocli ZADD "{$Q}:workers" "$(now_ms)" w-fake >/dev/null
ocli RPOPLPUSH "$Q" "{$Q}:processing:w-fake" >/dev/null
rc_held=0 rc_queued=0
"$RETRYQ_CLI" cancel --execution-id "$held" --region us-east >/dev/null || rc_held=$?
"$RETRYQ_CLI" cancel --execution-id "$queued" --region us-east >/dev/null || rc_queued=$?
check_eq "cancel on the cluster: the held retry is running (exit 5)" 5 "$rc_held"
check_eq "cancel on the cluster: the queued retry is cancelled (exit 0)" 0 "$rc_queued"
check_eq "cancel on the cluster: the queued one's row restored" failed \
  "$(sql -c "SELECT status FROM executions WHERE id = $queued")"
check_eq "cancel on the cluster: a tombstone for the queued one only" "1 0" \
  "$(ocli ZSCORE "{$Q}:cancelled" "$queued:1" | grep -c . || true) $(ocli ZSCORE "{$Q}:cancelled" "$held:1" | grep -c . || true)"
t_finish
