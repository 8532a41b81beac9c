#!/usr/bin/env bash
# The backlog benchmark (test/bench/run.sh --mode backlog): cost as the queue grows.
#
#   test/bench/backlog.sh [--sizes "10000 100000 1000000"] [--concurrency C]
#                         [--inflight N] [--latency-ms MS] [--no-inflight] [--pin]
#                         [--isolate] [--no-aof-rewrite]
#
# For each size N: PostgreSQL seeded with N 'retrying' rows (one INSERT ... SELECT
# generate_series), the N jobs written to a file, then
#   ceiling   redis-cli --pipe of the same payloads, 1,000 per LPUSH (Redis alone)
#   enqueue   `retryq enqueue --from FILE` (retryq_enqueue_many): jobs/s, CLI peak RSS
#   memory    Redis used_memory per queued job (after enqueue, before the drain)
#   drain     retryq-worker --exit-when-idle, router answering at once, concurrency C
#             (default 64): jobs/s, worker CPU us per job, worker peak RSS
#   latency   a probe client PINGs Redis every millisecond: its p99 idle (2 s before the
#             drain) and its p99 and max during the drain; SLOWLOG entries over 1 ms
#             (slowlog-log-slower-than 1000) during enqueue + drain; and what else made
#             Redis late: its forks (AOF rewrites), its latency monitor's events over
#             1 ms, the steal time on its CPU, how often its main thread was taken off
#             that CPU while runnable, and the interrupts' share of it
#   inflight  the same drain with N in flight at once capped by --inflight (default
#             10,000) and a router answering after --latency-ms (default 2,000)
# then one table, with the targets of docs/performance.md "Cost as the work grows".
# --pin: Redis and the latency probe on CPU 1, everything else (this script and what it
# starts: PostgreSQL, the router, the worker, the CLI) on CPU 0, as a deployment gives
# Redis a core of its own; without it every process competes for every core.
# --isolate: --pin, and every other process of the machine (this session's shells and
# whatever they start later included) moved to CPU 0 for the run, their CPU masks put back
# at the end: Redis alone on CPU 1 with the probe, as on a host of its own (needs root).
# --no-aof-rewrite: auto-aof-rewrite-percentage 0 (appendonly stays on), so Redis does not
# fork a rewrite child during the run.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "$0")/lib.sh"

sizes="10000 100000 1000000" conc=64 inflight=10000 latency=2000 with_inflight=1 pin=0 aofrw=1
while (($# > 0)); do
  case $1 in
    --sizes) sizes=$2; shift ;;
    --concurrency) conc=$2; shift ;;
    --inflight) inflight=$2; shift ;;
    --latency-ms) latency=$2; shift ;;
    --no-inflight) with_inflight=0 ;;
    --pin) pin=1 ;;
    --isolate) pin=2 ;;
    --no-aof-rewrite) aofrw=0 ;;
    -h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

bench_binaries
# PostgreSQL sized for the rows it holds, as a deployment is: the tests' 32 MB of shared
# buffers hold a fraction of 1M executions, and every load and update then reads the
# table through the kernel (RETRYQ_TEST_PG_SHARED_BUFFERS, test/support/services.sh).
export RETRYQ_TEST_PG_SHARED_BUFFERS=${RETRYQ_TEST_PG_SHARED_BUFFERS:-1GB}
bench_start_services
probe_cpu=() cores=$(nproc) steal_cpu=cpu
if [[ $pin != 0 ]]; then
  ((cores >= 2)) || die "--pin needs two CPUs"
  taskset -a -pc 1 "$(cat "$bench_work/services/redis/redis.pid")" >/dev/null
  pg_pid=$(head -n 1 "$bench_work/services/pg/postmaster.pid")
  for p in "$pg_pid" $(pgrep -P "$pg_pid"); do taskset -pc 0 "$p" >/dev/null; done
  taskset -pc 0 $$ >/dev/null
  probe_cpu=(taskset -c 1) steal_cpu=cpu1
