#!/usr/bin/env bash
# Sourced after lib.sh: a Sentinel-managed Redis for one test, on free loopback ports in
# the test's temp dir (Debian's redis-server and redis-sentinel). Every process runs in
# the foreground as a background job listed in t_pids, so lib.sh's cleanup kills it.
#
#   ha_start [replicas] [sentinels]   one primary (node 0), replicas (default 1), sentinels
#                                     (default 3) monitoring master $HA_MASTER with
#                                     down-after 1000 ms, failover-timeout 5000 ms; sets
#                                     HA_URL (redis+sentinel://...), HA_SENTINEL_PORTS and
#                                     HA_NODE_PORTS (index = node)
#   ha_kill NODE                      SIGKILL that data node
#   ha_restart NODE                   start it again on its port and data (AOF), as a
#                                     replica of the current primary
#   ha_primary_port                   the port the sentinels name as the primary
#   ha_node_of_port PORT              the node index of a port
#   ha_wait_primary_not PORT SECONDS  until the sentinels name another primary
#   ha_failover                       SENTINEL FAILOVER, then waits for the new primary
#   ha_wait_replicas N SECONDS        until the primary reports N connected replicas in sync
#   ha_sentinel_log                   the sentinels' logs, concatenated
#   ha_watch PORT [replicas] [sentinels]  the same around a primary already running on PORT
#                                     (it becomes node 0; ha_kill/ha_restart then do not
#                                     apply to it): a replica of it and sentinels
# HA_PASSWORD (data nodes: requirepass/masterauth) and HA_SENTINEL_PASSWORD (the
# sentinels' requirepass), when set before ha_start, turn authentication on.
HA_MASTER=${HA_MASTER:-retryq}
HA_PASSWORD=${HA_PASSWORD:-}
HA_SENTINEL_PASSWORD=${HA_SENTINEL_PASSWORD:-}
HA_DOWN_AFTER_MS=${HA_DOWN_AFTER_MS:-1000} # sentinel down-after-milliseconds
HA_DIR="$t_tmp/ha"
HA_NODE_PORTS=()
HA_SENTINEL_PORTS=()
HA_NODE_PIDS=()

ha_free_ports() { "$(dirname "${BASH_SOURCE[0]}")/services.sh" ports "$1"; }

# redis-cli to a data node / a sentinel, with its password when one is set
ha_ncli() { redis-cli --no-auth-warning -h 127.0.0.1 -p "$1" ${HA_PASSWORD:+-a "$HA_PASSWORD"} "${@:2}"; }
ha_scli() { redis-cli --no-auth-warning -h 127.0.0.1 -p "$1" ${HA_SENTINEL_PASSWORD:+-a "$HA_SENTINEL_PASSWORD"} "${@:2}"; }
ha_ping() { [[ $(ha_ncli "$1" ping 2>/dev/null) == PONG ]]; }
ha_sping() { [[ $(ha_scli "$1" ping 2>/dev/null) == PONG ]]; }

# <node> [replicaof port]
ha_node_start() {
  local i=$1 port=${HA_NODE_PORTS[$1]} of=${2:-} args=()
  mkdir -p "$HA_DIR/node$i"
  [[ -n $of ]] && args=(--replicaof 127.0.0.1 "$of")
  [[ -n $HA_PASSWORD ]] && args+=(--requirepass "$HA_PASSWORD" --masterauth "$HA_PASSWORD")
  redis-server --bind 127.0.0.1 --port "$port" --dir "$HA_DIR/node$i" \
    --logfile "$HA_DIR/node$i/redis.log" --appendonly yes --appendfsync everysec --save '' \
    --maxmemory-policy noeviction --protected-mode no --repl-diskless-sync yes \
    --repl-diskless-sync-delay 0 "${args[@]}" >/dev/null 2>&1 &
  HA_NODE_PIDS[$i]=$!
  t_pids+=("$!")
  wait_for 10 ha_ping "$port" || { echo "FAIL - redis node $i did not start on $port"; return 1; }
}

