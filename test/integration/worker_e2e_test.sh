#!/usr/bin/env bash
# retryq-worker end to end against the private Redis and PostgreSQL and the mock router:
# every row of DESIGN §5 once, through the real CLI and the real worker.
#
# Each execution's question id maps (through a test question bank) to a prompt carrying a
# "[mock:MODE]" rule, so the mock router answers that execution in a chosen way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup e2e
start_router --latency-ms 5

# A 5xx without Retry-After: a 503 or 429 with one pauses the key instead (flow control,
# docs/flow-control.md; flow_pause_test.sh), which never fails a job.
bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"ok_q": "What is 2+2?",
 "refused_q": "[mock:router_error] Who are you?",
 "bad_request_q": "[mock:http_400] Who are you?",
 "garbage_q": "[mock:garbage] Who are you?",
 "hang_q": "[mock:hang] Who are you?",
 "flaky_q": "[mock:flaky_once] What is the capital of France?",
 "down_q": "[mock:http_500] What is the capital of France?",
 "nul_q": "[mock:nul] Who are you?",
 "huge_q": "[mock:huge] Who are you?"}
JSON
spec='{"id":"e2e","version":"v1","questions":["ok_q","refused_q","bad_request_q","garbage_q","hang_q","flaky_q","down_q","nul_q","huge_q","math_basic"]}'
job=$(insert_job "$spec")

declare -A ex
for q in ok_q refused_q bad_request_q garbage_q hang_q flaky_q down_q nul_q huge_q; do
  ex[$q]=$(insert_execution "$job" us-east failed "$q")
done
ex[by_index]=$(insert_execution "$job" eu-west timeout "")     # question_id null: index used
ex[bad_index]=$(insert_execution "$job" eu-west failed "")     # index out of range
ex[mismatch]=$(insert_execution "$job" us-east failed "ok_q")  # job names the wrong region
ex[stale]=$(insert_execution "$job" us-east failed "ok_q")     # superseded attempt
ex[poison]=$(insert_execution "$job" us-east failed "ok_q")    # delivered too often

index_of() { # position of a question id in the spec
  local i=0 q
  for q in ok_q refused_q bad_request_q garbage_q hang_q flaky_q down_q nul_q huge_q math_basic; do
    [[ $q == "$1" ]] && { echo $i; return; }
    i=$((i + 1))
  done
}

for q in ok_q refused_q bad_request_q garbage_q hang_q flaky_q down_q nul_q huge_q; do
  "$RETRYQ_CLI" retry --execution-id "${ex[$q]}" --region us-east --question-index "$(index_of "$q")" >/dev/null
done
"$RETRYQ_CLI" retry --execution-id "${ex[by_index]}" --region eu-west --question-index 9 >/dev/null
"$RETRYQ_CLI" retry --execution-id "${ex[bad_index]}" --region eu-west --question-index 42 >/dev/null
# Valid jobs that must not have an effect:
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1 WHERE id = ${ex[mismatch]}"
"$RETRYQ_CLI" enqueue --execution-id "${ex[mismatch]}" --region eu-west --question-index 0 --attempt 1 >/dev/null
sql -c "UPDATE executions SET status = 'retrying', retry_count = 2 WHERE id = ${ex[stale]}"
"$RETRYQ_CLI" enqueue --execution-id "${ex[stale]}" --region us-east --question-index 0 --attempt 1 >/dev/null
"$RETRYQ_CLI" enqueue --execution-id 999999 --region us-east --question-index 0 --attempt 1 >/dev/null
# A job that already had 5 deliveries (the default bound) is poison: dead list + failed.
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1 WHERE id = ${ex[poison]}"
rcli LPUSH "$Q" "{\"execution_id\":${ex[poison]},\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1,\"delivery\":5}" >/dev/null
# The runner's Go API pushes exactly this form, and bad payloads go to the dead list:
rcli LPUSH "$Q" "{\"execution_id\":${ex[stale]},\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":2}" >/dev/null
rcli LPUSH "$Q" 'not json' '{"execution_id":-4,"region":"us-east","question_index":0,"retry_attempt":1}' >/dev/null

"$RETRYQ_CLI" stats
start=$SECONDS
set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --question-bank "$bank" \
  --timeout-ms 1500 --backoff 200ms,400ms --max-response-bytes 1MiB --http-addr off \
  --log-level debug >"$t_tmp/worker.log" 2>&1
rc=$?
set -e
echo "worker ran $((SECONDS - start)) s"
check_eq "worker exits 0 when the queue is empty" 0 "$rc"
[[ $rc == 0 ]] || tail -40 "$t_tmp/worker.log"

status() { sql -c "SELECT status FROM executions WHERE id = $1"; }
hist() { sql -c "SELECT jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')::text FROM executions WHERE id = $1"; }
field() { sql -c "SELECT $2 FROM executions WHERE id = $1"; }

check_eq "success: completed" completed "$(status "${ex[ok_q]}")"
check_eq "success: provider_id from provider_used" 1 "$(field "${ex[ok_q]}" "(provider_id = output_data->>'provider_used')::int")"
check_eq "success: output_data carries both key sets" t \
  "$(field "${ex[ok_q]}" "output_data ?& array['response','provider','provider_used','inference_sec','metadata','retry_attempt']")"
check_eq "success: one outcome entry with worker, provider, duration" 1 \
  "$(field "${ex[ok_q]}" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status == \"success\" && @.attempt == 1 && exists(@.worker) && exists(@.duration_ms) && exists(@.provider))'))")"
