#!/usr/bin/env bash
# How a worker follows Redis Cluster redirections and reads CLUSTER SLOTS, against a real
# cluster of three primaries (no replicas) and one worker at a time, idle. To make the
# worker meet one -MOVED and nothing else, it is frozen (SIGSTOP) while the queue's slot
# moves with its keys to another primary (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
# NODE everywhere) and thawed (SIGCONT) once the move is over: its next command gets
# -MOVED from the old owner.
#   1. MOVED to an address: both connections go straight to the node named, without asking
#      any node for CLUSTER SLOTS (INFO commandstats of every node, reset while frozen);
#      the move counts once in retry_redis_failovers_total; a job enqueued afterwards runs.
#   2. Nodes announcing host names (cluster-announce-hostname, cluster-preferred-endpoint-type
#      hostname; the worker resolves them through RETRYQ_HOSTS_FILE): the worker starts on
#      the names CLUSTER SLOTS gives, and a MOVED naming a host counts once (not once for
#      the MOVED and once more when the name is resolved).
#   3. Nodes with an unknown endpoint (cluster-preferred-endpoint-type unknown-endpoint:
#      CLUSTER SLOTS answers a NULL endpoint, which means the node asked, and MOVED an empty
#      host): the worker finds the queue's primary and runs a job, the CLI reads the queue,
#      and a MOVED is followed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=test/support/redis_ha.sh
source "$here/../support/redis_ha.sh"
# shellcheck source=test/chaos/seed.sh
source "$here/../chaos/seed.sh"
# shellcheck source=test/support/flow.sh
source "$here/../support/flow.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

private_services # PostgreSQL (its standalone Redis is not used)
new_database
cl_start 3 0
echo "cluster: $CL_URL; nodes on ${CL_PORTS[*]}"
Q=cluster_redirect
slot=$(cl_cli "${CL_PORTS[0]}" CLUSTER KEYSLOT "$Q")
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$CL_URL RETRYQ_QUEUE=$Q
export RETRYQ_HEARTBEAT_MS=300 RETRYQ_LOG_LEVEL=info
start_router
export RETRYQ_ROUTER_URL=$ROUTER_URL

