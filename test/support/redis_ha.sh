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
# HA_PASSWORD (data nodes: requirepass/masterauth) and HA_SENTINEL_PASSWORD (the
# sentinels' requirepass), when set before ha_start, turn authentication on.
HA_MASTER=${HA_MASTER:-retryq}
HA_PASSWORD=${HA_PASSWORD:-}
HA_SENTINEL_PASSWORD=${HA_SENTINEL_PASSWORD:-}
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
sentinel down-after-milliseconds $HA_MASTER 1000
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
  local replicas=${1:-1} sentinels=${2:-3} ports i list=""
  command -v redis-sentinel >/dev/null || { echo "FAIL - redis-sentinel not found (scripts/deps.sh)"; exit 1; }
  mkdir -p "$HA_DIR"
  read -r -a ports <<<"$(ha_free_ports $((1 + replicas + sentinels)))"
  HA_NODE_PORTS=("${ports[@]:0:$((1 + replicas))}")
  HA_SENTINEL_PORTS=("${ports[@]:$((1 + replicas))}")
  ha_node_start 0 || exit 1
  for ((i = 1; i <= replicas; i++)); do ha_node_start "$i" "${HA_NODE_PORTS[0]}" || exit 1; done
  ha_wait_replicas "$replicas" 30 || { echo "FAIL - replicas did not sync"; exit 1; }
  for ((i = 0; i < sentinels; i++)); do
    ha_sentinel_start "$i" || exit 1
    list+="${list:+,}127.0.0.1:${HA_SENTINEL_PORTS[$i]}"
  done
  # every sentinel knows the replicas and the other sentinels before the test goes on
  wait_for 30 ha_sentinels_settled "$replicas" "$((sentinels - 1))" ||
    { echo "FAIL - the sentinels did not discover each other"; exit 1; }
  HA_URL="redis+sentinel://$list/$HA_MASTER"
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
