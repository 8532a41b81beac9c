#!/usr/bin/env bash
# The retry by filter's benchmark (issue 15): `retryq retry --job bench` over N failed
# executions, private services on loopback, figures printed (not a timed test).
#
#   test/bench/bulk.sh                 N = 100,000, chunks of 500, 3 rounds, medians
#   test/bench/bulk.sh --quick         N = 5,000, 1 round
#   test/bench/bulk.sh --n N --runs K --chunks 100,500,2000
#
# Each round: a fresh database seeded with N runner-shaped failed rows (one job, 3 regions,
# 3 models, the failure in output_data, original_error NULL) and ANALYZEd; then, timed
# with wait4's rusage of the CLI process (bench.py rusage):
#   dry run   `retryq retry --job bench --dry-run --json`: rows/s, peak RSS
#   submit    `retryq retry --job bench --json`: rows/s (N / wall), peak RSS, CLI CPU,
#             PostgreSQL CPU; checked: N retried and queued, N jobs in Redis, N members
#   show      `retryq sets show ID --json` on the N-member set: wall
# Binaries as test/bench/run.sh takes them (RETRYQ_CLI, else a Release build in
# RETRYQ_BUILD_DIR, default build-release/).
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "$0")/lib.sh"

n=100000 runs=3 chunks=500
while (($# > 0)); do
  case $1 in
    --quick) n=5000; runs=1 ;;
    --n) n=$2; shift ;;
    --runs) runs=$2; shift ;;
    --chunks) chunks=$2; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

bench_binaries
bench_start_services
echo "retryq bulk retry benchmark: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ), N=$n, $("$RETRYQ_CLI" --version)"

# N failed executions of one job, as the runner leaves them.
seed_failed() { # <n>
  sql -v n="$1" <<'SQL' >/dev/null
INSERT INTO jobs (jobspec_id, jobspec_data, status)
VALUES ('bench', jsonb_build_object('id', 'bench', 'version', 'v1',
  'models', jsonb_build_array('llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b'),
  'questions', jsonb_build_array('tiananmen_neutral', 'taiwan_status', 'hongkong_2019',
    'greatest_invention', 'greatest_leader', 'math_basic', 'geography_basic', 'identity_basic')), 'completed');
INSERT INTO executions (job_id, provider_id, region, status, started_at, completed_at, output_data,
                        question_id, model_id)
SELECT (SELECT id FROM jobs WHERE jobspec_id = 'bench'), 'modal-us-east',
       (ARRAY['us-east', 'eu-west', 'asia-pacific'])[g % 3 + 1], (ARRAY['failed', 'timeout', 'error'])[g % 3 + 1],
       localtimestamp - interval '2 hours', localtimestamp - interval '1 hour',
       jsonb_build_object('error', 'hybrid error: context deadline exceeded', 'error_code', 'ROUTER_TIMEOUT',
         'failure', jsonb_build_object('stage', 'router_http_timeout', 'component', 'hybrid_router',
           'subcomponent', 'inference', 'code', 'ROUTER_TIMEOUT', 'type', 'timeout', 'transient', true)),
       (ARRAY['tiananmen_neutral', 'taiwan_status', 'hongkong_2019', 'greatest_invention',
              'greatest_leader', 'math_basic', 'geography_basic', 'identity_basic'])[g % 8 + 1],
       (ARRAY['llama3.2-1b', 'mistral-7b', 'qwen2.5-1.5b'])[g / 3 % 3 + 1]
FROM generate_series(1, :n) AS g;
ANALYZE executions;
ANALYZE jobs;
SQL
}

# timed <tag> <retryq args...>: runs the CLI under rusage; sets T_WALL T_CPU T_RSS_MB T_OUT.
timed() {
  local tag=$1 tf="$bench_work/$1.time"; shift
  T_OUT=$("$PYTHON" "$BENCH_PY" rusage "$tf" "$RETRYQ_CLI" --database-url "$DB" --redis-url "$REDIS_URL" \
    --queue bulk "$@" 2>"$bench_work/$tag.err") || die "$tag: retryq $* failed: $(tail -n 3 "$bench_work/$tag.err")"
  local user sys rss
  read -r T_WALL user sys rss <"$tf"
  T_CPU=$(calc "$user + $sys")
  T_RSS_MB=$(calc "$rss / 1024")
}

field() { "$PYTHON" -c "import json,sys; print(json.loads(sys.argv[1])$2)" "$1"; }

failed=0
IFS=',' read -r -a chunk_list <<<"$chunks"
for chunk in "${chunk_list[@]}"; do
  echo
  echo "== N=$n, chunks of $chunk"
  printf '%-5s %11s %8s %11s %8s %8s %8s %9s %8s\n' run dry_rows/s dry_MB submit_s rows/s rss_MB cli_cpu_s pg_cpu_s show_s
  d_rate=() d_rss=() s_wall=() s_rate=() s_rss=() s_cpu=() s_pg=() s_show=()
  for ((r = 1; r <= runs; r++)); do
    db_fresh bulk
    seed_failed "$n"
    rcli FLUSHALL >/dev/null
    timed dry retry --job bench --chunk "$chunk" --dry-run --json
    dry_rate=$(calc "$n / $T_WALL") dry_rss=$T_RSS_MB
    [[ $(field "$T_OUT" '["retried"]') == "$n" ]] || { note "dry run: not $n retryable"; failed=1; }
    pg0=$(services_cpu)
    timed submit retry --job bench --chunk "$chunk" --json
    pg1=$(services_cpu)
    read -r -a a <<<"$pg0"
    read -r -a b <<<"$pg1"
    sub_wall=$T_WALL sub_rss=$T_RSS_MB sub_cpu=$T_CPU sub_pg=$(calc "${b[2]} - ${a[2]}")
    set_id=$(field "$T_OUT" '["set_id"]')
    if [[ $(field "$T_OUT" '["queued"]') != "$n" || $(rcli LLEN bulk) != "$n" ||
      $(sql -c "SELECT count(*) FROM retryq_set_members WHERE set_id = $set_id") != "$n" ||
      $(sql -c "SELECT count(*) FROM executions WHERE status = 'retrying' AND retry_count = 1") != "$n" ]]; then
      note "submit: not every row retried, queued and recorded once"; failed=1
    fi
    timed show sets show "$set_id" --json
    show_wall=$T_WALL
    printf '%-5s %11s %8s %11s %8s %8s %8s %9s %8s\n' "$r" "$dry_rate" "$dry_rss" "$sub_wall" \
      "$(calc "$n / $sub_wall")" "$sub_rss" "$sub_cpu" "$sub_pg" "$show_wall"
    d_rate+=("$dry_rate") d_rss+=("$dry_rss") s_wall+=("$sub_wall") s_rate+=("$(calc "$n / $sub_wall")")
    s_rss+=("$sub_rss") s_cpu+=("$sub_cpu") s_pg+=("$sub_pg") s_show+=("$show_wall")
    db_drop
  done
  printf '%-5s %11s %8s %11s %8s %8s %8s %9s %8s\n' median "$(median "${d_rate[@]}")" "$(median "${d_rss[@]}")" \
    "$(median "${s_wall[@]}")" "$(median "${s_rate[@]}")" "$(median "${s_rss[@]}")" "$(median "${s_cpu[@]}")" \
    "$(median "${s_pg[@]}")" "$(median "${s_show[@]}")"
done
((failed == 0)) || { echo "a correctness check failed"; exit 1; }
