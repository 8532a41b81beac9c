#!/usr/bin/env bash
# Installs what is missing, builds retryq with warnings as errors, and runs the whole
# test suite twice: a normal build, then under AddressSanitizer + UBSan; then the fuzzers
# (corpus replay, then RETRYQ_FUZZ_SECONDS per target, default 30, 0 = replay only).
#   scripts/test.sh                 everything
#   scripts/test.sh --quick         normal build only
#   scripts/test.sh -L unit         extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
ctest_args=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) ctest_args+=("$a") ;;
  esac
done

"$root/scripts/deps.sh"

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() { # <build dir> <cmake args...>
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -DRETRYQ_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 900 "${ctest_args[@]}")
}

echo "== build and test (RelWithDebInfo)"
run_suite "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ $quick == 0 ]]; then
  echo "== build and test under AddressSanitizer + UBSan"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_suite "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DRETRYQ_SANITIZE=ON
  # (valgrind memcheck of the worker is integration/valgrind_test in the normal suite.)
  echo "== fuzz: replay the committed corpora (seeds and every past crash)"
  cmake -S "$root" -B "$root/build-fuzz" -DRETRYQ_WERROR=ON -DRETRYQ_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build "$root/build-fuzz" -j "$jobs" --target fuzz_all
  (cd "$root/build-fuzz" && ctest --output-on-failure -L fuzz)
  # Then fuzz each target for a bounded time (ASan+UBSan; 5 x 30 s by default, 0 = off),
  # in a copy of its corpus under build-fuzz/fuzz-corpus/; a finding fails the run and
  # leaves its reproducer in build-fuzz/fuzz-artifacts/ (test/fuzz/run.sh says how to
  # make it a regression input).
  fuzz_seconds=${RETRYQ_FUZZ_SECONDS:-30}
  echo "== fuzz: each target for ${fuzz_seconds} s (RETRYQ_FUZZ_SECONDS)"
  RETRYQ_FUZZ_SECONDS=$fuzz_seconds "$root/test/fuzz/run.sh" "$root/build-fuzz"
fi
