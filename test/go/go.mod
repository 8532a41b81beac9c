// Tests of the Go package (src/go/retryq) against real PostgreSQL, Redis and the C
// worker. A module of its own so that the package's go.mod stays free of requirements:
// the PostgreSQL driver is a test-only dependency, taken from Debian's
// golang-github-lib-pq-dev (no module proxy is used; see test/go/run.sh).
module retryq.dev/retryqtest

go 1.19

require (
	github.com/lib/pq v1.10.7
	retryq.dev/retryq v0.0.0
)

replace (
	github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
	retryq.dev/retryq => ../../src/go/retryq
)
