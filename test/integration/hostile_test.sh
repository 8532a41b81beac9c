#!/usr/bin/env bash
# Hostile input, end to end (DESIGN §5, §6.4 "never crashes"). Anyone who can write to
# the Redis queue, and any router answer, is untrusted input. Against the private Redis
# and PostgreSQL, two workers run in the background for the whole test:
#
#  A  queue "hostile_a_<pid>", the mock router. Gets 70+ crafted payloads LPUSHed raw
#     (wrong types, huge numbers, deep nesting, NUL bytes, invalid UTF-8, SQL in the
#     region, huge strings, duplicate keys, empty, whitespace, arrays, ...) and one
#     execution per mock router mode. Every payload must end in the dead list with the
#     documented reason (or be acknowledged as stale), a victim execution named by many
#     of them must stay untouched, and nothing may be left in the queue, the processing
#     list or the delayed set: pushed = dead + acknowledged.
#  B  queue "hostile_b_<pid>", a raw-socket stub router started here (python3) for the
#     answers the mock cannot make: wrong content types, redirects (never followed: a
#     canary on 127.0.0.1 must see no request; only then one to 10.0.0.1 is tried, which
#     nothing may connect to), duplicate keys, huge numbers, deep nesting, raw and escaped
#     NUL, invalid UTF-8, lone surrogates, empty bodies, 1xx/3xx/999 codes, huge headers,
#     HTTP/0.9, lying Content-Length, broken chunking, SQL in the answer.
#
# Every answer must give the status DESIGN §5 names and exactly one outcome entry in
# retry_history. Both workers must still process a normal job at the end and stop with
# status 0 on SIGTERM. Secrets: the Redis password (an ACL user, from a password file
# readable by others, which must draw a warning), the PostgreSQL password and the
# router's basic-auth password must never appear in --help, --print-config, a refusal,
# the logs (debug level), /metrics, /healthz, /readyz or the status page.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_REDIS_URL RETRYQ_TEST_REDIS_PORT RETRYQ_TEST_ADMIN_URL RETRYQ_CLI \
  RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN
command -v python3 >/dev/null || { echo "FAIL - python3 is required"; exit 1; }

# Never let libcurl go through a proxy: every connection must stay on 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
export NO_PROXY='*' no_proxy='*'

new_database
QA="hostile_a_$$"
QB="hostile_b_$$"
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$RETRYQ_TEST_REDIS_URL

# ------------------------------------------------------------------ secrets
REDIS_USER="hostile_$$"
REDIS_PW="Rd-$RANDOM-secret-$RANDOM-pw"
PG_PW="Pg-$RANDOM-secret-$RANDOM-pw"
ROUTER_PW="Rt-$RANDOM-secret-$RANDOM-pw"
# The least-privilege ACL docs/security.md recommends, on this test's two queues.
rcli ACL SETUSER "$REDIS_USER" on ">$REDIS_PW" "~$QA" "~{$QA}:*" "~$QB" "~{$QB}:*" \
  +@list +@sortedset +@hash +@scripting +@connection +set +get +mget +pexpire +pttl +time +info \
  '+client|setname' >/dev/null
acl_cleanup() { rcli ACL DELUSER "$REDIS_USER" >/dev/null 2>&1 || true; t_cleanup; }
trap acl_cleanup EXIT
printf '%s\n' "$REDIS_PW" >"$t_tmp/redis.pw"
chmod 644 "$t_tmp/redis.pw"
# Trust authentication ignores the password, but libpq still carries it everywhere.
DB_PW_URL="postgresql://retryq:${PG_PW}@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}/${DB##*/}"
WORKER_REDIS_URL="redis://${REDIS_USER}@127.0.0.1:${RETRYQ_TEST_REDIS_PORT}"
leaks() { # <file>: prints which secrets the file holds
  local f=$1 s
  for s in "$REDIS_PW" "$PG_PW" "$ROUTER_PW"; do grep -aF -- "$s" "$f" >/dev/null && echo "$s"; done
  return 0
}


# ------------------------------------------------------------------ the question bank
# Each question id maps to a prompt holding the rule that steers its router answer.
# http_503 and http_429 are not here: the mock sends them with Retry-After, which pauses the
# whole key for every job instead of failing one (flow control; flow_pause_test.sh).
mock_modes=(ok slow router_error http_500 http_502 http_408 http_400 http_404
  garbage not_object wrong_types nul huge hang trickle close_mid_body reset flaky_once)
declare -A mock_expect=(
  [ok]=completed [slow]=completed [router_error]=failed [http_500]=failed [http_502]=failed
  [http_408]=failed [http_400]=failed [http_404]=failed
  [garbage]=failed [not_object]=failed [wrong_types]=failed [nul]=completed [huge]=failed
  [hang]=timeout [trickle]=timeout [close_mid_body]=failed [reset]=failed [flaky_once]=completed)
stub_answers=(ct_html_json ct_missing_html redirect_301 redirect_302 redirect_303 redirect_307
  redirect_308 dup_keys huge_numbers deep_65 deep_60 raw_nul escaped_nul bad_utf8_response
  bad_utf8_error bad_utf8_provider lone_surrogate empty_200 no_content_204 continue_100
  info_only_102 huge_header_line many_headers http09 length_lie chunk_bad json_array json_true
  json_string json_null big_response status_999 trailing_garbage unauthorized_401
  retry_after_junk long_error sql_in_response long_provider missing_response html_in_error)
