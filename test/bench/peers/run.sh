#!/usr/bin/env bash
# retryq beside its peers, in one run: retryq-worker, a BullMQ worker (Node) and RQ
# workers (Python) doing the identical job — read the row, call the mock router with the
# same request body, write the same guarded UPDATE, ack — against the same schema, the
# same mock router (answers at once) and the same number of jobs, at equal concurrency.
# Rounds alternate retryq, BullMQ, RQ so a busy neighbour on this shared machine hurts
# all three alike; medians of the rounds are printed with the ratios.
#
#   test/bench/peers/run.sh [--runs K] [--n N] [--concurrency C] [--only bullmq|rq]
#
# Needs node + npm (bullmq, ioredis and pg are installed into test/bench/peers/node_modules
# from package-lock.json with `npm ci`) and Debian's python3-rq + python3-psycopg2
# (installed with apt-get when missing and run as root). Not part of the test suite.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "$0")/../lib.sh"
peers_dir="$bench_dir/peers"

runs=3 n=20000 conc=64 only=""
while (($# > 0)); do
  case $1 in
    --runs) runs=$2; shift ;;
    --n) n=$2; shift ;;
    --concurrency) conc=$2; shift ;;
    --only) only=$2; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
pool=${RETRYQ_DB_POOL:-4}
RQ_PYTHON=/usr/bin/python3

want() { [[ -z $only || $only == "$1" ]]; }

# ------------------------------------------------------------------ dependencies
if want bullmq; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    die "node and npm are needed (apt-get install nodejs npm)"
  fi
  if [[ ! -d $peers_dir/node_modules/bullmq || ! -d $peers_dir/node_modules/pg ]]; then
    note "installing bullmq, ioredis and pg into $peers_dir/node_modules (npm ci)"
    (cd "$peers_dir" && timeout 600 npm ci --no-audit --no-fund >/dev/null)
  fi
fi
if want rq && ! "$RQ_PYTHON" -c 'import rq, psycopg2' 2>/dev/null; then
  [[ $(id -u) == 0 ]] || die "python3-rq and python3-psycopg2 are needed (apt-get install python3-rq python3-psycopg2)"
  note "installing python3-rq and python3-psycopg2 (apt-get)"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq python3-rq python3-psycopg2 >/dev/null
fi

bench_binaries
bench_start_services
router_start 0

# ------------------------------------------------------------------ the peers

# Each sets P_JOBS_S (from the database: (N-1) / (last - first completed_at), the same
# yardstick for all three), P_CPU_PER_1K, P_RSS_MB (largest process), P_CALLS and checks
# that every row was recorded exactly once.
peer_finish() { # <n>
  local n=$1 ok=0
  P_CALLS=$(router_requests)
  P_COMPLETED=$(db_completed)
  P_SPAN_S=$(db_span)
  P_JOBS_S=$(calc "($n - 1) / $P_SPAN_S")
  [[ $P_CALLS == "$n" ]] || { note "router calls $P_CALLS != $n"; ok=1; }
  [[ $P_COMPLETED == "$n" ]] || { note "completed rows $P_COMPLETED != $n"; ok=1; }
  db_drop
  return $ok
}

run_retryq_peer() { # <n> <conc>
  run_retryq peers "$1" "$2" || { db_drop; return 1; }
  P_CPU_PER_1K=$R_CPU_PER_1K P_RSS_MB=$R_RSS_MB
  peer_finish "$1"
}

run_bullmq() { # <n> <conc>
  local n=$1 conc=$2 tf="$bench_work/bullmq.time" out
  db_fresh bullmq
  db_seed "$n"
  rcli FLUSHALL >/dev/null
  db_payloads | REDIS_URL=$REDIS_URL QUEUE=bench timeout 600 node "$peers_dir/bullmq_peer.js" add >/dev/null
  router_reset
  out=$(REDIS_URL=$REDIS_URL DATABASE_URL=$DB ROUTER_URL=$ROUTER_URL QUEUE=bench CONCURRENCY=$conc \
    DB_POOL=$pool EXPECT=$n timeout -s TERM 900 "$PYTHON" "$BENCH_PY" rusage "$tf" \
    node "$peers_dir/bullmq_peer.js" work 2>"$bench_work/bullmq.err") ||
    { note "the BullMQ worker failed: $(tail -n 5 "$bench_work/bullmq.err")"; db_drop; return 1; }
  read -r _ u s rss <"$tf"
  P_CPU_PER_1K=$(calc "($u + $s) * 1000 / $n") P_RSS_MB=$(calc "$rss / 1024")
  peer_finish "$n"
}

