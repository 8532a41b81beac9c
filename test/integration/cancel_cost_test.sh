#!/usr/bin/env bash
# A cancel costs Redis the same with 64 or 20,000 jobs in flight. It must know which of
# its jobs a worker holds (those finish normally); the decision script used to read every
# processing list inside one call (about 15 us of Redis's time per job held, so 146 ms a
# call at 10,000 in flight, during which Redis serves nobody). Here a worker holds 20,010
# jobs (planted: 20,009 fields in its taken hash and one job in its processing list, as with
# --concurrency 20000 and a slow router), 10 of them retries of real rows; 10 more retries
# wait in the queue. Each of
# the 20 is cancelled with `retryq cancel`, on a Redis of its own whose slow log keeps
# every call over 1 ms, and:
#   - the 10 held ones are "running" (exit 5), keep their row and get no tombstone;
#   - the 10 queued ones are cancelled (exit 0), their rows restored, a tombstone each;
#   - no call on this queue took 100 ms or more, at most 2 took 20 ms or more (a loaded
#     machine holds Redis off the CPU now and then), and the cancels' calls took under
#     10 ms at the median.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"

HELD=20000
private_services # a Redis of its own: its slow log is this test's
worker_test_setup cancelcost

job=$(insert_job '{"id":"cancel-cost","questions":["math_basic"]}')
ids=()
for ((i = 0; i < 20; i++)); do
  ids+=("$(insert_execution "$job" us-east failed math_basic)")
done
for id in "${ids[@]}"; do
  "$RETRYQ_CLI" retry --execution-id "$id" --region us-east --question-index 0 >/dev/null
done
check_eq "20 retries queued" 20 "$(rcli LLEN "$Q")"

# A worker that holds the 10 oldest retries and 20,000 other jobs.
w="w-big"
list="{$Q}:processing:$w" hash="{$Q}:taken:$w"
rcli ZADD "{$Q}:workers" "$(($(date +%s) * 1000))" "$w" >/dev/null
rcli RPOPLPUSH "$Q" "$list" >/dev/null # one where a blocking pop lands, before its check
for ((i = 1; i < 10; i++)); do
  rcli HSET "$hash" "$(rcli RPOP "$Q")" 1 >/dev/null
done
python3 - "$hash" "$HELD" <<'PY' | rcli --pipe >/dev/null
import sys
key, n = sys.argv[1], int(sys.argv[2])
def cmd(*args):
    out = "*%d\r\n" % len(args)
    for a in args:
        out += "$%d\r\n%s\r\n" % (len(a.encode()), a)
    return out
for base in range(0, n, 1000):
    jobs = ['{"execution_id":%d,"region":"us-east","question_index":0,"retry_attempt":1,'
            '"enqueued_at":"2026-12-03T18:00:00.000Z","id":"held-%d"}' % (900000000 + i, i)
            for i in range(base, min(n, base + 1000))]
    sys.stdout.write(cmd("HSET", key, *[x for j in jobs for x in (j, "1")]))
PY
check_eq "the worker holds 20,010 jobs" $((HELD + 10)) "$(held_by "$Q" "$w")"
check_eq "10 retries left in the queue" 10 "$(rcli LLEN "$Q")"

rcli CONFIG SET slowlog-max-len 100000 >/dev/null
rcli CONFIG SET slowlog-log-slower-than 1000 >/dev/null
rcli SLOWLOG RESET >/dev/null
running=0 cancelled=0 other=0
for ((i = 0; i < 20; i++)); do
  rc=0
  "$RETRYQ_CLI" cancel --execution-id "${ids[i]}" --region us-east >/dev/null 2>"$t_tmp/cancel.err" || rc=$?
  want=0
  ((i < 10)) && want=5
  if ((rc == 5)); then running=$((running + 1)); elif ((rc == 0)); then cancelled=$((cancelled + 1)); else other=$((other + 1)); cat "$t_tmp/cancel.err"; fi
  ((rc == want)) || echo "cancel of ${ids[i]} (held: $((i < 10))): exit $rc, want $want"
done
rcli -2 --json SLOWLOG GET -1 >"$t_tmp/slowlog.json"
rcli CONFIG SET slowlog-log-slower-than 10000 >/dev/null
check_eq "the 10 held retries are running (exit 5)" 10 "$running"
check_eq "the 10 queued retries are cancelled (exit 0)" 10 "$cancelled"
check_eq "no cancel failed" 0 "$other"
held_ids=$(IFS=,; echo "${ids[*]:0:10}")
queued_ids=$(IFS=,; echo "${ids[*]:10:10}")
check_eq "held: rows still retrying" 10 "$(sql -c "SELECT count(*) FROM executions WHERE id IN ($held_ids) AND status = 'retrying'")"
check_eq "queued: rows restored to failed" 10 "$(sql -c "SELECT count(*) FROM executions WHERE id IN ($queued_ids) AND status = 'failed' AND retry_count = 0")"
tombs=0
for id in "${ids[@]:0:10}"; do [[ -n $(rcli ZSCORE "{$Q}:cancelled" "$id:1") ]] && tombs=$((tombs + 1)); done
check_eq "held: no tombstone left" 0 "$tombs"
tombs=0
for id in "${ids[@]:10:10}"; do [[ -n $(rcli ZSCORE "{$Q}:cancelled" "$id:1") ]] && tombs=$((tombs + 1)); done
check_eq "queued: a tombstone each" 10 "$tombs"
check_eq "what the worker holds is untouched" $((HELD + 10)) "$(held_by "$Q" "$w")"

# The slow log's calls on this queue's keys.
read -r n over20 over100 p50 max < <(python3 - "$t_tmp/slowlog.json" "$Q" <<'PY'
import json, sys
entries, q = json.load(open(sys.argv[1])), sys.argv[2]
us = sorted(e[2] for e in entries if any(q in str(a) for a in e[3]))
print(len(us), sum(u >= 20000 for u in us), sum(u >= 100000 for u in us),
      us[len(us) // 2] if us else 0, max(us, default=0))
PY
)
echo "cancel figures: $n call(s) on this queue over 1 ms during 20 cancels with $((HELD + 10)) in flight, median $p50 us, longest $max us"
check_eq "no call of the cancels took 100 ms or more" 0 "$over100"
check "at most 2 calls of the cancels took 20 ms or more ($over20)" test "$over20" -le 2
check "the cancels' calls over 1 ms took under 10 ms at the median ($p50 us)" test "$p50" -lt 10000

t_finish