ha_sentinel_start() { # <index>
  local i=$1 port=${HA_SENTINEL_PORTS[$1]} conf="$HA_DIR/sentinel$1/sentinel.conf"
  mkdir -p "$HA_DIR/sentinel$i"
  cat >"$conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
dir $HA_DIR/sentinel$i
logfile $HA_DIR/sentinel$i/sentinel.log
sentinel monitor $HA_MASTER 127.0.0.1 ${HA_NODE_PORTS[0]} 2
sentinel down-after-milliseconds $HA_MASTER $HA_DOWN_AFTER_MS
sentinel failover-timeout $HA_MASTER 5000
sentinel parallel-syncs $HA_MASTER 1
EOF
  [[ -n $HA_PASSWORD ]] && echo "sentinel auth-pass $HA_MASTER $HA_PASSWORD" >>"$conf"
  [[ -n $HA_SENTINEL_PASSWORD ]] &&
    printf 'requirepass %s\nsentinel sentinel-pass %s\n' "$HA_SENTINEL_PASSWORD" "$HA_SENTINEL_PASSWORD" >>"$conf"
  redis-sentinel "$conf" >/dev/null 2>&1 &
  t_pids+=("$!")
  wait_for 10 ha_sping "$port" || { echo "FAIL - sentinel $i did not start on $port"; return 1; }
}

ha_start() {
  local replicas=${1:-1} sentinels=${2:-3} ports i
  command -v redis-sentinel >/dev/null || { echo "FAIL - redis-sentinel not found (scripts/deps.sh)"; exit 1; }
  mkdir -p "$HA_DIR"
  read -r -a ports <<<"$(ha_free_ports $((1 + replicas + sentinels)))"
  HA_NODE_PORTS=("${ports[@]:0:$((1 + replicas))}")
  HA_SENTINEL_PORTS=("${ports[@]:$((1 + replicas))}")
  ha_node_start 0 || exit 1
  for ((i = 1; i <= replicas; i++)); do ha_node_start "$i" "${HA_NODE_PORTS[0]}" || exit 1; done
  ha_sentinels_up "$replicas"
}

# After the data nodes: the replicas in sync, the sentinels started and settled; HA_URL.
ha_sentinels_up() { # <replicas>
  local replicas=$1 i list=""
  ha_wait_replicas "$replicas" 30 || { echo "FAIL - replicas did not sync"; exit 1; }
  for i in "${!HA_SENTINEL_PORTS[@]}"; do
    ha_sentinel_start "$i" || exit 1
    list+="${list:+,}127.0.0.1:${HA_SENTINEL_PORTS[$i]}"
  done
  # every sentinel knows the replicas and the other sentinels before the test goes on
  wait_for 30 ha_sentinels_settled "$replicas" "$((${#HA_SENTINEL_PORTS[@]} - 1))" ||
    { echo "FAIL - the sentinels did not discover each other"; exit 1; }
  HA_URL="redis+sentinel://$list/$HA_MASTER"
}

ha_watch() {
  local primary=$1 replicas=${2:-1} sentinels=${3:-3} ports i
  command -v redis-sentinel >/dev/null || { echo "FAIL - redis-sentinel not found (scripts/deps.sh)"; exit 1; }
  mkdir -p "$HA_DIR"
  read -r -a ports <<<"$(ha_free_ports $((replicas + sentinels)))"
  HA_NODE_PORTS=("$primary" "${ports[@]:0:$replicas}")
  HA_SENTINEL_PORTS=("${ports[@]:$replicas}")
  for ((i = 1; i <= replicas; i++)); do ha_node_start "$i" "$primary" || exit 1; done
  ha_sentinels_up "$replicas"
}

ha_sentinels_settled() { # <replicas> <other sentinels>
  local p info
  for p in "${HA_SENTINEL_PORTS[@]}"; do
    info=$(ha_scli "$p" SENTINEL master "$HA_MASTER" 2>/dev/null | tr '\n' ' ')
    [[ $info == *"num-slaves $1 "* && $info == *"num-other-sentinels $2 "* ]] || return 1
  done
}

ha_primary_port() {
  local p out
  for p in "${HA_SENTINEL_PORTS[@]}"; do
    out=$(ha_scli "$p" SENTINEL get-master-addr-by-name "$HA_MASTER" 2>/dev/null | sed -n 2p)
    [[ -n $out ]] && { echo "$out"; return 0; }
  done
  return 1
}

ha_node_of_port() {
  local i
  for i in "${!HA_NODE_PORTS[@]}"; do [[ ${HA_NODE_PORTS[$i]} == "$1" ]] && { echo "$i"; return; }; done
  return 1
}

ha_is_not_primary() { [[ $(ha_primary_port) != "$1" ]] && [[ $(ha_ncli "$(ha_primary_port)" ROLE 2>/dev/null | head -1) == master ]]; }
ha_wait_primary_not() { wait_for "$2" ha_is_not_primary "$1"; }

ha_kill() {
  kill -9 "${HA_NODE_PIDS[$1]}" 2>/dev/null || true
  wait "${HA_NODE_PIDS[$1]}" 2>/dev/null || true
}

