#!/usr/bin/env bash
# Fuzzes every libFuzzer target for a bounded time, starting from its committed corpus.
#   test/fuzz/run.sh BUILD_DIR [target...]     default: all five targets
#   RETRYQ_FUZZ_SECONDS=N                      seconds per target (default 20)
#   RETRYQ_FUZZ_KEEP=DIR                       keep the grown corpora and crashes here
# BUILD_DIR is a build configured with -DRETRYQ_FUZZ=ON -DCMAKE_C_COMPILER=clang (the
# targets are built if needed). The committed corpus is never modified: new inputs go to a
# scratch copy. A crash, leak, timeout or broken invariant stops with the reproducer's
# path and exit status 1; add the file to test/fuzz/corpus/<target>/ (with a name that
# says what it found) once the bug is fixed, so the ctest `fuzz/<target>` replays it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: test/fuzz/run.sh BUILD_DIR [target...]}
shift
targets=("$@")
((${#targets[@]})) || targets=(job classify question config url)
seconds=${RETRYQ_FUZZ_SECONDS:-20}
jobs=$(nproc 2>/dev/null || echo 2)

cmake --build "$build" -j "$jobs" --target fuzz_all >/dev/null

work=${RETRYQ_FUZZ_KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/retryq-fuzz.XXXXXX")}
mkdir -p "$work"
[[ -n ${RETRYQ_FUZZ_KEEP:-} ]] || trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
total_runs=0
for t in "${targets[@]}"; do
  bin="$build/test/fuzz/fuzz_$t"
  [[ -x $bin ]] || { echo "fuzz: no target $bin" >&2; exit 2; }
  corpus="$work/corpus-$t"
  crashes="$work/crashes-$t"
  mkdir -p "$corpus" "$crashes"
  cp -n "$here/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  dict=()
  [[ -f $here/$t.dict ]] && dict=(-dict="$here/$t.dict")
  log="$work/$t.log"
  set +e
  # -close_fd_mask=3: the targets' own output is not worth the terminal.
  "$bin" "$corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -artifact_prefix="$crashes/" -print_final_stats=1 -close_fd_mask=3 \
    </dev/null >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  runs=${runs:-0}
  total_runs=$((total_runs + runs))
  if [[ $rc != 0 ]] || compgen -G "$crashes/*" >/dev/null; then
    failed=$((failed + 1))
    echo "fuzz $t: FAILED after $runs runs (exit $rc); reproducer(s):"
    ls -1 "$crashes"/* 2>/dev/null | sed 's/^/  /'
    grep -E 'ERROR|invariant|SUMMARY' "$log" | head -5 | sed 's/^/  /'
    [[ -n ${RETRYQ_FUZZ_KEEP:-} ]] || { cp -r "$crashes" "${TMPDIR:-/tmp}/retryq-fuzz-crashes-$t-$$"; echo "  kept in ${TMPDIR:-/tmp}/retryq-fuzz-crashes-$t-$$"; }
  else
    echo "fuzz $t: ok, $runs runs in ${seconds} s, coverage $cov edges, corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed ($total_runs runs)"
[[ $failed == 0 ]]
