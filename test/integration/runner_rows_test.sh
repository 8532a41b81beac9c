#!/usr/bin/env bash
# Rows exactly as the runner leaves them (beacon-schema.md): original_error NULL, the
# failure in output_data in the runner's own vocabulary, max_retries per row, old region
# forms. Each goes submit (`retryq retry`) -> worker -> outcome, and the outcome must be
# written with the runner's keys: the first failure kept in original_error, receipt_data
# from metadata.receipt, failures as {error: "hybrid error: …", error_code: ROUTER_*,
# failure: {stage, component: hybrid_router, …}}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup rows
start_router --latency-ms 5

bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"identity_basic": "[mock:receipt_object] Who are you?",
 "receipt_text_q": "[mock:receipt_string] What is 2+2?",
 "refused_q": "[mock:router_error] Who are you?",
 "hang_q": "[mock:hang] Who are you?",
 "down_q": "[mock:http_502] What is the capital of France?",
 "garbage_q": "[mock:garbage] Who are you?",
 "teapot_q": "[mock:http_400] Who are you?"}
JSON
spec='{"id":"beacon-run-7","version":"v1","benchmark":{"name":"bias-detection"},"questions":["identity_basic","receipt_text_q","refused_q","hang_q","down_q","garbage_q","teapot_q","math_basic"]}'
job=$(insert_job "$spec")
jobspec_id=$(sql -c "SELECT jobspec_id FROM jobs WHERE id = $job")

# The runner's failure documents, as its HybridExecutor writes them.
runner_failure() { # <code> <stage> <type> <region> <message> <transient>
  printf '{"error":"hybrid error: %s","error_code":"%s","failure":{"stage":"%s","component":"hybrid_router","subcomponent":"inference","code":"%s","type":"%s","region":"%s","model":"llama3.2-1b","message":"%s","transient":%s}}' \
    "$5" "$1" "$2" "$1" "$3" "$4" "$5" "$6"
}
# runner_row <region> <status> <question_id> <max_retries> <retry_count> <output_data> -> id
runner_row() {
  sql -v job="$job" -v region="$1" -v status="$2" -v qid="$3" -v max="$4" -v count="$5" -v out="$6" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, max_retries,
                        retry_count, output_data, started_at, completed_at)
VALUES (:job, 'modal-us-east', :'region', :'status', :'qid', 'llama3.2-1b', :max, :count,
        :'out'::jsonb, now() - interval '2 minutes', now() - interval '1 minute')
RETURNING id;
SQL
}
timeout_doc=$(runner_failure ROUTER_TIMEOUT router_http_timeout timeout us-east "context deadline exceeded" true)
http_doc=$(runner_failure ROUTER_HTTP_503 router_http_request http_error eu-west "hybrid http_error: HTTP 503 on /inference: Service Unavailable" true)
network_doc=$(runner_failure ROUTER_NETWORK router_network network asia-pacific "dial tcp: connection refused" true)

declare -A ex
ex[ok]=$(runner_row us-east failed identity_basic 3 0 "$timeout_doc")         # the runner marks timeouts 'failed'
ex[old_region]=$(runner_row US failed receipt_text_q 3 0 "$http_doc")          # old region form
ex[refused]=$(runner_row eu-west failed refused_q 1 0 "$http_doc")             # max_retries 1
ex[hang]=$(runner_row asia-pacific timeout hang_q 5 0 "$network_doc")          # max_retries 5
ex[down]=$(runner_row us-east error down_q 3 0 "$timeout_doc")
ex[garbage]=$(runner_row eu-west failed garbage_q 3 0 "$timeout_doc")
ex[teapot]=$(runner_row ASIA failed teapot_q 3 0 "$timeout_doc")
ex[high_max]=$(runner_row us-east failed math_basic 7 5 "$timeout_doc")        # max_retries above the worker's setting
ex[forged]=$(runner_row us-east failed math_basic 3 0 "$timeout_doc")          # a forged job arrives first

index_of() {
  local i=0 q
  for q in identity_basic receipt_text_q refused_q hang_q down_q garbage_q teapot_q math_basic; do
    [[ $q == "$1" ]] && { echo $i; return; }
    i=$((i + 1))
  done
}
retry() { # <key> <region> <question id>
  "$RETRYQ_CLI" retry --execution-id "${ex[$1]}" --region "$2" --question-index "$(index_of "$3")"
}

# A row the runner completed (its success shape): the API's 200, the stored output, nothing queued.
done_row=$(runner_row us-east completed identity_basic 3 0 '{"response":"I am an assistant.","provider":"modal-us-east","metadata":{"region":"us-east"}}')
ex[done]=$done_row
out=$(retry done us-east identity_basic)
check "completed row: already completed with the stored output" grep -q 'already completed.*' <<<"$out"
check "completed row: the stored output is printed" grep -q '"response": "I am an assistant."' <<<"$out"
check_eq "completed row: nothing queued" 0 "$(rcli LLEN "$Q")"

