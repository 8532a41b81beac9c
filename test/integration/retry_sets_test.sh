#!/usr/bin/env bash
# Retry sets (issue 15): `retryq sets`, `sets show`, `sets watch` report what PostgreSQL
# holds. A retry by filter makes a set of runner-shaped rows; three members get an outcome
# written with the worker's own outcome statement (src/worker/job.c, JOB_SQL_RECORD), so
# the half-way progress and its ETA are checked; then the real retryq-worker runs the rest
# against the mock router (answers for one question, HTTP 400 for the other, token counts
# in metadata), and every count of list, show and its breakdowns (error codes, model and
# region, token usage, open members) must equal what SQL here computes from the rows. A
# member retried again afterwards counts as superseded; watch exits 0 on a finished set
# and 130 on Ctrl-C before.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup sets
start_router --latency-ms 5
bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"ok_q": "What is 2+2?", "bad_q": "[mock:http_400] Who are you?"}
JSON
job=$(insert_job '{"id":"sets-run","version":"v1","questions":["ok_q","bad_q"]}')
jobspec=$(sql -c "SELECT jobspec_id FROM jobs WHERE id = $job")
# 48 runner-shaped failed rows: 2 models x 2 regions x 2 questions x 6; every eighth is at
# its max_retries (not a member), the rest at retry_count 0 or 1.
sql -v job="$job" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        max_retries, output_data, started_at, completed_at)
SELECT :job, 'modal-us-east', (ARRAY['us-east', 'eu-west'])[1 + i % 2],
       (ARRAY['failed', 'timeout', 'error'])[1 + i % 3], (ARRAY['ok_q', 'bad_q'])[1 + i / 2 % 2],
       (ARRAY['llama3.2-1b', 'mistral-7b'])[1 + i / 4 % 2],
       CASE WHEN i % 8 = 7 THEN 2 ELSE i % 2 END, CASE WHEN i % 8 = 7 THEN 2 ELSE 3 END,
       jsonb_build_object('error', 'hybrid error: context deadline exceeded', 'error_code', 'ROUTER_TIMEOUT',
                          'failure', jsonb_build_object('stage', 'router_http_timeout', 'component', 'hybrid_router',
                                                        'code', 'ROUTER_TIMEOUT', 'type', 'timeout', 'transient', true)),
       localtimestamp - interval '2 hours', localtimestamp - interval '2 hours'
  FROM generate_series(0, 47) AS i;
SQL

out=$("$RETRYQ_CLI" retry --job "$jobspec" --name nightly --by tester --json 2>/dev/null)
set_id=$(json 'd["set_id"]' <<<"$out")
check_eq "retry by filter: 42 retried, 6 at max retries" "42 6" "$(json 'd["retried"], d["skipped"]["at_max_retries"]' <<<"$out" | tr -d '(),')"

members="FROM retryq_set_members m JOIN executions e ON e.id = m.execution_id WHERE m.set_id = $set_id"
progress() { # the progress object of `sets --json` for our set, as "total open completed failed superseded cancelled"
  "$RETRYQ_CLI" sets --json | json "' '.join(str(s['progress'][k]) for s in d if s['id'] == $set_id for k in ('total','open','completed','failed','superseded','cancelled'))"
}
check_eq "sets: just made, every member open" "42 42 0 0 0 0" "$(progress)"
check "sets: the table lists it by name" grep -q "nightly" <<<"$("$RETRYQ_CLI" sets)"
listed=$("$RETRYQ_CLI" sets --json | json "[s for s in d if s['id'] == $set_id][0]")
check "sets --json: name, who, the filter" python3 -c "
import ast, sys; s = ast.literal_eval(sys.argv[1])
sys.exit(0 if s['name'] == 'nightly' and s['created_by'] == 'tester' and s['filter']['job'] == '$jobspec' and s['progress']['eta_seconds'] is None else 1)" "$listed"