ha_restart() { ha_node_start "$1" "$(ha_primary_port)"; }

ha_failover() {
  local old
  old=$(ha_primary_port)
  ha_scli "${HA_SENTINEL_PORTS[0]}" SENTINEL failover "$HA_MASTER" >/dev/null
  ha_wait_primary_not "$old" 30
}

ha_online_replicas() { # <port>: replicas the node reports online
  ha_ncli "$1" INFO replication 2>/dev/null | grep -c '^slave[0-9]*:.*state=online' || true
}
ha_has_replicas() { (($(ha_online_replicas "$(ha_primary_port 2>/dev/null || echo "${HA_NODE_PORTS[0]}")") >= $1)); }
ha_wait_replicas() { wait_for "$2" ha_has_replicas "$1"; }

ha_sentinel_log() { cat "$HA_DIR"/sentinel*/sentinel.log 2>/dev/null; }

# ---- Redis Cluster, on free loopback ports in the test's temp dir, beside the Sentinel setup
#
#   cl_start [primaries] [replicas per primary]   redis-server --cluster-enabled yes nodes
#                                     (default 3 primaries, 1 replica each; node timeout
#                                     CL_NODE_TIMEOUT_MS, default 2000), joined with
#                                     redis-cli --cluster create; sets CL_URL
#                                     (redis+cluster://seed,...) and CL_PORTS (index = node)
#   cl_cli PORT ARGS...               redis-cli to one node
#   cl_owner_port SLOT                the port of the primary serving SLOT
#   cl_primaries                      the ports of the primaries, one a line
#   cl_replica_of PORT                the port of one replica of that primary
#   cl_move_slot SLOT TO_PORT         moves SLOT and its keys to the primary on TO_PORT as
#                                     redis-cli --cluster reshard does (SETSLOT IMPORTING /
#                                     MIGRATING, MIGRATE in batches, SETSLOT NODE everywhere);
#                                     cl_migrate_begin / _keys / _end are its three steps
#   cl_failover PORT                  CLUSTER FAILOVER on a replica of that primary, then
#                                     waits for the replica to serve its slots
#   cl_kill PORT                      SIGKILL the node on PORT
#   cl_wait_ok SECONDS                until every live node says cluster_state:ok
CL_NODE_TIMEOUT_MS=${CL_NODE_TIMEOUT_MS:-2000}
CL_PORTS=()
CL_BUS_PORTS=() # cluster-port: the default (port + 10000) can fall outside the range
CL_PIDS=()

cl_cli() { redis-cli --no-auth-warning -h 127.0.0.1 -p "$1" ${HA_PASSWORD:+-a "$HA_PASSWORD"} "${@:2}"; }

cl_node_start() { # <index>
  local i=$1 port=${CL_PORTS[$1]} args=()
  mkdir -p "$HA_DIR/cluster$i"
  [[ -n $HA_PASSWORD ]] && args+=(--requirepass "$HA_PASSWORD" --masterauth "$HA_PASSWORD")
  redis-server --bind 127.0.0.1 --port "$port" --dir "$HA_DIR/cluster$i" \
    --logfile "$HA_DIR/cluster$i/redis.log" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout "$CL_NODE_TIMEOUT_MS" \
    --cluster-port "${CL_BUS_PORTS[$i]}" \
    --appendonly yes --appendfsync everysec --save '' --maxmemory-policy noeviction \
    --protected-mode no --repl-diskless-sync yes --repl-diskless-sync-delay 0 "${args[@]}" \
    >/dev/null 2>&1 &
  CL_PIDS[$i]=$!
  t_pids+=("$!")
  wait_for 10 ha_ping "$port" || { echo "FAIL - cluster node $i did not start on $port"; return 1; }
}

cl_start() {
  local primaries=${1:-3} replicas=${2:-1} n i ports addrs=() seeds=""
  n=$((primaries * (1 + replicas)))
  mkdir -p "$HA_DIR"
  read -r -a ports <<<"$(ha_free_ports $((2 * n)))"
  CL_PORTS=("${ports[@]:0:$n}")
  CL_BUS_PORTS=("${ports[@]:$n}")
  for ((i = 0; i < n; i++)); do
    cl_node_start "$i" || exit 1
    addrs+=("127.0.0.1:${CL_PORTS[$i]}")
  done
  redis-cli --no-auth-warning ${HA_PASSWORD:+-a "$HA_PASSWORD"} --cluster create "${addrs[@]}" \
    --cluster-replicas "$replicas" --cluster-yes >"$HA_DIR/create.log" 2>&1 ||
    { cat "$HA_DIR/create.log"; echo "FAIL - redis-cli --cluster create"; exit 1; }
  cl_wait_ok 30 || { echo "FAIL - the cluster did not come up"; exit 1; }
  wait_for 30 cl_replicas_in_sync "$((primaries * replicas))" ||
    { echo "FAIL - the replicas did not sync"; exit 1; }
  for ((i = 0; i < primaries; i++)); do seeds+="${seeds:+,}127.0.0.1:${CL_PORTS[$i]}"; done
  CL_URL="redis+cluster://$seeds"
}

