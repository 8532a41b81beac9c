#!/usr/bin/env bash
# Fault paths of the Redis side (issue 12), one scenario per path. Each runs on its own
# Redis and PostgreSQL and asserts counts: nothing lost, one outcome entry per attempt,
# router calls repeated at most the jobs in flight at the fault, and that the worker
# that lived through the fault is the one that finished the work.
#
#   faults.sh fixed_id       kill -9 + restart with a fixed RETRYQ_WORKER_ID: the restarted
#                            worker adopts its own processing list (item 1)
#   faults.sh same_host      3 x kill -9 + immediate restart, default 30 s lease: the
#                            restarted worker recovers its dead predecessor's list at
#                            once; within 10 s of the undisturbed run (item 1)
#   faults.sh stop_push      SIGTERM an idle worker while a push arrives: no job lands in
#                            the list of a worker that has left (item 2)
#   faults.sh inflight       jobs in flight never exceed RETRYQ_CONCURRENCY (item 3)
#   faults.sh pop_error      a pop refused (WRONGTYPE) is retried; /readyz and the
#                            watchdog show the worker takes nothing (item 5)
#   faults.sh outage_peers   a Redis outage longer than the lease: no live peer's list
#                            is recovered, no router call repeated (item 6)
#   faults.sh self_check     jobs in the worker's own list that it does not hold are
#                            taken again by the periodic self-check (item 7)
#   faults.sh poison         a job that kills every worker becomes poison even with a
#                            nested "delivery" key or trailing whitespace (item 9)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=test/chaos/seed.sh
source "$here/seed.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
scenario=${1:?usage: faults.sh SCENARIO}