# Half-way: three members get an outcome through the worker's own statement.
record() { # <execution id> <attempt> <status> <output> <history status>
  sql -v id="$1" -v attempt="$2" -v status="$3" -v out="$4" -v hist="{\"attempt\":$2,\"status\":\"$5\",\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"worker\":\"test\"}" <<'SQL' >/dev/null
UPDATE executions SET status = :'status', output_data = :'out'::jsonb,
    provider_id = COALESCE('modal-us-east', provider_id), completed_at = now(),
    original_error = COALESCE(original_error, output_data->>'error', NULL),
    receipt_data = COALESCE(NULL::jsonb, receipt_data),
    retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array(:'hist'::jsonb)
WHERE id = :id::bigint AND status = 'retrying' AND retry_count = :attempt RETURNING id;
SQL
}
mapfile -t early < <(sql -F' ' -c "SELECT m.execution_id, m.attempt $members ORDER BY m.execution_id LIMIT 3")
read -r a1 t1 <<<"${early[0]}"
read -r a2 t2 <<<"${early[1]}"
read -r a3 t3 <<<"${early[2]}"
record "$a1" "$t1" completed '{"response":"4","provider":"modal-us-east","metadata":{"tokens_in":5,"tokens_out":9}}' success
record "$a2" "$t2" completed '{"response":"4","provider":"modal-us-east","metadata":{"usage":{"prompt_tokens":7,"completion_tokens":11}}}' success
record "$a3" "$t3" failed '{"error":"hybrid error: HTTP 503","error_code":"ROUTER_HTTP_503","failure":{"code":"ROUTER_HTTP_503"}}' failed
check_eq "sets: half-way counts" "42 39 2 1 0 0" "$(progress)"
half=$("$RETRYQ_CLI" sets show "$set_id" --json)
check_eq "show: 3 outcomes in the last minute, an ETA, 7.1% done" "3 True 7.1" \
  "$(json 'd["progress"]["finished_last_minute"], d["progress"]["eta_seconds"] > 0, round(d["progress"]["percent"], 1)' <<<"$half" | tr -d '(),')"
check_eq "show: the open list holds the 39 open members" \
  "$(sql -c "SELECT string_agg(m.execution_id::text, ',' ORDER BY m.execution_id) $members AND e.status = 'retrying'")" \
  "$(json '",".join(str(o["execution_id"]) for o in d["open"])' <<<"$half")"
check_eq "show: tokens of both usage forms summed" "12 20 2" "$(json 'd["tokens"]["in"], d["tokens"]["out"], d["tokens"]["outputs_with_usage"]' <<<"$half" | tr -d '(),')"
rc=0
timeout --preserve-status -s INT 2 "$RETRYQ_CLI" sets watch "$set_id" --interval 0.2 >"$t_tmp/watch" 2>&1 || rc=$?
check_eq "watch: Ctrl-C on an open set exits 130" 130 "$rc"
check "watch: it refreshed the view" test "$(grep -c '^retry set' "$t_tmp/watch")" -ge 2

# The worker does the rest; the three already recorded are stale to it.
set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --question-bank "$bank" \
  --http-addr off --log-level info >"$t_tmp/worker.log" 2>&1
rc=$?
set -e
check_eq "worker exits 0 when the queue is empty" 0 "$rc"
[[ $rc == 0 ]] || tail -20 "$t_tmp/worker.log"

