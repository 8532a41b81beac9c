#!/usr/bin/env bash
# Cancelling retries (issue 15, item 3) end to end, with the real retryq-worker and the
# mock router.
#
# 1. A retry set of 300 runner-shaped failed rows (failure in output_data, original_error
#    NULL, max_retries 2..4, retry_count 0 or 1) runs through a worker at concurrency 16
#    against a router answering in 300 ms, so work is in flight; `retryq sets cancel`
#    midway. The router's per-execution call counts are read right after the cancel
#    returned; after the worker has drained: no member reported cancelled was called
#    after that (nor at all: with no transient failure a cancelled job was never taken),
#    every cancelled row equals its state before the retry (every column; history = before
#    + the retrying entry + one cancelled entry), every "running" member ended with one
#    outcome, nothing is left in Redis (queue, processing lists, delayed set, tombstones:
#    each cancelled job consumed its own at the pop, counted by the worker), and the set's
#    progress counts the cancelled members.
# 2. A race: 200 single `retryq retry` + `retryq cancel` pairs, 8 at a time, while a worker
#    pops at concurrency 64 from a fast router, its calls held to 5/s by flow control so
#    that a backlog forms and jobs are parked in the delayed set and come back (the pop
#    must drop the cancelled ones there too): every execution is either cancelled (never
#    called; restored) or ran and recorded exactly one outcome — never both or neither —
#    and the exit code of each cancel matches its outcome (0, 5 running, 1 already done).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup cancel
start_router --latency-ms 300
bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"slow_q": "What is 2+2?", "fast_q": "[mock-latency-ms:2] What is the capital of France?"}
JSON
queue_empty() { # <queue>: queue, delayed set and every worker's processing list and taken hash empty
  local q=$1 n
  n=$(rcli EVAL "local n = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
    for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      n = n + redis.call('LLEN', ARGV[1] .. w) + redis.call('HLEN', ARGV[2] .. w)
    end
    return n" 3 "$q" "{$q}:delayed" "{$q}:workers" "{$q}:processing:" "{$q}:taken:")
  [[ $n == 0 ]]
}

# ---------------------------------------------------------------- 1. a set, cancelled midway
job=$(insert_job '{"id":"cancel-run","version":"v1","questions":["slow_q"]}')
jobspec=$(sql -c "SELECT jobspec_id FROM jobs WHERE id = $job")
sql -v job="$job" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        max_retries, last_retry_at, retry_history, output_data, started_at, completed_at)
SELECT :job, 'modal-us-east', (ARRAY['us-east', 'eu-west'])[1 + i % 2],
       (ARRAY['failed', 'timeout', 'error'])[1 + i % 3], 'slow_q', 'llama3.2-1b',
       i % 2, 2 + i % 3,
       CASE WHEN i % 2 = 1 THEN now() - interval '3 hours' END,
       CASE WHEN i % 2 = 1 THEN '[{"attempt": 1, "timestamp": "2026-12-01T00:00:00Z", "status": "retrying"},
                                  {"attempt": 1, "timestamp": "2026-12-01T00:00:09Z", "status": "timeout"}]'::jsonb
            ELSE '[]'::jsonb END,
       jsonb_build_object('error', 'hybrid error: context deadline exceeded', 'error_code', 'ROUTER_TIMEOUT',
                          'failure', jsonb_build_object('stage', 'router_http_timeout', 'code', 'ROUTER_TIMEOUT',
                                                        'type', 'timeout', 'transient', true)),
       localtimestamp - interval '2 hours', localtimestamp - interval '2 hours'
  FROM generate_series(0, 299) AS i;
CREATE TABLE before AS SELECT e.id, to_jsonb(e) - 'retry_history' AS rest, e.retry_history AS hist FROM executions e;
SQL
out=$("$RETRYQ_CLI" retry --job "$jobspec" --json 2>/dev/null)
set_id=$(json 'd["set_id"]' <<<"$out")
check_eq "the set retried all 300" 300 "$(json 'd["queued"]' <<<"$out")"

"$RETRYQ_WORKER_BIN" --exit-when-idle --concurrency 16 --router-url "$ROUTER_URL" --question-bank "$bank" \
  --http-addr off --log-level info >"$t_tmp/worker1.log" 2>&1 &
worker=$!
t_pids+=("$worker")
some_done() { test "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'")" -ge 40; }
check "worker: 40 outcomes before the cancel" wait_for 60 some_done
cancel=$("$RETRYQ_CLI" sets cancel "$set_id" --json)
curl -s "$ROUTER_URL/stats" >"$t_tmp/stats_at_cancel.json"
read -r n_cancelled n_running n_finished <<<"$(json 'd["cancelled"], d["running"], d["finished"]' <<<"$cancel" | tr -d '(),')"
echo "# sets cancel: cancelled=$n_cancelled running=$n_running finished=$n_finished"
check_eq "cancel: every member counted once" 300 "$((n_cancelled + n_running + n_finished))"
check "cancel: some cancelled" test "$n_cancelled" -gt 0
check "cancel: some already finished" test "$n_finished" -ge 40
json '"\n".join(str(i) for i in d["ids"]["cancelled"])' <<<"$cancel" >"$t_tmp/cancelled"
json '"\n".join(str(i) for i in d["ids"]["running"])' <<<"$cancel" >"$t_tmp/running"

