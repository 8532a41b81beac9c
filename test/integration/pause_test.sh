#!/usr/bin/env bash
# Pausing the whole queue under load (`retryq pause` / `retryq resume`, {Q}:paused): two
# workers, a few thousand jobs, a router answering in 50 ms. Midway `retryq pause
# --reason ...`; T is the time it returned.
#
#  - the mock router's request count (counted when a request arrives) at T+1 s equals the
#    count 3 s later: no router call started more than 1 s after the pause returned;
#  - meanwhile the queue's depths stay as they are, and the calls made before the pause
#    finish with their outcomes recorded (one outcome per call, none in flight at the
#    router); the jobs the workers had taken wait in their processing lists;
#  - retry_queue_paused is 1 on both workers, /readyz stays 200 and says paused, the
#    status page shows the banner, `retryq stats` shows who, since when and why, both
#    logs have queue.paused with the reason;
#  - after `retryq resume` the drain rate is at least 80 % of the rate before the pause
#    (both measured in this run and printed), every execution completes with exactly one
#    outcome entry, and nothing is left in Redis.
# Then jobs taken but not yet calling the router (their loads kept waiting by a lock on
# the executions table until the pause is in place) are held in the processing lists and
# call nothing until the resume; a worker stopped meanwhile hands its held jobs back to the
# queue, and restarted while paused takes nothing; delayed jobs are still promoted and the
# heartbeats go on.
# A {Q}:paused of the wrong type counts as a pause (its reason says so) until `retryq
# resume` deletes it.
# Also the CLI around it: a second pause keeps the first, --json, resume of a running
# queue, usage and refusal exit codes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../support/flow.sh
source "$here/../support/flow.sh"

worker_test_setup pause
export RETRYQ_CONCURRENCY=8
N=4000
REASON="provider maintenance <b>&</b>"
start_router --latency-ms 50

job=$(insert_job '{"id":"pause","questions":["math_basic"]}')
seed_key "$job" "$N" us-east

