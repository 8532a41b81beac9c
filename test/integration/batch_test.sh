#!/usr/bin/env bash
# Batched loads and outcome writes: many jobs of different job specs in one statement,
# each job still meets exactly its own fate.
#
#   - two job specs of different lengths, executions resolved by question_index: a job
#     must be resolved with its own spec (index 2 exists in spec A, not in spec B), which
#     catches a spec handed to the wrong row when one batch carries both;
#   - stale jobs, unknown executions and duplicate payloads mixed in the same batches;
#   - one execution whose every UPDATE the database refuses (a trigger): the batch it joins
#     is refused as a whole, its other jobs are recorded one by one, and only that job
#     ends on the dead list (poison) with its row untouched;
#   - the worker's stop summary shows that loads and records did go out in batches;
#   - with RETRYQ_DB_BATCH_SIZE=1 every statement carries exactly one job.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup batch
start_router --latency-ms 20 --jitter-ms 20

NA=150 NB=40 NSTALE=20 NGONE=10 NDUP=15
job_a=$(insert_job '{"id":"batch-a","questions":["math_basic","geography_basic","math_basic"]}')
job_b=$(insert_job '{"id":"batch-b","questions":["math_basic"]}')

# Rows in 'retrying' at retry_count 1 (as the runner's API leaves them), ids in order.
make_rows() { # <job> <count> -> ids, one per line
  sql -v job="$1" -v n="$2" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, original_error,
                        retry_count, retry_history)
SELECT :job, 'router', 'us-east', 'retrying', NULL, 'llama3.2-1b', 'first failure', 1,
       '[{"attempt":1,"status":"retrying"}]'::jsonb
FROM generate_series(1, :n) RETURNING id;
SQL
}
mapfile -t rows_a < <(make_rows "$job_a" "$NA")
mapfile -t rows_b < <(make_rows "$job_b" "$NB")
mapfile -t rows_stale < <(make_rows "$job_a" "$NSTALE")
sql -c "UPDATE executions SET retry_count = 2 WHERE id IN ($(IFS=,; echo "${rows_stale[*]}"))"
refused=$(make_rows "$job_a" 1)
gone_from=$((refused + 100000))

# The database refuses every change to the row `refused`.
sql <<SQL
CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS
  \$\$ BEGIN RAISE EXCEPTION 'test trigger refuses execution %', NEW.id; END \$\$;
CREATE TRIGGER refuse_row BEFORE UPDATE ON executions FOR EACH ROW
  WHEN (NEW.id = $refused) EXECUTE FUNCTION refuse_row();
SQL

payload() { echo "{\"execution_id\":$1,\"region\":\"us-east\",\"question_index\":2,\"retry_attempt\":1}"; }
payloads=()
for id in "${rows_a[@]}" "${rows_b[@]}" "${rows_stale[@]}"; do payloads+=("$(payload "$id")"); done
for ((i = 0; i < NGONE; i++)); do payloads+=("$(payload $((gone_from + i)))"); done
for ((i = 0; i < NDUP; i++)); do payloads+=("$(payload "${rows_a[i * 7]}")"); done
# The refused row sits in the middle, so it shares a batch with others.
payloads=("${payloads[@]:0:100}" "$(payload "$refused")" "${payloads[@]:100}")
rcli RPUSH "$Q" "${payloads[@]}" >/dev/null
total=${#payloads[@]}
check_eq "all jobs queued" "$total" "$(rcli LLEN "$Q")"

set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --concurrency 64 \
  --db-pool 2 --backoff 100ms,200ms --max-deliveries 3 --http-addr off --log-level info \
  >"$t_tmp/worker.log" 2>&1
rc=$?
set -e
check_eq "worker exits 0 when the queue is empty" 0 "$rc"
[[ $rc == 0 ]] || tail -30 "$t_tmp/worker.log"

count() { sql -c "SELECT count(*) FROM executions WHERE $1"; }
in_list() { local IFS=,; echo "id IN ($*)"; }
one_success="jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status == \"success\" && @.attempt == 1)')) = 1"
outcomes="jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")'))"

check_eq "spec A, index 2: every job completed" "$NA" "$(count "$(in_list "${rows_a[@]}") AND status = 'completed'")"
check_eq "spec A: exactly one success entry each (duplicates included)" "$NA" \
  "$(count "$(in_list "${rows_a[@]}") AND $one_success AND $outcomes = 1")"
check_eq "spec A: output names the attempt" "$NA" \
  "$(count "$(in_list "${rows_a[@]}") AND output_data->>'retry_attempt' = '1'")"
