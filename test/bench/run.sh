#!/usr/bin/env bash
# retryq's benchmark: one command, private services on loopback, figures printed.
#
#   test/bench/run.sh                 overhead + ceiling + scale + idle, 3 rounds, medians
#   test/bench/run.sh --quick         small N, 1 round (the ctest smoke test, < 60 s)
#   test/bench/run.sh --peers         also BullMQ and RQ doing the same job (peers/run.sh)
#   test/bench/run.sh --mode backlog [backlog.sh options]
#                                     cost as the queue grows: 10k, 100k, 1M queued
#                                     (backlog.sh --help)
#   test/bench/run.sh --mode ack [ack.py options]
#                                     what one ack costs Redis with 64 to 100,000 jobs
#                                     held by a worker: a list (LREM) vs the taken hash
#
# Options: --mode overhead|scale|idle|all   --runs K   --n N   --concurrency C
#          --scale-n N   --scale-concurrency C   --scale-latency-ms MS   --idle-s S
#          --check-targets (exit 1 when a target is missed; correctness always counts)
#
# Modes:
#   overhead  router answers at once; N = 20,000 jobs, concurrency 64. jobs/s, pop-to-ack
#             p50/p99, worker CPU s per 1,000 jobs, peak RSS, router calls (must be N).
#             Followed in the same round by the ceiling: pgbench doing the worker's load
#             query + guarded UPDATE at the worker's pool size (RETRYQ_DB_POOL, default 4).
#   scale     router latency 2 s, 10,000 jobs at --concurrency 10000 (all in flight at
#             once): wall time vs N / concurrency x latency, peak RSS.
#   idle      a worker on an empty queue for 10 s: CPU time and wake-ups.
#
# How each figure is measured is in docs/performance.md. Binaries: RETRYQ_WORKER_BIN,
# RETRYQ_CLI, RETRYQ_MOCK_ROUTER_BIN, else a Release build in RETRYQ_BUILD_DIR
# (default build-release/). Every run is bounded (timeout) and every server is on
# 127.0.0.1.
set -euo pipefail
if [[ ${1:-} == --mode && ${2:-} == backlog ]]; then
  shift 2
  exec bash "$(dirname "$0")/backlog.sh" "$@"
fi
if [[ ${1:-} == --mode && ${2:-} == ack ]]; then
  shift 2
  exec python3 "$(dirname "$0")/ack.py" "$@"
fi
# shellcheck source=test/bench/lib.sh
source "$(dirname "$0")/lib.sh"

mode=all runs=3 n=20000 conc=64 scale_n=10000 scale_conc=10000 scale_lat=2000 idle_s=10
peers=0 check_targets=0
while (($# > 0)); do
  case $1 in
    --quick) runs=1; n=2000; scale_n=1000; scale_conc=1000; scale_lat=500; idle_s=2 ;;
    --mode) mode=$2; shift ;;
    --runs) runs=$2; shift ;;
    --n) n=$2; shift ;;
    --concurrency) conc=$2; shift ;;
    --scale-n) scale_n=$2; shift ;;
    --scale-concurrency) scale_conc=$2; shift ;;
    --scale-latency-ms) scale_lat=$2; shift ;;
    --idle-s) idle_s=$2; shift ;;
    --peers) peers=1 ;;
    --check-targets) check_targets=1 ;;
    -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case $mode in overhead | scale | idle | all) ;; *) die "--mode: overhead, scale, idle or all" ;; esac
pool=${RETRYQ_DB_POOL:-4}

bench_binaries
bench_start_services
failed=0
missed=()

echo "retryq benchmark: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ), worker $("$RETRYQ_WORKER_BIN" --version 2>/dev/null | head -n1)"

