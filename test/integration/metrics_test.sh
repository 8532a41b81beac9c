#!/usr/bin/env bash
# The worker's HTTP endpoint for machines: /metrics read by a strict parser of the
# Prometheus text format (test/integration/prom_text.py) before and after a run of jobs
# with every kind of outcome, so each counter, reason, histogram bucket and router code is
# checked against what happened; the queue depths and the age of the oldest waiting job;
# /readyz turning 503 while draining and while Redis is down, and back when it returns;
# and the HTTP rules (GET/HEAD only, 404, header size and idle time limits).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

prom() { python3 "$here/prom_text.py" "$@"; }
scrape() { curl -fsS --max-time 5 "http://127.0.0.1:$PORT/metrics" 2>/dev/null; }
# val NAME [label=value ...]: the sample's value from a fresh scrape ("" when absent)
val() { scrape | prom value "$@" || true; }
http_code() { curl -s -o "$t_tmp/body" -w '%{http_code}' --max-time 5 "$@" || true; }

check "the exposition reader refuses broken bodies" prom selftest

new_database
Q="metrics_$$"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL RETRYQ_QUEUE=$Q
start_router --latency-ms 5

bank="$t_tmp/bank.json"
cat >"$bank" <<'JSON'
{"ok_q": "What is 2+2?",
 "refused_q": "[mock:router_error] Who are you?",
 "hang_q": "[mock:hang] Who are you?",
 "down_q": "[mock:http_502] What is the capital of France?"}
JSON
job=$(insert_job '{"id":"metrics","questions":["ok_q","refused_q","hang_q","down_q","math_basic"]}')
declare -A ex
for q in ok_q refused_q hang_q down_q; do ex[$q]=$(insert_execution "$job" us-east failed "$q"); done
ex[by_index]=$(insert_execution "$job" eu-west failed "")
ex[bad_index]=$(insert_execution "$job" eu-west failed "")
ex[mismatch]=$(insert_execution "$job" us-east failed ok_q)
ex[stale]=$(insert_execution "$job" us-east failed ok_q)

# ---- 1. before any job: a valid body, every counter at zero, the worker's id escaped.
PORT=$(free_port)
WID='ops"metrics\test'
"$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --question-bank "$bank" --timeout-ms 1500 \
  --backoff 200ms,400ms --http-addr "127.0.0.1:$PORT" --worker-id "$WID" >"$t_tmp/worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
ready() { [[ $(http_code "http://127.0.0.1:$PORT/readyz") == 200 ]]; }
check "/readyz turns 200 once connected" wait_for 30 ready
scrape >"$t_tmp/m0"
check "/metrics before any job passes the strict reader" prom check <"$t_tmp/m0"
check_eq "retry_attempts_total starts at 0" 0 "$(prom value retry_attempts_total <"$t_tmp/m0")"
check_eq "retry_success_total starts at 0" 0 "$(prom value retry_success_total <"$t_tmp/m0")"
check_eq "retry_duration_seconds_count starts at 0" 0 "$(prom value retry_duration_seconds_count <"$t_tmp/m0")"
check_eq "the worker id label survives escaping" "$WID" \
  "$(prom labels retry_worker_info <"$t_tmp/m0" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["worker"])')"
check "the histogram has the planned buckets" grep -q '^retry_duration_seconds_bucket{le="45"} 0$' "$t_tmp/m0"
check "HELP and TYPE of the four planned names" bash -c "grep -c -E '^# (HELP|TYPE) retry_(attempts_total|success_total|failure_total|duration_seconds) ' '$t_tmp/m0' | grep -qx 8"
check "/healthz answers ok" bash -c "[[ \$(curl -fsS 'http://127.0.0.1:$PORT/healthz') == ok ]]"

