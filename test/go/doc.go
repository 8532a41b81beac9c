// Package retryqtest holds the tests of retryq's Go package (src/go/retryq) that need
// real servers: PostgreSQL, Redis and the C worker. Run them with test/go/run.sh (ctest
// does): it points the Go toolchain at Debian's lib/pq and keeps it offline.
package retryqtest