# ------------------------------------------------------------------ overhead + ceiling
if [[ $mode == overhead || $mode == all ]]; then
  echo
  echo "== overhead: N=$n, concurrency $conc, router answers at once, db pool $pool; ceiling: pgbench -c $pool"
  printf '%-5s %9s %8s %8s %11s %8s %8s %11s %9s   %s\n' run jobs/s p50_ms p99_ms cpu_s/1k rss_MB calls pgbench_tps %ceiling \
    "CPU s: worker router postgres redis"
  router_start 0
  o_jobs=() o_p50=() o_p99=() o_cpu=() o_rss=() o_ceil=() o_ratio=()
  for ((r = 1; r <= runs; r++)); do
    if ! run_retryq overhead "$n" "$conc"; then failed=1; fi
    db_drop
    C_TPS=-
    ratio=-
    if run_ceiling ceiling "$n" "$pool"; then ratio=$(pct "$R_JOBS_S" "$C_TPS"); else failed=1; fi
    printf '%-5s %9s %8s %8s %11s %8s %8s %11s %9s   %s %s %s %s\n' "$r" "$R_JOBS_S" "$R_P50" "$R_P99" \
      "$R_CPU_PER_1K" "$R_RSS_MB" "$R_ROUTER_CALLS" "$C_TPS" "$ratio" "$R_CPU_WORKER" "$R_CPU_ROUTER" \
      "$R_CPU_PG" "$R_CPU_REDIS"
    o_jobs+=("$R_JOBS_S") o_p50+=("$R_P50") o_p99+=("$R_P99") o_cpu+=("$R_CPU_PER_1K")
    o_rss+=("$R_RSS_MB") o_ceil+=("$C_TPS") o_ratio+=("$ratio")
  done
  router_stop
  m_ratio=$(median "${o_ratio[@]}")
  printf '%-5s %9s %8s %8s %11s %8s %8s %11s %9s\n' median "$(median "${o_jobs[@]}")" \
    "$(median "${o_p50[@]}")" "$(median "${o_p99[@]}")" "$(median "${o_cpu[@]}")" \
    "$(median "${o_rss[@]}")" "-" "$(median "${o_ceil[@]}")" "$m_ratio"
  if [[ $m_ratio != - ]] && (($(calc "1 if $m_ratio >= 70 else 0") == 1)); then
    echo "target >= 70% of the pgbench ceiling: met ($m_ratio%)"
  else
    echo "target >= 70% of the pgbench ceiling: NOT met ($m_ratio%)"; missed+=(ceiling)
  fi
fi

# ------------------------------------------------------------------ scale
if [[ $mode == scale || $mode == all ]]; then
  ideal=$(calc "$scale_n / $scale_conc * $scale_lat / 1000")
  echo
  echo "== scale: N=$scale_n, concurrency $scale_conc, router latency ${scale_lat} ms (ideal wall ${ideal} s)"
  printf '%-5s %8s %9s %9s %8s %8s %8s %9s   %s\n' run wall_s x_ideal process_s rss_MB p50_ms p99_ms calls \
    "CPU s: worker router postgres redis"
  router_start "$scale_lat"
  s_wall=() s_rss=() s_x=() s_cpu=()
  for ((r = 1; r <= runs; r++)); do
    if ! run_retryq scale "$scale_n" "$scale_conc"; then failed=1; fi
    db_drop
    x=$(calc "$R_WALL_S / $ideal")
    printf '%-5s %8s %9s %9s %8s %8s %8s %9s   %s %s %s %s\n' "$r" "$R_WALL_S" "$x" "$R_PROCESS_S" \
      "$R_RSS_MB" "$R_P50" "$R_P99" "$R_ROUTER_CALLS" "$R_CPU_WORKER" "$R_CPU_ROUTER" "$R_CPU_PG" \
      "$R_CPU_REDIS"
    s_wall+=("$R_WALL_S") s_rss+=("$R_RSS_MB") s_x+=("$x")
    s_cpu+=("$(calc "$R_CPU_WORKER + $R_CPU_ROUTER + $R_CPU_PG + $R_CPU_REDIS")")
  done
  router_stop
  m_x=$(median "${s_x[@]}") m_rss=$(median "${s_rss[@]}")
  printf '%-5s %8s %9s %9s %8s\n' median "$(median "${s_wall[@]}")" "$m_x" - "$m_rss"
  # Where the machine's CPU went: each job costs CPU in the worker, the mock router,
  # PostgreSQL and Redis, about half of it before its router call starts (pop, load,
  # request, connect; accept and parse; the load) and half after. The last call cannot
  # start before every job's first half has run on the machine's cores, so the wall time
  # is at least latency + (CPU of all four) / 2 / cores.
  m_cpu=$(median "${s_cpu[@]}")
  echo "CPU per job (worker + router + PostgreSQL + Redis, median): $(calc "$m_cpu * 1e6 / $scale_n") us;" \
    "CPU-bound estimate: ${scale_lat} ms + N x CPU / 2 / $(nproc) cores =" \
    "$(calc "$scale_lat / 1000 + $m_cpu / 2 / $(nproc)") s = $(calc "($scale_lat / 1000 + $m_cpu / 2 / $(nproc)) / $ideal") x ideal"
  if (($(calc "1 if $m_x <= 1.15 else 0") == 1)); then
    echo "target wall <= 1.15 x ideal: met (${m_x} x)"
  else
    echo "target wall <= 1.15 x ideal: NOT met (${m_x} x)"; missed+=(scale-wall)
  fi
  if (($(calc "1 if $m_rss <= 150 else 0") == 1)); then
    echo "target peak RSS <= 150 MB at $scale_conc in flight: met (${m_rss} MB)"
  else
    echo "target peak RSS <= 150 MB at $scale_conc in flight: NOT met (${m_rss} MB)"; missed+=(scale-rss)
  fi