out=$(retry ok us-east identity_basic)
check "submit reports the runner's response fields" \
  grep -q "job_id=$jobspec_id model_id=llama3.2-1b question_id=identity_basic" <<<"$out"
check_eq "submit keeps the runner's error as original_error" "hybrid error: context deadline exceeded" \
  "$(sql -c "SELECT original_error FROM executions WHERE id = ${ex[ok]}")"
retry old_region US receipt_text_q >/dev/null
retry refused eu-west refused_q >/dev/null
retry hang asia-pacific hang_q >/dev/null
retry down us-east down_q >/dev/null
retry garbage eu-west garbage_q >/dev/null
retry teapot ASIA teapot_q >/dev/null
retry high_max us-east math_basic >/dev/null
# A job for the same execution and attempt but another region, ahead of the genuine one.
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1 WHERE id = ${ex[forged]}"
rcli LPUSH "$Q" "{\"execution_id\":${ex[forged]},\"region\":\"eu-west\",\"question_index\":7,\"retry_attempt\":1}" >/dev/null
rcli LPUSH "$Q" "{\"execution_id\":${ex[forged]},\"region\":\"us-east\",\"question_index\":7,\"retry_attempt\":1}" >/dev/null

set +e
timeout 120 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --question-bank "$bank" \
  --timeout-ms 1500 --backoff 200ms,400ms --max-retries 3 --http-addr off \
  --log-level info >"$t_tmp/worker.log" 2>&1
rc=$?
set -e
check_eq "worker exits 0 when the queue is empty" 0 "$rc"
[[ $rc == 0 ]] || tail -40 "$t_tmp/worker.log"

field() { sql -c "SELECT $2 FROM executions WHERE id = $1"; }
outcomes() { field "$1" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")'))"; }

# success: the runner's keys, the first failure kept, the receipt stored
check_eq "success: completed" completed "$(field "${ex[ok]}" status)"
check_eq "success: original_error keeps the runner's failure" "hybrid error: context deadline exceeded" \
  "$(field "${ex[ok]}" original_error)"
check_eq "success: output_data has the runner's keys" t \
  "$(field "${ex[ok]}" "output_data ?& array['response','provider','metadata'] AND NOT output_data ? 'error'")"
check_eq "success: receipt_data from metadata.receipt (object)" '{"provider": "modal-us-east", "signature": "mock-signature"}' \
  "$(field "${ex[ok]}" "receipt_data::text")"
check_eq "success: receipt_data from metadata.receipt (JSON text)" '{"provider": "modal-us-east", "signature": "mock-signature"}' \
  "$(field "${ex[old_region]}" "receipt_data::text")"
check_eq "success: one outcome entry" 1 "$(outcomes "${ex[ok]}")"

# an old region form is sent in the router's form; the stored region stays
calls=$(curl -fsS "$ROUTER_URL/stats")
stat_of() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]].get(sys.argv[2], "-"))' "$1" "$2" <<<"$calls"; }
check_eq "region US is sent as us-east" us-east "$(stat_of regions "${ex[old_region]}")"
check_eq "region ASIA is sent as asia-pacific" asia-pacific "$(stat_of regions "${ex[teapot]}")"
check_eq "stored region unchanged" US "$(field "${ex[old_region]}" region)"
check_eq "old region: completed" completed "$(field "${ex[old_region]}" status)"
check_eq "old region: original_error keeps the first failure" \
  "hybrid error: hybrid http_error: HTTP 503 on /inference: Service Unavailable" "$(field "${ex[old_region]}" original_error)"

