# shellcheck shell=bash disable=SC2034,SC2317
# (SC2034: the R_*, C_*, P_* results are read by the sourcing script; SC2317: rcli is called by it)
# Shared by test/bench/run.sh and test/bench/peers/run.sh (sourced, not run).
#
# Private services (test/support/services.sh start/stop), the mock router, a fresh
# database per run seeded with N executions in 'retrying' (retry_count 1, a job spec with
# the runner's question ids), N jobs pushed in bulk, and one measured run of
# retryq-worker. Every wait has a deadline; every server listens on 127.0.0.1 only.

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$bench_dir/../.." && pwd)
BENCH_PY="$bench_dir/bench.py"
PYTHON=${PYTHON:-python3}

# ------------------------------------------------------------------ basics

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }
now_ns() { date +%s%N; }

# Polls a command until it succeeds or `seconds` pass.
wait_for() { # <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.05
  done
}

median() { "$PYTHON" "$BENCH_PY" median "$@"; }
pct() { "$PYTHON" "$BENCH_PY" pct "$1" "$2"; }
# Floating-point arithmetic: calc '<python expression>'
calc() { "$PYTHON" -c "v = ($1); print(('%.0f' % v) if abs(v) >= 1000 else ('%.4g' % v))"; }

# Release binaries: taken from RETRYQ_WORKER_BIN / RETRYQ_CLI / RETRYQ_MOCK_ROUTER_BIN
# when set (ctest sets them), else built into RETRYQ_BUILD_DIR (default build-release).
bench_binaries() {
  local build=${RETRYQ_BUILD_DIR:-$root/build-release}
  if [[ -z ${RETRYQ_WORKER_BIN:-} || -z ${RETRYQ_CLI:-} || -z ${RETRYQ_MOCK_ROUTER_BIN:-} ]]; then
    if [[ ! -x $build/retryq-worker || ! -x $build/retryq || ! -x $build/retryq-mock-router ]]; then
      note "building a Release build into $build"
      cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
      cmake --build "$build" -j "$(nproc)" --target retryq-worker retryq_cli retryq-mock-router >/dev/null
    fi
    RETRYQ_WORKER_BIN=${RETRYQ_WORKER_BIN:-$build/retryq-worker}
    RETRYQ_CLI=${RETRYQ_CLI:-$build/retryq}
    RETRYQ_MOCK_ROUTER_BIN=${RETRYQ_MOCK_ROUTER_BIN:-$build/retryq-mock-router}
  fi
  for b in "$RETRYQ_WORKER_BIN" "$RETRYQ_CLI" "$RETRYQ_MOCK_ROUTER_BIN"; do
    [[ -x $b ]] || die "$b is missing"
  done
  command -v redis-cli >/dev/null || die "redis-cli not found (scripts/deps.sh)"
  command -v psql >/dev/null || die "psql not found (scripts/deps.sh)"
  command -v pgbench >/dev/null || die "pgbench not found (postgresql-client, scripts/deps.sh)"
}

# A work dir, private Redis + PostgreSQL, and a trap that stops everything started here.
bench_work=""
bench_router_pid=""
bench_worker_pid=""
bench_at_exit=() # commands bench_cleanup runs first (eval'd), e.g. to undo a machine setting
bench_cleanup() {
  local rc=$? undo
  for undo in "${bench_at_exit[@]}"; do eval "$undo" || true; done
  [[ -n $bench_worker_pid ]] && kill -TERM "$bench_worker_pid" 2>/dev/null && wait "$bench_worker_pid" 2>/dev/null
  [[ -n $bench_router_pid ]] && kill -TERM "$bench_router_pid" 2>/dev/null && wait "$bench_router_pid" 2>/dev/null
  if [[ -n $bench_work ]]; then
    "$root/test/support/services.sh" stop "$bench_work/services" >/dev/null 2>&1 || true
    [[ -n ${RETRYQ_BENCH_KEEP:-} ]] || rm -rf "$bench_work"
  fi
  exit "$rc"
}

bench_start_services() {
  bench_work=$(mktemp -d "${TMPDIR:-/tmp}/retryq-bench.XXXXXX")
  chmod 755 "$bench_work"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  RETRYQ_SERVICES_WATCH_PID=$$ "$root/test/support/services.sh" start "$bench_work/services" >/dev/null
  # shellcheck disable=SC1091
  source "$bench_work/services/env"
  REDIS_URL=$RETRYQ_TEST_REDIS_URL
  rcli() { redis-cli -h 127.0.0.1 -p "$RETRYQ_TEST_REDIS_PORT" "$@"; }
}