want=$(sql -F' ' -c "SELECT count(*), count(*) FILTER (WHERE e.status = 'retrying' AND e.retry_count = m.attempt),
  count(*) FILTER (WHERE e.status = 'completed' AND e.retry_count = m.attempt),
  count(*) FILTER (WHERE e.status IN ('failed', 'timeout', 'error') AND e.retry_count = m.attempt),
  count(*) FILTER (WHERE e.retry_count > m.attempt), count(*) FILTER (WHERE e.status = 'cancelled') $members")
check_eq "sets: after the worker, the counts of the rows" "$want" "$(progress)"
check_eq "worker: ok_q members completed, bad_q ones failed with ROUTER_HTTP_400 (the early three aside)" 0 \
  "$(sql -c "SELECT count(*) $members AND m.execution_id NOT IN ($a1, $a2, $a3) AND NOT (
       (e.question_id = 'ok_q' AND e.status = 'completed') OR
       (e.question_id = 'bad_q' AND e.status = 'failed' AND e.output_data->'failure'->>'code' = 'ROUTER_HTTP_400'))")"
read -r total open completed failed superseded cancelled <<<"$(progress)"
check_eq "sets: nothing open, all completed or failed" "42 0 42" "$total $open $((completed + failed))"
show=$("$RETRYQ_CLI" sets show "$set_id" --json)
check_eq "show: done, 100%, no open member" "0 100 0 0" \
  "$(json 'd["progress"]["open"], d["progress"]["percent"], d["progress"]["eta_seconds"], len(d["open"])' <<<"$show" | tr -d '(),')"
check_eq "show: failures by error code" \
  "$(sql -F'=' -c "SELECT e.output_data->'failure'->>'code', count(*) $members AND e.status IN ('failed','timeout','error')
                   GROUP BY 1 ORDER BY 2 DESC, 1" | paste -sd' ' -)" \
  "$(json '" ".join("%s=%d" % (c["error_code"], c["failed"]) for c in d["failures_by_error_code"])' <<<"$show")"
check_eq "show: by model and region" \
  "$(sql -F: -c "SELECT e.model_id, m.region, count(*), count(*) FILTER (WHERE e.status = 'completed'),
                        count(*) FILTER (WHERE e.status <> 'completed') $members GROUP BY 1, 2 ORDER BY 1, 2" | paste -sd' ' -)" \
  "$(json '" ".join("%s:%s:%d:%d:%d" % (s["model_id"], s["region"], s["total"], s["completed"], s["failed"]) for s in d["by_model_region"])' <<<"$show")"
check_eq "show: token usage as the completed outputs hold it" \
  "$(sql -F' ' -c "SELECT sum(coalesce((e.output_data #>> '{metadata,tokens_in}')::int, (e.output_data #>> '{metadata,usage,prompt_tokens}')::int)),
                          sum(coalesce((e.output_data #>> '{metadata,tokens_out}')::int, (e.output_data #>> '{metadata,usage,completion_tokens}')::int)),
                          count(*) $members AND e.status = 'completed'")" \
  "$(json 'd["tokens"]["in"], d["tokens"]["out"], d["tokens"]["outputs_with_usage"]' <<<"$show" | tr -d '(),')"
check "show: the worker's answers carry token counts" test "$(json 'd["tokens"]["in"]' <<<"$show")" -gt 12
text=$("$RETRYQ_CLI" sets show "$set_id")
check "show (text): the error code table" grep -q "ROUTER_HTTP_400" <<<"$text"
check "show (text): the model table" grep -q "mistral-7b" <<<"$text"
rc=0
timeout 10 "$RETRYQ_CLI" sets watch "$set_id" --interval 0.2 >/dev/null 2>&1 || rc=$?
check_eq "watch: a finished set exits 0 at once" 0 "$rc"

# A failed member retried again by hand: superseded by the later attempt, no longer failed.
read -r again region qid <<<"$(sql -F' ' -c "SELECT m.execution_id, m.region, e.question_id $members
  AND e.status = 'failed' ORDER BY m.execution_id LIMIT 1")"
"$RETRYQ_CLI" retry --execution-id "$again" --region "$region" --question-index 1 >/dev/null
check_eq "sets: a member retried again is superseded" "42 0 $completed $((failed - 1)) 1 0" "$(progress)"
check_eq "sets: unknown set" 1 "$("$RETRYQ_CLI" sets show 999999 >/dev/null 2>&1; echo $?)"
check "sets: a usage error for show without an id" test "$("$RETRYQ_CLI" sets show >/dev/null 2>&1; echo $?)" = 2
rcli DEL "$Q" "{$Q}:dead" >/dev/null

t_finish
