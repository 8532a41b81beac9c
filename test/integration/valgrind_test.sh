#!/usr/bin/env bash
# retryq-worker under valgrind memcheck, through a real pipeline: private Redis and
# PostgreSQL, the mock router, a fresh database with a handful of executions whose answers
# take every path of a job (success, router error, transient 502 through the delayed set
# to "gave up", NUL and invalid UTF-8 in the answer, timeout, bad question index, unknown
# execution, invalid payload). Two runs:
#   1. --exit-when-idle: the normal teardown after all the work;
#   2. SIGTERM while a call hangs in the router: the drain deadline cancels it.
# Each must end with zero memcheck errors and zero definitely lost bytes
# (--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite).
#
# It skips (exit 0, with a message) when valgrind is not installed, and when the worker was
# built with AddressSanitizer (the ASan suite runs every test again; valgrind cannot run
# an ASan binary, and that suite checks memory its own way).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

if ! command -v valgrind >/dev/null; then
  echo "SKIP - valgrind is not installed (scripts/deps.sh installs it); memcheck not run"
  exit 0
fi
if grep -aq '__asan_init' "$RETRYQ_WORKER_BIN"; then
  echo "SKIP - $RETRYQ_WORKER_BIN is built with AddressSanitizer; valgrind runs on the normal build"
  exit 0
fi

new_database
Q="valgrind_$$"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_QUEUE=$Q
start_router

bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"ok_q": "What is 2+2?",
 "refused_q": "[mock:router_error] Who are you?",
 "down_q": "[mock:http_502] Who are you?",
 "nul_q": "[mock:nul] Who are you?",
 "garbage_q": "[mock:garbage] Who are you?",
 "hang_q": "[mock:hang] Who are you?"}
JSON
job=$(insert_job '{"id":"vg","version":"v1","questions":["ok_q","refused_q","down_q","nul_q","garbage_q","hang_q"]}')
declare -A ex
i=0
for q in ok_q refused_q down_q nul_q garbage_q hang_q; do
  ex[$q]=$(insert_execution "$job" us-east failed "$q")
  "$RETRYQ_CLI" retry --execution-id "${ex[$q]}" --region us-east --question-index "$i" >/dev/null
  i=$((i + 1))
done
ex[by_index]=$(insert_execution "$job" eu-west failed "")
"$RETRYQ_CLI" retry --execution-id "${ex[by_index]}" --region eu-west --question-index 0 >/dev/null
ex[bad_index]=$(insert_execution "$job" eu-west failed "")
"$RETRYQ_CLI" retry --execution-id "${ex[bad_index]}" --region eu-west --question-index 99 >/dev/null
rcli LPUSH "$Q" 'not json' '{"execution_id":999999,"region":"us-east","question_index":0,"retry_attempt":1}' \
  '{"execution_id":1,"region":"us\u0000east","question_index":0,"retry_attempt":1}' >/dev/null

vg=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
  --show-leak-kinds=definite --track-origins=yes --num-callers=30)
worker_args=(--router-url "$ROUTER_URL" --question-bank "$bank" --timeout-ms 4000
  --connect-timeout-ms 3000 --backoff 200ms,400ms --http-addr off --heartbeat-ms 1s --lease-ms 10s
  --log-level debug)

start=$SECONDS
set +e
timeout 300 "${vg[@]}" --log-file="$t_tmp/vg1.txt" "$RETRYQ_WORKER_BIN" --exit-when-idle \
  "${worker_args[@]}" >"$t_tmp/worker1.log" 2>&1
rc=$?
set -e
echo "run 1 (exit when idle) took $((SECONDS - start)) s"
check_eq "run 1: worker exits 0 under valgrind (99 = memcheck errors)" 0 "$rc"
if [[ $rc != 0 ]]; then sed -n '/ERROR SUMMARY\|definitely\|Invalid\|uninitialised/p' "$t_tmp/vg1.txt" | head -20; tail -20 "$t_tmp/worker1.log"; fi
check "run 1: ERROR SUMMARY: 0 errors" grep -q 'ERROR SUMMARY: 0 errors' "$t_tmp/vg1.txt"
check_eq "run 1: no definitely lost bytes" "" "$(grep -E 'definitely lost: [1-9]' "$t_tmp/vg1.txt" || true)"

status() { sql -c "SELECT status FROM executions WHERE id = $1"; }
check_eq "ok -> completed" completed "$(status "${ex[ok_q]}")"
check_eq "router error -> failed" failed "$(status "${ex[refused_q]}")"
check_eq "502 every time -> failed after the schedule" failed "$(status "${ex[down_q]}")"
check_eq "NUL and invalid UTF-8 answer -> completed" completed "$(status "${ex[nul_q]}")"
check_eq "garbage -> failed" failed "$(status "${ex[garbage_q]}")"
check_eq "hang -> timeout" timeout "$(status "${ex[hang_q]}")"
check_eq "by index -> completed" completed "$(status "${ex[by_index]}")"
check_eq "bad index -> failed" failed "$(status "${ex[bad_index]}")"
check_eq "dead list: bad index, unknown execution, two invalid payloads" 4 "$(rcli LLEN "{$Q}:dead")"

# Run 2: a call hangs in the router when SIGTERM arrives; the drain deadline ends it.
ex[hang2]=$(insert_execution "$job" us-east failed hang_q)
"$RETRYQ_CLI" retry --execution-id "${ex[hang2]}" --region us-east --question-index 5 >/dev/null
"${vg[@]}" --log-file="$t_tmp/vg2.txt" "$RETRYQ_WORKER_BIN" "${worker_args[@]}" --timeout-ms 60000 \
  --drain-timeout-ms 1s >"$t_tmp/worker2.log" 2>&1 &
vg_pid=$!
t_pids+=("$vg_pid")
in_flight() { curl -fs "$ROUTER_URL/stats" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["in_flight"] >= 1 else 1)'; }
check "run 2: the call reaches the router" wait_for 120 in_flight
kill -TERM "$vg_pid"
set +e
wait "$vg_pid"
rc=$?
set -e
check_eq "run 2: SIGTERM mid-call exits 0 under valgrind" 0 "$rc"
if [[ $rc != 0 ]]; then sed -n '/ERROR SUMMARY\|definitely\|Invalid\|uninitialised/p' "$t_tmp/vg2.txt" | head -20; tail -20 "$t_tmp/worker2.log"; fi
check "run 2: ERROR SUMMARY: 0 errors" grep -q 'ERROR SUMMARY: 0 errors' "$t_tmp/vg2.txt"
check_eq "run 2: no definitely lost bytes" "" "$(grep -E 'definitely lost: [1-9]' "$t_tmp/vg2.txt" || true)"
check_eq "run 2: the interrupted job is back in the queue, its row untouched" "1 retrying" \
  "$(rcli LLEN "$Q") $(status "${ex[hang2]}")"
grep -h 'ERROR SUMMARY\|definitely lost\|indirectly lost\|possibly lost\|total heap usage' \
  "$t_tmp/vg1.txt" "$t_tmp/vg2.txt" | sed 's/^==[0-9]*== */valgrind: /'
t_finish