# ---- 2. a run with every kind of outcome.
for q in ok_q refused_q hang_q down_q; do
  idx=$(python3 -c 'import sys; print(["ok_q","refused_q","hang_q","down_q"].index(sys.argv[1]))' "$q")
  "$RETRYQ_CLI" retry --execution-id "${ex[$q]}" --region us-east --question-index "$idx" >/dev/null
done
"$RETRYQ_CLI" retry --execution-id "${ex[by_index]}" --region eu-west --question-index 4 >/dev/null
"$RETRYQ_CLI" retry --execution-id "${ex[bad_index]}" --region eu-west --question-index 42 >/dev/null
sql -c "UPDATE executions SET status = 'retrying', retry_count = 1 WHERE id = ${ex[mismatch]}"
"$RETRYQ_CLI" enqueue --execution-id "${ex[mismatch]}" --region eu-west --question-index 0 --attempt 1 >/dev/null
sql -c "UPDATE executions SET status = 'retrying', retry_count = 2 WHERE id = ${ex[stale]}"
"$RETRYQ_CLI" enqueue --execution-id "${ex[stale]}" --region us-east --question-index 0 --attempt 1 >/dev/null
"$RETRYQ_CLI" enqueue --execution-id 999999 --region us-east --question-index 0 --attempt 1 >/dev/null
rcli LPUSH "$Q" 'not json' '{"execution_id":-4,"region":"us-east","question_index":0,"retry_attempt":1}' >/dev/null

finished() {
  local body s f d
  body=$(scrape) || return 1
  s=$(prom value retry_success_total <<<"$body")
  f=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import prom_text as p
doc = p.parse(sys.stdin.read())
print(int(sum(v for n, l, v in doc["samples"] if n == "retry_failure_total")))' "$here" <<<"$body")
  d=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import prom_text as p
doc = p.parse(sys.stdin.read())
print(int(sum(v for n, l, v in doc["samples"] if n == "retry_dead_letter_total")))' "$here" <<<"$body")
  [[ $s == 2 && $f == 4 && $d == 5 ]]
}
check "every job reaches its outcome (2 succeeded, 4 not, 5 dead-lettered)" wait_for 60 finished
depths_settled() {
  local body
  body=$(scrape) || return 1
  [[ $(prom value retry_queue_depth state=dead <<<"$body") == 5 && $(prom value retry_queue_depth state=pending <<<"$body") == 0 &&
     $(prom value retry_queue_depth state=delayed <<<"$body") == 0 && $(prom value retry_queue_depth state=processing <<<"$body") == 0 ]]
}
check "queue depths refreshed from Redis: dead 5, nothing pending, delayed or processing" wait_for 15 depths_settled
scrape >"$t_tmp/m1"
check "/metrics after the run passes the strict reader" prom check <"$t_tmp/m1"
v() { prom value "$@" <"$t_tmp/m1"; }
check_eq "retry_success_total" 2 "$(v retry_success_total)"
check_eq "retry_failure_total{reason=failed} (router said no)" 1 "$(v retry_failure_total reason=failed)"
check_eq "retry_failure_total{reason=timeout}" 1 "$(v retry_failure_total reason=timeout)"
check_eq "retry_failure_total{reason=transient_exhausted} (502 on every try)" 1 "$(v retry_failure_total reason=transient_exhausted)"
check_eq "retry_failure_total{reason=bad_job} (question index out of range)" 1 "$(v retry_failure_total reason=bad_job)"
check_eq "retry_failure_total{reason=poison}" 0 "$(v retry_failure_total reason=poison)"
check_eq "retry_attempts_total: one per router call" 7 "$(v retry_attempts_total)"
check_eq "retry_router_requests_total{code=200}" 3 "$(v retry_router_requests_total code=200)"
check_eq "retry_router_requests_total{code=502}" 3 "$(v retry_router_requests_total code=502)"
check_eq "retry_router_requests_total{code=timeout}" 1 "$(v retry_router_requests_total code=timeout)"
check_eq "retry_router_requests_total{code=network}" 0 "$(v retry_router_requests_total code=network)"
check_eq "histogram: one observation per outcome with a router call" 5 "$(v retry_duration_seconds_count)"
check_eq "histogram: the four fast calls are under 1 s" 4 "$(v retry_duration_seconds_bucket le=1)"
check_eq "histogram: the 1.5 s timeout lands under 2.5 s" 5 "$(v retry_duration_seconds_bucket le=2.5)"
check "histogram: _sum holds the timeout's 1.5 s" python3 -c "import sys; assert 1.5 <= float(sys.argv[1]) < 5" "$(v retry_duration_seconds_sum)"
check_eq "retry_dead_letter_total{reason=invalid_payload}" 2 "$(v retry_dead_letter_total reason=invalid_payload)"
check_eq "retry_dead_letter_total{reason=region_mismatch}" 1 "$(v retry_dead_letter_total reason=region_mismatch)"
check_eq "retry_dead_letter_total{reason=not_found}" 1 "$(v retry_dead_letter_total reason=not_found)"
check_eq "retry_dead_letter_total{reason=invalid_question_index}" 1 "$(v retry_dead_letter_total reason=invalid_question_index)"
check_eq "retry_dead_letter_total{reason=other}" 0 "$(v retry_dead_letter_total reason=other)"
check_eq "retry_stale_total" 1 "$(v retry_stale_total)"
check_eq "retry_delayed_total: two backoffs for the 502s" 2 "$(v retry_delayed_total)"
check_eq "retry_inflight back to 0" 0 "$(v retry_inflight)"
check_eq "retry_queue_depth{state=delayed}" 0 "$(v retry_queue_depth state=delayed)"
check_eq "retry_queue_depth{state=processing}" 0 "$(v retry_queue_depth state=processing)"
check_eq "retry_queue_oldest_age_seconds of an empty queue" 0 "$(v retry_queue_oldest_age_seconds)"
check_eq "retry_queue_workers{state=live}" 1 "$(v retry_queue_workers state=live)"
check_eq "retry_redis_up" 1 "$(v retry_redis_up)"
check_eq "retry_database_up" 1 "$(v retry_database_up)"
check "the dead list in Redis agrees" test "$(rcli LLEN "{$Q}:dead")" -eq 5