run_rq() { # <n> <conc>
  local n=$1 conc=$2 tf="$bench_work/rq.time"
  db_fresh rq
  db_seed "$n"
  rcli FLUSHALL >/dev/null
  db_payloads | REDIS_URL=$REDIS_URL QUEUE=bench PYTHONPATH=$peers_dir timeout 600 \
    "$RQ_PYTHON" "$peers_dir/rq_peer.py" enqueue >/dev/null
  router_reset
  # C burst workers (SimpleWorker: no fork per job, RQ's fastest); each exits when the
  # queue is empty. rusage sums the CPU of all of them; the RSS is the largest one.
  # shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
  REDIS_URL=$REDIS_URL DATABASE_URL=$DB ROUTER_URL=$ROUTER_URL PYTHONPATH=$peers_dir \
    timeout -s TERM 1800 "$PYTHON" "$BENCH_PY" rusage "$tf" bash -c '
      for ((i = 0; i < $1; i++)); do
        "$2" -m rq.cli worker --burst --quiet -w rq.worker.SimpleWorker --url "$REDIS_URL" \
          --disable-job-desc-logging bench >/dev/null 2>&1 &
      done
      wait' _ "$conc" "$RQ_PYTHON" ||
    { note "the RQ workers failed"; db_drop; return 1; }
  read -r _ u s rss <"$tf"
  P_CPU_PER_1K=$(calc "($u + $s) * 1000 / $n") P_RSS_MB=$(calc "$rss / 1024")
  peer_finish "$n"
}

# ------------------------------------------------------------------ rounds
echo "== peers: N=$n, concurrency $conc (RQ: $conc processes), db pool $pool, router answers at once"
printf '%-5s %-8s %9s %11s %9s %8s\n' run system jobs/s cpu_s/1k rss_MB calls
declare -A jobs=()
failed=0
systems=(retryq)
want bullmq && systems+=(bullmq)
want rq && systems+=(rq)
for ((r = 1; r <= runs; r++)); do
  for sys in "${systems[@]}"; do
    P_JOBS_S=- P_CPU_PER_1K=- P_RSS_MB=- P_CALLS=-
    case $sys in
      retryq) run_retryq_peer "$n" "$conc" || failed=1 ;;
      bullmq) run_bullmq "$n" "$conc" || failed=1 ;;
      rq) run_rq "$n" "$conc" || failed=1 ;;
    esac
    printf '%-5s %-8s %9s %11s %9s %8s\n' "$r" "$sys" "$P_JOBS_S" "$P_CPU_PER_1K" "$P_RSS_MB" "$P_CALLS"
    jobs[$sys]="${jobs[$sys]:-} $P_JOBS_S"
  done
done
router_stop

echo
# shellcheck disable=SC2086 # each entry is a space-separated list of figures
m_retryq=$(median ${jobs[retryq]})
for sys in "${systems[@]}"; do
  # shellcheck disable=SC2086
  m=$(median ${jobs[$sys]})
  if [[ $sys == retryq ]]; then
    printf 'median %-8s %9s jobs/s\n' "$sys" "$m"
  else
    printf 'median %-8s %9s jobs/s   retryq / %s = %s x\n' "$sys" "$m" "$sys" "$(calc "$m_retryq / $m")"
  fi
done
if want bullmq; then
  # shellcheck disable=SC2086
  x=$(calc "$m_retryq / $(median ${jobs[bullmq]})")
  if (($(calc "1 if $x >= 5 else 0") == 1)); then
    echo "target >= 5 x BullMQ at equal concurrency: met (${x} x)"
  else
    echo "target >= 5 x BullMQ at equal concurrency: NOT met (${x} x)"
  fi
fi
[[ $failed == 0 ]] || { echo "peers: FAILED (a correctness check failed, see above)"; exit 1; }