declare -A stub_expect=(
  [ct_html_json]=completed [ct_missing_html]=failed [redirect_301]=failed [redirect_302]=failed
  [redirect_303]=failed [redirect_307]=failed [redirect_308]=failed [redirect_private]=failed
  [dup_keys]=completed [huge_numbers]=completed [deep_65]=failed [deep_60]=completed
  [raw_nul]=failed [escaped_nul]=completed [bad_utf8_response]=completed [bad_utf8_error]=failed
  [bad_utf8_provider]=completed [lone_surrogate]=completed [empty_200]=failed
  [no_content_204]=failed [continue_100]=completed [info_only_102]=failed
  [huge_header_line]=failed [many_headers]=failed [http09]=failed [length_lie]=failed
  [chunk_bad]=failed [json_array]=failed [json_true]=failed [json_string]=failed
  [json_null]=failed [big_response]=completed [status_999]=failed [trailing_garbage]=failed
  [unauthorized_401]=failed [retry_after_junk]=failed [long_error]=failed
  [sql_in_response]=completed [long_provider]=completed [missing_response]=failed
  [html_in_error]=failed
  [normal_b]=completed)

bank="$t_tmp/bank.json"
python3 - "$bank" "${mock_modes[@]}" -- "${stub_answers[@]}" redirect_private normal_b <<'PY'
import json, sys
out, rest = sys.argv[1], sys.argv[2:]
cut = rest.index('--')
bank = {f"m_{m}": f"[mock:{m}] What is the capital of France?" for m in rest[:cut]}
bank.update({f"s_{s}": f"[stub:{s}] What is the capital of France?" for s in rest[cut + 1:]})
bank["plain_q"] = "What is 2+2?"
json.dump(bank, open(out, "w"))
PY
spec_ids=(plain_q)
for m in "${mock_modes[@]}"; do spec_ids+=("m_$m"); done
spec=$(printf '"%s",' "${spec_ids[@]}")
job=$(insert_job "{\"id\":\"hostile\",\"version\":\"v1\",\"questions\":[${spec%,}]}")

# ------------------------------------------------------------------ routers
start_router --slow-ms 200 --huge-bytes 2M
MOCK_URL="http://rtuser:${ROUTER_PW}@${ROUTER_URL#http://}"

cat >"$t_tmp/stub.py" <<'PY'
# A raw-socket HTTP stub: answers each POST with the crafted bytes named by the
# "[stub:NAME]" rule in the request body, then closes. A second socket is the canary:
# the redirects point there, and any request it gets is logged (it must get none).
import json, re, socket, sys, threading

port_file, canary_file, log_file = sys.argv[1:4]
lock = threading.Lock()

def log(line):
    with lock, open(log_file, "a") as f:
        f.write(line + "\n")

def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s

main, canary = listener(), listener()
canary_url = "http://127.0.0.1:%d/inference" % canary.getsockname()[1]
OK = b'{"success":true,"response":"fine","provider_used":"stub"}'

def http(status, body=b"", headers=(), reason=b"X"):
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    for h in headers:
        head += h + b"\r\n"
    if not any(h.lower().startswith(b"content-length") or h.lower().startswith(b"transfer-encoding") for h in headers):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"Connection: close\r\n\r\n" + body

def redirect(code, to):
    return http(code, b"moved", [b"Location: " + to.encode(), b"Content-Type: text/plain"])

def deep(n):
    return b'{"success":true,"response":"deep","metadata":' + b'{"a":' * n + b"1" + b"}" * n + b"}"

J = [b"Content-Type: application/json"]
answers = {
    "ct_html_json": http(200, OK, [b"Content-Type: text/html"]),
    "ct_missing_html": http(200, b"<html><body>Service moved</body></html>"),
    "redirect_301": redirect(301, canary_url),
    "redirect_302": redirect(302, canary_url),
    "redirect_303": redirect(303, canary_url),
    "redirect_307": redirect(307, canary_url),
    "redirect_308": redirect(308, canary_url),
    "redirect_private": redirect(302, "http://10.0.0.1/inference"),
    "dup_keys": http(200, b'{"success":false,"success":true,"response":1,"response":"dup last wins","provider_used":"a","provider_used":"b"}', J),
    "huge_numbers": http(200, b'{"success":true,"response":"big","inference_time":1e999,"metadata":{"n":-1e400,"m":123456789012345678901234567890,"f":1.5e-400}}', J),
    "deep_65": http(200, deep(65), J),
    "deep_60": http(200, deep(60), J),
    "raw_nul": http(200, b'{"success":true,"response":"a\x00b"}', J),
    "escaped_nul": http(200, b'{"success":true,"response":"a\\u0000b","provider_used":"st\\u0000ub"}', J),
    "bad_utf8_response": http(200, b'{"success":true,"response":"x\xff\xfe y \xc3\x28 z \xed\xa0\x80"}', J),
    "bad_utf8_error": http(200, b'{"success":false,"error":"bad \xc3\x28 \xff error \\u0000 text"}', J),
    "bad_utf8_provider": http(200, b'{"success":true,"response":"ok","provider_used":"prov\xff\\u0000ider","metadata":{"k\xfe":"v\\u0000"}}', J),
    "lone_surrogate": http(200, b'{"success":true,"response":"lone \\ud800 and \\udfff and pair \\ud83d\\ude00"}', J),
    "empty_200": http(200, b"", J),
    "no_content_204": b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    "continue_100": b"HTTP/1.1 100 Continue\r\n\r\n" + http(200, OK, J),
    "info_only_102": b"HTTP/1.1 102 Processing\r\n\r\n",
    "huge_header_line": http(200, OK, J + [b"X-Huge: " + b"h" * 200000]),
    "many_headers": http(200, OK, J + [b"X-Many-%d: %s" % (i, b"m" * 1000) for i in range(2000)]),
    "http09": OK,
    "length_lie": b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nConnection: close\r\n\r\n" + OK,
    "chunk_bad": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n" + OK + b"\r\n0\r\n\r\n",
    "json_array": http(200, b"[" + OK + b"]", J),
    "json_true": http(200, b"true", J),
    "json_string": http(200, b'"success"', J),
    "json_null": http(200, b"null", J),
    "big_response": http(200, b'{"success":true,"response":"' + b"r" * 900000 + b'"}', J),
    "status_999": http(999, OK, J),
    "trailing_garbage": http(200, OK + b" <html>", J),
    "unauthorized_401": http(401, b"no", [b'WWW-Authenticate: Basic realm="x"']),
    "retry_after_junk": http(503, b"busy", [b"Retry-After: soon-ish, maybe"]),
    "long_error": http(200, b'{"success":false,"error":"' + ("\u00e9" * 60000).encode() + b'"}', J),
    "sql_in_response": http(200, b'{"success":true,"response":"\'); DROP TABLE executions; -- $1 \\\\ %s","provider_used":"p\'; DELETE FROM jobs; --"}', J),
    "long_provider": http(200, b'{"success":true,"response":"ok","provider_used":"' + ("\u00fc" * 5000).encode() + b'"}', J),
    "missing_response": http(200, b'{"success":true}', J),
    "html_in_error": http(200, b'{"success":false,"error":"<script>alert(1)</script><img src=x onerror=alert(2)>"}', J),
    "normal_b": http(200, OK, J),
}

