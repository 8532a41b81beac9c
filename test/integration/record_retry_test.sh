#!/usr/bin/env bash
# Retryable SQL errors on the outcome write (issue 12, item 4): serialization failure
# 40001, deadlock 40P01, lock not available 55P03 and query cancelled 57014 mean "try the
# same write again". The router's answer must be kept and the write retried: the router
# is called once per execution, the row is recorded once, and nothing turns into poison
# however many times the write is refused (more often than max_deliveries here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup recretry
start_router --latency-ms 5

job=$(insert_job '{"id":"record-retry","questions":["math_basic"]}')
declare -A ex
for state in 40001 40P01 55P03 57014; do
  ex[$state]=$(sql -v job="$job" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        retry_history, output_data)
VALUES (:job, 'router', 'us-east', 'retrying', 'math_basic', 'llama3.2-1b', 1,
        '[{"attempt":1,"status":"retrying"}]', '{"error":"hybrid error: first"}') RETURNING id;
SQL
)
done
plain=$(insert_execution "$job" us-east retrying math_basic)
sql -c "UPDATE executions SET retry_count = 1 WHERE id = $plain"

# Each row's outcome write is refused with its SQLSTATE 7 times (max_deliveries is 5),
# then let through. A sequence counts the refusals: nextval survives the rollback.
refusals=7
sql <<SQL
CREATE TABLE refusals (id int PRIMARY KEY, state text NOT NULL, counter regclass NOT NULL);
CREATE SEQUENCE refused_40001; CREATE SEQUENCE refused_40P01;
CREATE SEQUENCE refused_55P03; CREATE SEQUENCE refused_57014;
INSERT INTO refusals VALUES (${ex[40001]}, '40001', 'refused_40001'), (${ex[40P01]}, '40P01', 'refused_40P01'),
                            (${ex[55P03]}, '55P03', 'refused_55P03'), (${ex[57014]}, '57014', 'refused_57014');
CREATE FUNCTION refuse_for_a_while() RETURNS trigger LANGUAGE plpgsql AS \$\$
DECLARE r refusals;
BEGIN
  IF NEW.status = 'retrying' THEN RETURN NEW; END IF;
  SELECT * INTO r FROM refusals WHERE id = NEW.id;
  IF FOUND AND nextval(r.counter) <= $refusals THEN
    RAISE EXCEPTION 'test refuses the outcome of % (%)', NEW.id, r.state USING ERRCODE = r.state;
  END IF;
  RETURN NEW;
END \$\$;
CREATE TRIGGER refuse_for_a_while BEFORE UPDATE ON executions FOR EACH ROW
  EXECUTE FUNCTION refuse_for_a_while();
SQL

for id in "${ex[@]}" "$plain"; do
  rcli LPUSH "$Q" "{\"execution_id\":$id,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}" >/dev/null
done
set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --http-addr off \
  --log-level info >"$t_tmp/worker.log" 2>&1
rc=$?
set -e
check_eq "worker exits 0 when the queue is empty" 0 "$rc"
[[ $rc == 0 ]] || tail -30 "$t_tmp/worker.log"

calls=$(curl -fsS "$ROUTER_URL/stats")
calls_for() { python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"].get(sys.argv[1], 0))' "$1" <<<"$calls"; }
field() { sql -c "SELECT $2 FROM executions WHERE id = $1"; }
for state in 40001 40P01 55P03 57014; do
  id=${ex[$state]}
  check "$state: the write was refused $refusals times" test "$(sql -c "SELECT last_value FROM refused_$state")" -gt "$refusals"
  check_eq "$state: completed" completed "$(field "$id" status)"
  check_eq "$state: the router was called once (its answer kept)" 1 "$(calls_for "$id")"
  check_eq "$state: one outcome entry" 1 \
    "$(field "$id" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")'))")"
done
check_eq "an unrefused row beside them completed" completed "$(field "$plain" status)"
check_eq "nothing dead-lettered" 0 "$(rcli LLEN "{$Q}:dead")"
check "the retries of the write were logged" grep -q 'job.wait' "$t_tmp/worker.log"

t_finish
