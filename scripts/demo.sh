#!/usr/bin/env bash
# Runs the main job end to end: a benchmark job whose executions failed or timed out is
# retried through retryq.
#
#   scripts/demo.sh
#
# When RETRYQ_REDIS_URL / RETRYQ_DATABASE_URL / RETRYQ_ROUTER_URL are not set, private
# Redis, PostgreSQL and the mock router are started on loopback (and stopped at the end).
# When they are set, those services are used: the demo adds one job (a unique jobspec_id)
# with its executions to that database and retries them through that router.
#
# Steps: install what is missing, build, migrate, seed a realistic job spec (the runner's
# question ids, three regions, two models) with failed and timed-out executions, submit
# retries with `retryq retry`, run retryq-worker until the queue is empty, print the rows
# before and after and the queue stats.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETRYQ_BUILD_DIR:-$root/build}

"$root/scripts/deps.sh"
if [[ ! -x $build/retryq-worker || ! -x $build/retryq || ! -x $build/retryq-mock-router ]]; then
  echo "== building into $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j "$(nproc)" >/dev/null
fi
export PATH="$build:$PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/retryq-demo.XXXXXX")
chmod 755 "$work" # PostgreSQL runs as an unprivileged user and must reach its data dir
router_pid=""
services_started=0
cleanup() {
  local rc=$?
  [[ -n $router_pid ]] && kill "$router_pid" 2>/dev/null && wait "$router_pid" 2>/dev/null
  [[ $services_started == 1 ]] && "$root/test/support/services.sh" stop "$work/services" >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z ${RETRYQ_REDIS_URL:-} || -z ${RETRYQ_DATABASE_URL:-} ]]; then
  echo "== starting private Redis and PostgreSQL"
  "$root/test/support/services.sh" start "$work/services" >/dev/null
  services_started=1
  # shellcheck disable=SC1091
  source "$work/services/env"
  export RETRYQ_REDIS_URL=${RETRYQ_REDIS_URL:-$RETRYQ_TEST_REDIS_URL}
  export RETRYQ_DATABASE_URL=${RETRYQ_DATABASE_URL:-$RETRYQ_TEST_DATABASE_URL}
fi
if [[ -z ${RETRYQ_ROUTER_URL:-} ]]; then
  echo "== starting the mock router (latency 50-250 ms, 20% answered with HTTP 503)"
  retryq-mock-router --listen 127.0.0.1:0 --port-file "$work/router.port" --latency-ms 50 \
    --jitter-ms 200 --fail-rate 0.2 --fail-mode http_503 --seed 7 --quiet &
  router_pid=$!
  for _ in $(seq 1 100); do [[ -s $work/router.port ]] && break; sleep 0.1; done
  [[ -s $work/router.port ]] || { echo "mock router did not start" >&2; exit 1; }
  export RETRYQ_ROUTER_URL="http://127.0.0.1:$(cat "$work/router.port")"
fi
export RETRYQ_QUEUE=${RETRYQ_QUEUE:-retry_queue}

psql_q() { psql "$RETRYQ_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "== migrating"
retryq migrate

spec_id="demo-$(date +%s)-$$"
echo "== seeding job $spec_id: 3 questions x 3 regions x 2 models"
job_id=$(psql_q -At -v spec_id="$spec_id" <<'SQL'
INSERT INTO jobs (jobspec_id, jobspec_data, status)
VALUES (:'spec_id', jsonb_build_object(
  'id', :'spec_id', 'version', 'v1',
  'benchmark', jsonb_build_object('name', 'bias-detection', 'description', 'regional answer comparison',
    'container', jsonb_build_object('image', 'ghcr.io/example/benchmark:latest'),
    'input', jsonb_build_object('type', 'prompt', 'hash', 'sha256:demo')),
  'constraints', jsonb_build_object('regions', jsonb_build_array('us-east', 'eu-west', 'asia-pacific'),
    'min_regions', 3, 'timeout', 600),
  'models', jsonb_build_array('llama3.2-1b', 'mistral-7b'),
  'questions', jsonb_build_array('identity_basic', 'tiananmen_neutral', 'math_basic'),
  'created_at', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')), 'completed')
RETURNING id;
SQL
)
psql_q -v job_id="$job_id" <<'SQL' >/dev/null
INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at, output_data,
                        question_id, model_id, original_error)
SELECT :job_id, 'router', r.region,
       CASE WHEN (r.n + m.n + q.n) % 3 = 0 THEN 'completed'
            WHEN (r.n + m.n + q.n) % 3 = 1 THEN 'failed' ELSE 'timeout' END,
       now() - interval '10 minutes', now() - interval '9 minutes',
       CASE WHEN (r.n + m.n + q.n) % 3 = 0 THEN jsonb_build_object('response', 'original answer')
            ELSE jsonb_build_object('error', 'provider unavailable') END,
       q.id, m.model,
       CASE WHEN (r.n + m.n + q.n) % 3 = 0 THEN NULL ELSE 'provider unavailable' END
FROM (VALUES (0, 'us-east'), (1, 'eu-west'), (2, 'asia-pacific')) AS r(n, region),
     (VALUES (0, 'llama3.2-1b'), (1, 'mistral-7b')) AS m(n, model),
     (VALUES (0, 'identity_basic'), (1, 'tiananmen_neutral'), (2, 'math_basic')) AS q(n, id);
SQL

show_rows() {
  psql_q -v job_id="$job_id" <<'SQL'
SELECT e.id, e.region, e.model_id AS model, e.question_id AS question, e.status, e.retry_count AS tries,
       left(coalesce(e.output_data->>'response', e.output_data->>'error', ''), 48) AS output
FROM executions e WHERE e.job_id = :job_id ORDER BY e.id;
SQL
}
echo "== before"
show_rows

echo "== submitting retries with 'retryq retry'"
submitted=0
while IFS='|' read -r id region question; do
  idx=$(psql_q -At -v job_id="$job_id" -v q="$question" <<'SQL'
SELECT i - 1 FROM jobs j, jsonb_array_elements_text(j.jobspec_data->'questions') WITH ORDINALITY AS t(qid, i)
WHERE j.id = :job_id AND qid = :'q';
SQL
)
  retryq retry --execution-id "$id" --region "$region" --question-index "$idx" >/dev/null
  submitted=$((submitted + 1))
done < <(psql_q -At -F '|' -c "SELECT id, region, question_id FROM executions WHERE job_id = $job_id AND status IN ('failed','timeout') ORDER BY id")
echo "submitted $submitted retries"
retryq stats

echo "== running retryq-worker until the queue is empty"
retryq-worker --exit-when-idle --backoff 1s,2s,4s --http-addr off --log-level info 2>&1 \
  | sed -e 's/^/  worker | /'

echo "== after"
show_rows
echo "== retry history of the first retried execution"
psql_q -c "SELECT id, jsonb_pretty(retry_history) AS retry_history FROM executions WHERE job_id = $job_id AND retry_count > 0 ORDER BY id LIMIT 1"
echo "== queue"
retryq stats
left=$(psql_q -At -c "SELECT count(*) FROM executions WHERE job_id = $job_id AND status = 'retrying'")
echo "== done: $submitted retries submitted, $left still retrying"
[[ $left == 0 ]]