private_services
svc="$t_tmp/services"
new_database
Q="faults_$scenario"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_WORKER_URL RETRYQ_QUEUE=$Q
export RETRYQ_HTTP_ADDR=off RETRYQ_LOG_LEVEL=info
log="$t_tmp/worker.log"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
worker() { # [flags...]: start a worker in the background; sets WPID
  "$RETRYQ_WORKER_BIN" "$@" >>"$log" 2>&1 &
  WPID=$!
  t_pids+=("$WPID")
}
registered() { [[ -n $(rcli ZSCORE "{$Q}:workers" "$1") ]]; }
plist() { echo "{$Q}:processing:$1"; }
thash() { echo "{$Q}:taken:$1"; }
jobs_json() { # <job id>: one LPUSH argument per execution of that job, in id order
  sql -c "SELECT json_build_object('execution_id', id, 'region', region,
            'question_index', (id - 1) % 3, 'retry_attempt', 1)::text
          FROM executions WHERE job_id = $1 ORDER BY id"
}
# seed <n>: n executions in 'retrying' under a new job (JOB), their jobs queued.
seed() {
  JOB=$(insert_job '{"id":"faults","questions":["identity_basic","math_basic","geography_basic"]}')
  seed_executions "$JOB" "$1"
  [[ ${2:-queue} == queue ]] || return 0
  jobs_json "$JOB" | while read -r j; do printf "LPUSH %s '%s'\n" "$Q" "$j"; done |
    redis-cli -u "$RETRYQ_TEST_REDIS_URL" --no-auth-warning >/dev/null
}
finished() { sql -c "SELECT count(*) FROM executions WHERE job_id = ${1:-$JOB} AND status <> 'retrying'"; }
at_least_finished() { (($(finished "$2") >= $1)); }
wait_finished() { wait_for "${2:-120}" at_least_finished "$1" "${3:-$JOB}"; }
calls() { curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])'; }
# invariants <job> <n> <max repeated router calls> [completed|any]
invariants() {
  local job=$1 n=$2 max_repeat=$3 retrying not_once completed c
  retrying=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'retrying'")
  completed=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'")
  not_once=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1")
  c=$(calls)
  echo "faults $scenario: $n jobs, completed=$completed retrying=$retrying outcomes!=1: $not_once," \
       "router calls=$c (repeated $((c - n)), allowed $max_repeat)"
  check_eq "nothing lost: no execution left retrying" 0 "$retrying"
  check_eq "recorded once: one outcome entry per execution" 0 "$not_once"
  [[ ${4:-completed} == completed ]] && check_eq "every execution completed" "$n" "$completed"
  check "router calls repeated ($((c - n))) <= jobs in flight at the faults ($max_repeat)" \
    test $((c - n)) -le "$max_repeat"
  check "router called at least once per job" test "$c" -ge "$n"
}
redis_empty() { # every list and set of the queue empty, no processing list or taken hash left
  local left
  left=$(( $(rcli LLEN "$Q") + $(rcli ZCARD "{$Q}:delayed") + $(rcli LLEN "{$Q}:dead") +
           $(rcli ZCARD "{$Q}:workers") + $(rcli HLEN "{$Q}:workerinfo") +
           $(held_keys "$Q" | wc -l) ))
  check_eq "Redis: queue, delayed, dead, workers, workerinfo, processing lists and taken hashes empty" 0 "$left"
}
router() { start_router "$@"; export RETRYQ_ROUTER_URL=$ROUTER_URL; }
stop_worker() { # <pid>: SIGTERM and wait
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

case $scenario in
  fixed_id)
    # The lease (30 s) and the sweep cannot help: only adopting its own list can.
    export RETRYQ_CONCURRENCY=20 RETRYQ_ORPHAN_INTERVAL_MS=2000 RETRYQ_ORPHAN_AGE_MS=15000
    router --latency-ms 300
    N=300
    seed "$N"
    inflight=0
    for round in 1 2 3; do
      worker --worker-id host-fixed
      wait_finished $((round * N / 5)) 60 || true
      kill -STOP "$WPID" # frozen: what its list holds now is what it had in flight
      held=$(held_by "$Q" host-fixed)
      kill -9 "$WPID"; wait "$WPID" 2>/dev/null || true
      inflight=$((inflight + held))
      echo "round $round: killed with $held job(s) in its list at $(finished) finished"
    done
    worker --worker-id host-fixed
    check "the restarted worker (same id) finishes every job" wait_finished $N 60
    check "and it is still running" kill -0 "$WPID"
    stop_worker "$WPID"
    invariants "$JOB" "$N" "$inflight"
    redis_empty
    ;;

  same_host)
    # The issue's trial: 2,000 jobs, a 200 ms router, default lease and heartbeat.
    unset RETRYQ_LEASE_MS RETRYQ_HEARTBEAT_MS
    export RETRYQ_LOG_LEVEL=warn
    router --latency-ms 200
    N=${FAULTS_JOBS:-2000}
    seed "$N"
    t0=$(date +%s%3N)
    worker
    check "undisturbed run finishes" wait_finished "$N" 120
    undisturbed=$(($(date +%s%3N) - t0))
    stop_worker "$WPID"
    curl -fsS -X POST "$ROUTER_URL/reset" >/dev/null
    seed "$N"
    t0=$(date +%s%3N)
    inflight=0
    for round in 1 2 3; do
      worker
      wait_finished $((round * N / 4)) 120 || true
      kill -STOP "$WPID"
      held=$(held_jobs "$Q")
      kill -9 "$WPID"; wait "$WPID" 2>/dev/null || true
      inflight=$((inflight + held))
      echo "round $round: killed with $held job(s) held in Redis at $(finished) finished"
    done
    worker
    check "the last restarted worker finishes every job" wait_finished "$N" 120
    disturbed=$(($(date +%s%3N) - t0))
    check "and it is still running" kill -0 "$WPID"
    stop_worker "$WPID"
    echo "same_host: undisturbed ${undisturbed} ms, 3 x kill -9 + restart ${disturbed} ms," \
         "$(($(calls) - N)) router call(s) repeated, $inflight in flight at the kills"
    check "3 x kill -9 + restart within 10 s of the undisturbed run" \
      test "$disturbed" -le $((undisturbed + 10000))
    invariants "$JOB" "$N" "$inflight"
    redis_empty
    ;;

  stop_push)
    # Redis is held busy (a Lua loop) while the worker, blocked in its pop, is told to stop
    # and a push arrives after the worker's stop has reached Redis. Without care the push
    # is handed to the blocked pop after the worker has left {Q}:workers.
    router --latency-ms 5
    seed 4 none
    mapfile -t payloads < <(jobs_json "$JOB")
    busy="local t = redis.call('TIME') local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 300000
          repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop
          return 1"
    busy=${busy//$'\n'/ }
    stranded=0
    for attempt in 1 2 3 4; do
      id="stopper-$attempt"
      : >"$log"
      worker --worker-id "$id"
      wait_for 30 registered "$id" || { echo "FAIL - worker $id did not register"; exit 1; }
      blocked() { rcli CLIENT LIST | grep -q 'name=retryq-worker-pop .*cmd=blmove'; }
      wait_for 10 blocked || { echo "FAIL - worker $id never blocked in its pop"; exit 1; }
      exec 5<>"/dev/tcp/127.0.0.1/$RETRYQ_TEST_REDIS_PORT" 6<>"/dev/tcp/127.0.0.1/$RETRYQ_TEST_REDIS_PORT"
      # shellcheck disable=SC2016 # RESP, not shell expansions
      printf '*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n' "${#busy}" "$busy" >&6
      kill -TERM "$WPID"
      wait_for 5 grep -q "stopping (SIGTERM)" "$log"
      p=${payloads[attempt - 1]}
      # shellcheck disable=SC2016
      printf '*3\r\n$5\r\nLPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#Q}" "$Q" "${#p}" "$p" >&5
      set +e; timeout 20 tail --pid="$WPID" -f /dev/null; set -e
      wait "$WPID" 2>/dev/null || true
      exec 5>&- 6>&-
      left=$(held_by "$Q" "$id")
      gone=$(rcli ZSCORE "{$Q}:workers" "$id")
      echo "attempt $attempt: list of the stopped worker holds $left job(s); registered: [${gone}]"
      if [[ $left != 0 ]]; then
        stranded=$((stranded + left))
        rcli RPOPLPUSH "$(plist "$id")" "$Q" >/dev/null
        rcli HKEYS "$(thash "$id")" | while IFS= read -r j; do rcli LPUSH "$Q" "$j" >/dev/null; done
        rcli DEL "$(thash "$id")" >/dev/null
      fi
    done
    check_eq "no job left in the list of a worker that has left" 0 "$stranded"
    # (A job pushed in one attempt may be taken by the next attempt's worker.)
    check_eq "every pushed job is queued or done" 4 $(( $(rcli LLEN "$Q") + $(finished) ))
    worker
    check "a worker started afterwards takes them" wait_finished 4 30
    stop_worker "$WPID"
    invariants "$JOB" 4 0
    redis_empty
    ;;

  inflight)
    C=5
    PORT=$(free_port)
    router --latency-ms 1500
    export RETRYQ_CONCURRENCY=$C RETRYQ_HTTP_ADDR=127.0.0.1:$PORT
    N=40
    seed "$N"
    worker --worker-id inflight-1
    max=0
    deadline=$((SECONDS + 60))
    while (($(finished) < N && SECONDS < deadline)); do
      n=$(held_by "$Q" inflight-1)
      ((n > max)) && max=$n
      sleep 0.02
    done
    metric=$(curl -fsS "http://127.0.0.1:$PORT/metrics" | sed -n 's/^retry_inflight_max \([0-9]*\).*/\1/p')
    echo "inflight: concurrency $C, held in Redis at most $max, retry_inflight_max=${metric:-absent}"
    check "the worker never held more than RETRYQ_CONCURRENCY in Redis ($max <= $C)" test "$max" -le $C
    check_eq "retry_inflight_max equals RETRYQ_CONCURRENCY" "$C" "${metric:-absent}"
    check "the worker finished every job" wait_finished $N 30
    stop_worker "$WPID"
    invariants "$JOB" $N 0
    redis_empty
    ;;

  pop_error)
    PORT=$(free_port)
    router --latency-ms 5
    export RETRYQ_HTTP_ADDR=127.0.0.1:$PORT
    seed 3 none
    readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/readyz"; }
    ready_is() { [[ $(readyz) == "$1" ]]; }
    # A systemd notify socket to watch WATCHDOG=1.
    sock="$t_tmp/notify.sock" nlog="$t_tmp/notify.log"
    : >"$nlog"
    python3 "$here/../support/notify_listen.py" "$sock" "$nlog" &
    t_pids+=($!)
    wait_for 10 test -S "$sock"
    # last_ping_age: seconds since the last WATCHDOG=1
    last_ping_age() {
      python3 - "$nlog" <<'PY'
import json, sys, time
t = [json.loads(l)["t"] for l in open(sys.argv[1]) if '"WATCHDOG=1"' in l]
print(int(time.monotonic() - t[-1]) if t else 999)
PY
    }
    pinged_within() { (($(last_ping_age) <= $1)); }
    silent_for() { (($(last_ping_age) >= $1)); }
    NOTIFY_SOCKET=$sock WATCHDOG_USEC=2000000 "$RETRYQ_WORKER_BIN" --worker-id pop-1 >>"$log" 2>&1 &
    WPID=$!
    t_pids+=("$WPID")
    check "ready at start" wait_for 30 ready_is 200
    check "watchdog fed at start" wait_for 10 pinged_within 1
    rcli SET "$Q" not-a-list >/dev/null
    check "/readyz fails within 5 s of pops being refused (WRONGTYPE)" wait_for 5 ready_is 503
    curl -s --max-time 5 "http://127.0.0.1:$PORT/readyz" | sed 's/^/  readyz: /'
    check "the watchdog stops being fed while the pop keeps failing" wait_for 40 silent_for 3
    rcli DEL "$Q" >/dev/null
    jobs_json "$JOB" | while read -r j; do rcli LPUSH "$Q" "$j" >/dev/null; done
    check "the same worker takes jobs again once the key is a list" wait_finished 3 30
    check "/readyz back to 200" wait_for 10 ready_is 200
    check "the watchdog is fed again" wait_for 10 pinged_within 1
    check "and the worker is still running" kill -0 "$WPID"
    stop_worker "$WPID"
    invariants "$JOB" 3 0
    redis_empty
    ;;

  outage_peers)
    # Jobs stay in the router longer than the outage, so a live peer's list recovered by
    # mistake shows as repeated router calls.
    export RETRYQ_HEARTBEAT_MS=300 RETRYQ_LEASE_MS=1500 RETRYQ_CONCURRENCY=10
    router --latency-ms 14000
    N=30
    seed "$N"
    worker --worker-id peer-a
    a=$WPID
    worker --worker-id peer-b
    b=$WPID
    both_busy() { (($(held_by "$Q" peer-a) >= 5 && $(held_by "$Q" peer-b) >= 5)); }
    check "both workers hold jobs" wait_for 30 both_busy
    "$here/../support/services.sh" stop-redis "$svc"
    sleep 6 # the outage: 4 leases long
    "$here/../support/services.sh" start-redis "$svc"
    echo "Redis back after a 6 s outage"
    check "the two workers that lived through the outage finish every job" wait_finished $N 90
    check "both still running" kill -0 "$a" "$b"
    moved=$(grep -c "moved .* job(s) back to the queue" "$log" || true)
    check_eq "no lease recovery of a live peer's list" 0 "$moved"
    stop_worker "$a"; stop_worker "$b"
    invariants "$JOB" $N 0
    redis_empty
    ;;

  self_check)
    # Jobs in the worker's own processing list or taken hash that it does not hold (a write
    # dropped, a payload it could not take, a pop check not sent) must be taken again while
    # it runs, 100 per heartbeat at most. Every other one goes into the list, the rest into
    # the hash.
    export RETRYQ_HEARTBEAT_MS=500 RETRYQ_LEASE_MS=3000
    router --latency-ms 20
    N=250
    worker --worker-id self-1
    wait_for 30 registered self-1 || { echo "FAIL - worker did not register"; exit 1; }
    seed $N none
    # (Each RPUSH's answer is counted rather than the list's length afterwards: the
    # self-check may already be taking them while they are pushed.)
    k=0
    pushed=$(jobs_json "$JOB" | while read -r j; do
      if ((++k % 2)); then printf "RPUSH %s '%s'\n" "$(plist self-1)" "$j"; else printf "HSET %s '%s' 1\n" "$(thash self-1)" "$j"; fi
    done |
      redis-cli -u "$RETRYQ_TEST_REDIS_URL" --no-auth-warning | grep -cE '^[0-9]+$' || true)
    check_eq "$N jobs put into the worker's own list and hash behind its back" $N "$pushed"
    check "the running worker takes them all" wait_finished $N 60
    check "and it is still running" kill -0 "$WPID"
    stop_worker "$WPID"
    invariants "$JOB" $N 0
    redis_empty
    ;;

  poison)
    # Each worker is killed while it holds the jobs; after RETRYQ_MAX_DELIVERIES deliveries
    # they must be poison (failed, dead list), whatever else their JSON holds.
    export RETRYQ_HEARTBEAT_MS=300 RETRYQ_LEASE_MS=1500 RETRYQ_MAX_DELIVERIES=3
    router --latency-ms 30000
    seed 2 none
    mapfile -t ids < <(sql -c "SELECT id FROM executions WHERE job_id = $JOB ORDER BY id")
    mapfile -t regions < <(sql -c "SELECT region FROM executions WHERE job_id = $JOB ORDER BY id")
    nested="{\"execution_id\":${ids[0]},\"region\":\"${regions[0]}\",\"meta\":{\"delivery\":0,\"x\":\"}\"},\"question_index\":0,\"retry_attempt\":1}"
    trailing="{\"execution_id\":${ids[1]},\"region\":\"${regions[1]}\",\"question_index\":1,\"retry_attempt\":1}"$' \n\t'
    rcli LPUSH "$Q" "$nested" >/dev/null
    rcli LPUSH "$Q" "$trailing" >/dev/null
    holding() { (($(held_by "$Q" "$1") == 2)); }
    dead_both() { (($(rcli LLEN "{$Q}:dead") == 2)); }
    for round in 1 2 3 4 5 6; do
      dead_both && break
      worker --worker-id "poison-$round"
      wait_for 20 bash -c "(( \$(redis-cli -u '$RETRYQ_TEST_REDIS_URL' LLEN '{$Q}:dead') == 2 || \
        \$(redis-cli -u '$RETRYQ_TEST_REDIS_URL' HLEN '{$Q}:taken:poison-$round') == 2 ))" || true
      if holding "poison-$round"; then
        kill -9 "$WPID"; wait "$WPID" 2>/dev/null || true
        echo "round $round: killed holding both jobs"
      fi
    done
    check "both jobs reached the dead list within 6 kills" wait_for 20 dead_both
    stop_worker "$WPID"
    rcli LRANGE "{$Q}:dead" 0 -1 | sed 's/^/  dead: /'
    check_eq "both dead-letter entries say poison" 2 "$(rcli LRANGE "{$Q}:dead" 0 -1 | grep -c 'poison')"
    check_eq "both executions failed" 2 "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $JOB AND status = 'failed'")"
    check_eq "one outcome entry per execution" 0 "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $JOB AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1")"
    check_eq "the nested delivery key is untouched" 1 "$(rcli LRANGE "{$Q}:dead" 0 -1 | grep -c '\\"meta\\":{\\"delivery\\":0')"
    ;;

  *) echo "unknown scenario $scenario"; exit 2 ;;
esac
# Under RETRYQ_SANITIZE a report (a leak at exit, undefined behaviour) lands in the log.
check "no sanitizer report in the worker logs" bash -c "! grep -q 'Sanitizer\|runtime error' '$log'"
if ((t_failed > 0)); then
  echo "---- last worker log lines"
  tail -n 40 "$log"
fi
t_finish
