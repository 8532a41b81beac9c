#!/usr/bin/env bash
# retryq-worker under systemd's notify protocol, on a test NOTIFY_SOCKET (a unix datagram
# listener written in python3): READY=1 with a STATUS= line once connected, STATUS= lines
# every second, WATCHDOG=1 often enough for WATCHDOG_USEC=500000 (with WATCHDOG_PID unset
# or equal to the worker's pid, and none when it names another process), STOPPING=1 on
# SIGTERM, and the queue's pause (`retryq pause`) in the STATUS= line. Then the shipped
# unit file: `systemd-analyze verify` with the real binary, and the `systemd-analyze
# security` exposure level that docs/operations.md reports.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

new_database
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_QUEUE="notify_$$"
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL RETRYQ_HTTP_ADDR=off

# listen <name>: a datagram socket $t_tmp/<name>.sock; each message becomes one JSON line
# {"t": monotonic seconds, "msg": text} in $t_tmp/<name>.log.
listen() {
  local sock="$t_tmp/$1.sock" log="$t_tmp/$1.log"
  : >"$log"
  python3 "$here/../support/notify_listen.py" "$sock" "$log" &
  t_pids+=($!)
  wait_for 10 test -S "$sock"
}

# count <log> <python condition on m (the message)> [after READY only]
count() {
  python3 - "$1" "$2" <<'PY'
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
ready = next((i for i, e in enumerate(msgs) if "READY=1" in e["msg"].split("\n")), None)
after = msgs[ready:] if ready is not None else []
print(sum(1 for e in after if eval(sys.argv[2], {}, {"m": e["msg"]})))
PY
}
ticks_after_ready() { [[ $(count "$1" '"STATUS=" in m and "READY=1" not in m') -ge $2 ]]; }
has() { grep -q "$2" "$t_tmp/$1.log"; }

# ---- 1. WATCHDOG_USEC=500000, WATCHDOG_PID unset.
listen a
NOTIFY_SOCKET="$t_tmp/a.sock" WATCHDOG_USEC=500000 "$RETRYQ_WORKER_BIN" >"$t_tmp/a.worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
check "READY=1 arrives once connected" wait_for 30 has a 'READY=1'
check "READY=1 comes with a STATUS= line" python3 -c '
import json, sys
m = next(json.loads(l)["msg"] for l in open(sys.argv[1]) if "READY=1" in l)
assert "STATUS=running" in m, m' "$t_tmp/a.log"
check "STATUS= lines follow every second" wait_for 10 ticks_after_ready "$t_tmp/a.log" 3
gaps=$(python3 - "$t_tmp/a.log" <<'PY'
import json, sys
t = [json.loads(l)["t"] for l in open(sys.argv[1]) if '"WATCHDOG=1"' in l]
print(len(t), max((b - a for a, b in zip(t, t[1:])), default=99))
PY
)
read -r pings maxgap <<<"$gaps"
echo "watchdog: $pings pings, longest gap ${maxgap}s"
check "WATCHDOG=1 is sent repeatedly ($pings pings in ~3 s)" test "$pings" -ge 8
check "WATCHDOG=1 never further apart than WATCHDOG_USEC (0.5 s)" python3 -c "import sys; assert float(sys.argv[1]) < 0.5" "$maxgap"
kill -TERM "$wpid"
check "STOPPING=1 on SIGTERM" wait_for 10 has a 'STOPPING=1'
check "STOPPING=1 comes with a 'draining' STATUS= line" python3 -c '
import json, sys
m = next(json.loads(l)["msg"] for l in open(sys.argv[1]) if "STOPPING=1" in l)
assert "STATUS=draining" in m, m' "$t_tmp/a.log"
set +e; wait "$wpid"; rc=$?; set -e
check_eq "worker exits 0 after SIGTERM" 0 "$rc"

# ---- 2. WATCHDOG_PID = the worker's own pid (exec keeps the pid).
listen b
NOTIFY_SOCKET="$t_tmp/b.sock" WATCHDOG_USEC=500000 \
  bash -c 'export WATCHDOG_PID=$$; exec "$0"' "$RETRYQ_WORKER_BIN" >"$t_tmp/b.worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
check "WATCHDOG_PID = own pid: READY=1" wait_for 30 has b 'READY=1'
check "WATCHDOG_PID = own pid: STATUS= ticks" wait_for 10 ticks_after_ready "$t_tmp/b.log" 2
check "WATCHDOG_PID = own pid: WATCHDOG=1 sent" test "$(count "$t_tmp/b.log" 'm == "WATCHDOG=1"')" -ge 5
# The queue paused with `retryq pause`: the STATUS= line says so, with who and why.
"$RETRYQ_CLI" pause --reason "router upgrade" --by ops@test >/dev/null
check "paused queue: STATUS=running, queue paused by ops@test ...: router upgrade" \
  wait_for 5 grep -q 'STATUS=running, queue paused by ops@test, since [^:]*:[^:]*:[^:]*: router upgrade:' "$t_tmp/b.log"
"$RETRYQ_CLI" resume >/dev/null
kill -TERM "$wpid"
set +e; wait "$wpid"; set -e

# ---- 3. WATCHDOG_PID names another process: the watchdog is not ours.
listen c
NOTIFY_SOCKET="$t_tmp/c.sock" WATCHDOG_USEC=500000 WATCHDOG_PID=1 "$RETRYQ_WORKER_BIN" >"$t_tmp/c.worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
check "WATCHDOG_PID = other: READY=1" wait_for 30 has c 'READY=1'
check "WATCHDOG_PID = other: STATUS= ticks" wait_for 10 ticks_after_ready "$t_tmp/c.log" 3
check_eq "WATCHDOG_PID = other: no WATCHDOG=1 in 3 s" 0 "$(count "$t_tmp/c.log" 'm == "WATCHDOG=1"')"
kill -TERM "$wpid"
set +e; wait "$wpid"; set -e

# ---- 4. the unit file.
unit_src="$RETRYQ_SOURCE_DIR/docs/deploy/retryq-worker.service"
check "unit: Type=notify with a watchdog" bash -c "grep -qx 'Type=notify' '$unit_src' && grep -q '^WatchdogSec=' '$unit_src'"
if command -v systemd-analyze >/dev/null 2>&1; then
  unit="$t_tmp/retryq-worker.service"
  sed "s#^ExecStart=/usr/bin/retryq-worker#ExecStart=$RETRYQ_WORKER_BIN#" "$unit_src" >"$unit"
  check "unit: ExecStart points at the built binary" grep -q "^ExecStart=$RETRYQ_WORKER_BIN" "$unit"
  verify_unit() { # exit 0 and not a word about our unit
    systemd-analyze verify "$unit" >"$t_tmp/verify.log" 2>&1 && ! grep -q 'retryq-worker' "$t_tmp/verify.log"
  }
  check "unit: systemd-analyze verify passes" verify_unit
  cat "$t_tmp/verify.log"
  level=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
  echo "systemd-analyze security: exposure $level"
  check "unit: exposure level at most 2.0 (got $level)" python3 -c "import sys; assert float(sys.argv[1]) <= 2.0" "${level:-99}"
  check "docs/operations.md reports the same exposure level ($level)" \
    grep -q "exposure level.*\b$level\b" "$RETRYQ_SOURCE_DIR/docs/operations.md"
else
  echo "SKIP - systemd-analyze not installed: unit verification skipped"
fi

t_finish