set +e
wait "$worker"
rc=$?
set -e
check_eq "worker exits 0 once the queue is empty" 0 "$rc"
curl -s "$ROUTER_URL/stats" >"$t_tmp/stats_end.json"
check_eq "no cancelled member was called after the cancel returned, nor before" 0 "$(python3 - "$t_tmp" <<'PY'
import json, sys
t = sys.argv[1]
at = json.load(open(t + "/stats_at_cancel.json"))["calls"]
end = json.load(open(t + "/stats_end.json"))["calls"]
ids = [l.strip() for l in open(t + "/cancelled") if l.strip()]
print(sum(1 for i in ids if end.get(i, 0) != at.get(i, 0) or end.get(i, 0) != 0))
PY
)"
ids_sql() { paste -sd, "$1" | sed 's/^$/0/'; }
check_eq "every cancelled row is as it was before the retry, history + retrying + cancelled" 0 "$(sql -c "
  SELECT count(*) FROM executions e JOIN before b USING (id)
   WHERE e.id IN ($(ids_sql "$t_tmp/cancelled")) AND NOT (
     to_jsonb(e) - 'retry_history' = b.rest
     AND jsonb_array_length(e.retry_history) = jsonb_array_length(b.hist) + 2
     AND e.retry_history->-2->>'status' = 'retrying'
     AND (e.retry_history->-1) - 'timestamp' = jsonb_build_object('attempt', e.retry_count + 1, 'status', 'cancelled')
     AND coalesce((SELECT jsonb_agg(x ORDER BY o) FROM jsonb_array_elements(e.retry_history) WITH ORDINALITY AS t(x, o)
                    WHERE o <= jsonb_array_length(b.hist)), '[]') = b.hist)")"
check_eq "every running member ended with one outcome of its attempt" 0 "$(sql -c "
  SELECT count(*) FROM executions e JOIN retryq_set_members m ON m.execution_id = e.id AND m.set_id = $set_id
   WHERE e.id IN ($(ids_sql "$t_tmp/running")) AND NOT (e.status = 'completed' AND e.retry_count = m.attempt
     AND (SELECT count(*) FROM jsonb_array_elements(e.retry_history) x
           WHERE x->>'attempt' = m.attempt::text AND x->>'status' NOT IN ('retrying', 'cancelled')) = 1)")"
check_eq "nothing is left retrying" 0 "$(sql -c "SELECT count(*) FROM executions WHERE status = 'retrying'")"
check "redis: queue, delayed set, processing lists and taken hashes empty" queue_empty "$Q"
check_eq "redis: every tombstone consumed by the pop" 0 "$(rcli ZCARD "{$Q}:cancelled")"
check_eq "worker: one job.cancelled line per cancelled member" "$n_cancelled" "$(grep -c 'job.cancelled' "$t_tmp/worker1.log" || true)"
check_eq "sets: progress counts the cancelled members, nothing open" "$n_cancelled 0" \
  "$("$RETRYQ_CLI" sets show "$set_id" --json | json 'd["progress"]["cancelled"], d["progress"]["open"]' | tr -d '(),')"
again=$(head -1 "$t_tmp/cancelled")
region_again=$(sql -c "SELECT region FROM executions WHERE id = $again")
check "a cancelled member can be retried again" "$RETRYQ_CLI" retry --execution-id "$again" --region "$region_again" \
  --question-index 0
check_eq "... at the attempt that was cancelled" "retrying cancelled retrying" "$(sql -c "
  SELECT string_agg(x->>'status', ' ' ORDER BY o) FROM executions e, jsonb_array_elements(e.retry_history) WITH ORDINALITY AS t(x, o)
   WHERE e.id = $again AND x->>'attempt' = e.retry_count::text")"
text=$("$RETRYQ_CLI" sets cancel "$set_id")
check "sets cancel (text): a second cancel finds nothing open (the new retry is not the set's)" \
  grep -q "0 cancelled .* 0 running .* 300 already finished" <<<"$text"
rcli DEL "$Q" >/dev/null # the new retry's job is lost: a cancel still stops it and leaves its tombstone
check_eq "cancel of a retry whose job is gone: exit 0" 0 \
  "$("$RETRYQ_CLI" cancel --execution-id "$again" --region "$region_again" >/dev/null; echo $?)"
check_eq "its tombstone stays for the janitor's retention" 1 "$(rcli ZCARD "{$Q}:cancelled")"
rcli DEL "{$Q}:cancelled" >/dev/null
check_eq "sets cancel: unknown set exits 1" 1 "$("$RETRYQ_CLI" sets cancel 999999 >/dev/null 2>&1; echo $?)"
check_eq "cancel: a usage error without --region" 2 "$("$RETRYQ_CLI" cancel --execution-id 1 >/dev/null 2>&1; echo $?)"

