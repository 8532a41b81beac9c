#!/usr/bin/env bash
# The `retryq` command as a user runs it, against a real Redis (no PostgreSQL): --help
# and --version, every command's --help, usage errors (exit 2), enqueue then stats,
# the dead list (list, show, requeue, purge) on entries written by redis-cli, the
# refreshing `stats --watch` (count, JSON lines, SIGINT), flow control (pause, resume,
# list and the stats section, over breakers and permits written by redis-cli), and exit
# 3 when Redis is away.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_CLI RETRYQ_TEST_REDIS_URL

export RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL
unset RETRYQ_QUEUE RETRYQ_DATABASE_URL
DOWN=redis://127.0.0.1:1 # nothing listens on port 1

run() { # <args...>: runs the CLI; sets out, err and rc
  rc=0
  "$RETRYQ_CLI" "$@" >"$t_tmp/out" 2>"$t_tmp/err" || rc=$?
  out=$(cat "$t_tmp/out")
  err=$(cat "$t_tmp/err")
}
json() { # <python expression on d> < JSON
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
has() { grep -qF -- "$2" <<<"$1"; } # <text> <fixed string>

# ---- help, version, usage errors
run --help
check_eq "--help: exit 0" 0 "$rc"
check "--help: lists the exit codes" has "$out" "Exit codes:"
run --version
check_eq "--version: exit 0" 0 "$rc"
check "--version: prints 'retryq X.Y.Z'" grep -qE '^retryq [0-9]+\.[0-9]+\.[0-9]+$' <<<"$out"

commands=$("$RETRYQ_CLI" --help | awk '/^Commands:/ {on = 1; next} on && NF == 0 {exit} on {print $1}')
check "--help: lists dead and stats" test "$(grep -cxE 'dead|stats' <<<"$commands")" -eq 2
for cmd in $commands; do
  run "$cmd" --help
  check_eq "$cmd --help: exit 0" 0 "$rc"
  check "$cmd --help: usage on stdout" has "$out" "Usage: retryq $cmd"
done
for action in list show requeue purge; do
  run dead "$action" --help
  check_eq "dead $action --help: exit 0" 0 "$rc"
  check "dead $action --help: usage on stdout" has "$out" "Usage: retryq dead $action"
done
check "stats --help documents --watch" has "$("$RETRYQ_CLI" stats --help)" "--watch"

usage_error() { # <description> <args...>
  local what=$1; shift
  run "$@"
  check_eq "usage error, exit 2: $what" 2 "$rc"
  check "usage error, one line on stderr: $what" test "$(wc -l <<<"$err")" -eq 1
}
usage_error "no command"
usage_error "unknown command" frobnicate
usage_error "unknown option" stats --frobnicate
usage_error "option without its value" enqueue --execution-id
usage_error "missing job option" enqueue --execution-id 1
usage_error "dead without action" dead
usage_error "dead unknown action" dead frobnicate
usage_error "dead show without INDEX" dead show
usage_error "dead show bad INDEX" dead show -3
usage_error "dead requeue without INDEX" dead requeue
usage_error "dead requeue INDEX and --all" dead requeue 1 --all
usage_error "dead list bad --limit" dead list --limit x
usage_error "stats --interval without --watch" stats --interval 1
usage_error "stats --watch --interval too small" stats --watch --interval 0.001
usage_error "stats --watch --count 0" stats --watch --count 0

# ---- enqueue, then stats
Q="cli_stats_$$"
run --queue "$Q" enqueue --execution-id 7 --region us-east --question-index 0 --attempt 1
check_eq "enqueue: exit 0" 0 "$rc"
check_eq "enqueue: one job in the queue" 1 "$(rcli LLEN "$Q")"
run stats --json --queue "$Q"
check_eq "stats --json: exit 0" 0 "$rc"
check_eq "stats --json: pending 1" 1 "$(json 'd["pending"]' <<<"$out")"
check_eq "stats --json: nothing dead" 0 "$(json 'd["dead"]' <<<"$out")"
check "stats --json: oldest age known (enqueued_at)" test "$(json 'd["oldest_pending_age_seconds"] is not None' <<<"$out")" = True
run --queue "$Q" stats
check "stats: table shows pending 1" grep -qE '^pending +1$' <<<"$out"

# ---- enqueue --from: bulk, in order, invalid lines reported and not pushed
QF="cli_from_$$"
{
  echo '# runner jobs'
  for i in $(seq 1 2500); do
    printf '{"execution_id":%d,"region":"us-east","question_index":0,"retry_attempt":1}\n' "$i"
    [[ $i == 1200 ]] && echo '{"execution_id":-4,"region":"us-east","question_index":0,"retry_attempt":1}'
    [[ $i == 2000 ]] && echo ''
  done
} >"$t_tmp/jobs.jsonl"
run --queue "$QF" enqueue --from "$t_tmp/jobs.jsonl" --json
check_eq "enqueue --from: exit 1 (one invalid line)" 1 "$rc"
check_eq "enqueue --from --json: counts" "2501 2500 1 0" \
  "$(json '"%d %d %d %d" % (d["read"], d["queued"], d["invalid"], d["failed"])' <<<"$out")"
check "enqueue --from: the invalid line by number and reason" has "$err" "line 1202: execution_id"
check_eq "enqueue --from: 2500 jobs queued" 2500 "$(rcli LLEN "$QF")"
check_eq "enqueue --from: first line taken first, with an id added" "1:1" \
  "$(rcli RPOP "$QF" | json 'd["id"]')"
check_eq "enqueue --from: last line taken last" 2500 "$(rcli LINDEX "$QF" 0 | json 'd["execution_id"]')"
rcli DEL "$QF" >/dev/null
run --queue "$QF" enqueue --from - <<<'{"execution_id":5,"region":"eu-west","question_index":2,"retry_attempt":3}'
check_eq "enqueue --from -: exit 0" 0 "$rc"
check "enqueue --from -: plain summary" has "$out" "queued 1 of 1 job(s) from -"
rcli DEL "$QF" >/dev/null
run --redis-url "$DOWN" --queue "$QF" enqueue --from "$t_tmp/jobs.jsonl"
check_eq "enqueue --from, Redis away: exit 3" 3 "$rc"
check "enqueue --from, Redis away: says what was not queued" has "$err" "2500 job(s) not queued, the first on line 2:"
usage_error "enqueue --from with --raw" enqueue --from - --raw '{}'
usage_error "enqueue --json without --from" enqueue --json --raw '{}'

# ---- stats --watch
run --queue "$Q" stats --watch --count 2 --interval 0.2
check_eq "stats --watch --count 2: exit 0" 0 "$rc"
check_eq "stats --watch --count 2: two refreshes" 2 "$(grep -cE '^pending +1 ' <<<"$out")"
check_eq "stats --watch (not a TTY): one separator, no escape codes" "1 0" \
  "$(grep -c '^-----' <<<"$out") $(grep -c $'\e' <<<"$out" || true)"
check "stats --watch: a change per second on the second refresh" grep -qE '^pending +1 +[+-]0\.0$' <<<"$out"

run --queue "$Q" stats --watch --json --count 2 --interval 0.2
check_eq "stats --watch --json: exit 0" 0 "$rc"
check_eq "stats --watch --json: two lines" 2 "$(wc -l <<<"$out")"
check_eq "stats --watch --json: first has no rates" None "$(head -1 <<<"$out" | json 'd["rates"]')"
check_eq "stats --watch --json: second has rates and pending" "0 1" \
  "$(tail -1 <<<"$out" | json '"%g %d" % (d["rates"]["pending"], d["pending"])')"

( set -m # a background job of a shell without job control would ignore SIGINT
  "$RETRYQ_CLI" --queue "$Q" stats --watch --json --interval 30 >"$t_tmp/watch.out" 2>&1 &
  pid=$!
  wait_for 10 test -s "$t_tmp/watch.out" || true
  start=$SECONDS
  kill -INT "$pid"
  rc=0; wait "$pid" || rc=$?
  echo "$rc $((SECONDS - start))" >"$t_tmp/watch.rc" )
read -r sig_rc sig_secs <"$t_tmp/watch.rc"
check_eq "stats --watch: SIGINT stops it with exit 0" 0 "$sig_rc"
check "stats --watch: SIGINT stops it at once (not after the 30 s interval)" test "$sig_secs" -le 3
check_eq "stats --watch: one refresh before SIGINT" 1 "$(wc -l <"$t_tmp/watch.out")"

# A rate that moves: 5 jobs pushed between two refreshes 1 s apart is about +5/s.
"$RETRYQ_CLI" --queue "$Q" stats --watch --json --count 2 --interval 1 >"$t_tmp/rate.out" &
pid=$!
t_pids+=("$pid")
wait_for 10 test -s "$t_tmp/rate.out" || true
for ((i = 0; i < 5; i++)); do rcli LPUSH "$Q" "x$i" >/dev/null; done
rc=0; wait "$pid" || rc=$?
check_eq "stats --watch: exit 0 while the queue grows" 0 "$rc"
check "stats --watch: pending rate is the growth per second" python3 -c '
import json, sys
a, b = (json.loads(l) for l in open(sys.argv[1]))
ok = b["pending"] - a["pending"] == 5 and 4.0 <= b["rates"]["pending"] <= 5.5 and b["rates"]["dead"] == 0
sys.exit(0 if ok else 1)' "$t_tmp/rate.out"

# ---- the dead list, written as the worker writes it
Q="cli_dead_$$"
DEAD="{$Q}:dead"
job='{"execution_id":41,"region":"us-east","question_index":0,"retry_attempt":1,"delivery":5}'
entry() { python3 -c 'import json, sys; print(json.dumps({"job": sys.argv[1], "reason": sys.argv[2],
  "at": "2026-11-29T01:00:00Z", "worker": "host:1:abc"}, separators=(",", ":")))' "$@"; }