# ------------------------------------------------------------------ mock router

router_start() { # <latency ms>
  local port_file="$bench_work/router.port"
  rm -f "$port_file"
  "$RETRYQ_MOCK_ROUTER_BIN" --listen 127.0.0.1:0 --port-file "$port_file" --latency-ms "$1" \
    --quiet &
  bench_router_pid=$!
  wait_for 10 test -s "$port_file" || die "the mock router did not start"
  ROUTER_URL="http://127.0.0.1:$(cat "$port_file")"
}

router_stop() {
  [[ -n $bench_router_pid ]] || return 0
  kill -TERM "$bench_router_pid" 2>/dev/null || true
  wait "$bench_router_pid" 2>/dev/null || true
  bench_router_pid=""
}

router_reset() { curl -sf -m 5 -X POST "$ROUTER_URL/reset" >/dev/null; }
router_requests() {
  curl -sf -m 10 "$ROUTER_URL/stats" |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])'
}

# ------------------------------------------------------------------ database and queue

sql() { psql "$DB" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# A fresh database: the runner's schema (the services' template) + retryq's migration.
bench_db_seq=0
db_fresh() { # <tag>; sets DB
  bench_db_seq=$((bench_db_seq + 1))
  local name="bench_${1}_$bench_db_seq"
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE \"$name\" TEMPLATE \"$RETRYQ_TEST_TEMPLATE_DB\"" >/dev/null
  DB="postgresql://retryq@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}/$name"
  "$RETRYQ_CLI" --database-url "$DB" migrate >/dev/null
}

db_drop() {
  local name=${DB##*/}
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
}

# One job whose spec lists the runner's eight question ids, and N executions in
# 'retrying' at retry_count 1 (one INSERT ... SELECT generate_series). Execution g asks
# question g % 8 in region g % 3.
db_seed() { # <n>
  sql -v n="$1" <<'SQL' >/dev/null
INSERT INTO jobs (jobspec_id, jobspec_data, status)
VALUES ('bench', jsonb_build_object(
  'id', 'bench', 'version', 'v1',
  'benchmark', jsonb_build_object('name', 'bias-detection', 'description', 'regional answer comparison',
    'container', jsonb_build_object('image', 'ghcr.io/example/benchmark:latest'),
    'input', jsonb_build_object('type', 'prompt', 'hash', 'sha256:bench')),
  'constraints', jsonb_build_object('regions', jsonb_build_array('us-east', 'eu-west', 'asia-pacific'),
    'min_regions', 3, 'timeout', 600),
  'models', jsonb_build_array('llama3.2-1b'),
  'questions', jsonb_build_array('tiananmen_neutral', 'taiwan_status', 'hongkong_2019',
    'greatest_invention', 'greatest_leader', 'math_basic', 'geography_basic', 'identity_basic'),
  'created_at', '2026-01-01T00:00:00Z'), 'completed');
INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at, output_data,
                        question_id, model_id, retry_count, last_retry_at, original_error)
SELECT (SELECT id FROM jobs WHERE jobspec_id = 'bench'), 'router',
       (ARRAY['us-east', 'eu-west', 'asia-pacific'])[g % 3 + 1], 'retrying',
       now() - interval '10 minutes', NULL, jsonb_build_object('error', 'provider unavailable'),
       (ARRAY['tiananmen_neutral', 'taiwan_status', 'hongkong_2019', 'greatest_invention',
              'greatest_leader', 'math_basic', 'geography_basic', 'identity_basic'])[g % 8 + 1],
       'llama3.2-1b', 1, now(), 'provider unavailable'
FROM generate_series(1, :n) AS g;
ANALYZE executions;
ANALYZE jobs;
SQL
}

# The jobs the runner would push, one JSON per line, oldest execution first.
db_payloads() {
  sql -c "SELECT json_build_object('execution_id', e.id, 'region', e.region,
                 'question_index', array_position(ARRAY(SELECT jsonb_array_elements_text(j.jobspec_data->'questions')), e.question_id) - 1,
                 'retry_attempt', e.retry_count)::text
          FROM executions e JOIN jobs j ON j.id = e.job_id ORDER BY e.id"
}

