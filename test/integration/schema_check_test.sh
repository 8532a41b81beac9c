#!/usr/bin/env bash
# A database the worker cannot use is refused loudly (issue 12, item 10):
#  1. the runner's schema without retryq's migration (the status check does not admit
#     'retrying'/'timeout'/'error'): exit 78 naming the constraint and `retryq migrate`;
#  2. executions without a column the worker needs: exit 78 naming the column;
#  3. the wrong database (no executions or jobs table): exit 78 saying so;
#     in none of them is a job taken from the queue;
#  4. at run time, when the statements can no longer be prepared (a column renamed under
#     the worker), the error is logged at error level once, no job is taken meanwhile,
#     and the jobs are done once the column is back — by the same worker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

Q="schema_$$"
# A Redis database of its own (7), so that CLIENT LIST below sees only this test's worker
# even when other tests run at the same time.
REDIS7="${RETRYQ_TEST_REDIS_URL%/}/7"
rcli() { redis-cli -u "$REDIS7" --no-auth-warning "$@"; }
export RETRYQ_REDIS_URL=$REDIS7 RETRYQ_QUEUE=$Q RETRYQ_HTTP_ADDR=off
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL
payload='{"execution_id":1,"region":"us-east","question_index":0,"retry_attempt":1}'
rcli LPUSH "$Q" "$payload" >/dev/null

# A database made by hand: `name` gets the runner's schema only (no retryq migration).
raw_database() { # <suffix> [template]: sets DB
  local name="t_schema_$$_$1"
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE \"$name\" TEMPLATE \"${2:-$RETRYQ_TEST_TEMPLATE_DB}\"" >/dev/null
  t_dbs+=("$name")
  DB="postgresql://retryq@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}/$name"
}

refused() { # <tag>: runs the worker on $DB, sets rc
  set +e
  timeout 30 "$RETRYQ_WORKER_BIN" --database-url "$DB" >"$t_tmp/$1.log" 2>&1
  rc=$?
  set -e
}
untouched() {
  [[ $(rcli LLEN "$Q") == 1 && -z $(held_keys "$Q") ]]
}

# ---- 1. not migrated
raw_database unmigrated
refused unmigrated
check_eq "not migrated: exit 78 (configuration)" 78 "$rc"
check "not migrated: names the constraint and the statuses" \
  grep -q "chk_executions_status.*retrying" "$t_tmp/unmigrated.log"
check "not migrated: says to run retryq migrate" grep -q "retryq migrate" "$t_tmp/unmigrated.log"
check "not migrated: logged at error level" grep -q "level=error .*event=db.schema" "$t_tmp/unmigrated.log"
check "not migrated: no job taken" untouched

# ---- 2. a column missing
new_database
sql -c "ALTER TABLE executions DROP COLUMN model_id"
refused nocolumn
check_eq "missing column: exit 78" 78 "$rc"
check "missing column: names executions.model_id" grep -q "executions.*model_id" "$t_tmp/nocolumn.log"
check "missing column: no job taken" untouched

# ---- 3. the wrong database
raw_database empty template0
refused empty
check_eq "wrong database: exit 78" 78 "$rc"
check "wrong database: says the tables are missing" \
  grep -q "no executions table.*wrong database" "$t_tmp/empty.log"
check "wrong database: no job taken" untouched
rcli DEL "$Q" >/dev/null

# ---- 4. statements that stop preparing at run time
new_database
job=$(insert_job '{"id":"schema","questions":["math_basic"]}')
ids=()
for ((i = 0; i < 3; i++)); do
  ids+=("$(insert_execution "$job" us-east failed math_basic)")
  "$RETRYQ_CLI" --database-url "$DB" retry --execution-id "${ids[-1]}" --region us-east --question-index 0 >/dev/null
done
"$RETRYQ_WORKER_BIN" --database-url "$DB" --concurrency 4 >"$t_tmp/live.log" 2>&1 &
pid=$!
t_pids+=("$pid")
done_count() { sql -c "SELECT count(*) FROM executions WHERE status = 'completed'"; }
check "live: the first jobs complete" wait_for 30 bash -c "[[ \$(psql '$DB' -XAtc \"SELECT count(*) FROM executions WHERE status='completed'\") == 3 ]]"
# Three more rows, made before the column goes; their jobs are pushed once the
# statements are broken.
more=()
for ((i = 0; i < 3; i++)); do more+=("$(insert_execution "$job" us-east failed math_basic)"); done
# as the runner's API leaves them (submit itself reads model_id, which is about to go)
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1 WHERE id IN ($(IFS=,; echo "${more[*]}"))"
sql -c "ALTER TABLE executions RENAME COLUMN model_id TO model_id_gone"
sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'retryq-worker' AND datname = current_database()" >/dev/null
check "live: the broken statement is logged at error level" \
  wait_for 30 grep -q "level=error .*event=db.error.*model_id" "$t_tmp/live.log"
# The pushes come at once: a blocking pop still out when the store went down is made to
# answer (CLIENT UNBLOCK), so it cannot bring them in.
pop_blocked() { rcli CLIENT LIST | grep ' db=7 ' | grep 'name=retryq-worker-pop' | grep -q 'flags=b'; }
pop_idle() { ! pop_blocked; }
jobs=()
for id in "${more[@]}"; do jobs+=("{\"execution_id\":$id,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}"); done
rcli LPUSH "$Q" "${jobs[@]}" >/dev/null
check "live: the worker stops popping (no blocking pop outstanding)" wait_for 10 pop_idle
# Nothing may happen for 3 s (several reconnect rounds: the backoff starts at 100 ms).
queue_moved() { [[ $(rcli LLEN "$Q") != 3 ]]; }
queue_stays() { ! wait_for 3 queue_moved; }
check "live: no job taken while the statements cannot run" queue_stays
check_eq "live: the error is logged once, not per attempt" 1 \
  "$(grep -c 'level=error .*event=db.error.*model_id' "$t_tmp/live.log")"
[[ $(grep -c 'level=error .*event=db.error.*model_id' "$t_tmp/live.log") == 1 ]] ||
  grep 'level=error .*event=db.error.*model_id' "$t_tmp/live.log" | cut -c1-400
sql -c "ALTER TABLE executions RENAME COLUMN model_id_gone TO model_id"
check "live: the same worker completes them once the column is back" \
  wait_for 60 bash -c "[[ \$(psql '$DB' -XAtc \"SELECT count(*) FROM executions WHERE status='completed'\") == 6 ]]"
check "live: the worker is the one that lived through it" kill -0 "$pid"
check "live: recovery logged" grep -q "event=db.ready" "$t_tmp/live.log"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

t_finish
