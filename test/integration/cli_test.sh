#!/usr/bin/env bash
# The `retryq` command as a user runs it, against a real Redis (no PostgreSQL): --help
# and --version, every command's --help, usage errors (exit 2), enqueue then stats,
# the dead list (list, show, requeue, purge) on entries written by redis-cli, the
# refreshing `stats --watch` (count, JSON lines, SIGINT), and exit 3 when Redis is away.
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

# ---- Redis unavailable: exit 3
for args in "stats" "stats --json" "stats --watch --count 2 --interval 0.2" "dead list" "dead show 0" \
  "dead requeue 0" "dead requeue --all" "dead purge --yes" \
  "enqueue --execution-id 1 --region us-east --question-index 0 --attempt 1"; do
  # shellcheck disable=SC2086 # split on purpose
  run --redis-url "$DOWN" --queue "$Q" $args
  check_eq "Redis unavailable, exit 3: $args" 3 "$rc"
  check "Redis unavailable, one line: $args" has "$err" "cannot connect to Redis at 127.0.0.1:1"
done

rcli DEL "cli_stats_$$" "cli_dead_$$" "{cli_dead_$$}:dead" >/dev/null
t_finish