check_eq "success: original_error kept" "first failure" "$(field "${ex[ok_q]}" original_error)"
check_eq "success: completed_at set" t "$(field "${ex[ok_q]}" "completed_at IS NOT NULL")"
check_eq "router success:false -> failed" failed "$(status "${ex[refused_q]}")"
check_eq "router error text kept" t "$(field "${ex[refused_q]}" "output_data->>'error' LIKE '%not available%'")"
check_eq "HTTP 400 -> failed" failed "$(status "${ex[bad_request_q]}")"
check_eq "malformed JSON -> failed" failed "$(status "${ex[garbage_q]}")"
check_eq "hang past the timeout -> timeout" timeout "$(status "${ex[hang_q]}")"
check_eq "timeout history entry" '[{"status": "timeout"}]' "$(field "${ex[hang_q]}" "jsonb_path_query_array(retry_history, '\$[*] ? (@.status == \"timeout\")') #- '{0,attempt}' #- '{0,timestamp}' #- '{0,worker}' #- '{0,provider}' #- '{0,duration_ms}' #- '{0,error}'")"
check_eq "503 once, then success through the delayed set" completed "$(status "${ex[flaky_q]}")"
check_eq "500 every time -> failed after the schedule" failed "$(status "${ex[down_q]}")"
check_eq "500 every time: error says it gave up" t "$(field "${ex[down_q]}" "output_data->>'error' LIKE 'hybrid error: gave up after 3 tries%'")"
check_eq "NUL and invalid UTF-8 answer stored safely" completed "$(status "${ex[nul_q]}")"
check_eq "answer over the size cap -> failed" failed "$(status "${ex[huge_q]}")"
check_eq "null question_id resolved by index" completed "$(status "${ex[by_index]}")"
check_eq "index out of range -> failed" failed "$(status "${ex[bad_index]}")"
check_eq "index out of range message" "invalid question index: 42 (total questions: 10)" "$(field "${ex[bad_index]}" "output_data->>'error'")"
check_eq "region mismatch leaves the row alone" retrying "$(status "${ex[mismatch]}")"
check_eq "stale attempt 1 recorded nothing" 0 "$(field "${ex[stale]}" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.attempt == 1)'))")"
check_eq "the Go payload for the current attempt runs" 1 "$(field "${ex[stale]}" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status == \"success\" && @.attempt == 2)'))")"

for q in ok_q refused_q bad_request_q garbage_q hang_q nul_q huge_q; do
  check_eq "exactly one outcome entry for $q" 1 "$(field "${ex[$q]}" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")'))")"
done

dead=$(rcli LRANGE "{$Q}:dead" 0 -1)
check "dead list: invalid JSON with its reason" grep -q 'invalid job: ' <<<"$dead"
check "dead list: negative execution id" grep -q 'execution_id' <<<"$dead"
check "dead list: region mismatch" grep -q 'region mismatch' <<<"$dead"
check "dead list: unknown execution" grep -q 'execution not found' <<<"$dead"
check "dead list: index out of range" grep -q 'invalid question index: 42' <<<"$dead"
check "dead list: poison job with its reason" grep -q 'poison: delivered 5 times' <<<"$dead"
check_eq "poison: execution marked failed" failed "$(status "${ex[poison]}")"
check_eq "poison: reason recorded" t "$(field "${ex[poison]}" "output_data->>'error' LIKE 'poison:%'")"
check_eq "poison: router never called" 0 "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"].get(sys.argv[1], 0))' "${ex[poison]}" <<<"$(curl -fsS "$ROUTER_URL/stats")")"
check_eq "dead list size" 6 "$(rcli LLEN "{$Q}:dead")"
check_eq "queue empty" 0 "$(rcli LLEN "$Q")"
check_eq "delayed set empty" 0 "$(rcli ZCARD "{$Q}:delayed")"
check_eq "no processing list or taken hash left" "" "$(held_keys "$Q")"
check_eq "worker left the worker set" 0 "$(rcli ZCARD "{$Q}:workers")"

calls=$(curl -fsS "$ROUTER_URL/stats")
calls_for() { python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"].get(sys.argv[1], 0))' "$1" <<<"$calls"; }
check_eq "router called once for a success" 1 "$(calls_for "${ex[ok_q]}")"
check_eq "router called twice for 503-then-ok" 2 "$(calls_for "${ex[flaky_q]}")"
check_eq "router called three times for always-500" 3 "$(calls_for "${ex[down_q]}")"
check_eq "router never called for a stale job" 0 "$(calls_for "${ex[mismatch]}")"
check "log keeps the [RETRY] marker with execution ids" grep -q "execution_id=${ex[ok_q]} attempt=1.*\[RETRY\]" "$t_tmp/worker.log"

# Delivering the finished job again changes nothing (guard), and costs no router call.
before=$(field "${ex[ok_q]}" "retry_history::text")
"$RETRYQ_CLI" enqueue --execution-id "${ex[ok_q]}" --region us-east --question-index 0 --attempt 1 >/dev/null
timeout 60 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --question-bank "$bank" \
  --http-addr off >"$t_tmp/worker2.log" 2>&1
check_eq "redelivered job is stale: history unchanged" "$before" "$(field "${ex[ok_q]}" "retry_history::text")"
calls=$(curl -fsS "$ROUTER_URL/stats")
check_eq "redelivered job made no router call" 1 "$(calls_for "${ex[ok_q]}")"
check "stale counted in the log" grep -q 'job.stale' "$t_tmp/worker2.log"

t_finish