now() { date +%s.%N; }
requests() { curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])'; }
router_in_flight() { curl -fsS "$ROUTER_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["in_flight"])'; }
completed() { sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'"; }
depths() { # pending processing delayed
  echo "$(rcli LLEN "$Q") $(held_jobs "$Q") $(rcli ZCARD "{$Q}:delayed")"
}
# rate <seconds>: completions per second over a window of that length, from now
rate() {
  local c0 t0 c1 t1
  c0=$(completed); t0=$(now)
  sleep "$1"
  c1=$(completed); t1=$(now)
  python3 -c "import sys; print(round(($c1 - $c0) / ($t1 - $t0), 1))"
}
until_t() { # sleeps until the epoch time $1 (a fixed window, not a synchronisation)
  local left
  left=$(python3 -c "import time; print(max(0, $1 - time.time()))")
  sleep "$left"
}

# ---- the CLI before any worker: a running queue, usage and refusals
out=$("$RETRYQ_CLI" resume)
check_eq "resume of a running queue: says so, exit 0" "queue $Q was not paused: nothing to resume" "$out"
out=$("$RETRYQ_CLI" resume --json)
check "resume --json of a running queue: was_paused false" python3 -c '
import json, sys; d = json.loads(sys.argv[1]); assert d["was_paused"] is False and d["paused"] is False, d' "$out"
rc=0; "$RETRYQ_CLI" pause extra 2>"$t_tmp/err" || rc=$?
check_eq "pause with an operand: usage error (2)" 2 "$rc"
rc=0; "$RETRYQ_CLI" pause --reason $'two\nlines' 2>"$t_tmp/err" || rc=$?
check_eq "pause with a control character in the reason: refused (1)" 1 "$rc"
check "... with a sentence" grep -q "reason: must not contain control characters" "$t_tmp/err"
check_eq "... and nothing written" 0 "$(rcli EXISTS "{$Q}:paused")"
fd_port=$(free_port)
rc=0; "$RETRYQ_CLI" --redis-url "redis://127.0.0.1:$fd_port" pause 2>"$t_tmp/err" || rc=$?
check_eq "pause with Redis unreachable: unavailable (3)" 3 "$rc"
check "pause --help documents --reason" bash -c "'$RETRYQ_CLI' pause --help | grep -q -- --reason"

# ---- load: two workers, all jobs pushed
start_worker a
start_worker b
check "both workers ready" wait_for 30 bash -c "curl -fsS http://127.0.0.1:${WPORT[a]}/readyz >/dev/null && curl -fsS http://127.0.0.1:${WPORT[b]}/readyz >/dev/null"
check_eq "running: retry_queue_paused 0" 0 "$(metric a retry_queue_paused queue="$Q")"
push_key "$job" us-east
warm() { (($(completed) >= N / 10)); }
check "the workers are draining the queue" wait_for 60 warm
before=$(rate 3)
echo "drain rate before the pause: $before completions/s (load average $(cut -d' ' -f1-3 /proc/loadavg))"

# ---- pause midway
check "still more than a quarter to do when pausing ($(completed) of $N done)" test "$(completed)" -lt $((N * 3 / 4))
out=$("$RETRYQ_CLI" pause --reason "$REASON" --by "ops@test")
T=$(now)
echo "$out"
check "pause says paused, by and reason" grep -q "^paused queue $Q by ops@test, since .*: $REASON\$" <<<"$out"
until_t "$(python3 -c "print($T + 1)")"
r1=$(requests); d1=$(depths); c1=$(completed)
until_t "$(python3 -c "print($T + 4)")"
r2=$(requests); d2=$(depths); c2=$(completed)
echo "router requests at T+1 s: $r1, at T+4 s: $r2; depths (pending processing delayed) $d1 -> $d2; completed $c1 -> $c2"
check_eq "no router call started from T+1 s to T+4 s" "$r1" "$r2"
check_eq "the queue's depths did not change while paused" "$d1" "$d2"
check_eq "no call in flight at the router" 0 "$(router_in_flight)"
check_eq "every call made before the pause has its outcome recorded (calls = completions)" "$r2" "$c2"
read -r pending processing delayed <<<"$d2"
check_eq "nothing lost: pending + processing + completed = $N" "$N" $((pending + processing + c2))
check_eq "nothing delayed" 0 "$delayed"
echo "while paused: $pending pending, $processing held in the workers' processing lists"
check "both workers show retry_queue_paused 1" bash -c "[[ \$(curl -fsS http://127.0.0.1:${WPORT[a]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 1 && \$(curl -fsS http://127.0.0.1:${WPORT[b]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 1 ]]"
held=$(( $(metric a retry_jobs_held) + $(metric b retry_jobs_held) ))
check_eq "retry_jobs_held counts the jobs in the processing lists" "$processing" "$held"
ready_a=$(curl -sS -w '\n%{http_code}' "http://127.0.0.1:${WPORT[a]}/readyz")
check_eq "/readyz stays 200 while paused" 200 "$(tail -n1 <<<"$ready_a")"
check "/readyz says paused, by whom and why" grep -qF "queue paused by ops@test, since " <<<"$ready_a"
check "/readyz carries the reason" grep -qF "$REASON" <<<"$ready_a"
check_eq "/healthz unchanged" ok "$(curl -fsS "http://127.0.0.1:${WPORT[a]}/healthz")"
page=$(curl -fsS "http://127.0.0.1:${WPORT[b]}/")
check "the status page shows the banner" grep -q '<div id="paused"' <<<"$page"
check "... with who paused, escaped reason" bash -c 'grep -q "id=\"paused-by\">ops@test<" <<<"$1" && grep -qF "provider maintenance &lt;b&gt;&amp;&lt;/b&gt;" <<<"$1"' _ "$page"
stats=$("$RETRYQ_CLI" stats --json)
check "stats --json: pause {reason, by, since, paused_seconds}" python3 -c '
import json, sys; d = json.loads(sys.argv[1])["pause"]
assert d["reason"] == sys.argv[2] and d["by"] == "ops@test" and d["since"].endswith("Z") and d["paused_seconds"] >= 3, d' "$stats" "$REASON"
check "stats: the text says paused, by and reason" bash -c "'$RETRYQ_CLI' stats | grep -qE '^paused +yes, by ops@test, since .*: provider maintenance'"
for w in a b; do
  check "worker $w logged queue.paused with the reason" grep -qF "event=queue.paused reason=\"$REASON\" by=ops@test" "$t_tmp/$w.log"
done
again=$("$RETRYQ_CLI" pause --reason "other" --json)
check "a second pause keeps the first (applied false, first reason)" python3 -c '
import json, sys; d = json.loads(sys.argv[1]); assert d["applied"] is False and d["paused"] and d["reason"] == sys.argv[2], d' "$again" "$REASON"

# ---- resume
r_paused=$(requests)
out=$("$RETRYQ_CLI" resume)
TR=$(now)
called() { (($(requests) > r_paused)); }
check "router calls start again after the resume" wait_for 10 called
first=$(python3 -c "print(round($(now) - $TR, 2))")
echo "$out"
echo "first router call seen ${first} s after resume returned (polling included)"
check "... within about a second (${first} s, polling included)" python3 -c "import sys; sys.exit(0 if $first <= 1.5 else 1)"
check "resume says what it ended" grep -q "^resumed queue $Q (paused by ops@test, since " <<<"$out"
check_eq "{Q}:paused is gone" 0 "$(rcli EXISTS "{$Q}:paused")"
check "both workers show retry_queue_paused 0" wait_for 5 bash -c "[[ \$(curl -fsS http://127.0.0.1:${WPORT[a]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 0 && \$(curl -fsS http://127.0.0.1:${WPORT[b]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 0 ]]"
after=$(rate 3)
echo "drain rate after the resume: $after completions/s (before the pause: $before; load average $(cut -d' ' -f1-3 /proc/loadavg))"
check "the drain rate after the resume is at least 80 % of the rate before ($after vs $before)" \
  python3 -c "import sys; sys.exit(0 if $after >= 0.8 * $before else 1)"
all() { (($(completed) >= N)); }
check "every execution completes" wait_for 120 all
check_eq "exactly one outcome entry each" 0 "$(outcome_entries_not_one "$job")"
empty() { [[ $(depths) == "0 0 0" ]]; }
check "nothing left in the queue, the processing lists or the delayed set" wait_for 10 empty
check_eq "nothing dead" 0 "$(rcli LLEN "{$Q}:dead")"
check_eq "the router was called once per execution" "$N" "$(requests)"
check "/readyz no longer mentions the pause" bash -c "! curl -fsS http://127.0.0.1:${WPORT[a]}/readyz | grep -q paused"
check "worker a logged queue.resumed" grep -q "event=queue.resumed" "$t_tmp/a.log"
check "stats: not paused" bash -c "'$RETRYQ_CLI' stats | grep -qE '^paused +no\$'"

# ---- jobs taken but not yet calling the router are held, and a restart while paused
# The executions table is locked (ACCESS EXCLUSIVE, in a transaction kept open) so the
# jobs the workers take wait in their load; the queue is paused; the lock is released:
# the loads answer and the jobs stop before the router, in the processing lists.
M=12
job2=$(insert_job '{"id":"pause-held","questions":["math_basic"]}')
seed_key "$job2" "$M" eu-west
sql -c "SELECT json_build_object('execution_id', id, 'region', region, 'question_index', 0, 'retry_attempt', 1)::text
        FROM executions WHERE job_id = $job2 ORDER BY id" >"$t_tmp/jobs2"
mkfifo "$t_tmp/lock.fifo"
psql "$DB" -X -q -v ON_ERROR_STOP=1 <"$t_tmp/lock.fifo" >"$t_tmp/lock.log" 2>&1 &
lock_pid=$!
t_pids+=("$lock_pid")
exec 7>"$t_tmp/lock.fifo"
echo "BEGIN; LOCK TABLE executions IN ACCESS EXCLUSIVE MODE; SELECT 'locked';" >&7
locked() { grep -q locked "$t_tmp/lock.log"; }
check "the executions table is locked" wait_for 10 locked
while read -r j; do printf "LPUSH %s '%s'\n" "$Q" "$j"; done <"$t_tmp/jobs2" | rcli >/dev/null
r_locked=$(requests)
taken() { [[ $(rcli LLEN "$Q") == 0 && $(depths) == "0 $M 0" ]]; }
check "held jobs: $M job(s) taken into the processing lists" wait_for 20 taken
"$RETRYQ_CLI" pause --reason "held jobs" >/dev/null
check "both workers know the queue is paused" wait_for 5 bash -c \
  "[[ \$(curl -fsS http://127.0.0.1:${WPORT[a]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 1 && \$(curl -fsS http://127.0.0.1:${WPORT[b]}/metrics | python3 '$here/prom_text.py' value retry_queue_paused queue='$Q') == 1 ]]"
echo "COMMIT;" >&7
exec 7>&-
held_all() { (($(metric a retry_jobs_held) + $(metric b retry_jobs_held) == M)); }
check "after the loads answer, all $M jobs are held" wait_for 30 held_all
sleep 2
check_eq "no router call for the held jobs" "$r_locked" "$(requests)"
check_eq "they stay in the processing lists" "0 $M 0" "$(depths)"
check_eq "none completed" 0 "$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job2 AND status <> 'retrying'")"
held_b=$(metric b retry_jobs_held)
echo "held: a $(metric a retry_jobs_held), b $held_b"
stop_worker b
check "the stopped worker handed its held jobs back to the queue" grep -q "the queue is paused and this worker stops" "$t_tmp/b.log"
check_eq "... to the pending list" "$held_b $((M - held_b)) 0" "$(depths)"
start_worker b
check "the restarted worker is ready" wait_for 30 worker_ready b
check "the restarted worker knows the queue is paused" wait_for 5 metric_is b 1 retry_queue_paused queue="$Q"
r3=$(requests); d3=$(depths)
sleep 2
echo "restarted worker: taken $(metric b retry_taken_total); depths $d3 -> $(depths)"
check_eq "the restarted worker took nothing" 0 "$(metric b retry_taken_total)"
check_eq "it holds nothing in Redis" 0 "$(held_by "$Q" "b-$$")"
check_eq "no router call meanwhile" "$r3" "$(requests)"
check_eq "depths unchanged meanwhile" "$d3" "$(depths)"
# What goes on while paused: a delayed job that falls due is promoted to the queue, and
# every worker's heartbeat stays fresh (the queue has been paused for several seconds).
job4=$(insert_job '{"id":"pause-promote","questions":["math_basic"]}')
seed_key "$job4" 1 us-east
payload=$(sql -c "SELECT json_build_object('execution_id', id, 'region', region, 'question_index', 0, 'retry_attempt', 1)::text FROM executions WHERE job_id = $job4")
rcli EVAL "local t = redis.call('TIME'); return redis.call('ZADD', KEYS[1], t[1] * 1000, ARGV[1])" 1 "{$Q}:delayed" "$payload" >/dev/null
promoted() { [[ $(rcli ZCARD "{$Q}:delayed") == 0 && $(rcli LPOS "$Q" "$payload") != "" ]]; }
check "while paused, a due delayed job is promoted to the queue" wait_for 5 promoted
fresh() {
  "$RETRYQ_CLI" stats --json | python3 -c '
import json, sys; w = json.load(sys.stdin)["workers"]
sys.exit(0 if len(w) == 2 and all(x["heartbeat_age_seconds"] < 7 for x in w) else 1)'
}
paused_for=$("$RETRYQ_CLI" stats --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["pause"]["paused_seconds"])')
check "while paused (for ${paused_for} s), both workers' heartbeats stay fresh (< 7 s, every 5 s)" fresh
"$RETRYQ_CLI" resume >/dev/null
check "after the resume the held and pending jobs complete" wait_for 60 all_done "$job2" "$M"
check "... and the promoted one" wait_for 30 all_done "$job4" 1
check_eq "exactly one outcome entry each" 0 "$(outcome_entries_not_one "$job2")"
check "worker a released its held jobs at once" grep -q "event=queue.released" "$t_tmp/a.log"
check "nothing left in Redis" wait_for 10 empty
check_eq "{Q}:paused is gone" 0 "$(rcli EXISTS "{$Q}:paused")"
check_eq "the router was called once per execution" $((N + M + 1)) "$(requests)"
stop_worker a
stop_worker b

# ---- a {Q}:paused of the wrong type (written by hand): read as a pause whose reason
# says so, so a worker that starts takes nothing; `retryq resume` deletes it.
job3=$(insert_job '{"id":"pause-unreadable","questions":["math_basic"]}')
seed_key "$job3" 3 asia-pacific
rcli SET "{$Q}:paused" "not a hash" >/dev/null
push_key "$job3" asia-pacific
start_worker c
unreadable() { curl -fsS "http://127.0.0.1:${WPORT[c]}/readyz" 2>/dev/null | grep -q "^queue paused by unknown, since unknown: unreadable pause: {$Q}:paused is not a hash"; }
check "a {Q}:paused that is not a hash: the worker starts, ready and paused, saying why" wait_for 30 unreadable
check_eq "... and takes nothing" "3 0 0" "$(depths)"
check "retryq stats shows it as a pause" bash -c "'$RETRYQ_CLI' stats | grep -q '^paused *yes, by unknown, since unknown (unknown): unreadable pause'"
"$RETRYQ_CLI" resume >/dev/null
check_eq "retryq resume deleted it" 0 "$(rcli EXISTS "{$Q}:paused")"
check "... and the worker runs the jobs" wait_for 30 all_done "$job3" 3
stop_worker c
check_no_sanitizer_reports
t_finish