fi
# isolate_others: every user process but Redis to CPU 0 (all its threads); each one's mask
# is written to a file first and put back at exit. Kernel threads (no command line) stay.
isolate_others() {
  local redis_pid saved="$bench_work/cpu-masks" p mask
  redis_pid=$(cat "$bench_work/services/redis/redis.pid")
  : >"$saved"
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$redis_pid" || -z $(tr -d '\0' 2>/dev/null </proc/"$p"/cmdline) ]] && continue
    mask=$(taskset -p "$p" 2>/dev/null | sed -n 's/.*: //p') || continue
    [[ -n $mask ]] && taskset -a -p 1 "$p" >/dev/null 2>&1 && echo "$p $mask" >>"$saved"
  done
  bench_at_exit+=("restore_masks")
  note "isolated: $(wc -l <"$saved") processes moved to CPU 0"
}
restore_masks() {
  local p mask
  while read -r p mask; do taskset -a -p "$mask" "$p" >/dev/null 2>&1 || true; done <"$bench_work/cpu-masks"
}
if [[ $pin == 2 ]]; then isolate_others; fi
[[ $aofrw == 1 ]] || rcli CONFIG SET auto-aof-rewrite-percentage 0 >/dev/null
echo "retryq backlog benchmark: $cores cores$([[ $aofrw == 0 ]] && echo ", no automatic AOF rewrite")$([[ $pin != 0 ]] && echo ", Redis and the probe pinned to CPU 1, the rest to CPU 0")$([[ $pin == 2 ]] && echo " (every other process of the machine too)"), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ), worker $("$RETRYQ_WORKER_BIN" --version 2>/dev/null | head -n1)"

redis_info() { rcli INFO "$1" | tr -d '\r' | sed -n "s/^$2:\\([0-9.]*\\)$/\\1/p"; }
probe_start() { # <out file>; sets probe_pid
  "${probe_cpu[@]}" "$PYTHON" "$BENCH_PY" pingprobe 127.0.0.1 "$RETRYQ_TEST_REDIS_PORT" "$1" &
  probe_pid=$!
}
probe_stop() {
  kill -TERM "$probe_pid"
  wait "$probe_pid" || die "the latency probe failed"
}
slowlog_count() { rcli SLOWLOG LEN; }
# Steal time: the share of a CPU's ticks the hypervisor gave to another guest. cpu_ticks
# prints "steal total irq+softirq" for Redis's CPU (CPU 1 with --pin, all CPUs without).
cpu_ticks() {
  awk -v c="$steal_cpu" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t, $7 + $8}' /proc/stat
}
irq_pct() { # <ticks before> <ticks after>: the share of interrupt and softirq time
  local a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  calc "round(100 * (${b[2]} - ${a[2]}) / max(1, ${b[1]} - ${a[1]}), 1)"
}
# How often the kernel took the CPU from Redis's main thread while it was runnable.
redis_preempted() { awk '/^nonvoluntary_ctxt_switches/ {print $2}' "/proc/$(cat "$bench_work/services/redis/redis.pid")/status"; }
steal_pct() { # <ticks before> <ticks after>
  local a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  calc "round(100 * (${b[0]} - ${a[0]}) / max(1, ${b[1]} - ${a[1]}), 1)"
}
# Redis's latency monitor (events over 1 ms: command, fast-command, fork, aof-write, ...),
# one line: "event max_ms" pairs, or "none".
latency_events() {
  local out
  out=$(rcli LATENCY LATEST | paste -sd' ' | awk '{for (i = 1; i + 3 <= NF; i += 4) printf "%s%s %s ms", (i > 1 ? ", " : ""), $i, $(i + 3)}')
  echo "${out:-none}"
}
# The SLOWLOG entries by kind of call, most first: "count x kind (max us)", one line. A
# script is named by its first line and the number of its keys; the queue's keys by role.
slowlog_kinds() {
  rcli --json SLOWLOG GET 1000000 | "$PYTHON" -c '
import collections, json, re, sys
kinds = collections.defaultdict(list)
for e in json.load(sys.stdin):
    a = e[3]
    if a and a[0].lower() == "eval" and len(a) > 2:
        k = "EVAL[%s keys] %s" % (a[2], a[1].split("\n")[0][:40])
    else:
        k = a[0].upper() if a else "?"
    kinds[k].append(e[2])
out = sorted(kinds.items(), key=lambda kv: -len(kv[1]))
print("; ".join("%d x %s (max %d us)" % (len(v), k, max(v)) for k, v in out) or "none")'
}