# LPUSHes every payload onto the queue, 1,000 per command, through redis-cli --pipe.
queue_fill() { # <queue>
  local out
  out=$(db_payloads | "$PYTHON" "$BENCH_PY" lpush "$1" 1000 | rcli --pipe 2>&1) ||
    die "redis-cli --pipe failed: $out"
  [[ $out == *"errors: 0,"* ]] || die "redis-cli --pipe reported errors: $out"
}

# Rows recorded exactly once: completed, one history entry.
db_completed() {
  sql -c "SELECT count(*) FROM executions WHERE status = 'completed' AND jsonb_array_length(retry_history) = 1"
}

# Seconds between the first and the last recorded outcome (completed_at = now() of the
# record statement's transaction).
db_span() {
  sql -c "SELECT extract(epoch FROM max(completed_at) - min(completed_at)) FROM executions WHERE status = 'completed'"
}

# ------------------------------------------------------------------ CPU of the neighbours

# CPU seconds (user + system, including reaped children) the mock router, Redis and
# PostgreSQL (postmaster, its live children, and the backends that already exited) have
# used so far: "router redis pg". Used around a run to split where the machine's CPU went.
services_cpu() {
  local hz pg_pid redis_pid
  hz=$(getconf CLK_TCK)
  pg_pid=$(head -n 1 "$bench_work/services/pg/postmaster.pid" 2>/dev/null || echo "")
  redis_pid=$(cat "$bench_work/services/redis/redis.pid" 2>/dev/null || echo "")
  ticks() { # <pid> [with children 0|1]
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    # fields after the ")" of the command name: utime is the 12th, stime 13th, cutime 14th, cstime 15th
    sed 's/^.*) //' "/proc/$1/stat" | awk -v c="${2:-1}" '{print $12 + $13 + (c ? $14 + $15 : 0)}'
  }
  local pg=0 child
  if [[ -n $pg_pid ]]; then
    pg=$(ticks "$pg_pid")
    for child in $(pgrep -P "$pg_pid" 2>/dev/null); do pg=$((pg + $(ticks "$child" 0))); done
  fi
  echo "$(calc "$(ticks "${bench_router_pid:-}") / $hz") $(calc "$(ticks "$redis_pid") / $hz") $(calc "$pg / $hz")"
}

# ------------------------------------------------------------------ one retryq run

# run_retryq <tag> <n> <concurrency>: a fresh database with N jobs queued, then
# retryq-worker --exit-when-idle at info level (each job.recorded line carries the job's
# pop-to-ack time). Sets R_* results; returns 1 when a correctness check failed.
run_retryq() {
  local tag=$1 n=$2 conc=$3
  db_fresh "$tag"
  db_seed "$n"
  rcli FLUSHALL >/dev/null
  queue_fill retry_queue
  run_worker "$tag" "$n" "$conc"
}

