#!/usr/bin/env bash
# Sentinel with passwords (issue 16): data nodes with requirepass (the password in the
# redis+sentinel:// URL's user information, or RETRYQ_REDIS_PASSWORD_FILE) and sentinels
# with requirepass of their own (RETRYQ_REDIS_SENTINEL_PASSWORD_FILE /
# RETRYQ_REDIS_SENTINEL_PASSWORD). The CLI enqueues and reads stats, the worker takes and
# records the jobs; a wrong sentinel password leaves the worker not ready with the reason,
# and no password is ever printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
HA_PASSWORD="data-pw-1" HA_SENTINEL_PASSWORD="sentinel-pw-2"
# shellcheck source=../support/redis_ha.sh
source "$here/../support/redis_ha.sh"
# shellcheck source=../chaos/seed.sh
source "$here/../chaos/seed.sh"
need_env RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

ha_start 1 3
new_database
Q="sauth_$$"
N=10
printf '%s\n' "$HA_SENTINEL_PASSWORD" >"$t_tmp/sentinel-pw"
printf '%s\n' "$HA_PASSWORD" >"$t_tmp/data-pw"
chmod 600 "$t_tmp/sentinel-pw" "$t_tmp/data-pw"
url=${HA_URL/redis+sentinel:\/\//redis+sentinel://:$HA_PASSWORD@}
export RETRYQ_DATABASE_URL=$DB RETRYQ_QUEUE=$Q RETRYQ_REDIS_URL=$url
export RETRYQ_REDIS_SENTINEL_PASSWORD_FILE=$t_tmp/sentinel-pw
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL
job=$(insert_job '{"id":"sauth","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" "$N"
seed_job_file "$job" "$t_tmp/jobs.jsonl"
check "retryq enqueue through password-protected sentinels" "$RETRYQ_CLI" enqueue --from "$t_tmp/jobs.jsonl"
check_eq "the jobs are on the primary" "$N" "$(ha_ncli "$(ha_primary_port)" LLEN "$Q")"
out=$(env -u RETRYQ_REDIS_SENTINEL_PASSWORD_FILE RETRYQ_REDIS_SENTINEL_PASSWORD=wrong "$RETRYQ_CLI" stats 2>&1 || true)
check "the CLI with a wrong sentinel password says which step failed" \
  bash -c "[[ \"\$0\" == *'cannot find the Redis primary'* && \"\$0\" == *AUTH* ]]" "$out"
check "and shows no password" bash -c "[[ \"\$0\" != *$HA_PASSWORD* && \"\$0\" != *wrong* ]]" "$out"

# the worker: data password from a file this time, sentinel password from a file
read -r hport hport2 <<<"$("$here/../support/services.sh" ports 2)"
RETRYQ_REDIS_URL=$HA_URL RETRYQ_REDIS_PASSWORD_FILE=$t_tmp/data-pw \
  "$RETRYQ_WORKER_BIN" --http-addr "127.0.0.1:$hport" >"$t_tmp/worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
done_all() { [[ $(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'") == "$N" ]]; }
check "the worker took and recorded every job" wait_for 60 done_all
printed=$(RETRYQ_REDIS_URL=$HA_URL RETRYQ_REDIS_PASSWORD_FILE=$t_tmp/data-pw "$RETRYQ_WORKER_BIN" --print-config 2>&1 || true)
check "--print-config shows the sentinel URL with no password" \
  bash -c "[[ \"\$0\" == *'RETRYQ_REDIS_URL=redis+sentinel://:***@127.0.0.1:'* && \"\$0\" != *pw-* ]]" "$printed"
pending=$("$RETRYQ_CLI" stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["pending"] + d["processing"])')
check_eq "retryq stats through the sentinels: nothing left" 0 "$pending"
kill -TERM "$wpid"
wait "$wpid" 2>/dev/null || true
check "no password in the worker's log" bash -c "! grep -q 'pw-' '$t_tmp/worker.log'"

env -u RETRYQ_REDIS_SENTINEL_PASSWORD_FILE RETRYQ_REDIS_SENTINEL_PASSWORD=wrong RETRYQ_REDIS_URL=$HA_URL \
  RETRYQ_REDIS_PASSWORD_FILE=$t_tmp/data-pw "$RETRYQ_WORKER_BIN" --http-addr "127.0.0.1:$hport2" \
  >"$t_tmp/worker2.log" 2>&1 &
w2=$!
t_pids+=("$w2")
says() { [[ $(curl -s "http://127.0.0.1:$hport2/readyz" 2>/dev/null) == *"no sentinel names a primary"*AUTH* ]]; }
check "a wrong sentinel password: not ready, naming AUTH" wait_for 20 says
kill -TERM "$w2"
wait "$w2" 2>/dev/null || true
check "and no password in its log" bash -c "! grep -q 'pw-\|wrong' '$t_tmp/worker2.log'"
t_finish