def read_request(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = c.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body

def serve(c):
    try:
        req = read_request(c)
        m = re.search(rb"\[stub:([a-z0-9_]+)\]", req)
        name = m.group(1).decode() if m else "?"
        log("hit " + name)
        c.sendall(answers.get(name, http(400, b"unknown stub answer")))
    except OSError:
        pass
    finally:
        c.close()

def serve_canary(c):
    try:
        log("canary " + c.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
        c.sendall(http(200, OK, J))
    except OSError:
        pass
    finally:
        c.close()

def loop(s, fn):
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()

threading.Thread(target=loop, args=(canary, serve_canary), daemon=True).start()
with open(port_file + ".tmp", "w") as f:
    f.write("%d\n" % main.getsockname()[1])
import os
os.rename(port_file + ".tmp", port_file)
loop(main, serve)
PY
python3 "$t_tmp/stub.py" "$t_tmp/stub.port" "$t_tmp/canary" "$t_tmp/stub.log" &
t_pids+=($!)
wait_for 60 test -s "$t_tmp/stub.port" || { echo "FAIL - stub router did not start"; exit 1; }
# An empty user name: the host is what follows the '@' (router.c once refused this URL as
# "no host" and quoted it, password and all, in the refusal).
STUB_URL="http://:${ROUTER_PW}@127.0.0.1:$(cat "$t_tmp/stub.port")"

# ------------------------------------------------------------------ configuration and secrets
# The breaker is off: every execution here is steered to its own answer, so the one key
# (model, region) of these jobs mixes every kind of failure, which a real provider does not;
# a breaker would pause the key and test itself, not the answers (flow_breaker_test.sh does).
common=(--database-url "$DB_PW_URL" --redis-url "$WORKER_REDIS_URL" --question-bank "$bank"
  --redis-password-file "$t_tmp/redis.pw" --timeout-ms 1500 --connect-timeout-ms 1000
  --backoff 100ms,200ms --max-response-bytes 1MiB --log-level debug --heartbeat-ms 500
  --lease-ms 5s --drain-timeout-ms 5s --breaker off)

RETRYQ_REDIS_PASSWORD_FILE="$t_tmp/redis.pw" RETRYQ_DATABASE_URL="$DB_PW_URL" \
  RETRYQ_ROUTER_URL="$MOCK_URL" "$RETRYQ_WORKER_BIN" --help >"$t_tmp/help.txt" 2>&1 || true
check "--help shows usage" grep -q -- '--redis-url' "$t_tmp/help.txt"
check_eq "--help holds no secret" "" "$(leaks "$t_tmp/help.txt")"
"$RETRYQ_WORKER_BIN" "${common[@]}" --router-url "$MOCK_URL" --print-config \
  >"$t_tmp/print.txt" 2>"$t_tmp/print.err" || true
check "--print-config shows the settings" grep -q '^RETRYQ_REDIS_URL=' "$t_tmp/print.txt"
check "--print-config redacts with ***" grep -q '\*\*\*' "$t_tmp/print.txt"
check_eq "--print-config holds no secret" "" "$(leaks "$t_tmp/print.txt")"
# libpq takes '#' and '?' in a URL's password as they are: redaction must hide them too.
"$RETRYQ_WORKER_BIN" --database-url "postgresql://retryq:${PG_PW}#x?y@127.0.0.1:1/db?sslmode=disable&password=${PG_PW}" \
  --router-url "$MOCK_URL" --print-config >"$t_tmp/print2.txt" 2>&1 || true
check "--print-config with raw '#' and '?' in passwords runs" grep -q '^RETRYQ_DATABASE_URL=' "$t_tmp/print2.txt"
check_eq "--print-config hides passwords holding raw '#' and '?'" "" "$(leaks "$t_tmp/print2.txt")"
check "a password file readable by others draws a warning" grep -q 'readable by group or others' "$t_tmp/print.err"
check_eq "the warning holds no secret" "" "$(leaks "$t_tmp/print.err")"
set +e
timeout 10 "$RETRYQ_WORKER_BIN" --database-url "$DB_PW_URL" --router-url "$MOCK_URL" \
  --redis-url "redis://u:${REDIS_PW}@127.0.0.1:99999" >"$t_tmp/refuse1.txt" 2>&1
rc1=$?
timeout 10 "$RETRYQ_WORKER_BIN" --database-url "postgresql://u:${PG_PW}@127.0.0.1:1/db?nosuchparam=1" \
  --router-url "$MOCK_URL" >"$t_tmp/refuse2.txt" 2>&1
rc2=$?
timeout 10 "$RETRYQ_WORKER_BIN" --database-url "host=127.0.0.1 password='${PG_PW}' port=1" \
  --router-url "ftp://u:${ROUTER_PW}@127.0.0.1/" >"$t_tmp/refuse3.txt" 2>&1
rc3=$?
timeout 10 "$RETRYQ_WORKER_BIN" --database-url "$DB_PW_URL" --router-url "$MOCK_URL" \
  --redis-url "redis://u:${REDIS_PW}/x@127.0.0.1:6379" >"$t_tmp/refuse4.txt" 2>&1
rc4=$?
set -e
check_eq "bad settings are refused with status 78 (EX_CONFIG)" "78 78 78 78" "$rc1 $rc2 $rc3 $rc4"
cat "$t_tmp"/refuse*.txt >"$t_tmp/refusals.txt"
check_eq "refusals hold no secret" "" "$(leaks "$t_tmp/refusals.txt")"
check_eq "refusals are one line each" 4 "$(wc -l <"$t_tmp/refusals.txt")"

# ------------------------------------------------------------------ executions
submit() { # <queue> <execution id> <region> <index>
  RETRYQ_QUEUE=$1 "$RETRYQ_CLI" retry --execution-id "$2" --region "$3" --question-index "$4" >/dev/null
}
declare -A exa exb
i=1
for m in "${mock_modes[@]}"; do
  exa[$m]=$(insert_execution "$job" us-east failed "m_$m")
  submit "$QA" "${exa[$m]}" us-east "$i"
  i=$((i + 1))
done
submit_b() { # <names...>
  local s
  for s in "$@"; do
    exb[$s]=$(insert_execution "$job" eu-west failed "s_$s")
    submit "$QB" "${exb[$s]}" eu-west 0
  done
}
submit_b "${stub_answers[@]}"

# The victims: retrying at attempt 1, named by hostile payloads that must not touch them.
# Their real jobs are held back; the first victim's runs at the very end as the normal job.
victims=()
for _ in 1 2 3 4 5 6 7; do
  v=$(insert_execution "$job" us-east failed plain_q)
  submit "$QA" "$v" us-east 0
  victims+=("$v")
  held=$(rcli LPOP "$QA")
  [[ $v == "${victims[0]}" ]] && victim_job=$held
done
VICTIM=${victims[0]}
victim_ids=$(IFS=,; echo "${victims[*]}")
victims_state() {
  sql -c "SELECT string_agg(status || retry_count || retry_history::text, ' ' ORDER BY id) FROM executions WHERE id IN ($victim_ids)"
}
victim_before=$(victims_state)
MISSING=$(( $(sql -c "SELECT max(id) FROM executions") + 100000 ))

# ------------------------------------------------------------------ workers
port_a=$(free_port)
port_b=$(free_port)
"$RETRYQ_WORKER_BIN" "${common[@]}" --router-url "$MOCK_URL" --queue "$QA" \
  --http-addr "127.0.0.1:$port_a" >"$t_tmp/worker_a.log" 2>&1 &
WA=$!
t_pids+=("$WA")
"$RETRYQ_WORKER_BIN" "${common[@]}" --router-url "$STUB_URL" --queue "$QB" \
  --http-addr "127.0.0.1:$port_b" >"$t_tmp/worker_b.log" 2>&1 &
WB=$!
t_pids+=("$WB")
check "worker A ready" wait_for 20 curl -fs -o /dev/null "http://127.0.0.1:$port_a/readyz"
check "worker B ready" wait_for 20 curl -fs -o /dev/null "http://127.0.0.1:$port_b/readyz"

# ------------------------------------------------------------------ hostile payloads
cat >"$t_tmp/payloads.py" <<'PY'
# Builds the hostile payloads, LPUSHes them raw (bytes, through a minimal RESP client),
# waits until the queue, the delayed set and every processing list are empty, then
# matches the dead list against the expected reasons. Prints one line per check:
# "CHECK<TAB>description<TAB>expected<TAB>actual".
import json, socket, sys, time

port, queue, victims, missing, want_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
victims = [int(v) for v in victims.split(",")]
V, N = victims[0], missing
# Each payload that reaches the region check names its own victim: two valid jobs for
# the same (execution, attempt) in flight at once are one job and its duplicate.
others = iter(victims[1:])

class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", int(port)))
        self.f = self.s.makefile("rb")
    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.read()
    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+": return rest.decode()
        if t == b"-": raise RuntimeError(rest.decode())
        if t == b":": return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0: return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

def job(eid=V, region='"us-east"', qi="0", ra="1", extra=""):
    return ('{"execution_id":%s,"region":%s,"question_index":%s,"retry_attempt":%s%s}'
            % (eid, region, qi, ra, extra)).encode()

INV = "invalid job: "
NF = "execution not found"
RM = "region mismatch"
p = []  # (name, payload bytes, expected reason substring or None for "acknowledged")
def add(name, payload, reason):
    p.append((name, payload, reason))

add("empty", b"", INV + "payload: not valid JSON")
add("whitespace only", b" \t\r\n  ", INV + "payload: not valid JSON")
add("null", b"null", INV + "payload: must be a JSON object")
add("true", b"true", INV + "payload: must be a JSON object")
add("number", b"42", INV + "payload: must be a JSON object")
add("string", b'"{\\"execution_id\\":1}"', INV + "payload: must be a JSON object")
add("empty array", b"[]", INV + "payload: must be a JSON object")
add("array of a valid job", b"[" + job() + b"]", INV + "payload: must be a JSON object")
add("empty object", b"{}", INV + "execution_id: is required")
add("plain text", b"retry execution 5 please", INV + "payload: not valid JSON")
add("truncated", job()[:-9], INV + "payload: not valid JSON")
add("trailing garbage", job() + b"x", INV + "payload: unexpected text after")
add("two objects", job() + job(), INV + "payload: unexpected text after")
add("BOM (cJSON skips it)", b"\xef\xbb\xbf" + job(eid=str(N + 4)), NF)
add("comments", b"/* hi */" + job(), INV + "payload: not valid JSON")
add("single quotes", b"{'execution_id':%d,'region':'us-east','question_index':0,'retry_attempt':1}" % V, INV + "payload: not valid JSON")
add("UTF-16", job().decode().encode("utf-16"), INV + "payload: not valid JSON")
add("raw NUL inside a key", job()[:20] + b"\x00" + job()[20:], INV + "region: is required")
add("raw NUL inside a value", job(region='"us-east\x00tail"'), INV + "region: must not contain NUL")
add("id: text", job(eid='"abc"'), INV + "execution_id: must be a positive integer")
add("id: negative", job(eid="-1"), INV + "execution_id: must be a positive integer")
add("id: zero", job(eid="0"), INV + "execution_id: must be a positive integer")
add("id: fraction", job(eid="1.5"), INV + "execution_id: must be a positive integer")
add("id: exponent", job(eid="1e3"), INV + "execution_id: must be a positive integer")
add("id: 1e400", job(eid="1e400"), INV + "execution_id: must be a positive integer")
add("id: 2^53 as number", job(eid="9007199254740993"), INV + "execution_id: numbers above 2^53-1 must be sent as a decimal string")
add("id: int64 overflow string", job(eid='"9223372036854775808"'), INV + "execution_id: must be a positive integer")
add("id: 40 digits", job(eid="1" * 40), INV + "execution_id:")
add("id: null", job(eid="null"), INV + "execution_id: must be a positive integer")
add("id: true", job(eid="true"), INV + "execution_id: must be a positive integer")
add("id: array", job(eid="[%d]" % V), INV + "execution_id: must be a positive integer")
add("id: object", job(eid='{"id":%d}' % V), INV + "execution_id: must be a positive integer")
add("id: spaced string", job(eid='" %d"' % V), INV + "execution_id: must be a positive integer")
add("id: hex string", job(eid='"0x2A"'), INV + "execution_id: must be a positive integer")
add("id: plus string", job(eid='"+%d"' % V), INV + "execution_id: must be a positive integer")
add("id: leading zero", job(eid="0%d" % V), INV + "execution_id: must be a positive integer")
add("id: NUL in string", job(eid='"%d\\u0000"' % V), INV + "execution_id: must be a positive integer")
add("id: max int64 string", job(eid='"9223372036854775807"'), NF)
add("id: above int4", job(eid="2147483648"), NF)
add("id: unknown", job(eid=str(N)), NF)
add("region: missing", b'{"execution_id":%d,"question_index":0,"retry_attempt":1}' % V, INV + "region: is required")
add("region: empty", job(region='""'), INV + "region: must be a string of 1..128 bytes")
add("region: number", job(region="1"), INV + "region: must be a string")
add("region: null", job(region="null"), INV + "region: must be a string")
add("region: escaped NUL", job(region='"us\\u0000east"'), INV + "region: must not contain NUL")
add("region: newline", job(region='"us\\neast"'), INV + "region: must not contain control characters")
add("region: DEL", job(region='"us\x7feast"'), INV + "region: must not contain control characters")
add("region: 129 bytes", job(region='"' + "r" * 129 + '"'), INV + "region: must be a string of 1..128 bytes")
add("region: 1 MiB", job(region='"' + "r" * (1 << 20) + '"'), INV + "payload:")
add("region: invalid UTF-8", job(region='"usXXeast"').replace(b"XX", b"\xff\xfe"), INV + "region: must be valid UTF-8")
add("region: lone surrogate", job(region='"\\ud800"'), INV + "payload: not valid JSON")
add("region: 128 bytes", job(eid=next(others), region='"' + "x" * 128 + '"'), RM)
add("region: SQL drop", job(eid=next(others), region='"us-east\'; DROP TABLE executions; --"'), RM)
add("region: SQL or", job(eid=next(others), region='"\' OR \'1\'=\'1"'), RM)
add("region: SQL comment", job(eid=next(others), region='"us-east\\"/**/OR/**/1=1"'), RM)
add("region: emoji", job(eid=next(others), region='"us-\\ud83d\\ude00"'), RM)
add("region: case", job(eid=next(others), region='"US-EAST"'), RM)
add("index: negative", job(qi="-1"), INV + "question_index:")
add("index: above int32", job(qi="2147483648"), INV + "question_index:")
add("index: string", job(qi='"0"'), INV + "question_index:")
add("index: fraction", job(qi="0.5"), INV + "question_index:")
add("attempt: zero", job(ra="0"), INV + "retry_attempt:")
add("attempt: above the ceiling", job(ra="1001"), INV + "retry_attempt:")
add("attempt: huge", job(ra="1000000"), INV + "retry_attempt:")
add("attempt: string", job(ra='"1"'), INV + "retry_attempt:")
add("delivery: negative", job(extra=',"delivery":-1'), INV + "delivery:")
add("delivery: 1001", job(extra=',"delivery":1001'), INV + "delivery:")
add("delivery: poison", job(eid=str(N + 1), extra=',"delivery":99'), "poison: delivered 99 times")
add("enqueued_at: words", job(extra=',"enqueued_at":"yesterday"'), INV + "enqueued_at:")
add("enqueued_at: number", job(extra=',"enqueued_at":12345'), INV + "enqueued_at:")
add("id: 65 chars", job(extra=',"id":"' + "i" * 65 + '"'), INV + "id:")
add("id: control char", job(extra=',"id":"a\\tb"'), INV + "id:")
add("duplicate execution_id", b'{"execution_id":%d,"execution_id":%d,"region":"us-east","question_index":0,"retry_attempt":1}' % (N, V), INV + "execution_id: appears more than once")
add("duplicate region", job(extra=',"region":"eu-west"'), INV + "region: appears more than once")
add("keys in other case", b'{"Execution_Id":%d,"Region":"us-east","Question_Index":0,"Retry_Attempt":1}' % V, INV + "execution_id: is required")
add("nested 17 deep", job(extra=',"x":' + "[" * 17 + "]" * 17), INV + "payload: nested deeper than 16 levels")
add("nested 30000 deep", b"[" * 30000 + b"]" * 30000, INV + "payload: nested deeper")
add("unclosed 12000 deep", b'{"a":' * 12000, INV + "payload: nested deeper")
add("nested 1000000 deep", b"[" * 1000000 + b"]" * 1000000, INV + "payload: 2000000 bytes is over the limit")
add("64 KiB + 1", job(eid=str(N), extra=',"pad":"' + "p" * 65536 + '"'), INV + "payload: 65")
add("4 MiB", job(eid=str(N), extra=',"pad":"' + "\x01" * (4 << 20) + '"'), INV + "payload: 4")
add("just under 64 KiB", job(eid=str(N + 5), extra=',"pad":"' + "q" * 65000 + '"'), NF)
add("1000 unknown keys", job(eid=str(N + 6), extra="".join(',"k%d":%d' % (i, i) for i in range(1000))), NF)
add("NUL after the object", job(eid=str(N + 2)) + b"\x00", NF)
add("SQL in unknown field", job(eid=str(N + 3), extra=',"sql":"\'; DROP TABLE jobs; --"'), NF)
add("stale attempt", job(ra="2"), None)
add("stale attempt, Go form with spaces", b'{"execution_id": %d, "region": "us-east", "question_index": 0, "retry_attempt": 3}' % V, None)

r = Redis(port)
for name, payload, _ in p:
    r.cmd("LPUSH", queue, payload)

deadline = time.time() + 90
def pending():
    n = r.cmd("LLEN", queue) + r.cmd("ZCARD", "{%s}:delayed" % queue)
    for key in r.cmd("KEYS", "{%s}:processing:*" % queue):
        n += r.cmd("LLEN", key)
    for key in r.cmd("KEYS", "{%s}:taken:*" % queue):
        n += r.cmd("HLEN", key)
    return n
while time.time() < deadline and pending() > 0:
    time.sleep(0.1)

def check(desc, expected, actual):
    print("CHECK\t%s\t%s\t%s" % (desc, expected, actual))

check("payloads: queue, delayed set, processing lists and taken hashes drained", 0, pending())
dead = r.cmd("LRANGE", "{%s}:dead" % queue, 0, -1)
entries = []
for raw in dead:
    e = json.loads(raw.decode("utf-8", "surrogateescape"))
    entries.append((e.get("job", "").encode("utf-8", "surrogateescape"), e.get("reason", ""), e.get("job_bytes")))
expected_dead = [x for x in p if x[2] is not None]
unmatched = list(entries)
for name, payload, reason in expected_dead:
    # a dead entry keeps the payload's text, cut at a NUL byte and at 64 KiB; a longer
    # payload's entry says how long it was
    text = payload[:65536].split(b"\x00", 1)[0]
    size = len(payload) if len(payload) > 65536 else None
    hit = next((e for e in unmatched if e[0] == text and reason in e[1] and e[2] == size), None)
    if hit is None:
        got = next((e[1] for e in entries if e[0] == text), "no dead entry")
        check("payload %-28s -> dead: %s" % (name, reason), "found", got[:160])
    else:
        unmatched.remove(hit)
        check("payload %-28s -> dead: %s" % (name, reason), "found", "found")
check("dead list holds exactly the dead payloads", len(expected_dead), len(dead))
for e in unmatched:
    check("unexpected dead entry", "none", (e[1] + " " + repr(e[0][:80]))[:200])
check("every entry has an at and a worker", len(dead),
      sum(1 for raw in dead if '"at":' in raw.decode("utf-8", "replace") and '"worker":' in raw.decode("utf-8", "replace")))
with open(want_bytes, "w") as f:
    f.write("%d %d %d\n" % (len(p), len(expected_dead), len(p) - len(expected_dead)))
PY

python3 "$t_tmp/payloads.py" "$RETRYQ_TEST_REDIS_PORT" "$QA" "$victim_ids" "$MISSING" "$t_tmp/counts" \
  >"$t_tmp/payload_checks.txt"
while IFS=$'\t' read -r tag desc expected actual; do
  [[ $tag == CHECK ]] && check_eq "$desc" "$expected" "$actual"
done <"$t_tmp/payload_checks.txt"
read -r pushed dead_expected acked_expected <"$t_tmp/counts"
echo "payloads: $pushed pushed, $dead_expected to the dead list, $acked_expected acknowledged as stale"
check "at least 60 hostile payloads" test "$pushed" -ge 60
check_eq "the victim executions are untouched" "$victim_before" "$(victims_state)"
check "worker A survived the payloads" kill -0 "$WA"

# ------------------------------------------------------------------ router answers
terminal() { # <ids...>: true when none of them is still retrying
  local ids
  ids=$(IFS=,; echo "$*")
  [[ $(sql -c "SELECT count(*) FROM executions WHERE id IN ($ids) AND status = 'retrying'") == 0 ]]
}
outcomes() { # <id>: history entries that are outcomes
  sql -c "SELECT jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) FROM executions WHERE id = $1"
}
field() { sql -c "SELECT $2 FROM executions WHERE id = $1"; }

check "mock answers all reach a terminal status" wait_for 90 terminal "${exa[@]}"
check "stub answers (first wave) all reach a terminal status" wait_for 90 terminal "${exb[@]}"
for m in "${mock_modes[@]}"; do
  check_eq "mock $m -> ${mock_expect[$m]}, one outcome" "${mock_expect[$m]} 1" \
    "$(field "${exa[$m]}" status) $(outcomes "${exa[$m]}")"
done
for s in "${stub_answers[@]}"; do
  check_eq "stub $s -> ${stub_expect[$s]}, one outcome" "${stub_expect[$s]} 1" \
    "$(field "${exb[$s]}" status) $(outcomes "${exb[$s]}")"
done

check_eq "redirects were not followed: the canary got no request" "" \
  "$(grep '^canary' "$t_tmp/stub.log" || true)"
check_eq "a redirect is a failure naming its status" t \
  "$(field "${exb[redirect_307]}" "output_data->>'error' LIKE 'hybrid error: HTTP 307%'")"
# Only now, with non-following proven, a redirect to a private address (never connected).
submit_b redirect_private normal_b
check "stub answers (second wave) reach a terminal status" wait_for 60 terminal "${exb[redirect_private]}" "${exb[normal_b]}"
for s in redirect_private normal_b; do
  check_eq "stub $s -> ${stub_expect[$s]}, one outcome" "${stub_expect[$s]} 1" \
    "$(field "${exb[$s]}" status) $(outcomes "${exb[$s]}")"
done
check_eq "still no request anywhere but the stub" "" "$(grep '^canary' "$t_tmp/stub.log" || true)"
check_eq "the stub saw exactly one call for the private redirect" 1 \
  "$(grep -c '^hit redirect_private$' "$t_tmp/stub.log")"

# What was stored is clean and bounded.
check_eq "escaped NUL dropped from the answer" ab "$(field "${exb[escaped_nul]}" "output_data->>'response'")"
check_eq "escaped NUL dropped from the provider" stub "$(field "${exb[escaped_nul]}" provider_id)"
check_eq "invalid UTF-8 replaced by U+FFFD" t \
  "$(field "${exb[bad_utf8_response]}" "output_data->>'response' LIKE 'x' || chr(65533) || '%'")"
check_eq "invalid UTF-8 in an error replaced" t \
  "$(field "${exb[bad_utf8_error]}" "position(chr(65533) in output_data->>'error') > 0")"
check_eq "invalid UTF-8 in provider_used replaced" t \
  "$(field "${exb[bad_utf8_provider]}" "provider_id LIKE 'prov' || chr(65533) || 'ider'")"
check_eq "lone surrogates replaced, pairs kept" t \
  "$(field "${exb[lone_surrogate]}" "output_data->>'response' = 'lone ' || chr(65533) || ' and ' || chr(65533) || ' and pair ' || chr(128512)")"
check_eq "duplicate keys: the last one wins" "dup last wins b" \
  "$(field "${exb[dup_keys]}" "(output_data->>'response') || ' ' || provider_id")"
check_eq "non-finite inference_time stored as 0" 0 "$(field "${exb[huge_numbers]}" "output_data->>'inference_sec'")"
check_eq "SQL in an answer is stored as text" t \
  "$(field "${exb[sql_in_response]}" "output_data->>'response' LIKE '''); DROP TABLE executions; --%' AND provider_id LIKE 'p''; DELETE%'")"
check_eq "the tables are all still there" 2 \
  "$(sql -c "SELECT count(*) FROM pg_tables WHERE tablename IN ('jobs','executions')")"
check_eq "an error text is at most 2 KiB (after the runner's prefix)" t "$(field "${exb[long_error]}" "octet_length(output_data#>>'{failure,message}') <= 2048 AND output_data->>'error' = 'hybrid error: ' || (output_data#>>'{failure,message}')")"
check_eq "provider_used is cut to 255 bytes" t "$(field "${exb[long_provider]}" "octet_length(provider_id) <= 255 AND provider_id <> ''")"
check_eq "a big answer under the cap is kept whole" 900000 "$(field "${exb[big_response]}" "length(output_data->>'response')")"
check_eq "an answer over the cap fails as too_large" "ROUTER_JSON_ERROR too_large" "$(field "${exa[huge]}" "concat_ws(' ', output_data->>'error_code', output_data#>>'{failure,retryq_reason}')")"
check_eq "nesting deeper than 64 fails as invalid_json" "ROUTER_JSON_ERROR invalid_json" "$(field "${exb[deep_65]}" "concat_ws(' ', output_data->>'error_code', output_data#>>'{failure,retryq_reason}')")"
check_eq "a raw NUL byte fails as invalid_json" "ROUTER_JSON_ERROR invalid_json" "$(field "${exb[raw_nul]}" "concat_ws(' ', output_data->>'error_code', output_data#>>'{failure,retryq_reason}')")"
check_eq "HTTP/0.9 is refused by curl" "ROUTER_UNKNOWN_ERROR curl_error" "$(field "${exb[http09]}" "concat_ws(' ', output_data->>'error_code', output_data#>>'{failure,retryq_reason}')")"
check_eq "giant header line: refused, retried, then failed" t \
  "$(field "${exb[huge_header_line]}" "output_data->>'error' LIKE 'hybrid error: gave up after 3 tries%'")"

# ------------------------------------------------------------------ the end: normal jobs
check "worker A alive after everything" kill -0 "$WA"
check "worker B alive after everything" kill -0 "$WB"
rcli LPUSH "$QA" "$victim_job" >/dev/null
victim_done() { [[ $(field "$VICTIM" status) == completed ]]; }
check "worker A still completes a normal job" wait_for 30 victim_done
check_eq "the victim's normal job has one outcome" 1 "$(outcomes "$VICTIM")"

# ------------------------------------------------------------------ secrets at run time
for p in metrics healthz readyz status status.json ""; do
  curl -s "http://127.0.0.1:$port_a/$p" >>"$t_tmp/http_a.txt" || true
  curl -s "http://127.0.0.1:$port_b/$p" >>"$t_tmp/http_b.txt" || true
done
check "/metrics answers" grep -q 'retry_attempts_total' "$t_tmp/http_a.txt"
curl -s "http://127.0.0.1:$port_a/metrics" >"$t_tmp/metrics_a.txt"
check_eq "/metrics stays well-formed after hostile input" "" \
  "$(grep -v -E '^(# (HELP|TYPE) .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+|[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? (NaN|[+-]Inf))$' "$t_tmp/metrics_a.txt" | head -3)"
check "the status page shows the errors escaped" grep -q '&lt;script&gt;\|retryq worker' "$t_tmp/http_b.txt"
check_eq "no router text reaches the status page as HTML" "" "$(grep -o '<script>alert\|<img src=x' "$t_tmp/http_b.txt" || true)"
check_eq "HTTP endpoints hold no secret" "" "$(leaks "$t_tmp/http_a.txt"; leaks "$t_tmp/http_b.txt")"
check_eq "the HTTP endpoint refuses POST" 405 \
  "$(curl -s -o /dev/null -w '%{http_code}' -d x "http://127.0.0.1:$port_a/metrics")"
# A 4 MiB payload of control characters once cost ~120 MiB (its dead entry, escaped to six
# times its size, copied three times); now the entry keeps 64 KiB of it. ASan doubles memory.
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$WA/status")
rss_max=$((96 * 1024))
grep -aq '__asan_init' "$RETRYQ_WORKER_BIN" && rss_max=$((256 * 1024))
echo "worker A peak RSS: ${rss_kb} kB (bound ${rss_max} kB)"
check "worker A peak memory stayed bounded" test "$rss_kb" -lt "$rss_max"

kill -TERM "$WA" "$WB"
set +e
wait "$WA"; rc_a=$?
wait "$WB"; rc_b=$?
set -e
check_eq "both workers stop with status 0 on SIGTERM" "0 0" "$rc_a $rc_b"
check_eq "worker logs hold no secret" "" "$(leaks "$t_tmp/worker_a.log"; leaks "$t_tmp/worker_b.log")"
check "worker logs are at debug level" grep -q 'level=debug' "$t_tmp/worker_a.log"
check_eq "nothing left for A" "0 0 0" "$(rcli LLEN "$QA") $(rcli ZCARD "{$QA}:delayed") $(held_keys "$QA" | wc -l)"
check_eq "nothing left for B" "0 0 0" "$(rcli LLEN "$QB") $(rcli ZCARD "{$QB}:delayed") $(held_keys "$QB" | wc -l)"
check_eq "no answer was dead-lettered" 0 "$(rcli LLEN "{$QB}:dead")"

answers=$(( ${#mock_modes[@]} + ${#stub_answers[@]} + 1 ))
echo "hostile: $pushed payloads ($dead_expected dead, $acked_expected stale-acked), $answers crafted router answers, 2 normal jobs"
t_finish
