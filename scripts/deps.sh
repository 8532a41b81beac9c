#!/usr/bin/env bash
# Installs every Debian package retryq needs to build, test and run, and only the
# missing ones. Idempotent. When not root, prints the one apt-get line and exits 1.
#   scripts/deps.sh           build + test + run
#   scripts/deps.sh --extra   also the optional tools (fuzzing, browser check, peers)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libhiredis-dev libpq-dev libcurl4-openssl-dev libcjson-dev libevent-dev
  libcmocka-dev libsystemd-dev
  redis-server redis-tools redis-sentinel stunnel4 openssl  # Sentinel, Cluster and TLS tests
  postgresql postgresql-client postgresql-contrib
  curl python3 python3-yaml procps util-linux iproute2
  golang-go golang-github-lib-pq-dev  # the Go package (src/go/retryq) and its test-only driver
  chromium  # the status page test renders the page headless
  clang libclang-rt-dev valgrind  # fuzzing (libFuzzer ships in libclang-rt-14-dev) and memcheck
)
if [[ "${1:-}" == "--extra" ]]; then
  packages+=(clang valgrind)
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing packages; run as root:" >&2
  echo "  apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql and redis-server packages start system services on install; the
# project never uses them (tests run private servers), so keep them from starting.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get update -qq || apt-get update
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: done"
