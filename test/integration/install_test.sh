#!/usr/bin/env bash
# Installs retryq into a temporary prefix and builds a separate program against it, once
# through find_package(retryq) (shared and static) and once through pkg-config.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_BINARY_DIR RETRYQ_SOURCE_DIR
prefix="$t_tmp/prefix"
cmake --install "$RETRYQ_BINARY_DIR" --prefix "$prefix" >"$t_tmp/install.log"
check "library, headers, CLI, worker and package files installed" test -f "$prefix/include/retryq/retryq.h" -a \
  -x "$prefix/bin/retryq" -a -x "$prefix/bin/retryq-worker" -a -f "$prefix/lib/pkgconfig/retryq.pc" -a \
  -f "$prefix/lib/cmake/retryq/retryqConfig.cmake"
check "versioned soname" test -L "$prefix/lib/libretryq.so.0"
check "migrations and question bank installed" test -f "$prefix/share/retryq/sql/migrations/0012_retry_worker.up.sql"

# A sanitizer build installs an instrumented library: the consumer must use the same runtime.
san=""
if grep -q '^RETRYQ_SANITIZE:BOOL=ON' "$RETRYQ_BINARY_DIR/CMakeCache.txt"; then
  san="-fsanitize=address,undefined"
fi
cmake -S "$RETRYQ_SOURCE_DIR/test/install" -B "$t_tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$san" >"$t_tmp/consumer.log" 2>&1 \
  || cat "$t_tmp/consumer.log"
cmake --build "$t_tmp/consumer" >>"$t_tmp/consumer.log" 2>&1 || cat "$t_tmp/consumer.log"
check_eq "find_package(retryq): shared" "0.1.0 ok" "$(LD_LIBRARY_PATH="$prefix/lib" "$t_tmp/consumer/consumer_shared" 2>&1)"
check_eq "find_package(retryq): static" "0.1.0 ok" "$("$t_tmp/consumer/consumer_static" 2>&1)"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # word splitting of the flags is intended
cc $san -o "$t_tmp/consumer_pc" "$RETRYQ_SOURCE_DIR/test/install/consumer.c" $(pkg-config --cflags --libs retryq)
check_eq "pkg-config --cflags --libs retryq" "0.1.0 ok" "$(LD_LIBRARY_PATH="$prefix/lib" "$t_tmp/consumer_pc" 2>&1)"
t_finish
