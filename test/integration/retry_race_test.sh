#!/usr/bin/env bash
# A retry by filter racing 50 single retries (`retryq retry --execution-id ...`
# processes in parallel) of the same rows (issue 15): every execution gets exactly one
# new attempt (retry_count + 1 once, one 'retrying' history entry, one job in Redis),
# every single retry answers queued (exit 0) or in flight (exit 5), and the bulk never
# waits for a row a single retry holds (FOR UPDATE SKIP LOCKED: it counts it "locked").
#
# A trigger widens the windows: each row that becomes 'retrying' costs the bulk 2 ms
# (a chunk of 100 holds its row locks for 0.2 s, so singles queue behind it) and a
# single retry 150 ms (it holds its row while the bulk's chunk comes by). Two rounds:
# the singles spread over the bulk's run (each one about when the bulk reaches its row),
# then all at once at the start.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI

new_database
ROWS=1000
SINGLES=50
sql <<'SQL'
CREATE FUNCTION slow_retry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'retrying' AND OLD.status IS DISTINCT FROM 'retrying' THEN
    PERFORM pg_sleep(CASE WHEN current_setting('application_name') = 'single' THEN 0.15 ELSE 0.002 END);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER slow_retry BEFORE UPDATE ON executions FOR EACH ROW EXECUTE FUNCTION slow_retry();
SQL

round() { # <name> <stagger ms per single>
  local name=$1 stagger=$2 Q="race_$$_$1" spec job
  spec="{\"id\":\"race-$name-$$\",\"questions\":[\"identity_basic\",\"math_basic\"]}"
  job=$(insert_job "$spec")
  local jobspec
  jobspec=$(sql -c "SELECT jobspec_id FROM jobs WHERE id = $job")
  # Runner-shaped failed rows: the failure in output_data, original_error NULL.
  sql -v job="$job" -v n="$ROWS" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, max_retries,
                        output_data, completed_at)
SELECT :job, 'modal-us-east', (ARRAY['us-east', 'eu-west', 'asia-pacific'])[1 + i % 3], 'failed',
       (ARRAY['identity_basic', 'math_basic'])[1 + i % 2], 'llama3.2-1b', 3,
       jsonb_build_object('error', 'hybrid error: context deadline exceeded', 'error_code', 'ROUTER_TIMEOUT',
                          'failure', jsonb_build_object('stage', 'router_http_timeout', 'code', 'ROUTER_TIMEOUT',
                                                        'component', 'hybrid_router', 'transient', true)),
       localtimestamp - interval '1 hour'
  FROM generate_series(1, :n) AS i;
SQL
  local first
  first=$(sql -c "SELECT min(id) FROM executions WHERE job_id = $job")
  local lock="$t_tmp/$name.lock" k pids=() bulk_pid targets
  # The singles' rows, spread over the job's: id|region|question index.
  mapfile -t targets < <(sql -F'|' -c "SELECT id, region, CASE question_id WHEN 'identity_basic' THEN 0 ELSE 1 END
    FROM executions WHERE job_id = $job AND (id - $first) % ($ROWS / $SINGLES) = 0 ORDER BY id")
  check_eq "$name: $SINGLES rows for the singles" "$SINGLES" "${#targets[@]}"
  exec 9>"$lock"
  flock -x 9 # every racer waits for this lock: they all start together
  for ((k = 0; k < SINGLES; k++)); do
    local id region question
    IFS='|' read -r id region question <<<"${targets[$k]}"
    (
      flock -s 8
      sleep "$(awk -v ms=$((k * stagger)) 'BEGIN { print ms / 1000 }')"
      rc=0
      PGAPPNAME=single timeout 60 "$RETRYQ_CLI" --database-url "$DB" --redis-url "$RETRYQ_TEST_REDIS_URL" \
        --queue "$Q" retry --execution-id "$id" --region "$region" --question-index "$question" \
        >"$t_tmp/$name.single.$k" 2>&1 || rc=$?
      echo "$rc" >"$t_tmp/$name.single.$k.rc"
    ) 8<"$lock" &
    pids+=($!)
  done
  (
    flock -s 8
    rc=0
    timeout 120 "$RETRYQ_CLI" --database-url "$DB" --redis-url "$RETRYQ_TEST_REDIS_URL" --queue "$Q" \
      retry --job "$jobspec" --chunk 100 --json >"$t_tmp/$name.bulk" 2>"$t_tmp/$name.bulk.err" || rc=$?
    echo "$rc" >"$t_tmp/$name.bulk.rc"
  ) 8<"$lock" &
  bulk_pid=$!
  sleep 0.5 # let every racer reach its flock
  flock -u 9
  exec 9>&-
  for pid in "${pids[@]}" "$bulk_pid"; do wait "$pid" || true; done

  local bulk single0=0 single5=0 other=0 rc
  bulk=$(cat "$t_tmp/$name.bulk")
  check_eq "$name: the bulk retry exits 0" 0 "$(cat "$t_tmp/$name.bulk.rc")"
  for ((k = 0; k < SINGLES; k++)); do
    rc=$(cat "$t_tmp/$name.single.$k.rc")
    case $rc in 0) single0=$((single0 + 1)) ;; 5) single5=$((single5 + 1)) ;; *) other=$((other + 1)); cat "$t_tmp/$name.single.$k" ;; esac
  done
  local counts
  counts=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["skipped"]
print(d["selected"], d["retried"], d["queued"], s["locked"], s["in_flight"], s["not_retryable"], s["at_max_retries"])' "$bulk")
  read -r selected retried queued locked in_flight not_retryable at_max <<<"$counts"
  echo "# $name: bulk selected $selected, retried $retried, skipped locked $locked, in flight $in_flight;" \
    "singles queued $single0, in flight $single5"
  check_eq "$name: every single retry answered queued (0) or in flight (5)" 0 "$other"
  check_eq "$name: bulk retries + queued singles = every row" "$ROWS" "$((retried + single0))"
  check_eq "$name: the bulk queued all it retried" "$retried" "$queued"
  check_eq "$name: nothing else skipped" "0 0" "$not_retryable $at_max"
  check "$name: the two really raced (a row locked or in flight for one side)" \
    test $((locked + in_flight + single5)) -gt 0
  check_eq "$name: every row has exactly one new attempt" "$ROWS|1|1|retrying" \
    "$(sql -F'|' -c "SELECT count(*), min(retry_count), max(retry_count), string_agg(DISTINCT status, ',')
                      FROM executions WHERE job_id = $job")"
  check_eq "$name: exactly one 'retrying' history entry each" "$ROWS" \
    "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_array_length(retry_history) = 1
                AND retry_history->0 @> '{\"status\": \"retrying\", \"attempt\": 1}'")"
  check_eq "$name: the set holds what the bulk retried" "$retried" \
    "$(sql -c "SELECT count(*) FROM retryq_set_members m JOIN retryq_sets s ON s.id = m.set_id
                WHERE s.filter->>'job' = '$jobspec'")"
  check_eq "$name: one job in Redis per execution, attempt 1" "$ROWS $ROWS 1" \
    "$(rcli LRANGE "$Q" 0 -1 | python3 -c '
import json, sys
jobs = [json.loads(l) for l in sys.stdin.read().split()]
print(len(jobs), len({j["execution_id"] for j in jobs}), max(j["retry_attempt"] for j in jobs))')"
  rcli DEL "$Q" >/dev/null
}

round spread 40
round together 0

t_finish