e_valid=$(entry "$job" "too many deliveries")
e_bad=$(entry "not json" "payload: not valid JSON")
rcli LPUSH "$DEAD" "$e_valid" "$e_bad" "garbage" >/dev/null # index 0 garbage, 1 bad, 2 valid
rcli LPUSH "$Q" "waiting" >/dev/null

run --queue "$Q" dead list
check_eq "dead list: exit 0" 0 "$rc"
check_eq "dead list: a header and three rows" 4 "$(wc -l <<<"$out")"
check "dead list: index 2 shows reason, execution/attempt and worker" \
  grep -qE '^ +2 +2026-11-29T01:00:00Z +too many deliveries +41/1 +host:1:abc$' <<<"$out"
check "dead list: index 1 shows its reason, no execution" grep -qE '^ +1 .*payload: not valid JSON +- +host' <<<"$out"
check "dead list: index 0 is shown raw" grep -qE '^ +0 .*\(not a dead-list entry\) garbage' <<<"$out"
run --queue "$Q" dead list --limit 1
check "dead list --limit 1: one row and a hint" test "$(grep -c '^ *[0-9]' <<<"$out")" -eq 1 -a \
  "$(grep -c 'more entries follow' <<<"$out")" -eq 1
run --queue "$Q" dead list --json
check_eq "dead list --json: exit 0" 0 "$rc"
check_eq "dead list --json: fields" "3 41 1 5 True garbage None False" \
  "$(json '" ".join(map(str, [len(d), d[2]["execution_id"], d[2]["retry_attempt"], d[2]["delivery"],
         d[2]["valid"], d[0]["raw"], d[0]["job"], d[1]["valid"]]))' <<<"$out")"

