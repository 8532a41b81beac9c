#!/usr/bin/env bash
# Flow control, pauses from the router's own words (issue 14, docs/flow-control.md): one
# key (llama3.2-1b/eu-west) answers 429 with "Retry-After: 20" for 20 s while two other
# keys are healthy. Two workers share the queue.
#
#  - the first 429 pauses the key for every worker ({Q}:flow:pause:<key>); the other
#    worker learns it from Redis (its /metrics shows the key paused before any job of the
#    key is pushed to it);
#  - the healthy keys' jobs, pushed after the pause began, all finish while the pause is
#    still on (no head-of-line blocking);
#  - the paused key's router calls during the pause are at most one per worker;
#  - every execution ends completed with exactly one outcome entry, retry_count unchanged
#    and no delivery used (the history entries carry no "delivery"), the paused key's only
#    after its pause ended; the log has flow.paused and flow.resumed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../support/flow.sh
source "$here/../support/flow.sh"

worker_test_setup flowpause
export RETRYQ_CONCURRENCY=32
start_router --latency-ms 20
BAD=llama3.2-1b/eu-west
N_BAD=30 N_OK=100

job=$(insert_job '{"id":"flow-pause","questions":["math_basic"]}')
seed_key "$job" "$N_BAD" eu-west
seed_key "$job" "$N_OK" us-east
seed_key "$job" "$N_OK" asia-pacific

start_worker a
start_worker b
check "both workers ready" wait_for 30 bash -c "curl -fsS http://127.0.0.1:${WPORT[a]}/readyz >/dev/null && curl -fsS http://127.0.0.1:${WPORT[b]}/readyz >/dev/null"

# The rule lasts 20 s from now; the pause (20 s from the first 429) ends after it.
key_rules '{"rules":[{"model":"llama3.2-1b","region":"eu-west","mode":"http_429","retry_after":"20","for_ms":20000}]}'
push_key "$job" eu-west 0 1
paused() { [[ $(rcli EXISTS "{$Q}:flow:pause:$BAD") == 1 ]]; }
check "the first 429 pauses the key in Redis" wait_for 10 paused
pause_db_start=$(sql -c "SELECT now()")
doc=$(rcli GET "{$Q}:flow:pause:$BAD")
echo "pause: $doc"
check "the pause document says retry_after, about 20 s" python3 -c '
import json, sys; d = json.loads(sys.argv[1]); assert d["cause"] == "retry_after", d; assert d["by"].endswith(sys.argv[2]), d' "$doc" "-$$"
check_eq "the paused index holds the key" "$BAD" "$(rcli ZRANGE "{$Q}:flow:paused" 0 -1)"
check "worker a knows the key is paused" wait_for 5 metric_is a 1 retry_flow_paused key="$BAD"
check "worker b knows the key is paused" wait_for 5 metric_is b 1 retry_flow_paused key="$BAD"
c0=$(key_stat "llama3.2-1b|eu-west" status_429)
check_eq "one call made the pause" 1 "$c0"

# Now the rest of the paused key's jobs and the healthy keys' jobs.
push_key "$job" eu-west 1
push_key "$job" us-east
push_key "$job" asia-pacific
healthy_done() { (($(done_count "$job" us-east) + $(done_count "$job" asia-pacific) >= 2 * N_OK)); }
start=$SECONDS
check "the healthy keys' $((2 * N_OK)) jobs finish" wait_for 60 healthy_done
echo "healthy keys done in $((SECONDS - start)) s"
check "... while the key is still paused" paused
check_eq "no job of the paused key finished meanwhile" 0 "$(done_count "$job" eu-west)"
mid=$(key_stat "llama3.2-1b|eu-west" status_429)
check "the paused key's calls during the pause: at most one per worker ($((mid - c0)))" test $((mid - c0)) -le 2
check "worker a counts its parked jobs" test "$(metric a retry_flow_waiting key="$BAD")$(metric b retry_flow_waiting key="$BAD")" != 00

check "the paused key's $N_BAD jobs finish after the pause" wait_for 60 all_done "$job" "$((N_BAD + 2 * N_OK))"
end=$(key_stat "llama3.2-1b|eu-west" status_429)
check "the paused key's 429s after the first: at most one per worker ($((end - c0)))" test $((end - c0)) -le 2
check_eq "the paused key's calls that succeeded" "$N_BAD" "$(key_stat "llama3.2-1b|eu-west" status_2xx)"
check_eq "every execution completed" $((N_BAD + 2 * N_OK)) \
  "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'")"
check_eq "exactly one outcome entry each" 0 "$(outcome_entries_not_one "$job")"
check_eq "retry_count unchanged (1)" 0 "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND retry_count <> 1")"
check_eq "no delivery used: no history entry carries one" 0 \
  "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_path_exists(retry_history, '\$[*].delivery')")"
check_eq "the paused key's jobs completed only once the pause was over (>= 19 s after it began)" t \
  "$(sql -c "SELECT min(completed_at) >= '$pause_db_start'::timestamp + interval '19 seconds' FROM executions WHERE job_id = $job AND region = 'eu-west'")"
check "worker logs: flow.paused with key, cause and seconds" \
  grep -qE "event=flow.paused key=$BAD cause=retry_after seconds=(19|20)\." "$t_tmp/a.log" "$t_tmp/b.log"
check "both workers logged the pause" bash -c "grep -q 'event=flow.paused key=$BAD' '$t_tmp/a.log' && grep -q 'event=flow.paused key=$BAD' '$t_tmp/b.log'"
check "worker logs: flow.resumed" grep -q "event=flow.resumed key=$BAD" "$t_tmp/a.log"
check "the pause counted by cause" test "$(metric a retry_flow_pauses_total key="$BAD" cause=retry_after)" -ge 1
check_eq "nothing dead-lettered" 0 "$(rcli LLEN "{$Q}:dead")"

# The x-ratelimit-* headers end to end: a 429 with "Retry-After: 1" and an exhausted
# request budget that resets in 4 s pauses the key for the longer, 4 s.
RL=llama3.2-1b/us-east
job2=$(insert_job '{"id":"flow-ratelimit","questions":["math_basic"]}')
seed_key "$job2" 1 us-east
key_rules '{"rules":[{"model":"llama3.2-1b","region":"us-east","mode":"http_429","retry_after":"1","ratelimit_reset_ms":4000,"for_ms":3000}]}'
push_key "$job2" us-east
rl_paused() { [[ $(rcli EXISTS "{$Q}:flow:pause:$RL") == 1 ]]; }
check "ratelimit: the key is paused" wait_for 10 rl_paused
check "ratelimit: for the budget's reset (4 s), not Retry-After's 1 s" test "$(rcli PTTL "{$Q}:flow:pause:$RL")" -gt 2000
check "ratelimit: the job completes after the pause" wait_for 30 all_done "$job2" 1
check_eq "ratelimit: one outcome entry, no delivery used" "0 0" \
  "$(outcome_entries_not_one "$job2") $(sql -c "SELECT count(*) FROM executions WHERE job_id = $job2 AND jsonb_path_exists(retry_history, '\$[*].delivery')")"
stop_worker a
stop_worker b
check_eq "delayed set empty" 0 "$(rcli ZCARD "{$Q}:delayed")"
check "the keys used are listed in {Q}:flow:keys" test "$(rcli ZCARD "{$Q}:flow:keys")" -eq 3

check_no_sanitizer_reports
t_finish
