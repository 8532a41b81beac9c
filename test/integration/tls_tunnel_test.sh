#!/usr/bin/env bash
# TLS through a local tunnel (issue 16, docs/operations.md "Redis that only speaks TLS"):
# a TLS-only redis-server (--port 0 --tls-port, a test CA and server certificate made
# with openssl) behind a local stunnel in client mode that verifies the certificate. The
# CLI enqueues through the tunnel, the worker takes and records the jobs through it, and
# `retryq stats` reads the queue through it; rediss:// URLs are refused with a pointer to
# the recipe.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
# shellcheck source=../support/tls_tunnel.sh
source "$here/../support/tls_tunnel.sh"
# shellcheck source=../chaos/seed.sh
source "$here/../chaos/seed.sh"
need_env RETRYQ_TEST_ADMIN_URL RETRYQ_CLI RETRYQ_WORKER_BIN RETRYQ_MOCK_ROUTER_BIN

tls_start
check "the Redis server speaks TLS only: a plain client gets no answer" \
  bash -c "! timeout 3 redis-cli -h 127.0.0.1 -p $TLS_PORT ping 2>/dev/null | grep -q PONG"
check "the tunnel verified the server certificate and answers in clear on loopback" tunnel_ping

# rediss:// is refused by the CLI and the worker, pointing at the recipe
out=$("$RETRYQ_CLI" --redis-url "rediss://127.0.0.1:$TLS_PORT" stats 2>&1 || true)
check "the CLI refuses rediss:// and points to docs/operations.md" \
  bash -c "[[ \"\$0\" == *'hiredis 0.14 has no TLS'* && \"\$0\" == *docs/operations.md* ]]" "$out"
set +e
werr=$("$RETRYQ_WORKER_BIN" --redis-url "rediss://127.0.0.1:$TLS_PORT" --database-url "postgresql://x@127.0.0.1/x" \
  --router-url http://127.0.0.1:1 2>&1)
wrc=$?
set -e
check_eq "the worker refuses rediss:// as a configuration error" 78 "$wrc"
check "the worker's message points to docs/operations.md" \
  bash -c "[[ \"\$0\" == *docs/operations.md* ]]" "$werr"

# the e2e path through the tunnel
new_database
Q="tls_$$"
N=20
export RETRYQ_DATABASE_URL=$DB RETRYQ_REDIS_URL=$TUNNEL_URL RETRYQ_QUEUE=$Q
start_router --latency-ms 5
export RETRYQ_ROUTER_URL=$ROUTER_URL
job=$(insert_job '{"id":"tls","questions":["identity_basic","math_basic","geography_basic"]}')
seed_executions "$job" "$N"
seed_job_file "$job" "$t_tmp/jobs.jsonl"
check "retryq enqueue through the tunnel" "$RETRYQ_CLI" enqueue --from "$t_tmp/jobs.jsonl"
check_eq "the jobs are on the TLS-only server" "$N" "$("${TLS_CLI[@]}" LLEN "$Q")"
pending=$("$RETRYQ_CLI" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])')
check_eq "retryq stats through the tunnel sees them" "$N" "$pending"

"$RETRYQ_WORKER_BIN" --http-addr off >"$t_tmp/worker.log" 2>&1 &
wpid=$!
t_pids+=("$wpid")
done_all() { [[ $(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND status = 'completed'") == "$N" ]]; }
check "the worker took and recorded every job through the tunnel" wait_for 60 done_all
clients=$("${TLS_CLI[@]}" CLIENT LIST)
check "the worker's connections reached the TLS server (CLIENT LIST there)" \
  bash -c "[[ \"\$0\" == *retryq-worker-pop* && \"\$0\" == *retryq-worker-command* ]]" "$clients"
kill -TERM "$wpid"
wait "$wpid" 2>/dev/null || true
once=$(sql -c "SELECT count(*) FROM executions WHERE job_id = $job AND jsonb_array_length(jsonb_path_query_array(retry_history, '\$[*] ? (@.status != \"retrying\")')) = 1")
check_eq "one outcome entry each" "$N" "$once"
stats=$("$RETRYQ_CLI" stats --json)
check_eq "retryq stats through the tunnel: nothing pending" 0 \
  "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["pending"] + d["processing"] + d["delayed"] + d["dead"])' "$stats")"
check "stunnel logged the verified TLS connections" grep -q "Certificate accepted\|connected remote server" "$TLS_DIR/stunnel.log"
t_finish