run --queue "$Q" dead show 2
check_eq "dead show: exit 0" 0 "$rc"
check_eq "dead show: the entry as JSON" "too many deliveries|$job" \
  "$(json 'd["reason"] + "|" + d["job"]' <<<"$out")"
check "dead show: indented" test "$(wc -l <<<"$out")" -gt 1
run --queue "$Q" dead show 0
check_eq "dead show: a non-JSON entry as stored" "0 garbage" "$rc $out"
run --queue "$Q" dead show 3
check_eq "dead show: no such entry, exit 1" 1 "$rc"

run --queue "$Q" dead requeue 1
check_eq "dead requeue: invalid job refused, exit 1" 1 "$rc"
check "dead requeue: says why" has "$err" "entry 1 holds an invalid job: payload: not valid JSON"
run --queue "$Q" dead requeue 0
check_eq "dead requeue: malformed entry refused, exit 1" 1 "$rc"
run --queue "$Q" dead requeue 7
check_eq "dead requeue: no such entry, exit 1" 1 "$rc"
check_eq "dead requeue: refusals change nothing" "3 1" "$(rcli LLEN "$DEAD") $(rcli LLEN "$Q")"

run --queue "$Q" dead requeue 2
check_eq "dead requeue 2: exit 0" 0 "$rc"
check_eq "dead requeue 2: the entry left the dead list" "2 garbage" "$(rcli LLEN "$DEAD") $(rcli LINDEX "$DEAD" 0)"
check_eq "dead requeue 2: job at the head of the queue, delivery reset" \
  '{"execution_id":41,"region":"us-east","question_index":0,"retry_attempt":1}' "$(rcli LINDEX "$Q" -1)"