cl_live_ports() { local p; for p in "${CL_PORTS[@]}"; do if ha_ping "$p"; then echo "$p"; fi; done; }
cl_any_port() { local p; for p in "${CL_PORTS[@]}"; do if ha_ping "$p"; then echo "$p"; return 0; fi; done; return 1; }

cl_is_ok() {
  local p
  for p in $(cl_live_ports); do
    [[ $(cl_cli "$p" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep '^cluster_state:') == cluster_state:ok ]] || return 1
  done
}
cl_wait_ok() { wait_for "$1" cl_is_ok; }

cl_replicas_in_sync() { # <n>: that many replicas report master_link_status:up
  local p up=0
  for p in $(cl_live_ports); do
    cl_cli "$p" INFO replication 2>/dev/null | tr -d '\r' | grep -q '^master_link_status:up' && up=$((up + 1))
  done
  ((up >= $1))
}

# "<id> <port> <flags>" of every node as one live node sees it
cl_nodes() {
  local p
  p=$(cl_any_port)
  cl_cli "$p" CLUSTER NODES | awk '{split($2, a, "[:@]"); print $1, a[2], $3, $4}'
}
cl_id_of() { cl_cli "$1" CLUSTER MYID; }

cl_primaries() { cl_nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {print $2}'; }

cl_owner_port() { # <slot>: from CLUSTER NODES, whose slot fields are N or A-B
  local p
  p=$(cl_any_port)
  cl_cli "$p" CLUSTER NODES | awk -v slot="$1" '$3 ~ /master/ && $3 !~ /fail/ {
    for (i = 9; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); lo = r[1]; hi = n > 1 ? r[2] : r[1]
      if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) { split($2, a, "[:@]"); print a[2]; exit }
    }
  }'
}

cl_replica_of() { # <primary port>: one replica's port
  local id
  id=$(cl_id_of "$1")
  cl_nodes | awk -v id="$id" '$4 == id && $3 !~ /fail/ {print $2; exit}'
}

# Moves one slot with its keys, as redis-cli --cluster reshard does for each slot, in three
# steps a test can stop between: begin (the target IMPORTING, the owner MIGRATING), keys
# (MIGRATE the keys named, or every key left, 10 at a time), end (SETSLOT NODE on every
# primary). CL_FROM / CL_TO: the ports of the migration under way.
cl_migrate_begin() { # <slot> <to port>
  CL_FROM=$(cl_owner_port "$1")
  CL_TO=$2
  [[ $CL_FROM != "$CL_TO" ]] || { echo "slot $1 is on $CL_TO already"; return 1; }
  cl_cli "$CL_TO" CLUSTER SETSLOT "$1" IMPORTING "$(cl_id_of "$CL_FROM")" >/dev/null &&
    cl_cli "$CL_FROM" CLUSTER SETSLOT "$1" MIGRATING "$(cl_id_of "$CL_TO")" >/dev/null
}

cl_migrate() { # <keys...>
  # shellcheck disable=SC2086 # one argument per key
  cl_cli "$CL_FROM" MIGRATE 127.0.0.1 "$CL_TO" "" 0 5000 ${HA_PASSWORD:+AUTH "$HA_PASSWORD"} KEYS "$@" >/dev/null
}

