#!/usr/bin/env bash
# `retryq retry --job/--since ...` (issue 15, retry by filter) against 2,000 executions
# shaped like the runner's rows (beacon-schema.md: the failure in output_data with
# error_code and failure.code, original_error NULL, max_retries per row, a few old rows
# without question_id) over 2 jobs, 3 models, 3 regions, the statuses failed, timeout,
# error, completed and retrying and every retry_count up to the row's max_retries.
#
# Each filter (job, model, region, status, error code, since, since + until, limit, all
# at once) runs on its own clone of that fixture: a dry run first, which must change
# nothing (a checksum of the whole executions table, no set, nothing pushed) and report
# what SQL written here independently expects; then the real run, whose retried rows,
# history entries, set members and jobs in Redis must be exactly the expected ones, with
# the rows at their max_retries skipped with that reason and left unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI

new_database
FIXTURE=$DB
fixture_name=${DB##*/}
J1="bias-detection-$$-a"
J2="bias-detection-$$-b"
spec='{"id":"%s","version":"v1","benchmark":{"name":"bias-detection"},"models":["llama3.2-1b","mistral-7b","qwen2.5-1.5b"],"questions":["identity_basic","math_basic","tiananmen_neutral","taiwan_status"]}'
# shellcheck disable=SC2059 # the spec is the format
sql -v j1="$J1" -v j2="$J2" -v s1="$(printf "$spec" "$J1")" -v s2="$(printf "$spec" "$J2")" <<'SQL'
INSERT INTO jobs (jobspec_id, jobspec_data) VALUES (:'j1', :'s1'::jsonb), (:'j2', :'s2'::jsonb);
-- 2,000 rows; each property from its own hash of i, so they vary independently.
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        max_retries, output_data, started_at, completed_at, created_at)
SELECT CASE WHEN i % 2 = 1 THEN (SELECT id FROM jobs WHERE jobspec_id = :'j1')
            ELSE (SELECT id FROM jobs WHERE jobspec_id = :'j2') END,
       'modal-us-east', r.region, st.status,
       CASE WHEN i % 101 = 0 THEN NULL
            ELSE (ARRAY['identity_basic', 'math_basic', 'tiananmen_neutral', 'taiwan_status'])[1 + i / 18 % 4] END,
       m.model,
       CASE WHEN st.status = 'retrying' THEN greatest(1, rc.n) ELSE rc.n END,
       mr.n,
       CASE WHEN st.status = 'completed'
            THEN jsonb_build_object('response', 'I am an assistant.', 'provider', 'modal-us-east',
                                    'metadata', jsonb_build_object('region', r.region))
            ELSE jsonb_build_object(
                'error', 'hybrid error: ' || c.message, 'error_code', c.code,
                'failure', jsonb_build_object('stage', c.stage, 'component', 'hybrid_router',
                    'subcomponent', 'inference', 'code', c.code, 'type', c.type, 'region', r.region,
                    'model', m.model, 'message', c.message, 'transient', true)) END,
       t.failed_at - interval '20 seconds', t.failed_at, t.failed_at
  FROM generate_series(1, 2000) AS i
 CROSS JOIN LATERAL (SELECT (ARRAY['us-east', 'eu-west', 'asia-pacific'])[1 + i / 2 % 3] AS region) AS r
 CROSS JOIN LATERAL (SELECT (ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b'])[1 + i / 6 % 3] AS model) AS m
 CROSS JOIN LATERAL (SELECT (ARRAY['failed', 'timeout', 'error', 'failed', 'completed', 'retrying', 'failed'])
                            [1 + abs(hashtext(i || 'status')) % 7] AS status) AS st
 CROSS JOIN LATERAL (SELECT (ARRAY[1, 3, 3, 5])[1 + abs(hashtext(i || 'max')) % 4] AS n) AS mr
 CROSS JOIN LATERAL (SELECT abs(hashtext(i || 'count')) % (mr.n + 1) AS n) AS rc
 CROSS JOIN LATERAL (SELECT * FROM (VALUES
        (0, 'ROUTER_TIMEOUT', 'router_http_timeout', 'timeout', 'context deadline exceeded'),
        (1, 'ROUTER_HTTP_503', 'router_http_request', 'http_error', 'hybrid http_error: HTTP 503 on /inference'),
        (2, 'ROUTER_NETWORK', 'router_network', 'network', 'dial tcp: connection refused'))
        AS v(k, code, stage, type, message) WHERE v.k = abs(hashtext(i || 'code')) % 3) AS c
 CROSS JOIN LATERAL (SELECT localtimestamp - make_interval(hours => i % 48) - interval '30 minutes' AS failed_at) AS t;
SQL
check_eq "fixture: 2,000 executions" 2000 "$(sql -c "SELECT count(*) FROM executions")"
check_eq "fixture: every status present" "completed,error,failed,retrying,timeout" \
  "$(sql -c "SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM executions")"
check "fixture: rows at their max_retries among the retryable" test \
  "$(sql -c "SELECT count(*) FROM executions WHERE status IN ('failed','timeout','error') AND retry_count >= max_retries")" -gt 50
check_eq "fixture: original_error NULL, as the runner leaves it" 0 "$(sql -c "SELECT count(*) FROM executions WHERE original_error IS NOT NULL")"
# The whole fixture, to compare each case's rows with.
sql -F'|' -c "SELECT id, status, retry_count, coalesce(jsonb_array_length(retry_history), -1) FROM executions ORDER BY id" \
  >"$t_tmp/fixture.rows"

checksum() { sql -c "SELECT md5(string_agg(to_jsonb(e)::text, '' ORDER BY id)) FROM executions e"; }

case_no=0
# run_case <description> <SQL predicate on e (executions) and j (jobs)> <statuses SQL list>
#          <limit or ""> <retryq retry filter options...>
run_case() {
  local what=$1 pred=$2 statuses=$3 limit=$4; shift 4
  case_no=$((case_no + 1))
  local name="${fixture_name}_c$case_no" Q="filter_$$_$case_no"
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$name\" TEMPLATE \"$fixture_name\"" >/dev/null
  t_dbs+=("$name")
  DB="postgresql://retryq@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}/$name"
  local run=("$RETRYQ_CLI" --database-url "$DB" --redis-url "$RETRYQ_TEST_REDIS_URL" --queue "$Q" retry "$@")

  # What this test expects, from its own SQL.
  local matched="e.status IN ($statuses) AND $pred"
  local eligible="$matched AND e.retry_count < e.max_retries AND e.question_id IS NOT NULL"
  local cutoff="true"
  if [[ -n $limit ]]; then
    cutoff="e.id <= coalesce((SELECT e.id FROM executions e JOIN jobs j ON j.id = e.job_id WHERE $eligible
      ORDER BY e.id OFFSET $((limit - 1)) LIMIT 1), 2147483647)"
  fi
  local from="FROM executions e JOIN jobs j ON j.id = e.job_id"
  local want_ids want_selected want_max want_noq
  want_ids=$(sql -c "SELECT coalesce(string_agg(e.id::text, ',' ORDER BY e.id), '') $from WHERE $eligible AND $cutoff")
  want_selected=$(sql -c "SELECT count(*) $from WHERE $matched AND $cutoff")
  want_max=$(sql -c "SELECT count(*) $from WHERE $matched AND $cutoff AND e.retry_count >= e.max_retries")
  want_noq=$(sql -c "SELECT count(*) $from WHERE $matched AND $cutoff AND e.retry_count < e.max_retries AND e.question_id IS NULL")
  local want_retried=0
  [[ -n $want_ids ]] && want_retried=$(tr ',' '\n' <<<"$want_ids" | wc -l)
  check "$what: the case selects something" test "$want_retried" -gt 0

  # Dry run: the same counts, nothing changed.
  local before after out rc
  before=$(checksum)
  set +e
  out=$("${run[@]}" --dry-run --json 2>"$t_tmp/err")
  rc=$?
  set -e
  after=$(checksum)
  check_eq "$what: dry run exit 0" 0 "$rc"
  check_eq "$what: dry run changes nothing (checksum of executions)" "$before" "$after"
  check_eq "$what: dry run makes no set" 0 "$(sql -c "SELECT count(*) FROM retryq_sets")"
  check_eq "$what: dry run pushes nothing" 0 "$(rcli LLEN "$Q")"
  check_eq "$what: dry run counts (selected retried at_max no_question)" \
    "$want_selected $want_retried $want_max $want_noq" \
    "$(json 'd["selected"], d["retried"], d["skipped"]["at_max_retries"], d["skipped"]["no_question_id"]' <<<"$out" | tr -d '(),')"
  check "$what: dry run sample is the first selected rows" test \
    "$(json '",".join(str(r["execution_id"]) for r in d["sample"] if r["verdict"] == "retry")' <<<"$out")" \
    = "$(tr ',' '\n' <<<"$want_ids" | head -n "$(json 'sum(1 for r in d["sample"] if r["verdict"] == "retry")' <<<"$out")" | paste -sd, -)"

  # The real run.
  set +e
  out=$("${run[@]}" --json --name "case $case_no" --by filter-test 2>"$t_tmp/err")
  rc=$?
  set -e
  check_eq "$what: exit 0" 0 "$rc"
  [[ $rc == 0 ]] || cat "$t_tmp/err"
  check_eq "$what: counts (selected retried queued at_max no_question)" \
    "$want_selected $want_retried $want_retried $want_max $want_noq" \
    "$(json 'd["selected"], d["retried"], d["queued"], d["skipped"]["at_max_retries"], d["skipped"]["no_question_id"]' <<<"$out" | tr -d '(),')"
  local set_id
  set_id=$(json 'd["set_id"]' <<<"$out")
  check_eq "$what: the set's members are exactly the expected rows" "$want_ids" \
    "$(sql -c "SELECT string_agg(execution_id::text, ',' ORDER BY execution_id) FROM retryq_set_members WHERE set_id = $set_id")"
  check_eq "$what: the set names the filter, its name and who" "case $case_no|filter-test|t" \
    "$(sql -F'|' -c "SELECT name, created_by, filter ? 'statuses' FROM retryq_sets WHERE id = $set_id")"
  # Every changed row is an expected one, with exactly one more attempt and history entry.
  sql -F'|' -c "SELECT id, status, retry_count, coalesce(jsonb_array_length(retry_history), -1) FROM executions ORDER BY id" \
    >"$t_tmp/case.rows"
  check_eq "$what: exactly the expected rows changed, each by one attempt and one history entry" "$want_ids" \
    "$(paste -d'|' "$t_tmp/fixture.rows" "$t_tmp/case.rows" | awk -F'|' '
        $1 != $5 { print "misaligned"; exit }
        $2 != $6 || $3 != $7 || $4 != $8 {
          if ($6 == "retrying" && $7 == $3 + 1 && $8 == $4 + 1) ids = ids (ids == "" ? "" : ",") $1
          else ids = ids (ids == "" ? "" : ",") "bad:" $1
        }
        END { print ids }')"
  check_eq "$what: the new history entries say retrying at the new attempt" 0 \
    "$(sql -c "SELECT count(*) FROM executions e JOIN retryq_set_members m ON m.execution_id = e.id
               WHERE NOT (e.retry_history->-1 @> jsonb_build_object('status', 'retrying', 'attempt', m.attempt))
                  OR e.retry_count <> m.attempt OR e.original_error IS NULL")"
  check_eq "$what: previous statuses kept for the members" 0 \
    "$(sql -c "SELECT count(*) FROM retryq_set_members WHERE previous_status NOT IN ($statuses)")"
  # One job per retried row, with its attempt and the spec's index of its question.
  local jobs
  jobs=$(rcli LRANGE "$Q" 0 -1 | python3 -c '
import json, sys
qs = ["identity_basic", "math_basic", "tiananmen_neutral", "taiwan_status"]
print("\n".join("%d|%d|%d" % (j["execution_id"], j["retry_attempt"], j["question_index"])
                for j in map(json.loads, sys.stdin.read().split())))' | sort -t'|' -k1,1n)
  check_eq "$what: one job per retried row, attempt and question index right" \
    "$(sql -F'|' -c "SELECT e.id, e.retry_count, array_position(ARRAY['identity_basic','math_basic','tiananmen_neutral','taiwan_status'], e.question_id::text) - 1
                      FROM executions e JOIN retryq_set_members m ON m.execution_id = e.id ORDER BY e.id")" "$jobs"
  # A second run finds nothing left to retry (with a limit: the next ones, up to it).
  local rest=0
  if [[ -n $limit ]]; then
    rest=$(sql -c "SELECT least($limit, count(*)) $from WHERE $eligible")
  fi
  out=$("${run[@]}" --json 2>/dev/null)
  check_eq "$what: a second run retries only what is left" "$rest" "$(json 'd["retried"]' <<<"$out")"
  rcli DEL "$Q" >/dev/null
}

hours_ago() { date -u -d "@$(($(date +%s) - $1 * 3600))" +%Y-%m-%dT%H:%M:%SZ; }
all="'failed','timeout','error'"
run_case "job" "j.jobspec_id = '$J1'" "$all" "" --job "$J1"
run_case "job + model" "j.jobspec_id = '$J1' AND e.model_id = 'mistral-7b'" "$all" "" --job "$J1" --model mistral-7b
run_case "job + region" "j.jobspec_id = '$J2' AND e.region = 'eu-west'" "$all" "" --job "$J2" --region eu-west
run_case "job + status" "j.jobspec_id = '$J1'" "'timeout','error'" "" --job "$J1" --status timeout,error
run_case "job + error code" "j.jobspec_id = '$J2' AND e.output_data->'failure'->>'code' = 'ROUTER_HTTP_503'" "$all" "" \
  --job "$J2" --error-code ROUTER_HTTP_503
run_case "since (duration)" "e.completed_at >= localtimestamp - interval '12 hours'" "$all" "" --since 12h
run_case "since + until (times)" \
  "e.completed_at >= localtimestamp - interval '30 hours' AND e.completed_at < localtimestamp - interval '6 hours'" "$all" "" \
  --since "$(hours_ago 30)" --until "$(hours_ago 6)"
run_case "job + limit" "j.jobspec_id = '$J1'" "$all" 100 --job "$J1" --limit 100 --chunk 40
run_case "every filter at once" \
  "j.jobspec_id = '$J1' AND e.model_id = 'qwen2.5-1.5b' AND e.region = 'asia-pacific' AND e.output_data->'failure'->>'code' = 'ROUTER_TIMEOUT' AND e.completed_at >= localtimestamp - interval '40 hours'" \
  "'failed','error'" "" --job "$J1" --model qwen2.5-1.5b --region asia-pacific --status failed,error \
  --error-code ROUTER_TIMEOUT --since 40h

# Refusals: an unknown job (exit 1), no job and no since (exit 2), a status that is not
# retryable (exit 2); none of them changes anything.
DB=$FIXTURE
before=$(checksum)
expect_exit() { # <description> <exit> <args...>
  local what=$1 want=$2 rc=0; shift 2
  "$RETRYQ_CLI" --database-url "$DB" --redis-url "$RETRYQ_TEST_REDIS_URL" --queue "filter_$$_x" retry "$@" \
    >/dev/null 2>"$t_tmp/err" || rc=$?
  check_eq "refused, exit $want: $what" "$want" "$rc"
}
expect_exit "unknown job" 1 --job no-such-job
check "unknown job: says so" grep -q "no job with jobspec_id 'no-such-job'" "$t_tmp/err"
expect_exit "neither --job nor --since" 2 --model mistral-7b
expect_exit "status completed" 2 --job "$J1" --status completed
expect_exit "a bad --since" 2 --job "$J1" --since yesterday
expect_exit "--execution-id with --job" 2 --job "$J1" --execution-id 1
check_eq "refusals change nothing" "$before" "$(checksum)"

t_finish