# ---- 3. HTTP rules.
check_eq "HEAD /metrics: 200" 200 "$(http_code -I "http://127.0.0.1:$PORT/metrics")"
raw() { # <request text>: sends it as is, prints the whole answer
  python3 - "$PORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("latin-1"))
PY
}
head_answer=$(raw 'HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
check "HEAD: Content-Length of the GET body" grep -qiE '^Content-Length: [1-9][0-9]{3,}' <<<"$head_answer"
check_eq "HEAD: no body after the headers" "" "$(python3 -c 'import sys; print(sys.stdin.read().split("\r\n\r\n", 1)[1], end="")' <<<"$head_answer")"
for m in POST PUT DELETE OPTIONS PATCH; do
  check_eq "$m /metrics: 405" 405 "$(http_code -X "$m" "http://127.0.0.1:$PORT/metrics")"
done
check "405 names the allowed methods" bash -c "curl -si -X POST 'http://127.0.0.1:$PORT/readyz' | grep -qi '^Allow: GET, HEAD'"
check_eq "unknown path: 404" 404 "$(http_code "http://127.0.0.1:$PORT/nope")"
check_eq "a query string is ignored: 200" 200 "$(http_code "http://127.0.0.1:$PORT/metrics?x=1")"
big=$(python3 -c 'print("a" * 10000)')
code=$(http_code -H "X-Big: $big" "http://127.0.0.1:$PORT/metrics")
check "headers over 8 KiB are refused (got $code)" test "$code" != 200
idle_closed() { # a request that never ends is dropped after the 5 s limit
  python3 - "$PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
start = time.monotonic()
while s.recv(4096):
    pass
took = time.monotonic() - start
print(f"idle request dropped after {took:.1f} s")
sys.exit(0 if 3 <= took <= 12 else 1)
PY
}
check "an unfinished request is dropped after the time limit" idle_closed
check_eq "still serving after the refusals" 200 "$(http_code "http://127.0.0.1:$PORT/healthz")"

# ---- 4. the alert rules and the dashboard name only metrics the worker serves.
monitoring_check() {
  python3 - "$RETRYQ_SOURCE_DIR/docs/monitoring" "$t_tmp/m1" "$here" <<'PY'
import json, re, sys
mon, metrics_file, here = sys.argv[1:4]
sys.path.insert(0, here)
import prom_text
families = set(prom_text.parse(open(metrics_file).read())["type"])
def known(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return True
    return name in families
problems = []
exprs = []
text = open(f"{mon}/alerts.yml").read()
try:
    import yaml
except ImportError:
    yaml = None
    print("SKIP - python3-yaml not installed: alerts.yml read with a line scan only")
if yaml is not None:
    doc = yaml.safe_load(text)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    for r in rules:
        for key in ("alert", "expr"):
            if key not in r:
                problems.append(f"rule without {key}: {r}")
        if "severity" not in r.get("labels", {}) or "summary" not in r.get("annotations", {}):
            problems.append(f"rule {r.get('alert')} lacks a severity or a summary")
        exprs.append(r.get("expr", ""))
    names = {r["alert"] for r in rules}
    for want in ("RetryqQueueGrowing", "RetryqNoLiveWorker", "RetryqFailureRatioHigh",
                 "RetryqDeadLettersPresent", "RetryqOldestJobTooOld"):
        if want not in names:
            problems.append(f"alert {want} missing")
else:
    exprs.append(text)
dash = json.load(open(f"{mon}/grafana-dashboard.json"))
for p in dash["panels"]:
    for t in p.get("targets", []):
        exprs.append(t["expr"])
for v in dash["templating"]["list"]:
    exprs.append(v["definition"])
used = set()
for e in exprs:
    used.update(re.findall(r"\b(retry_[a-z_]+|process_start_time_seconds)\b", e))
for name in sorted(used):
    if not known(name):
        problems.append(f"{name} is used but /metrics does not serve it")
print(f"{len(exprs)} expressions, {len(used)} metric names")
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
PY
}
check "alerts.yml and grafana-dashboard.json use only served metrics" monitoring_check
if command -v promtool >/dev/null 2>&1; then
  check "promtool check rules docs/monitoring/alerts.yml" promtool check rules "$RETRYQ_SOURCE_DIR/docs/monitoring/alerts.yml"
  check "promtool check metrics" bash -c "promtool check metrics <'$t_tmp/m1'"
fi

kill -TERM "$wpid"
set +e; wait "$wpid"; rc=$?; set -e
check_eq "worker 1 stops with 0" 0 "$rc"

# ---- 5. waiting jobs: depth and age of the oldest; /readyz while draining.
Q2="metrics2_$$"
ex[hang2]=$(insert_execution "$job" us-east failed hang_q)
RETRYQ_QUEUE=$Q2 "$RETRYQ_CLI" retry --execution-id "${ex[hang2]}" --region us-east --question-index 2 >/dev/null
old_at=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) - d.timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%S.000Z"))')
rcli LPUSH "$Q2" "{\"execution_id\":999998,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1,\"enqueued_at\":\"$old_at\"}" >/dev/null
rcli LPUSH "$Q2" '{"execution_id":999997,"region":"us-east","question_index":0,"retry_attempt":1}' >/dev/null
PORT=$(free_port)
RETRYQ_QUEUE=$Q2 "$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --question-bank "$bank" --timeout-ms 30000 \
  --concurrency 1 --drain-timeout-ms 1500 --http-addr "127.0.0.1:$PORT" >"$t_tmp/worker2.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
waiting() { [[ $(val retry_queue_depth state=pending) == 2 && $(val retry_inflight) == 1 ]]; }
check "one job in flight, two waiting" wait_for 30 waiting
scrape >"$t_tmp/m2"
check "/metrics with jobs waiting passes the strict reader" prom check <"$t_tmp/m2"
check_eq "the in-flight job counts as processing" 1 "$(prom value retry_queue_depth state=processing <"$t_tmp/m2")"
check "oldest waiting job: age from its enqueued_at (300 s)" python3 -c "import sys; a = float(sys.argv[1]); assert 299 <= a < 400, a" "$(prom value retry_queue_oldest_age_seconds <"$t_tmp/m2")"
check_eq "/readyz is 200 while busy (no room is not a stall)" 200 "$(http_code "http://127.0.0.1:$PORT/readyz")"
kill -TERM "$wpid"
draining() { [[ $(http_code "http://127.0.0.1:$PORT/readyz") == 503 ]] && grep -q 'draining' "$t_tmp/body"; }
check "/readyz is 503 'draining' after SIGTERM" wait_for 5 draining
set +e; wait "$wpid"; rc=$?; set -e
check_eq "worker 2 stops with 0 after the drain deadline" 0 "$rc"
check_eq "the unfinished job went back to the queue" 3 "$(rcli LLEN "$Q2")"

# ---- 6. /readyz follows Redis: a private redis-server this test may stop and start.
RPORT=$(free_port)
mkdir -p "$t_tmp/redis"
start_private_redis() {
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$t_tmp/redis" \
    --logfile "$t_tmp/redis/log" >/dev/null 2>&1 &
  RPID=$!
  t_pids+=("$RPID")
  wait_for 10 bash -c "[[ \$(redis-cli -p $RPORT ping 2>/dev/null) == PONG ]]"
}
check "private redis-server starts" start_private_redis
PORT=$(free_port)
RETRYQ_REDIS_URL="redis://127.0.0.1:$RPORT" "$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" \
  --http-addr "127.0.0.1:$PORT" >"$t_tmp/worker3.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
check "/readyz 200 with the private Redis" wait_for 30 ready
redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
wait "$RPID" 2>/dev/null || true
redis_down() { [[ $(http_code "http://127.0.0.1:$PORT/readyz") == 503 ]] && grep -q 'redis unavailable' "$t_tmp/body"; }
check "/readyz turns 503 'redis unavailable' when Redis stops" wait_for 15 redis_down
check_eq "/healthz stays 200 (the loop is alive)" 200 "$(http_code "http://127.0.0.1:$PORT/healthz")"
check_eq "retry_redis_up is 0" 0 "$(val retry_redis_up)"
check "/metrics still passes the strict reader with Redis down" bash -c "curl -fsS 'http://127.0.0.1:$PORT/metrics' | python3 '$here/prom_text.py' check"
check "private redis-server starts again on the same port" start_private_redis
check "/readyz returns to 200 when Redis is back" wait_for 30 ready
check "the reconnects are counted" python3 -c "import sys; assert int(sys.argv[1]) >= 2" "$(val retry_redis_reconnects_total)"
# Connected but no progress: writes paused on the server, so pops (BLMOVE, EVAL) hang while
# PING and the setup commands still work and the connections keep coming back.
redis-cli -p "$RPORT" CLIENT PAUSE 40000 WRITE >/dev/null
stalled() { [[ $(http_code "http://127.0.0.1:$PORT/readyz") == 503 ]] && grep -q 'no progress on the Redis pop connection' "$t_tmp/body"; }
check "/readyz turns 503 'no progress on the Redis pop connection' while pops hang" wait_for 30 stalled
redis-cli -p "$RPORT" CLIENT UNPAUSE >/dev/null
check "/readyz returns to 200 once pops answer again" wait_for 30 ready
kill -TERM "$wpid"
set +e; wait "$wpid"; rc=$?; set -e
check_eq "worker 3 stops with 0" 0 "$rc"
redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true

t_finish