check_eq "dead requeue 2: the waiting job is behind it" "waiting" "$(rcli LINDEX "$Q" 0)"

rcli LPUSH "$DEAD" "$e_valid" >/dev/null
run --queue "$Q" dead requeue --all
check_eq "dead requeue --all: exit 0" 0 "$rc"
check "dead requeue --all: counts the moved" has "$out" "requeued 1 entry"
check "dead requeue --all: counts the skipped" has "$err" "skipped 2 entries"
check_eq "dead requeue --all: invalid entries stay" 2 "$(rcli LLEN "$DEAD")"
check_eq "dead requeue --all: queue holds waiting + 2 requeued" 3 "$(rcli LLEN "$Q")"

run --queue "$Q" dead purge
check_eq "dead purge without --yes: exit 2" 2 "$rc"
check_eq "dead purge without --yes: nothing deleted" 2 "$(rcli LLEN "$DEAD")"
run --queue "$Q" dead purge --yes
check_eq "dead purge --yes: exit 0" 0 "$rc"
check "dead purge --yes: counts" has "$out" "purged 2 entries"
check_eq "dead purge --yes: key gone" 0 "$(rcli EXISTS "$DEAD")"
run --queue "$Q" dead list --json
check_eq "dead list --json of an empty list" "0 []" "$rc $out"

# ---- flow control: pause, resume, list, and the section of stats
QL="cli_flow_$$"
for action in list pause resume; do
  run flow "$action" --help
  check_eq "flow $action --help: exit 0" 0 "$rc"
  check "flow $action --help: usage on stdout" has "$out" "Usage: retryq flow $action"
done
usage_error "flow unknown action" flow frobnicate
usage_error "flow pause without KEY" flow pause
usage_error "flow pause two keys" flow pause a/b c/d
usage_error "flow pause bad --for" flow pause a/b --for 5x
usage_error "flow pause --for 0" flow pause a/b --for 0
usage_error "flow pause --for above 30 days" flow pause a/b --for 31d
usage_error "flow resume without KEY" flow resume
usage_error "flow --json with pause" flow --json pause a/b
usage_error "flow list with an operand" flow list x

run --queue "$QL" flow
check_eq "flow (nothing known): exit 0" 0 "$rc"
check "flow (nothing known): says so" has "$out" "no flow keys"
run --queue "$QL" flow --json
check_eq "flow --json (nothing known): an empty array" "0 []" "$rc $out"
run --queue "$QL" stats
check "stats: a flow line when nothing is stopped" has "$out" "flow: no key paused, no breaker open"

PK="{$QL}:flow:pause:llama3.2-1b/us-east"
run --queue "$QL" flow pause llama3.2-1b/us-east --for 10m --reason "provider maintenance"
check_eq "flow pause: exit 0" 0 "$rc"
check "flow pause: says paused, by whom and for how long" has "$out" \
  "paused llama3.2-1b/us-east: cause operator, by operator, 10m00s left, until "
check_eq "flow pause: the document" "operator|provider maintenance|operator" \
  "$(rcli GET "$PK" | json '"|".join([d["cause"], d["reason"], d["by"]])')"
