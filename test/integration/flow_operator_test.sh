#!/usr/bin/env bash
# Flow control, an operator's pause and resume as `retryq flow pause|resume` write them
# (docs/flow-control.md; written here with redis-cli, so the worker side is tested on its
# own): the pause key with cause "operator" and a 2 minute PX, and its index entry.
#
#  - the worker learns the pause from {Q}:flow:paused (flow.paused ... by=operator,
#    retry_flow_paused 1) and parks the key's jobs (no router call) while another key runs;
#  - the resume (both deleted) ends the pause in the worker (flow.resumed ... an operator's
#    resume), and the parked job, parked for a minute at most, is called and completes
#    long before the 2 minutes the pause would have lasted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../support/flow.sh
source "$here/../support/flow.sh"

worker_test_setup flowop
start_router --latency-ms 5
KEY=llama3.2-1b/eu-west
job=$(insert_job '{"id":"flow-operator","questions":["math_basic"]}')
seed_key "$job" 3 eu-west
seed_key "$job" 3 us-east

start_worker a
check "worker ready" wait_for 30 worker_ready a
now_ms=$(rcli TIME | python3 -c 'import sys; s, us = sys.stdin.read().split(); print(int(s) * 1000 + int(us) // 1000)')
until_ms=$((now_ms + 120000))
rcli SET "{$Q}:flow:pause:$KEY" \
  "{\"cause\":\"operator\",\"reason\":\"provider maintenance\",\"until_ms\":$until_ms,\"by\":\"operator\"}" PX 120000 >/dev/null
rcli ZADD "{$Q}:flow:paused" "$until_ms" "$KEY" >/dev/null
check "the worker learns the operator's pause" wait_for 5 metric_is a 1 retry_flow_paused key="$KEY"
check "flow.paused by=operator in the log" grep -qE "event=flow.paused key=$KEY cause=operator seconds=1(19|20)\.[0-9] by=operator" "$t_tmp/a.log"

push_key "$job" eu-west
push_key "$job" us-east
check "the other key's jobs complete" wait_for 30 all_done "$job" 3 us-east
parked() { [[ $(metric a retry_flow_waiting key="$KEY") == 3 ]]; }
check "the paused key's 3 jobs are parked" wait_for 10 parked
check_eq "no router call for the paused key" 0 "$(key_stat "llama3.2-1b|eu-west" calls)"
check_eq "... none of its jobs done" 0 "$(done_count "$job" eu-west)"

resumed_at=$SECONDS
rcli DEL "{$Q}:flow:pause:$KEY" >/dev/null
rcli ZREM "{$Q}:flow:paused" "$KEY" >/dev/null
check "the resume ends the pause in the worker" wait_for 5 metric_is a 0 retry_flow_paused key="$KEY"
check "flow.resumed, an operator's resume, in the log" grep -q "event=flow.resumed key=$KEY cause=operator how=\"ended in Redis" "$t_tmp/a.log"
check "the parked jobs complete within about a minute of the resume" wait_for 75 all_done "$job" 6
echo "parked jobs completed $((SECONDS - resumed_at)) s after the resume (the pause had 2 minutes)"
check_eq "one outcome entry each, no delivery used" "0 0" \
  "$(outcome_entries_not_one "$job") $(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_path_exists(retry_history, '\$[*].delivery')")"
stop_worker a
check_no_sanitizer_reports

t_finish
