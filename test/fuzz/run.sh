#!/usr/bin/env bash
# Fuzzes every libFuzzer target for a bounded time under ASan+UBSan, starting from its
# committed corpus. scripts/test.sh runs it in CI after the corpus replay.
#   test/fuzz/run.sh BUILD_DIR [target...]     default: all five targets, one after another
#   RETRYQ_FUZZ_SECONDS=N                      seconds per target (default 30; 0 skips)
#   RETRYQ_FUZZ_SEED=N                         libFuzzer -seed (default 0: a random seed)
# BUILD_DIR is a build configured with -DRETRYQ_FUZZ=ON -DCMAKE_C_COMPILER=clang (the
# targets are built if needed). The source tree is never written to: each target fuzzes a
# fresh copy of test/fuzz/corpus/<target>/ in BUILD_DIR/fuzz-corpus/<target>/ (kept after
# the run, so new inputs can be looked at), and a crash, leak, timeout, out-of-memory or
# broken invariant leaves its reproducer in BUILD_DIR/fuzz-artifacts/ (emptied at the
# start of each run). Any such finding fails the run (exit 1) and prints the
# reproducer's path and how to turn it into a regression input; a target that cannot be
# started fails with exit 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: test/fuzz/run.sh BUILD_DIR [target...]}
shift
build=$(cd "$build" && pwd)
targets=("$@")
((${#targets[@]})) || targets=(job classify question config url)
seconds=${RETRYQ_FUZZ_SECONDS:-30}
seed=${RETRYQ_FUZZ_SEED:-0}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz: RETRYQ_FUZZ_SECONDS must be a number of seconds" >&2; exit 2; }
[[ $seed =~ ^[0-9]+$ ]] || { echo "fuzz: RETRYQ_FUZZ_SEED must be a number" >&2; exit 2; }
if ((seconds == 0)); then
  echo "fuzz: RETRYQ_FUZZ_SECONDS=0, timed fuzzing skipped"
  exit 0
fi
jobs=$(nproc 2>/dev/null || echo 2)

cmake --build "$build" -j "$jobs" --target fuzz_all >/dev/null

corpora="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
rm -rf "$artifacts"
mkdir -p "$corpora" "$artifacts"
# Exactly the options of the ctest replays (test/fuzz/CMakeLists.txt), whatever the caller
# exported, so that a finding here fails there too once it is in the corpus. Not
# strict_string_checks (scripts/test.sh sets it for the ASan suite): it reads to the NUL
# even in strndup(data, size), a false report on every exact-size fuzz input.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=0
total_runs=0
for t in "${targets[@]}"; do
  bin="$build/test/fuzz/fuzz_$t"
  [[ -x $bin && -d $here/corpus/$t ]] || { echo "fuzz: no target $t ($bin)" >&2; exit 2; }
  corpus="$corpora/$t"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  cp "$here/corpus/$t"/* "$corpus"/
  dict=()
  [[ -f $here/$t.dict ]] && dict=(-dict="$here/$t.dict")
  log="$artifacts/$t.log"
  set +e
  # One process, -max_total_time bounds it (the corpus load included; `timeout` is the
  # backstop should the target hang outside an input). -timeout: an input slower than
  # 10 s is a finding; -close_fd_mask=1: the targets' stdout is noise.
  timeout -k 10 $((seconds + 60)) "$bin" "$corpus" "${dict[@]}" -seed="$seed" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -artifact_prefix="$artifacts/$t-" \
    -print_final_stats=1 -close_fd_mask=1 </dev/null >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  runs=${runs:-0}
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  total_runs=$((total_runs + runs))
  found=()
  for f in "$artifacts/$t-"*; do
    [[ -e $f ]] && found+=("$f")
  done
  if [[ $rc != 0 ]] || ((${#found[@]})); then
    failed=$((failed + 1))
    echo "fuzz $t: FAILED after $runs runs (exit $rc); log: $log"
    grep -E 'invariant broken|ERROR: |SUMMARY: |runtime error' "$log" | head -5 | sed 's/^/  /' || true
    if ((${#found[@]})); then
      echo "  reproducer(s):"
      printf '    %s\n' "${found[@]}"
      echo "  to turn one into a regression input:"
      echo "    $bin ${found[0]}    # reproduces it"
      echo "    $bin -minimize_crash=1 -runs=100000 -exact_artifact_path=/tmp/$t-min ${found[0]}"
      echo "    cp /tmp/$t-min $here/corpus/$t/regress_<what_it_found>"
      echo "  then fix the bug: the ctest fuzz/$t replays the corpus, so it fails until fixed."
    else
      echo "  no reproducer was written: the target failed to start or was killed; see the log"
    fi
  else
    echo "fuzz $t: ok, $runs runs in ${seconds} s, coverage ${cov:-?} edges, ${ft:-?} features, corpus $(find "$corpus" -type f | wc -l) inputs"
  fi
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed ($total_runs runs, ${seconds} s each)"
((failed == 0))