check "flow pause: expires in 10 minutes" test "$(rcli PTTL "$PK")" -gt 590000
check_eq "flow pause: indexed at its end" "$(rcli GET "$PK" | json 'd["until_ms"]')" \
  "$(rcli ZSCORE "{$QL}:flow:paused" llama3.2-1b/us-east)"
run --queue "$QL" flow pause llama3.2-1b/us-east --for 1m --reason shorter
check_eq "flow pause, shorter: exit 0" 0 "$rc"
check "flow pause, shorter: says the longer pause stays" has "$out" \
  "llama3.2-1b/us-east stays paused: a pause that ends later is in place (cause operator"
check_eq "flow pause, shorter: the document is kept" "provider maintenance" "$(rcli GET "$PK" | json 'd["reason"]')"
run --queue "$QL" flow pause meta/llama-3/eu-west
check "flow pause without --for: until resumed" has "$out" "paused meta/llama-3/eu-west until resumed"
check "flow pause without --for: 30 days" test "$(rcli PTTL "{$QL}:flow:pause:meta/llama-3/eu-west")" -gt 2591000000
run --queue "$QL" flow pause gpt-4
check_eq "flow pause, not MODEL/REGION: exit 1" 1 "$rc"
check "flow pause, not MODEL/REGION: says what a key is" has "$err" "flow key 'gpt-4': expected MODEL/REGION"
run --queue "$QL" flow pause '*/eu-west'
check_eq "flow pause, wildcard: exit 1" 1 "$rc"
check "flow pause, wildcard: says why" has "$err" "wildcard"
run --queue "$QL" flow pause a/b --reason $'two\nlines'
check_eq "flow pause, control character in the reason: exit 1" 1 "$rc"
check_eq "flow pause: refusals write nothing" 0 "$(rcli EXISTS "{$QL}:flow:pause:a/b")"

# A breaker and permits as the workers write them.
now=$(($(rcli TIME | head -1) * 1000))
rcli HSET "{$QL}:flow:breakers" gpt-4o/eu-west \
  "{\"state\":\"open\",\"until_ms\":$((now + 60000)),\"worker\":\"h:1:w\",\"failures\":12,\"calls\":20}" >/dev/null
rcli ZADD "{$QL}:flow:keys" "$now" llama3.2-1b/us-east >/dev/null
rcli ZADD "{$QL}:flow:permits:llama3.2-1b/us-east" $((now + 60000)) h:1:w:1 $((now + 60000)) h:1:w:2 \
  $((now - 1)) h:2:w:1 >/dev/null

run --queue "$QL" flow list
check_eq "flow list: exit 0" 0 "$rc"
check_eq "flow list: a header and three rows" 4 "$(wc -l <<<"$out")"
check "flow list: the header" grep -qE '^KEY +STATE +CAUSE +REASON +LEFT +PERMITS$' <<<"$out"
check "flow list: the paused key, its cause, reason, time left and live permits" \
  grep -qE '^llama3\.2-1b/us-east +paused +operator +provider maintenance +(9m5[0-9]s|10m00s) +2$' <<<"$out"
check "flow list: the open breaker" \
  grep -qE '^gpt-4o/eu-west +open +- +12 of 20 calls failed \(worker h:1:w\) +[0-9.]+s +-$' <<<"$out"
check "flow list: the pause until resumed" grep -qE '^meta/llama-3/eu-west +paused +operator +- +(29d23h|30d00h) +-$' <<<"$out"
run --queue "$QL" flow list --json
check_eq "flow list --json: exit 0" 0 "$rc"
check "flow list --json: one object per key with its pause, breaker and permits" python3 -c '
import json, sys
rows = json.loads(sys.argv[1])
assert [r["key"] for r in rows] == ["gpt-4o/eu-west", "llama3.2-1b/us-east", "meta/llama-3/eu-west"], rows
b, p, m = rows
assert set(b) == {"key", "state", "pause", "breaker", "permits_in_use"}, b
assert b["state"] == "open" and b["pause"] is None and b["permits_in_use"] is None, b
assert b["breaker"] == {"state": "open", "until_ms": b["breaker"]["until_ms"], "worker": "h:1:w", "failures": 12,
                        "calls": 20, "left_seconds": b["breaker"]["left_seconds"]}, b
