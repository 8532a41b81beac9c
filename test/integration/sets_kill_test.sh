#!/usr/bin/env bash
# A retry set of 1,000 runner-shaped failures, two workers, one killed with SIGKILL
# midway while it holds jobs: the surviving process takes the dead one's jobs back (lease
# recovery) and finishes the set. Its progress reaches 100 % and equals what SQL computes
# from the rows; every member ends with exactly one outcome entry for its attempt (the
# guard turns away a redelivered job whose call the killed worker had made); nothing is
# left in Redis. Prints how many jobs the killed worker held and how many router calls
# were made twice.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup skill
start_router --latency-ms 100
bank="$t_tmp/bank.json"
echo '{"ok_q": "What is 2+2?", "bad_q": "[mock:http_400] Who are you?"}' >"$bank"
job=$(insert_job '{"id":"sets-kill","questions":["ok_q","bad_q"]}')
# 1,000 runner-shaped failures (error in output_data, original_error NULL), 2 models x 2
# regions, max_retries 2..4, retry_count 0 or 1; one in ten asks the question the router
# refuses.
sql -v job="$job" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        max_retries, output_data, started_at, completed_at)
SELECT :job, 'modal-us-east', (ARRAY['us-east', 'eu-west'])[1 + i % 2],
       (ARRAY['failed', 'timeout', 'error'])[1 + i % 3], CASE WHEN i % 10 = 0 THEN 'bad_q' ELSE 'ok_q' END,
       (ARRAY['llama3.2-1b', 'mistral-7b'])[1 + i / 2 % 2], i % 2, 2 + i % 3,
       jsonb_build_object('error', 'hybrid error: HTTP 503', 'error_code', 'ROUTER_HTTP_503'),
       localtimestamp - interval '1 hour', localtimestamp - interval '1 hour'
  FROM generate_series(1, 1000) AS i;
SQL
spec=$(sql -c "SELECT jobspec_id FROM jobs WHERE id = $job")
set_id=$("$RETRYQ_CLI" retry --job "$spec" --name kill-midway --json | json 'd["set_id"]')
members="FROM retryq_set_members m JOIN executions e ON e.id = m.execution_id WHERE m.set_id = $set_id"
check_eq "the set has 1,000 members" 1000 "$(sql -c "SELECT count(*) $members")"

progress() { # "total open completed failed superseded cancelled percent" of our set
  "$RETRYQ_CLI" sets --json | json "' '.join(str(s['progress'][k]) for s in d if s['id'] == $set_id for k in ('total','open','completed','failed','superseded','cancelled','percent'))"
}
start_worker() { # <name>
  "$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --question-bank "$bank" --http-addr off \
    --worker-id "kill-$1-$$" --concurrency 8 --heartbeat-ms 500 --lease-ms 2000 \
    --log-level info >"$t_tmp/$1.log" 2>&1 &
  t_pids+=("$!")
}
start_worker victim
victim=$!
start_worker survivor
survivor=$!

done_at_least() { # <n>: members no longer open
  local p; p=$(progress) || return 1
  read -r total open _ <<<"$p"
  ((total - open >= $1))
}
check "300 members finished with both workers running" wait_for 60 done_at_least 300
held=$(held_by "$Q" "kill-victim-$$")
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
after_kill=$(held_by "$Q" "kill-victim-$$")
echo "the killed worker held $held job(s) when it was killed ($after_kill left in its list)"
check "the killed worker held jobs" test "$after_kill" -gt 0

finished() { [[ $(progress | cut -d' ' -f2) == 0 ]]; }
check "the surviving worker finishes the set" wait_for 120 finished
check "the survivor is the process that lived through the kill" kill -0 "$survivor"
read -r total open completed failed superseded cancelled percent <<<"$(progress)"
check_eq "progress: 100 % of 1,000, nothing open" "1000 0 100" "$total $open $percent"
want=$(sql -F' ' -c "SELECT count(*) FILTER (WHERE e.status = 'completed' AND e.retry_count = m.attempt),
  count(*) FILTER (WHERE e.status IN ('failed', 'timeout', 'error') AND e.retry_count = m.attempt),
  count(*) FILTER (WHERE e.retry_count > m.attempt), count(*) FILTER (WHERE e.status = 'cancelled') $members")
check_eq "progress equals the rows (completed failed superseded cancelled)" "$want" \
  "$completed $failed $superseded $cancelled"
check_eq "ok_q members completed, bad_q ones failed (HTTP 400)" "900 100" "$completed $failed"
check_eq "every member has exactly one outcome entry for its attempt" 0 \
  "$(sql -c "SELECT count(*) $members AND (SELECT count(*) FROM jsonb_array_elements(e.retry_history) h
     WHERE (h->>'attempt')::int = m.attempt AND h->>'status' <> 'retrying') <> 1")"
stats=$(curl -fsS "$ROUTER_URL/stats")
twice=$(json 'sum(1 for v in d["calls"].values() if v > 1)' <<<"$stats")
check "every member was called at least once" test "$(json 'len(d["calls"])' <<<"$stats")" -eq 1000
echo "router calls made twice (a call of the killed worker, made again after recovery): $twice"
moved=$(grep -oE 'moved [0-9]+ job\(s\) back to the queue' "$t_tmp/survivor.log" | awk '{n += $2} END {print n + 0}')
check_eq "the survivor moved the killed worker's jobs back to the queue" "$after_kill" "$moved"
left=$(( $(rcli LLEN "$Q") + $(rcli ZCARD "{$Q}:delayed") + $(held_jobs "$Q") ))
check_eq "nothing left in the queue, the delayed set or with any worker" 0 "$left"
kill -TERM "$survivor"
set +e; wait "$survivor"; rc=$?; set -e
check_eq "the survivor stops with 0" 0 "$rc"
t_finish