check_eq "spec B, index 2: out of range with B's own length" "$NB" \
  "$(count "$(in_list "${rows_b[@]}") AND status = 'failed' AND output_data->>'error' = 'invalid question index: 2 (total questions: 1)'")"
check_eq "spec B: one outcome entry each" "$NB" "$(count "$(in_list "${rows_b[@]}") AND $outcomes = 1")"
check_eq "stale jobs changed nothing" "$NSTALE" \
  "$(count "$(in_list "${rows_stale[@]}") AND status = 'retrying' AND retry_count = 2 AND $outcomes = 0")"
check_eq "refused row untouched" "retrying 0" "$(sql -F' ' -c "SELECT status, $outcomes FROM executions WHERE id = $refused")"

dead=$(rcli LRANGE "{$Q}:dead" 0 -1)
check_eq "dead list: spec B index errors" "$NB" "$(grep -c 'invalid question index: 2' <<<"$dead" || true)"
check_eq "dead list: unknown executions" "$NGONE" "$(grep -c 'execution not found' <<<"$dead" || true)"
poison_of() { # <execution id>: dead entries of that execution whose reason is poison
  python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    e = json.loads(line)
    n += json.loads(e["job"])["execution_id"] == int(sys.argv[1]) and e["reason"].startswith("poison")
print(n)' "$1" <<<"$dead"
}
check_eq "dead list: the refused row as poison" 1 "$(poison_of "$refused")"
check "dead list: the refusal's reason is kept" grep -q 'test trigger refuses execution' <<<"$dead"
check_eq "dead list holds nothing else" $((NB + NGONE + 1)) "$(rcli LLEN "{$Q}:dead")"
check_eq "queue empty" 0 "$(rcli LLEN "$Q")"
check_eq "delayed set empty" 0 "$(rcli ZCARD "{$Q}:delayed")"
check_eq "no processing list or taken hash left" "" "$(held_keys "$Q")"

calls=$(curl -fsS "$ROUTER_URL/stats")
total_calls=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])' <<<"$calls")
refused_calls=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"].get(sys.argv[1], 0))' "$refused" <<<"$calls")
check_eq "router called once per spec A execution, plus the refused row's deliveries" \
  $((NA + refused_calls)) "$total_calls"
check "the refused row was tried more than once" test "$refused_calls" -ge 2

summary=$(grep 'event=worker.stopped' "$t_tmp/worker.log" || true)
echo "$summary"
read -r load_batches load_jobs record_batches record_jobs refusals < <(
  sed -n 's/.*database batches: \([0-9]*\) loads of \([0-9]*\) jobs, \([0-9]*\) records of \([0-9]*\) jobs, \([0-9]*\) refused.*/\1 \2 \3 \4 \5/p' <<<"$summary")
check "stop summary present" test -n "${load_batches:-}"
check "loads went out in batches (${load_jobs:-?} jobs in ${load_batches:-?} statements)" \
  test "${load_jobs:-0}" -ge $((2 * ${load_batches:-1}))
check "records went out in batches (${record_jobs:-?} jobs in ${record_batches:-?} statements)" \
  test "${record_jobs:-0}" -gt "${record_batches:-0}"
check "the refused row's batches were refused and retried one by one" test "${refusals:-0}" -ge 1

# ---- --db-batch-size 1: a busy worker still sends one job per statement.
NONE=30
mapfile -t rows_one < <(make_rows "$job_a" "$NONE")
payloads=()
for id in "${rows_one[@]}"; do payloads+=("$(payload "$id")"); done
rcli RPUSH "$Q" "${payloads[@]}" >/dev/null
set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --concurrency 30 \
  --db-pool 1 --db-batch-size 1 --http-addr off --log-level info >"$t_tmp/worker1.log" 2>&1
rc=$?
set -e
check_eq "batch size 1: worker exits 0" 0 "$rc"
check_eq "batch size 1: every job completed" "$NONE" \
  "$(count "$(in_list "${rows_one[@]}") AND status = 'completed' AND $outcomes = 1")"
summary=$(grep 'event=worker.stopped' "$t_tmp/worker1.log" || true)
read -r load_batches load_jobs record_batches record_jobs refusals < <(
  sed -n 's/.*database batches: \([0-9]*\) loads of \([0-9]*\) jobs, \([0-9]*\) records of \([0-9]*\) jobs, \([0-9]*\) refused.*/\1 \2 \3 \4 \5/p' <<<"$summary")
check_eq "batch size 1: one job per load and per record statement" "$NONE $NONE $NONE $NONE" \
  "${load_batches:-?} ${load_jobs:-?} ${record_batches:-?} ${record_jobs:-?}"
t_finish
