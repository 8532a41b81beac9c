#!/usr/bin/env bash
# Helpers of the flow-control tests (sourced after lib.sh): executions of one key, their
# jobs pushed, workers with a /metrics port each, the mock router's per-key counters.

# seed_key <job id> <n> <region> [model]: n executions of that key in 'retrying' (attempt 1,
# one 'retrying' history entry), as the API leaves them.
seed_key() {
  sql -v job="$1" -v n="$2" -v region="$3" -v model="${4:-llama3.2-1b}" <<'SQL' >/dev/null
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        last_retry_at, retry_history, original_error)
SELECT :job, 'router', :'region', 'retrying', 'math_basic', :'model', 1, now(),
       jsonb_build_array(jsonb_build_object('attempt', 1, 'status', 'retrying')), 'provider unavailable'
FROM generate_series(1, :n);
SQL
}

# push_key <job id> <region> [offset] [limit]: LPUSH the jobs of that job's executions in that
# region, in id order, skipping the first `offset`, at most `limit`.
push_key() {
  sql -c "SELECT json_build_object('execution_id', id, 'region', region, 'question_index', 0,
            'retry_attempt', 1)::text FROM executions WHERE job_id = $1 AND region = '$2'
          ORDER BY id OFFSET ${3:-0} LIMIT ${4:-1000000}" |
    while read -r j; do printf "LPUSH %s '%s'\n" "$Q" "$j"; done | rcli >/dev/null
}

# done_count <job id> [region]: executions no longer 'retrying'
done_count() {
  sql -c "SELECT count(*) FROM executions WHERE job_id = $1 ${2:+AND region = '$2'} AND status <> 'retrying'"
}
all_done() { (($(done_count "$1" "${3:-}") >= $2)); }


# start_worker <name> [flags...]: a worker in the background with its own /metrics port
# (WPORT[name]), log ($t_tmp/<name>.log) and pid (WPID[name]).
declare -A WPID WPORT
start_worker() {
  local name=$1; shift
  WPORT[$name]=$(free_port)
  RETRYQ_HTTP_ADDR="127.0.0.1:${WPORT[$name]}" RETRYQ_WORKER_ID="$name-$$" \
    "$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" "$@" >>"$t_tmp/$name.log" 2>&1 &
  WPID[$name]=$!
  t_pids+=("${WPID[$name]}")
}
worker_ready() { curl -fsS --max-time 2 "http://127.0.0.1:${WPORT[$1]}/readyz" >/dev/null 2>&1; }
# metric <worker> <name> [label=value ...]: the sample's value ("" when absent)
metric() {
  local w=$1; shift
  curl -fsS --max-time 5 "http://127.0.0.1:${WPORT[$w]}/metrics" 2>/dev/null |
    python3 "$RETRYQ_SOURCE_DIR/test/integration/prom_text.py" value "$@" 2>/dev/null || true
}
metric_is() { [[ $(metric "$1" "${@:3}") == "$2" ]]; } # metric_is <worker> <value> <name> [labels]
stop_worker() { kill -TERM "${WPID[$1]}" 2>/dev/null || true; wait "${WPID[$1]}" 2>/dev/null || true; }

# key_stat <model|region> <field>: the mock router's per-key counter (0 when never called)
key_stat() {
  curl -fsS "$ROUTER_URL/keys" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"].get(sys.argv[1], {}).get(sys.argv[2], 0))' "$1" "$2"
}
key_rules() { curl -fsS -H 'Content-Type: application/json' --data-binary "$1" "$ROUTER_URL/keys" >/dev/null; }

# outcome_entries_not_one <job id> [region]: executions without exactly one outcome entry
outcome_entries_not_one() {
  sql -c "SELECT count(*) FROM executions WHERE job_id = $1 ${2:+AND region = '$2'} AND
          jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) <> 1"
}

# After the workers stopped: no sanitizer report in any worker log (ASan/UBSan builds).
check_no_sanitizer_reports() {
  check "no sanitizer report in the worker logs" bash -c \
    "! grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$t_tmp'/*.log"
}