# ---------------------------------------------------------------- 2. the race
Q2="cancel_race_$$"
export RETRYQ_QUEUE=$Q2
PAIRS=200
job2=$(insert_job '{"id":"cancel-race","version":"v1","questions":["fast_q"]}')
sql -v job="$job2" -v n="$PAIRS" <<'SQL' >/dev/null
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count, max_retries,
                        output_data, completed_at)
SELECT :job, 'modal-us-east', 'us-east', 'failed', 'fast_q', 'llama3.2-1b', 0, 3,
       '{"error": "hybrid error: HTTP 503", "error_code": "ROUTER_HTTP_503"}', localtimestamp
  FROM generate_series(1, :n);
SQL
"$RETRYQ_WORKER_BIN" --concurrency 64 --flow "llama3.2-1b/us-east=rate:5/s,burst:2" \
  --router-url "$ROUTER_URL" --question-bank "$bank" --http-addr off --log-level info >"$t_tmp/worker2.log" 2>&1 &
worker2=$!
t_pids+=("$worker2")
registered() { test "$(rcli ZCARD "{$Q2}:workers")" -ge 1; }
check "worker 2 registered" wait_for 20 registered
mkdir -p "$t_tmp/race"
pair() { # <execution id>: retry, then cancel at once; writes "<outcome> <exit code>"
  local id=$1 rc=0 o
  "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 0 >/dev/null 2>&1 || { echo "retry-failed" >"$t_tmp/race/$id"; return; }
  o=$("$RETRYQ_CLI" cancel --execution-id "$id" --region us-east --json 2>/dev/null) || rc=$?
  echo "$(json 'd["items"][0]["outcome"]' <<<"$o" 2>/dev/null || echo none) $rc" >"$t_tmp/race/$id"
}
mapfile -t race_ids < <(sql -c "SELECT id FROM executions WHERE job_id = $job2 ORDER BY id")
for ((i = 0; i < PAIRS; i += 8)); do
  for id in "${race_ids[@]:i:8}"; do pair "$id" & done
  wait $(jobs -pr | grep -vx "$worker2" | grep -vx "$ROUTER_PID" || true) 2>/dev/null || true
done
settled() { test "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job2 AND status = 'retrying'")" = 0; }
check "race: every execution settled (none retrying)" wait_for 60 settled
check "race: queue drained" wait_for 30 queue_empty "$Q2"
curl -s "$ROUTER_URL/stats" >"$t_tmp/stats_race.json"
kill -TERM "$worker2"
wait "$worker2" || true
for id in "${race_ids[@]}"; do echo "$id $(cat "$t_tmp/race/$id")"; done >"$t_tmp/race.txt"
sql -c "SELECT id, status, retry_count,
          (SELECT count(*) FROM jsonb_array_elements(retry_history) x WHERE x->>'status' NOT IN ('retrying', 'cancelled')),
          (SELECT count(*) FROM jsonb_array_elements(retry_history) x WHERE x->>'status' = 'cancelled')
          FROM executions WHERE job_id = $job2 ORDER BY id" -F' ' >"$t_tmp/race_rows.txt"
summary=$(python3 - "$t_tmp" <<'PY'
import json, sys
t = sys.argv[1]
calls = json.load(open(t + "/stats_race.json"))["calls"]
rows = {l.split()[0]: l.split()[1:] for l in open(t + "/race_rows.txt") if l.strip()}
counts = {"cancelled": 0, "running": 0, "finished": 0}
bad = []
for line in open(t + "/race.txt"):
    id_, outcome, rc = (line.split() + ["?", "?"])[:3]
    status, count, outcomes, cancels = rows[id_]
    n = calls.get(id_, 0)
    if outcome == "cancelled":
        ok = rc == "0" and n == 0 and status == "failed" and count == "0" and outcomes == "0" and cancels == "1"
    elif outcome in ("running", "finished"):
        ok = rc == ("5" if outcome == "running" else "1") and n == 1 and status == "completed" \
             and count == "1" and outcomes == "1" and cancels == "0"
    else:
        ok = False
    if outcome in counts:
        counts[outcome] += 1
    if not ok:
        bad.append("%s:%s/%s calls=%s row=%s" % (id_, outcome, rc, n, "/".join(rows[id_])))
print("cancelled=%d running=%d finished=%d bad=%d %s" % (counts["cancelled"], counts["running"],
      counts["finished"], len(bad), " ".join(bad[:5])))
PY
)
echo "# race: $summary"
check "race: each execution cancelled (never called, restored) or ran once, never both or neither" \
  grep -q "bad=0" <<<"$summary"
check "race: both sides of the race were seen" python3 -c "
import re, sys; d = dict(re.findall(r'(\w+)=(\d+)', sys.argv[1]))
sys.exit(0 if int(d['cancelled']) > 0 and int(d['running']) + int(d['finished']) > 0 else 1)" "$summary"
check_eq "race: every tombstone consumed" 0 "$(rcli ZCARD "{$Q2}:cancelled")"
check "no sanitizer report in the worker logs" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error:' '$t_tmp/worker1.log' '$t_tmp/worker2.log'"
rcli DEL "$Q2" "{$Q2}:workers" >/dev/null

t_finish