cl_migrate_keys() { # <slot> [keys...]
  local slot=$1 keys
  shift
  (($# == 0)) || { cl_migrate "$@"; return; }
  while :; do
    keys=$(cl_cli "$CL_FROM" CLUSTER GETKEYSINSLOT "$slot" 10)
    [[ -n $keys ]] || return 0
    # shellcheck disable=SC2086 # one argument per key
    cl_migrate $keys || return 1
  done
}

cl_migrate_end() { # <slot>: the target told first, then the source, then the other
  # primaries, in the order CLUSTER SETSLOT's documentation gives (redis-cli --cluster
  # reshard does the same), so the two do not send clients to each other meanwhile
  local p to_id
  to_id=$(cl_id_of "$CL_TO")
  cl_cli "$CL_TO" CLUSTER SETSLOT "$1" NODE "$to_id" >/dev/null
  cl_cli "$CL_FROM" CLUSTER SETSLOT "$1" NODE "$to_id" >/dev/null
  for p in $(cl_primaries); do
    [[ $p == "$CL_TO" || $p == "$CL_FROM" ]] || cl_cli "$p" CLUSTER SETSLOT "$1" NODE "$to_id" >/dev/null
  done
}

cl_move_slot() { # <slot> <to port>
  cl_migrate_begin "$1" "$2" && cl_migrate_keys "$1" && cl_migrate_end "$1"
}

cl_failover() { # <primary port>: its replica takes over
  local replica
  replica=$(cl_replica_of "$1")
  [[ -n $replica ]] || { echo "no replica of $1"; return 1; }
  cl_cli "$replica" CLUSTER FAILOVER >/dev/null || return 1
  wait_for 30 cl_is_primary "$replica"
}
cl_is_primary() { [[ $(cl_cli "$1" ROLE 2>/dev/null | head -1) == master ]]; }

cl_kill() {
  local i
  for i in "${!CL_PORTS[@]}"; do
    if [[ ${CL_PORTS[$i]} == "$1" ]]; then
      kill -9 "${CL_PIDS[$i]}" 2>/dev/null || true
      wait "${CL_PIDS[$i]}" 2>/dev/null || true
    fi
  done
}

# ---- figures the failover tests print
#   ha_metric PORT NAME      a sample of the worker's /metrics on that port (0 when absent)
#   ha_gaps LOG              "<longest gap in ms between two recorded outcomes> <outcomes>",
#                            from a worker's job.recorded log lines
#   ha_queue_left CLI Q      jobs left in any list or set of queue Q, through the redis-cli
#                            function CLI (of the node that serves the queue)
ha_metric() {
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n {print $2; f=1} END {if (!f) print 0}'
}

ha_gaps() {
  python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
ts = []
for line in open(sys.argv[1], errors="replace"):
    if "event=job.recorded" not in line:
        continue
    m = re.search(r'ts=(\S+)', line)
    if m:
        ts.append(datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp())
ts.sort()
gap = max((b - a for a, b in zip(ts, ts[1:])), default=0.0)
print(int(gap * 1000), len(ts))
PY
}

ha_queue_left() {
  local cli=$1 q=$2 key n
  n=$(( $("$cli" LLEN "$q") + $("$cli" ZCARD "{$q}:delayed") + $("$cli" LLEN "{$q}:dead") ))
  for key in $("$cli" --scan --pattern "{$q}:processing:*"); do
    n=$((n + $("$cli" LLEN "$key")))
  done
  for key in $("$cli" --scan --pattern "{$q}:taken:*"); do
    n=$((n + $("$cli" HLEN "$key")))
  done
  echo "$n"
}

# ---- the load both failover tests run
#   ha_two_workers PREFIX      starts workers PREFIX-a and PREFIX-b (logs $t_tmp/worker-a.log,
#                              worker-b.log); sets wa, wb (pids) and mport1, mport2 (HTTP)
#   ha_finished JOB            executions of that job no longer retrying
#   ha_wait_finished JOB N S   until at least N are, for at most S seconds
#   ha_outcomes JOB            "<retrying> <completed> <executions without exactly one outcome>"
ha_two_workers() {
  read -r mport1 mport2 <<<"$(ha_free_ports 2)"
  "$RETRYQ_WORKER_BIN" --worker-id "$1-a" --http-addr "127.0.0.1:$mport1" >"$t_tmp/worker-a.log" 2>&1 &
  wa=$!
  t_pids+=("$wa")
  "$RETRYQ_WORKER_BIN" --worker-id "$1-b" --http-addr "127.0.0.1:$mport2" >"$t_tmp/worker-b.log" 2>&1 &
  wb=$!
  t_pids+=("$wb")
}

ha_finished() { sql -c "SELECT count(*) FROM executions WHERE job_id = $1 AND status <> 'retrying'"; }
ha_has_finished() { (($(ha_finished "$1") >= $2)); }
ha_wait_finished() { wait_for "$3" ha_has_finished "$1" "$2"; }

ha_outcomes() {
  sql -F ' ' -c "SELECT count(*) FILTER (WHERE status = 'retrying'), count(*) FILTER (WHERE status = 'completed'),
                        count(*) FILTER (WHERE jsonb_array_length(jsonb_path_query_array(retry_history,
                          '\$[*] ? (@.status != \"retrying\")')) <> 1)
                 FROM executions WHERE job_id = $1"
}