fi

# ------------------------------------------------------------------ idle
if [[ $mode == idle || $mode == all ]]; then
  echo
  echo "== idle: a worker on an empty queue for ${idle_s} s"
  router_start 0
  db_fresh idle
  rcli FLUSHALL >/dev/null
  log="$bench_work/worker-idle.log"
  "$RETRYQ_WORKER_BIN" --redis-url "$REDIS_URL" --database-url "$DB" --router-url "$ROUTER_URL" \
    --http-addr off --log-level info 2>"$log" &
  bench_worker_pid=$!
  wait_for 20 grep -q 'event=worker.ready' "$log" || die "the idle worker did not become ready"
  sleep 1 # let start-up work (INFO, first heartbeat) finish before the window opens
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$bench_worker_pid/stat"; }
  switches() { awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/ {s += $2} END {print s}' "/proc/$bench_worker_pid/status"; }
  c0=$(cpu_ticks) w0=$(switches)
  sleep "$idle_s"
  c1=$(cpu_ticks) w1=$(switches)
  hz=$(getconf CLK_TCK)
  kill -TERM "$bench_worker_pid"
  wait "$bench_worker_pid" || true
  bench_worker_pid=""
  router_stop
  db_drop
  idle_cpu_ms=$(calc "($c1 - $c0) * 1000 / $hz")
  wakeups=$(calc "($w1 - $w0) / $idle_s")
  echo "idle CPU: ${idle_cpu_ms} ms in ${idle_s} s ($(calc "$idle_cpu_ms / $idle_s / 10") %); ${wakeups} context switches/s"
  echo "(its timers: 1 s tick + 1 s blocking pop + 0.5 s Redis watchdog + 5 s heartbeat => ~4.2 wake-ups/s expected)"
fi

# ------------------------------------------------------------------ peers
if [[ $peers == 1 ]]; then
  echo
  bash "$bench_dir/peers/run.sh" --runs "$runs" --n "$n" --concurrency "$conc" || failed=1
fi

echo
if ((${#missed[@]} > 0)); then echo "targets missed: ${missed[*]}"; fi
if [[ $failed != 0 ]]; then echo "bench: FAILED (a correctness check failed, see above)"; exit 1; fi
if [[ $check_targets == 1 && ${#missed[@]} -gt 0 ]]; then exit 1; fi
echo "bench: done"