# worker_start <name> [flags...]: a worker with its metrics on a port of its own (WPID, WPORT)
worker_start() {
  local name=$1
  shift
  WPORT=$(free_port)
  "$RETRYQ_WORKER_BIN" --worker-id "redirect-$name" --http-addr "127.0.0.1:$WPORT" "$@" \
    >"$t_tmp/$name.log" 2>&1 &
  WPID=$!
  t_pids+=("$WPID")
}
ready() { curl -fsS "http://127.0.0.1:$WPORT/readyz" >/dev/null 2>&1; }
worker_stop() { kill -TERM "$WPID"; wait "$WPID" 2>/dev/null || true; }
# both connections of the worker are on the node at port $1
on_node() {
  local names
  names=$(cl_cli "$1" CLIENT LIST | grep -o 'name=retryq-worker-[a-z]*' | sort | tr '\n' ' ')
  [[ $names == "name=retryq-worker-command name=retryq-worker-pop " ]]
}
followed() { on_node "$1" && ready; }
# move_frozen: moves the queue's slot to another primary while the worker is frozen; sets
# FROM and TO (the ports)
move_frozen() {
  FROM=$(cl_owner_port "$slot")
  TO=$(cl_primaries | grep -vx "$FROM" | head -n 1)
  kill -STOP "$WPID"
  cl_move_slot "$slot" "$TO" || { kill -CONT "$WPID"; return 1; }
  local p
  for p in "${CL_PORTS[@]}"; do cl_cli "$p" CONFIG RESETSTAT >/dev/null; done
  kill -CONT "$WPID"
}
# the CLUSTER SLOTS calls of every node since the last reset
slots_calls() {
  local p n=0 c
  for p in "${CL_PORTS[@]}"; do
    c=$(cl_cli "$p" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_cluster|slots:calls=\([0-9]*\),.*/\1/p')
    n=$((n + ${c:-0}))
  done
  echo "$n"
}
# run_jobs <tag> <n>: n executions in 'retrying', their jobs enqueued with the CLI; true once
# every one is terminal
run_jobs() {
  local job
  job=$(insert_job "{\"id\":\"redirect-$1\",\"questions\":[\"identity_basic\",\"math_basic\",\"geography_basic\"]}")
  seed_executions "$job" "$2"
  seed_job_file "$job" "$t_tmp/$1.jsonl"
  "$RETRYQ_CLI" enqueue --from "$t_tmp/$1.jsonl" >/dev/null || return 1
  wait_for 30 ha_has_finished "$job" "$2"
}

# ---- 1: MOVED to an address
worker_start a
check "worker a ready on the seed URL" wait_for 30 ready
check "worker a on the owner of slot $slot" wait_for 10 on_node "$(cl_owner_port "$slot")"
check "the slot moved while worker a was frozen" move_frozen
check "worker a followed the MOVED to $TO (both connections, ready)" wait_for 20 followed "$TO"
check_eq "worker a asked no node for CLUSTER SLOTS: it went where MOVED said" 0 "$(slots_calls)"
check_eq "the move counted once" 1 "$(ha_metric "$WPORT" retry_redis_failovers_total)"
check "... as a MOVED (redis.failover)" grep -q "event=redis.failover .*moved (MOVED): .* -> 127.0.0.1:$TO" "$t_tmp/a.log"
check "a job enqueued after the move runs on the new owner" run_jobs moved 3
worker_stop

# ---- 2: nodes announcing host names
printf '127.0.0.1 %s\n' n0.cluster.test n1.cluster.test n2.cluster.test >"$t_tmp/hosts"
for i in "${!CL_PORTS[@]}"; do
  cl_cli "${CL_PORTS[$i]}" CONFIG SET cluster-announce-hostname "n$i.cluster.test" >/dev/null
done
for p in "${CL_PORTS[@]}"; do cl_cli "$p" CONFIG SET cluster-preferred-endpoint-type hostname >/dev/null; done
names_known() { # every node names every primary by its host name
  local p
  for p in "${CL_PORTS[@]}"; do
    (($(cl_cli "$p" CLUSTER SLOTS | grep -c '^n[0-9]\.cluster\.test$') >= 3)) || return 1
  done
}
check "every node names the primaries by host name" wait_for 20 names_known
worker_start b --hosts-file "$t_tmp/hosts"
check "worker b ready on the host names CLUSTER SLOTS gives" wait_for 30 ready
check "the slot moved while worker b was frozen" move_frozen
check "worker b followed the MOVED naming a host to $TO" wait_for 20 followed "$TO"
check_eq "the move to a host name counted once" 1 "$(ha_metric "$WPORT" retry_redis_failovers_total)"
worker_stop

# ---- 3: nodes with an unknown endpoint
for p in "${CL_PORTS[@]}"; do cl_cli "$p" CONFIG SET cluster-preferred-endpoint-type unknown-endpoint >/dev/null; done
# redis-cli prints a NULL bulk string as an empty line: the line after each range's end
null_endpoints() { [[ $(cl_cli "${CL_PORTS[0]}" CLUSTER SLOTS | sed -n 3p) == "" ]]; }
check "the nodes answer CLUSTER SLOTS with NULL endpoints" null_endpoints
worker_start c
check "worker c ready though CLUSTER SLOTS answers NULL endpoints" wait_for 30 ready
check "retryq stats reads the queue" "$RETRYQ_CLI" stats
check "a job runs" run_jobs unknown 3
check "the slot moved while worker c was frozen" move_frozen
check "worker c followed the MOVED with an empty host to $TO" wait_for 20 followed "$TO"
worker_stop
check_no_sanitizer_reports
t_finish
