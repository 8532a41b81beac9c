#!/usr/bin/env bash
# The Go package's checks and tests, for ctest (test/CMakeLists.txt registers each step):
#   test/go/run.sh lint     gofmt -l prints nothing and go vet passes, for both modules
#   test/go/run.sh unit     the package's own tests (src/go/retryq; no server needed)
#   test/go/run.sh submit   retryq.Submit and SubmitFilter against the private PostgreSQL and Redis
#   test/go/run.sh worker   Go submits, the C retryq-worker completes (the mock router)
# submit and worker run under `services.sh exec` (RETRYQ_TEST_*) with CTest's RETRYQ_CLI,
# RETRYQ_WORKER_BIN and RETRYQ_MOCK_ROUTER_BIN.
#
# Offline by construction: Go is Debian's golang-go (1.19), the test-only PostgreSQL
# driver is Debian's golang-github-lib-pq-dev, wired by a replace in test/go/go.mod; no
# module proxy or checksum database is asked. The build and module caches live under the
# build dir, so HOME does not matter. A missing toolchain fails the test, never skips it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pkg=$root/src/go/retryq
build=${RETRYQ_BINARY_DIR:-$root/build}
step=${1:-}

fail() { echo "FAIL - $*"; exit 1; }

command -v go >/dev/null 2>&1 || fail "go not found: install golang-go (scripts/deps.sh)"
[[ -f /usr/share/gocode/src/github.com/lib/pq/go.mod ]] ||
  fail "lib/pq sources not found: install golang-github-lib-pq-dev (scripts/deps.sh)"

export GOCACHE=$build/go/cache GOPATH=$build/go/path GOMODCACHE=$build/go/path/pkg/mod
export GOPROXY=off GOSUMDB=off GOFLAGS=-mod=readonly GO111MODULE=on GOENV=off
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$GOCACHE" "$GOPATH"

gotest() { # <module dir> <go test args...>
  (cd "$1" && go test -count=1 -timeout 300s -v "${@:2}" ./...)
}

case $step in
  lint)
    unformatted=$(gofmt -l "$pkg" "$here")
    [[ -z $unformatted ]] || fail "gofmt -l lists files to format: $unformatted"
    echo "ok   - gofmt -l: nothing to format"
    (cd "$pkg" && go vet ./...) || fail "go vet src/go/retryq"
    (cd "$here" && go vet ./...) || fail "go vet test/go"
    echo "ok   - go vet: both modules"
    # The package must stay dependency-free: its go.mod requires nothing.
    if grep -Eq '^[[:space:]]*(require|replace)' "$pkg/go.mod"; then
      fail "src/go/retryq/go.mod must not require or replace anything"
    fi
    echo "ok   - src/go/retryq/go.mod has no requirements"
    ;;
  unit) gotest "$pkg" ;;
  submit) gotest "$here" -run '^TestSubmit' ;;
  worker) gotest "$here" -run '^TestWorker' ;;
  *) echo "usage: $0 lint|unit|submit|worker" >&2; exit 2 ;;
esac
