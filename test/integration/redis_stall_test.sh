#!/usr/bin/env bash
# No silent stall (issue 16 item 2): a Redis server that stops answering without closing
# its connections (SIGSTOP: the kernel still accepts and acknowledges) is found by the
# worker's own deadlines, not by TCP hours later:
#   - the idle command connection's PING and the blocking pop's deadline (block time +
#     command timeout) drop both connections; /readyz says "redis unavailable" with the
#     reason, within 10 s;
#   - after SIGCONT the same worker reconnects and takes a job pushed meanwhile.
# Then a Sentinel whose master name does not exist: /readyz and the systemd STATUS= line
# say that no sentinel names a primary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../chaos/seed.sh
source "$here/../chaos/seed.sh"
need_env RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

private_services
svc="$t_tmp/services"
new_database
Q="stall_$$"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_QUEUE=$Q
export RETRYQ_LOG_LEVEL=info
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL
job=$(insert_job '{"id":"stall","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" 1
exec_id=$(sql -c "SELECT id FROM executions WHERE job_id = $job")

read -r hport <<<"$("$here/../support/services.sh" ports 1)"
"$RETRYQ_WORKER_BIN" --http-addr "127.0.0.1:$hport" >"$t_tmp/worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
readyz() { curl -s "http://127.0.0.1:$hport/readyz" 2>/dev/null || true; }
is_ready() { [[ $(readyz) == ready* ]]; }
not_ready() { [[ $(readyz) == "not ready"* ]]; }
check "the worker is ready" wait_for 30 is_ready
sleep 3 # the command connection has been idle for longer than the PING threshold

rpid=$(cat "$svc/redis/redis.pid")
kill -STOP "$rpid"
t0=$SECONDS
check "a silent Redis makes the worker not ready within 10 s" wait_for 10 not_ready
echo "not ready after $((SECONDS - t0)) s: $(readyz | head -1)"
check "/readyz names Redis" bash -c "[[ \"\$(curl -s http://127.0.0.1:$hport/readyz)\" == *redis* ]]"
check "the silent connections were dropped by the worker's deadlines" \
  wait_for 10 grep -q 'event=redis.drop.*reply overdue' "$t_tmp/worker.log"
grep 'event=redis.drop' "$t_tmp/worker.log" | head -3
kill -CONT "$rpid"
check "the same worker is ready again after SIGCONT" wait_for 30 is_ready
"$RETRYQ_CLI" enqueue --execution-id "$exec_id" --region us-east --question-index 0 --attempt 1 >/dev/null
done1() { [[ $(sql -c "SELECT status FROM executions WHERE id = $exec_id") == completed ]]; }
check "and takes and records a job" wait_for 30 done1
check "still the same process" kill -0 "$wpid"
kill -TERM "$wpid"
wait "$wpid" 2>/dev/null || true

# A sentinel that knows no such master: not ready, with the reason, in /readyz and STATUS=
read -r sport hport2 <<<"$("$here/../support/services.sh" ports 2)"
mkdir -p "$t_tmp/sentinel"
printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor other 127.0.0.1 %s 1\n' \
  "$sport" "$t_tmp/sentinel" "$RETRYQ_TEST_REDIS_PORT" >"$t_tmp/sentinel/sentinel.conf"
redis-sentinel "$t_tmp/sentinel/sentinel.conf" >/dev/null 2>&1 &
t_pids+=("$!")
wait_for 10 bash -c "[[ \$(redis-cli -p $sport ping 2>/dev/null) == PONG ]]" || { echo "FAIL - sentinel did not start"; exit 1; }
sock="$t_tmp/notify.sock"
python3 "$here/../support/notify_listen.py" "$sock" "$t_tmp/notify.log" &
t_pids+=("$!")
wait_for 10 test -S "$sock"
NOTIFY_SOCKET=$sock RETRYQ_REDIS_URL="redis+sentinel://127.0.0.1:$sport/nosuchmaster" \
  "$RETRYQ_WORKER_BIN" --http-addr "127.0.0.1:$hport2" >"$t_tmp/worker2.log" 2>&1 &
w2=$!
t_pids+=("$w2")
why() { curl -s "http://127.0.0.1:$hport2/readyz" 2>/dev/null || true; }
says_no_primary() { [[ $(why) == *"no sentinel names a primary"* ]]; }
check "/readyz: no sentinel names a primary" wait_for 20 says_no_primary
echo "readyz: $(why | head -1)"
check "/readyz names the master" bash -c "[[ \"\$(curl -s http://127.0.0.1:$hport2/readyz)\" == *nosuchmaster* ]]"
check "systemd STATUS= says so too" wait_for 10 grep -q 'no sentinel names a primary' "$t_tmp/notify.log"
check "the worker keeps running and asking" kill -0 "$w2"
kill -TERM "$w2"
wait "$w2" 2>/dev/null || true
t_finish