# router failure (max_retries 1): the runner's vocabulary
check_eq "router error: failed" failed "$(field "${ex[refused]}" status)"
check_eq "router error: error text" "hybrid error: model not available in region" "$(field "${ex[refused]}" "output_data->>'error'")"
check_eq "router error: code" ROUTER_ERROR "$(field "${ex[refused]}" "output_data->>'error_code'")"
check_eq "router error: failure document" \
  'router_inference|hybrid_router|inference|ROUTER_ERROR|router_error|eu-west|llama3.2-1b|model not available in region|false|1' \
  "$(field "${ex[refused]}" "concat_ws('|', output_data#>>'{failure,stage}', output_data#>>'{failure,component}', output_data#>>'{failure,subcomponent}', output_data#>>'{failure,code}', output_data#>>'{failure,type}', output_data#>>'{failure,region}', output_data#>>'{failure,model}', output_data#>>'{failure,message}', output_data#>>'{failure,transient}', output_data->>'retry_attempt')")"
check_eq "router error: original_error is the runner's first failure" \
  "hybrid error: hybrid http_error: HTTP 503 on /inference: Service Unavailable" "$(field "${ex[refused]}" original_error)"
check_eq "router error: provider in the failure" t "$(field "${ex[refused]}" "output_data#>>'{failure,provider}' IS NOT NULL")"
refused_again=$(set +e; retry refused eu-west refused_q 2>&1; echo "rc=$?")
check "max_retries 1: a second retry is refused" grep -q 'rc=1' <<<"$refused_again"

# timeout (max_retries 5)
check_eq "timeout: status" timeout "$(field "${ex[hang]}" status)"
check_eq "timeout: code, stage, type, transient" 'ROUTER_TIMEOUT|router_http_timeout|timeout|true' \
  "$(field "${ex[hang]}" "concat_ws('|', output_data->>'error_code', output_data#>>'{failure,stage}', output_data#>>'{failure,type}', output_data#>>'{failure,transient}')")"
check_eq "timeout: error is a hybrid error" t "$(field "${ex[hang]}" "output_data->>'error' LIKE 'hybrid error: %'")"
check_eq "timeout: original_error from the runner's row" "hybrid error: dial tcp: connection refused" "$(field "${ex[hang]}" original_error)"
check_eq "timeout: row keeps max_retries 5 and may be retried again" 5 "$(field "${ex[hang]}" max_retries)"

# HTTP 502 every time, then given up: ROUTER_HTTP_502 (a 503 would carry the mock's
# Retry-After and pause the key instead: flow control)
check_eq "502 given up: failed" failed "$(field "${ex[down]}" status)"
check_eq "502 given up: code, stage, type, http_status, url" 'ROUTER_HTTP_502|router_http_request|http_error|502|/inference' \
  "$(field "${ex[down]}" "concat_ws('|', output_data->>'error_code', output_data#>>'{failure,stage}', output_data#>>'{failure,type}', output_data#>>'{failure,http_status}', output_data#>>'{failure,url}')")"
check_eq "garbage: ROUTER_JSON_ERROR at router_response_parse" 'ROUTER_JSON_ERROR|router_response_parse|json_error' \
  "$(field "${ex[garbage]}" "concat_ws('|', output_data->>'error_code', output_data#>>'{failure,stage}', output_data#>>'{failure,type}')")"
check_eq "HTTP 400: ROUTER_HTTP_400, not transient" 'ROUTER_HTTP_400|false' \
  "$(field "${ex[teapot]}" "concat_ws('|', output_data->>'error_code', output_data#>>'{failure,transient}')")"

# max_retries 7 with the worker's --max-retries 3: the row's column is the truth
check_eq "max_retries above the setting: attempt 6 completes" completed "$(field "${ex[high_max]}" status)"
check_eq "max_retries above the setting: one outcome for attempt 6" 1 \
  "$(field "${ex[high_max]}" "jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.attempt == 6 && @.status == \"success\")'))")"

# the forged job does not swallow the genuine one
check_eq "forged region first: the genuine job completes at once" completed "$(field "${ex[forged]}" status)"
check "forged region: dead-lettered as a region mismatch" grep -q "region mismatch" <<<"$(rcli LRANGE "{$Q}:dead" 0 -1)"

for k in ok old_region refused hang down garbage teapot forged; do
  check_eq "exactly one outcome entry for $k" 1 "$(outcomes "${ex[$k]}")"
done

# the seed's log lines at info level
check "log: Starting retry line" grep -q "\[RETRY\] Starting retry for execution ${ex[ok]} (region us-east, question $(index_of identity_basic), attempt 1)" "$t_tmp/worker.log"
check "log: Completed retry line with inference time" grep -Eq "\[RETRY\] Completed retry for execution ${ex[ok]}: status completed, inference [0-9]+ ms" "$t_tmp/worker.log"

check_eq "queue empty" 0 "$(rcli LLEN "$Q")"
check_eq "delayed set empty" 0 "$(rcli ZCARD "{$Q}:delayed")"
check_eq "completed row untouched" "completed 0" "$(field "${ex[done]}" "status || ' ' || retry_count")"
check_eq "no execution left retrying" 0 "$(sql -c "SELECT count(*) FROM executions WHERE status = 'retrying'")"

# A router that only answers on one of the Go client's fallback paths: the first call
# finds it, the later ones go straight there.
start_router --latency-ms 1 --inference-path /api/v1/inference
fb=()
for _ in 1 2 3; do fb+=("$(runner_row us-east failed math_basic 3 0 "$timeout_doc")"); done
for id in "${fb[@]}"; do
  "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 7 >/dev/null
done
timeout 60 "$RETRYQ_WORKER_BIN" --exit-when-idle --router-url "$ROUTER_URL" --question-bank "$bank" \
  --concurrency 1 --http-addr off >"$t_tmp/worker-fallback.log" 2>&1 || true
for id in "${fb[@]}"; do
  check_eq "fallback path: execution $id completed" completed "$(field "$id" status)"
done
calls=$(curl -fsS "$ROUTER_URL/stats")
check_eq "fallback path: /inference tried once" 1 "$(stat_of by_path /inference)"
check_eq "fallback path: /api/v1/inference answered all three" 3 "$(stat_of by_path /api/v1/inference)"

t_finish