assert 50 < b["breaker"]["left_seconds"] <= 60, b
assert p["state"] == "paused" and p["breaker"] is None and p["permits_in_use"] == 2, p
assert set(p["pause"]) == {"cause", "reason", "by", "until_ms", "left_seconds"}, p
assert (p["pause"]["cause"], p["pause"]["reason"], p["pause"]["by"]) == ("operator", "provider maintenance", "operator")
assert 590 < p["pause"]["left_seconds"] <= 600, p
assert m["state"] == "paused" and m["pause"]["left_seconds"] > 2591000, m
' "$out"

run --queue "$QL" stats
check_eq "stats with flow keys: exit 0" 0 "$rc"
check "stats: the flow section's header" grep -qE '^FLOW KEY +STATE +CAUSE +LEFT +REASON$' <<<"$out"
check "stats: the paused key with its reason and time left" \
  grep -qE '^llama3\.2-1b/us-east +paused +operator +(9m5[0-9]s|10m00s) +provider maintenance$' <<<"$out"
check "stats: the open breaker" grep -qE '^gpt-4o/eu-west +open +- +[0-9.]+s +12 of 20 calls failed' <<<"$out"
run --queue "$QL" stats --json
check_eq "stats --json with flow keys: exit 0" 0 "$rc"
check "stats --json: a flow object with the paused keys and open breakers" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
f = d["flow"]
assert set(f) == {"paused", "breakers"}, f
assert [p["key"] for p in f["paused"]] == ["llama3.2-1b/us-east", "meta/llama-3/eu-west"], f
p = f["paused"][0]
assert set(p) == {"key", "cause", "reason", "by", "until_ms", "left_seconds"}, p
assert p["reason"] == "provider maintenance" and 590 < p["left_seconds"] <= 600, p
assert [(b["key"], b["state"], b["failures"], b["calls"]) for b in f["breakers"]] == [("gpt-4o/eu-west", "open", 12, 20)], f
' "$out"
run --queue "$QL" stats --watch --json --count 1
check_eq "stats --watch --json: the flow object too" "2 1" \
  "$(json '"%d %d" % (len(d["flow"]["paused"]), len(d["flow"]["breakers"]))' <<<"$out")"

run --queue "$QL" flow resume llama3.2-1b/us-east
check_eq "flow resume: exit 0" 0 "$rc"
check "flow resume: says what the pause was" has "$out" \
  "resumed llama3.2-1b/us-east (its pause had cause operator, by operator, "
check_eq "flow resume: the pause and its member are gone" "0 " \
  "$(rcli EXISTS "$PK") $(rcli ZSCORE "{$QL}:flow:paused" llama3.2-1b/us-east)"
run --queue "$QL" flow resume llama3.2-1b/us-east
check_eq "flow resume, not paused: exit 0" 0 "$rc"
check "flow resume, not paused: says so" has "$out" "llama3.2-1b/us-east was not paused: nothing to resume"
run --queue "$QL" flow resume 'no-slash'
check_eq "flow resume, invalid key: exit 1" 1 "$rc"
rcli DEL "{$QL}:flow:pause:meta/llama-3/eu-west" "{$QL}:flow:paused" "{$QL}:flow:breakers" "{$QL}:flow:keys" \
  "{$QL}:flow:permits:llama3.2-1b/us-east" >/dev/null

# ---- Redis unavailable: exit 3
for args in "stats" "stats --json" "stats --watch --count 2 --interval 0.2" "dead list" "dead show 0" \
  "dead requeue 0" "dead requeue --all" "dead purge --yes" "flow" "flow list --json" "flow pause m/r" \
  "flow resume m/r" \
  "enqueue --execution-id 1 --region us-east --question-index 0 --attempt 1"; do
  # shellcheck disable=SC2086 # split on purpose
  run --redis-url "$DOWN" --queue "$Q" $args
  check_eq "Redis unavailable, exit 3: $args" 3 "$rc"
  check "Redis unavailable, one line: $args" has "$err" "cannot connect to Redis at 127.0.0.1:1"
done

rcli DEL "cli_stats_$$" "cli_dead_$$" "{cli_dead_$$}:dead" >/dev/null
t_finish