# run_worker <tag> <n> <concurrency>: the measured part of run_retryq on a database and a
# queue already prepared with N jobs (R_* results as above).
run_worker() {
  local tag=$1 n=$2 conc=$3 log tf t0 t1 stats
  router_reset
  log="$bench_work/worker-$tag-$bench_db_seq.log"
  tf="$bench_work/worker-$tag-$bench_db_seq.time"
  local cpu0 cpu1
  cpu0=$(services_cpu)
  t0=$(now_ns)
  (
    ulimit -n "$(ulimit -Hn)"
    exec timeout -s TERM "${RETRYQ_BENCH_TIMEOUT:-600}" "$PYTHON" "$BENCH_PY" rusage "$tf" \
      "$RETRYQ_WORKER_BIN" --redis-url "$REDIS_URL" --database-url "$DB" --router-url "$ROUTER_URL" \
      --concurrency "$conc" --db-pool "${RETRYQ_DB_POOL:-4}" --exit-when-idle --http-addr off \
      --log-level "${RETRYQ_BENCH_LOG_LEVEL:-info}"
  ) 2>"$log" || { note "retryq-worker failed; last lines:"; tail -n 5 "$log" >&2; return 1; }
  t1=$(now_ns)
  cpu1=$(services_cpu)
  R_PROCESS_S=$(calc "($t1 - $t0) / 1e9")
  read -r _ R_USER R_SYS R_RSS_KB <"$tf"
  R_CPU_WORKER=$(calc "$R_USER + $R_SYS")
  local a b
  read -r -a a <<<"$cpu0"
  read -r -a b <<<"$cpu1"
  R_CPU_ROUTER=$(calc "${b[0]} - ${a[0]}") R_CPU_REDIS=$(calc "${b[1]} - ${a[1]}") R_CPU_PG=$(calc "${b[2]} - ${a[2]}")
  stats=$("$PYTHON" "$BENCH_PY" logstats "$log")
  R_ROUTER_CALLS=$(router_requests)
  R_COMPLETED=$(db_completed)
  R_SPAN_S=$(db_span)
  local first last
  first=$(jq_get "$stats" first_taken_ms)
  last=$(jq_get "$stats" last_recorded_ms)
  R_WALL_S=$(calc "($last - $first) / 1000")
  R_JOBS_S=$(calc "$n / (($last - $first) / 1000)")
  R_P50=$(jq_get "$stats" p50_ms)
  R_P99=$(jq_get "$stats" p99_ms)
  R_CPU_PER_1K=$(calc "($R_USER + $R_SYS) * 1000 / $n")
  R_RSS_MB=$(calc "$R_RSS_KB / 1024")
  R_SAMPLE_OUTPUT=$(sql -c "SELECT output_data::text FROM executions WHERE status = 'completed' ORDER BY id LIMIT 1")
  R_SAMPLE_HISTORY=$(sql -c "SELECT (retry_history->0)::text FROM executions WHERE status = 'completed' ORDER BY id LIMIT 1")
  R_SAMPLE_PROVIDER=$(sql -c "SELECT provider_id FROM executions WHERE status = 'completed' ORDER BY id LIMIT 1")
  local ok=0
  [[ $R_ROUTER_CALLS == "$n" ]] || { note "router calls $R_ROUTER_CALLS != $n"; ok=1; }
  [[ $R_COMPLETED == "$n" ]] || { note "completed rows $R_COMPLETED != $n"; ok=1; }
  [[ $(rcli LLEN retry_queue) == 0 ]] || { note "queue not empty after the run"; ok=1; }
  return $ok
}

jq_get() { # <json> <key>
  "$PYTHON" -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print("-" if v is None else v)' "$1" "$2"
}

# ------------------------------------------------------------------ the ceiling

# pgbench on a fresh database seeded the same way: per transaction, the worker's load
# query (JOB_SQL_LOAD) then its guarded outcome UPDATE (JOB_SQL_RECORD), both as prepared
# statements with the worker's parameters, at the worker's pool size. Each client walks
# its own ids (client_id + 1 + k * clients), so every guard passes exactly once, as in
# the worker. Sets C_TPS.
run_ceiling() { # <tag> <n> <clients>
  local tag=$1 n=$2 clients=$3 script out
  db_fresh "$tag"
  db_seed "$n"
  script="$bench_work/ceiling.sql"
  cat >"$script" <<'SQL'
\set k :k + 1
\set id :client_id + 1 + (:k - 1) * :clients
SELECT e.region, e.status, e.retry_count, e.question_id, e.model_id, j.jobspec_data::text, e.job_id FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = :id;
UPDATE executions SET status = :status, output_data = :output::jsonb, provider_id = COALESCE(:provider, provider_id), completed_at = now(), original_error = COALESCE(original_error, NULL), retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array(:history::jsonb) WHERE id = :id AND status = 'retrying' AND retry_count = :attempt RETURNING id;
SQL
  out=$(timeout -s TERM 600 pgbench -n -M prepared -c "$clients" -j 1 -t $((n / clients)) \
    -D k=0 -D clients="$clients" -D attempt=1 -D status=completed \
    -D provider="${R_SAMPLE_PROVIDER:-golem-eu}" \
    -D output="${R_SAMPLE_OUTPUT:-{\}}" -D history="${R_SAMPLE_HISTORY:-{\}}" \
    -f "$script" "$DB" 2>&1) || { note "pgbench failed: $out"; return 1; }
  C_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
  [[ -n $C_TPS ]] || { note "no tps in pgbench output: $out"; return 1; }
  C_TPS=$(calc "$C_TPS")
  C_COMPLETED=$(db_completed)
  [[ $C_COMPLETED == $(((n / clients) * clients)) ]] ||
    { note "pgbench recorded $C_COMPLETED rows, expected $(((n / clients) * clients))"; return 1; }
  db_drop
}
