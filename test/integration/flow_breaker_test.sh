#!/usr/bin/env bash
# Flow control, the circuit breaker (issue 14, docs/flow-control.md): one key
# (llama3.2-1b/eu-west) answers HTTP 500 (no Retry-After) to every call for 10 s, then is
# healthy; another key is healthy all along. The outage is scaled down from the issue's
# 30 s with the breaker's thresholds to match (min 5 calls, a 10 s window, back-off 2 s
# doubling to 8 s): the breaker still opens, reopens on failed probes at least once, and
# closes, which is all a longer outage would add more of.
#
#  - the breaker opens (flow.breaker.open; the key paused in Redis with cause "breaker";
#    retry_flow_breaker_state 1), probes (flow.breaker.probe) and closes (flow.breaker.closed);
#  - while it is open the key's router calls are its probes only (a failed 500 after the
#    opening is a failed probe: at most probes - 1 of them, the last probe succeeding);
#  - the healthy key's jobs finish while the breaker is open;
#  - everything completes, one outcome entry each, retry_count unchanged, and the
#    deliveries used add up to exactly the calls that failed (a job parked by the open
#    breaker uses none).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../support/flow.sh
source "$here/../support/flow.sh"

worker_test_setup flowbreaker
export RETRYQ_CONCURRENCY=16
start_router --latency-ms 20
BAD=llama3.2-1b/eu-west
N_BAD=40 N_OK=60
log="$t_tmp/a.log"

job=$(insert_job '{"id":"flow-breaker","questions":["math_basic"]}')
seed_key "$job" "$N_BAD" eu-west
seed_key "$job" "$N_OK" us-east

start_worker a --breaker ratio:0.5,min:5,window:10s,backoff:2s..8s --backoff 1s,2s,4s,8s
check "worker ready" wait_for 30 worker_ready a

key_rules '{"rules":[{"model":"llama3.2-1b","region":"eu-west","fail_rate":1,"fail_mode":"http_500","for_ms":10000}]}'
push_key "$job" eu-west
opened() { grep -q "event=flow.breaker.open key=$BAD" "$log" && [[ $(rcli EXISTS "{$Q}:flow:pause:$BAD") == 1 ]]; }
check "the breaker opens and pauses the key in Redis" wait_for 15 opened
failed0=$(key_stat "llama3.2-1b|eu-west" status_5xx)
echo "breaker open after $failed0 failed calls"
check "the pause's cause is breaker" python3 -c 'import json,sys; assert json.loads(sys.argv[1])["cause"] == "breaker"' \
  "$(rcli GET "{$Q}:flow:pause:$BAD")"
check "retry_flow_breaker_state shows it open (or half-open)" wait_for 5 bash -c \
  "v=\$(curl -fsS http://127.0.0.1:${WPORT[a]}/metrics | python3 '$here/prom_text.py' value retry_flow_breaker_state key=$BAD); [[ \$v == 1 || \$v == 2 ]]"
check "the breaker's state is published in {Q}:flow:breakers" python3 -c '
import json,sys; d = json.loads(sys.argv[1]); assert d["state"] in ("open", "half_open"), d; assert d["calls"] >= 5, d' \
  "$(rcli HGET "{$Q}:flow:breakers" "$BAD")"

push_key "$job" us-east
check "the healthy key's jobs finish while the breaker is open" wait_for 30 all_done "$job" "$N_OK" us-east
check "... the breaker has not closed yet" bash -c "! grep -q 'event=flow.breaker.closed' '$log'"

closed() { grep -q "event=flow.breaker.closed key=$BAD" "$log"; }
check "the breaker closes once the key is healthy" wait_for 60 closed
check "everything completes" wait_for 60 all_done "$job" $((N_BAD + N_OK))
probes=$(grep -c "event=flow.breaker.probe key=$BAD" "$log" || true)
reopens=$(grep -c "event=flow.breaker.open key=$BAD.*the probe call failed" "$log" || true)
failed=$(key_stat "llama3.2-1b|eu-west" status_5xx)
echo "probes=$probes reopens=$reopens failed calls: $failed0 before the opening, $failed in all"
check "the breaker probed more than once (it reopened)" test "$probes" -ge 2
check_eq "each failed probe reopened it" $((probes - 1)) "$reopens"
check "calls failed while open ($((failed - failed0))) <= probes - 1 ($((probes - 1)))" \
  test $((failed - failed0)) -le $((probes - 1))
check "far fewer calls than without a breaker (${failed} failed < $N_BAD jobs x 2)" test "$failed" -lt $((2 * N_BAD))
check_eq "every execution completed" $((N_BAD + N_OK)) \
  "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'")"
check_eq "exactly one outcome entry each" 0 "$(outcome_entries_not_one "$job")"
check_eq "retry_count unchanged (1)" 0 "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND retry_count <> 1")"
check_eq "deliveries used = calls that failed (parked jobs used none)" "$failed" \
  "$(sql -c "SELECT coalesce(sum((e->>'delivery')::int), 0) FROM executions, jsonb_array_elements(retry_history) e
             WHERE job_id = $job AND e->>'status' <> 'retrying'")"
check "retry_flow_breaker_state back to 0" wait_for 5 metric_is a 0 retry_flow_breaker_state key="$BAD"
check "the breaker pauses counted" test "$(metric a retry_flow_pauses_total key="$BAD" cause=breaker)" -ge 2
check_eq "nothing dead-lettered" 0 "$(rcli LLEN "{$Q}:dead")"
stop_worker a

check_no_sanitizer_reports
t_finish