declare -A T
run_size() { # <n>
  local n=$1 payloads="$bench_work/payloads.jsonl" t0 t1 tf out
  db_fresh backlog
  db_seed "$n"
  rcli FLUSHALL >/dev/null
  db_payloads >"$payloads"
  [[ $(wc -l <"$payloads") == "$n" ]] || die "payload file has $(wc -l <"$payloads") lines, want $n"

  # Redis alone: the same payloads, pipelined LPUSH of 1,000 (the commands written out
  # first, so only redis-cli --pipe and Redis are timed).
  "$PYTHON" "$BENCH_PY" lpush ceiling_queue 1000 <"$payloads" >"$bench_work/ceiling.resp"
  t0=$(now_ns)
  out=$(rcli --pipe <"$bench_work/ceiling.resp" 2>&1) || die "redis-cli --pipe failed: $out"
  t1=$(now_ns)
  rm -f "$bench_work/ceiling.resp"
  [[ $out == *"errors: 0,"* ]] || die "redis-cli --pipe reported errors: $out"
  T[$n, ceiling]=$(calc "$n / (($t1 - $t0) / 1e9)")
  rcli DEL ceiling_queue >/dev/null

  rcli CONFIG SET slowlog-log-slower-than 1000 >/dev/null
  rcli CONFIG SET slowlog-max-len 1000000 >/dev/null # every entry counted, none pushed out
  rcli SLOWLOG RESET >/dev/null
  local mem0 mem1
  mem0=$(redis_info memory used_memory)
  tf="$bench_work/enqueue.time"
  t0=$(now_ns)
  out=$("$PYTHON" "$BENCH_PY" rusage "$tf" "$RETRYQ_CLI" --redis-url "$REDIS_URL" \
    enqueue --from "$payloads" --json) || die "retryq enqueue --from failed: $out"
  t1=$(now_ns)
  [[ $out == *"\"queued\":$n,"* ]] || die "enqueue --from: $out"
  T[$n, enqueue]=$(calc "$n / (($t1 - $t0) / 1e9)")
  T[$n, cli_rss]=$(calc "$(cut -d' ' -f4 "$tf") / 1024")
  mem1=$(redis_info memory used_memory)
  T[$n, bytes_job]=$(calc "($mem1 - $mem0) / $n")
  [[ $(rcli LLEN retry_queue) == "$n" ]] || die "queue holds $(rcli LLEN retry_queue), want $n"

  probe_start "$bench_work/probe-idle.json"
  sleep 2 # the probe's sampling window on an idle Redis
  probe_stop
  T[$n, idle_p99]=$(jq_get "$(cat "$bench_work/probe-idle.json")" p99_us)

  # What Redis did besides commands during the drain: forks (an AOF rewrite forks a child
  # that copies the page tables and then competes for the CPU), the latency monitor's
  # events, and the hypervisor's steal time on Redis's CPU.
  rcli CONFIG SET latency-monitor-threshold 1 >/dev/null
  rcli LATENCY RESET >/dev/null
  local forks0 ticks0 preempted0 ticks1
  forks0=$(redis_info stats total_forks)
  ticks0=$(cpu_ticks)
  preempted0=$(redis_preempted)
  probe_start "$bench_work/probe-drain.json"
  # A deadline for a drain at 500 jobs/s or faster (a loaded machine), 10 minutes at least.
  RETRYQ_BENCH_TIMEOUT=$(calc "int(max(600, $n / 500))") run_worker backlog "$n" "$conc" ||
    die "the drain of $n jobs failed a correctness check"
  probe_stop
  ticks1=$(cpu_ticks)
  T[$n, steal]=$(steal_pct "$ticks0" "$ticks1")
  note "N=$n: Redis's main thread taken off its CPU while runnable $(($(redis_preempted) - preempted0)) time(s) during the drain (involuntary context switches); interrupts and softirqs $(irq_pct "$ticks0" "$ticks1") % of that CPU"
  T[$n, forks]=$(($(redis_info stats total_forks) - forks0))
  if ((T[$n, forks] > 0)); then
    note "N=$n: $((T[$n, forks])) fork(s) of Redis during the drain (AOF rewrite), the last took $(redis_info stats latest_fork_usec) us"
  fi
  note "N=$n: Redis latency monitor during the drain (events over 1 ms, max): $(latency_events)"
  T[$n, drain]=$R_JOBS_S
  T[$n, cpu_us]=$(calc "$R_CPU_WORKER * 1e6 / $n")
  T[$n, rss]=$R_RSS_MB
  local probe
  probe=$(cat "$bench_work/probe-drain.json")
  T[$n, p99]=$(jq_get "$probe" p99_us)
  T[$n, max]=$(jq_get "$probe" max_us)
  T[$n, slowlog]=$(slowlog_count)
  if [[ ${T[$n, slowlog]} != 0 ]]; then note "N=$n: SLOWLOG entries by kind: $(slowlog_kinds)"; fi

  T[$n, inflight_s]=- T[$n, inflight_rss]=-
  if [[ $with_inflight == 1 ]]; then
    sql -c "UPDATE executions SET status = 'retrying', completed_at = NULL, retry_history = '[]'" >/dev/null
    rcli FLUSHALL >/dev/null
    router_stop
    router_start "$latency"
    queue_fill retry_queue
    local c=$((inflight < n ? inflight : n))
    # A deadline of three times the ideal drain (N / C calls of the router's latency) plus
    # two minutes; a drain that misses it is shown as "failed" and the run goes on.
    if RETRYQ_BENCH_TIMEOUT=$(calc "int(3 * $n / $c * $latency / 1000 + 120)") \
      run_worker backlog-inflight "$n" "$c"; then
      T[$n, inflight_s]=$R_WALL_S
      T[$n, inflight_x]=$(calc "$R_WALL_S / ($n / $c * $latency / 1000)")
      T[$n, inflight_rss]=$R_RSS_MB
    else
      note "the drain of $n jobs at $c in flight did not finish or failed a correctness check"
      T[$n, inflight_s]=failed
    fi
    router_stop
    router_start 0
  fi
  db_drop
  rm -f "$payloads"
  note "N=$n: enqueue ${T[$n, enqueue]}/s (ceiling ${T[$n, ceiling]}/s), ${T[$n, bytes_job]} B/job," \
    "drain ${T[$n, drain]}/s, ${T[$n, cpu_us]} us CPU/job, RSS ${T[$n, rss]} MB, probe p99" \
    "${T[$n, p99]} us (idle ${T[$n, idle_p99]} us) max ${T[$n, max]} us, SLOWLOG ${T[$n, slowlog]}," \
    "in flight ${T[$n, inflight_s]} s (RSS ${T[$n, inflight_rss]} MB); load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

router_start 0
for n in $sizes; do
  echo "== N=$n" >&2
  run_size "$n"
done
router_stop

echo
echo "== backlog: drain at concurrency $conc with the router answering at once; in flight: up to $inflight, router ${latency} ms"
printf '%9s %11s %11s %7s %10s %9s %8s %8s %9s %9s %9s %8s %6s %6s %11s %9s %10s\n' N enqueue/s ceiling/s ratio B/job \
  drain/s cpu_us rss_MB idle_p99 p99_us max_us slowlog steal% forks inflight_s x_ideal inflight_MB
for n in $sizes; do
  printf '%9s %11s %11s %6s%% %10s %9s %8s %8s %9s %9s %9s %8s %6s %6s %11s %9s %10s\n' "$n" "${T[$n, enqueue]}" \
    "${T[$n, ceiling]}" "$(pct "${T[$n, enqueue]}" "${T[$n, ceiling]}")" "${T[$n, bytes_job]}" \
    "${T[$n, drain]}" "${T[$n, cpu_us]}" "${T[$n, rss]}" "${T[$n, idle_p99]}" "${T[$n, p99]}" \
    "${T[$n, max]}" "${T[$n, slowlog]}" "${T[$n, steal]}" "${T[$n, forks]}" "${T[$n, inflight_s]}" "${T[$n, inflight_x]:--}" "${T[$n, inflight_rss]}"
done

read -r -a list <<<"$sizes"
small=${list[0]} big=${list[${#list[@]} - 1]}
echo
echo "targets (N=$big against N=$small where a ratio):"
verdict() { if (($(calc "1 if $2 else 0") == 1)); then echo "  met     $1"; else echo "  NOT met $1"; fi; }
verdict "drain at $big >= 90% of drain at $small: $(pct "${T[$big, drain]}" "${T[$small, drain]}")%" \
  "${T[$big, drain]} >= 0.9 * ${T[$small, drain]}"
verdict "probe p99 during the $big drain <= 2 x idle p99: ${T[$big, p99]} us vs ${T[$big, idle_p99]} us" \
  "${T[$big, p99]} <= 2 * ${T[$big, idle_p99]}"
verdict "probe max during the $big drain <= 10 ms: ${T[$big, max]} us" "${T[$big, max]} <= 10000"
verdict "SLOWLOG entries over 1 ms: ${T[$big, slowlog]}" "${T[$big, slowlog]} == 0"
verdict "worker RSS at $big within 10% of $small: ${T[$big, rss]} MB vs ${T[$small, rss]} MB" \
  "abs(${T[$big, rss]} - ${T[$small, rss]}) <= 0.1 * ${T[$small, rss]}"
verdict "enqueue_many >= 100,000 jobs/s: ${T[$big, enqueue]}" "${T[$big, enqueue]} >= 100000"
echo "bench: done"
