#!/usr/bin/env bash
# The status page's Retry sets section: a set the worker finishes (its name written as
# markup) and a set whose jobs went to another queue (so it stays open) are listed, the
# open one first, each with the counts `retryq sets --json` reports, a progress bar and an
# ETA ("done" for the finished one, unknown for the one with no outcome in the last
# minute); checked in the HTML as served and as headless Chromium renders it. A worker
# whose database lacks retry sets (before `retryq migrate` 0013) says so instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"

worker_test_setup ssets
start_router --latency-ms 5
bank="$t_tmp/bank.json"
echo '{"ok_q": "What is 2+2?", "bad_q": "[mock:http_400] Who are you?"}' >"$bank"
job_a=$(insert_job '{"id":"sets-page-a","questions":["ok_q","bad_q"]}')
job_b=$(insert_job '{"id":"sets-page-b","questions":["ok_q"]}')
# Runner-shaped failures: the error in output_data, original_error NULL, max_retries 3.
seed() { # <job id> <count> <question>
  sql -v job="$1" -v n="$2" -v q="$3" <<'SQL'
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        max_retries, output_data, started_at, completed_at)
SELECT :job, 'modal-us-east', 'us-east', 'failed', :'q', 'llama3.2-1b', 0, 3,
       '{"error":"hybrid error: HTTP 503","error_code":"ROUTER_HTTP_503"}'::jsonb,
       localtimestamp - interval '1 hour', localtimestamp - interval '1 hour'
  FROM generate_series(1, :n);
SQL
}
seed "$job_a" 15 ok_q
seed "$job_a" 5 bad_q
seed "$job_b" 8 ok_q
spec() { sql -c "SELECT jobspec_id FROM jobs WHERE id = $1"; }
NAME_A='<b>nightly</b> & "x"'
set_a=$("$RETRYQ_CLI" retry --job "$(spec "$job_a")" --name "$NAME_A" --json | json 'd["set_id"]')
set_b=$(RETRYQ_QUEUE="${Q}_elsewhere" "$RETRYQ_CLI" retry --job "$(spec "$job_b")" --name open-set --json |
  json 'd["set_id"]')

PORT=$(free_port)
URL="http://127.0.0.1:$PORT/"
"$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --question-bank "$bank" --http-addr "127.0.0.1:$PORT" \
  >"$t_tmp/worker.log" 2>&1 &
t_pids+=("$!")

# The rows the section shows, as "id name percent total open completed failed cancelled eta"
# per set in page order (python's html.parser over the served or the rendered page).
rows_of() { # <page.html>
  python3 - "$1" <<'PY'
import html.parser, sys
class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.row, self.cell, self.text, self.bar = [], None, None, [], None
    def handle_starttag(self, tag, a):
        a = dict(a)
        cls = (a.get("class") or "").split()
        if tag == "tr" and "set" in cls:
            self.row = {}
        if self.row is not None and tag == "progress":
            self.row["bar"] = a.get("value")
        if self.row is not None and tag in ("td", "span") and cls:
            self.cell, self.text = cls, []
    def handle_endtag(self, tag):
        if self.row is not None and tag in ("td", "span") and self.cell is not None:
            for c in self.cell:
                self.row.setdefault(c, "".join(self.text).strip())
            self.cell = None
        if tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
    def handle_data(self, d):
        if self.cell is not None:
            self.text.append(d)
p = Page()
p.feed(open(sys.argv[1], encoding="utf-8").read())
for r in p.rows:
    print("|".join([r.get(k, "?") for k in ("set-id", "set-name", "set-percent", "bar", "set-total", "set-open",
                                          "set-completed", "set-failed", "set-cancelled", "set-eta")]))
PY
}
# The same rows from `retryq sets --json` (what the page must agree with).
want_rows() {
  "$RETRYQ_CLI" sets --json | python3 -c "
import json, sys
sets = {s['id']: s for s in json.load(sys.stdin)}
for i in ($set_b, $set_a):
    s, p = sets[i], sets[i]['progress']
    eta = 'done' if p['open'] == 0 else ('unknown (no outcome in the last minute)' if p['eta_seconds'] is None else '?')
    pct = '%.1f' % p['percent']
    print('|'.join(str(x) for x in (i, s['name'], pct, pct, p['total'], p['open'], p['completed'], p['failed'], p['cancelled'], eta)))"
}
settled() {
  curl -fsS --max-time 5 "$URL" >"$t_tmp/page.html" 2>/dev/null || return 1
  rows_of "$t_tmp/page.html" >"$t_tmp/shown"
  want_rows >"$t_tmp/want"
  grep -q "^$set_a|.*|done$" "$t_tmp/shown" && cmp -s "$t_tmp/shown" "$t_tmp/want"
}
if ! wait_for 60 settled; then
  echo "the section never matched retryq sets --json:"; echo "shown:"; cat "$t_tmp/shown"; echo "want:"; cat "$t_tmp/want"
fi
check "the served section lists the open set first, then the finished one, as 'retryq sets --json' counts them" \
  cmp -s "$t_tmp/shown" "$t_tmp/want"
check_eq "the finished set: 20 members, 15 completed, 5 failed, done" "$set_a|$NAME_A|100.0|100.0|20|0|15|5|0|done" \
  "$(grep "^$set_a|" "$t_tmp/shown")"
check_eq "the open set: 8 open, 0 %, ETA unknown" "$set_b|open-set|0.0|0.0|8|8|0|0|0|unknown (no outcome in the last minute)" \
  "$(grep "^$set_b|" "$t_tmp/shown")"
check "the set's name is escaped in the served bytes" grep -qF '&lt;b&gt;nightly&lt;/b&gt; &amp; &quot;x&quot;' "$t_tmp/page.html"

if [[ -z $(chrome_bin) ]]; then
  echo "FAIL - chromium is not installed (scripts/deps.sh installs it)"; t_failed=$((t_failed + 1))
else
  chrome_run --dump-dom "$URL" >"$t_tmp/dom.html" || true
  rows_of "$t_tmp/dom.html" >"$t_tmp/rendered"
  check "chromium renders the same rows" cmp -s "$t_tmp/rendered" "$t_tmp/want"
  [[ -s $t_tmp/rendered ]] || { echo "rendered:"; head -c 2000 "$t_tmp/dom.html"; }
  check "no element was injected by the name" bash -c "! grep -q '<b>nightly</b>' '$t_tmp/dom.html'"
fi

# A database without retry sets (0013 taken back by its down migration): the page says
# what to run.
db_a=$DB
new_database
sql -f "$RETRYQ_SOURCE_DIR/sql/migrations/0013_retry_sets.down.sql" >/dev/null
DB2=$DB DB=$db_a
PORT2=$(free_port)
RETRYQ_DATABASE_URL=$DB2 "$RETRYQ_WORKER_BIN" --router-url "$ROUTER_URL" --question-bank "$bank" \
  --http-addr "127.0.0.1:$PORT2" --queue "${Q}_2" >"$t_tmp/worker2.log" 2>&1 &
t_pids+=("$!")
unavailable() { curl -fsS --max-time 5 "http://127.0.0.1:$PORT2/" 2>/dev/null | grep -q 'id="sets-unavailable">This database has no retry sets yet'; }
check "a database without retry sets: the page says to run retryq migrate" wait_for 30 unavailable
t_finish
