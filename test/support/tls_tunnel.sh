#!/usr/bin/env bash
# Sourced after lib.sh: a TLS-only redis-server (--port 0 --tls-port) with a CA and a
# server certificate made here with openssl, and a local stunnel in client mode in front
# of it: the recipe of docs/operations.md ("Redis that only speaks TLS"). Processes run
# in the foreground as background jobs listed in t_pids (lib.sh's cleanup kills them).
#
#   tls_start     sets TLS_DIR, TLS_PORT (TLS-only Redis), TUNNEL_PORT (plain, loopback),
#                 TUNNEL_URL=redis://127.0.0.1:$TUNNEL_PORT, TLS_CLI (redis-cli over TLS)
TLS_DIR="$t_tmp/tls"

tls_certs() {
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=retryq test CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile san.ext -out server.crt 2>/dev/null
    chmod 644 server.key
  )
}

tls_redis_ping() { [[ $(redis-cli --tls --cacert "$TLS_DIR/ca.crt" -h 127.0.0.1 -p "$TLS_PORT" ping 2>/dev/null) == PONG ]]; }
tunnel_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$TUNNEL_PORT" ping 2>/dev/null) == PONG ]]; }

tls_start() {
  command -v stunnel4 >/dev/null || command -v stunnel >/dev/null ||
    { echo "FAIL - stunnel not found (scripts/deps.sh installs stunnel4)"; exit 1; }
  tls_certs || { echo "FAIL - openssl could not make the test certificates"; exit 1; }
  read -r TLS_PORT TUNNEL_PORT <<<"$("$(dirname "${BASH_SOURCE[0]}")/services.sh" ports 2)"
  mkdir -p "$TLS_DIR/redis"
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$TLS_PORT" \
    --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients no \
    --dir "$TLS_DIR/redis" --logfile "$TLS_DIR/redis/redis.log" --appendonly yes \
    --save '' --maxmemory-policy noeviction >/dev/null 2>&1 &
  t_pids+=("$!")
  wait_for 10 tls_redis_ping || { tail -5 "$TLS_DIR/redis/redis.log"; echo "FAIL - TLS redis did not start"; exit 1; }
  cat >"$TLS_DIR/stunnel.conf" <<EOF
foreground = yes
pid =
output = $TLS_DIR/stunnel.log
debug = info
[redis]
client = yes
accept = 127.0.0.1:$TUNNEL_PORT
connect = 127.0.0.1:$TLS_PORT
CAfile = $TLS_DIR/ca.crt
verifyChain = yes
checkHost = localhost
EOF
  "$(command -v stunnel4 || command -v stunnel)" "$TLS_DIR/stunnel.conf" >/dev/null 2>&1 &
  t_pids+=("$!")
  wait_for 10 tunnel_ping || { tail -5 "$TLS_DIR/stunnel.log"; echo "FAIL - stunnel did not start"; exit 1; }
  TUNNEL_URL="redis://127.0.0.1:$TUNNEL_PORT"
  TLS_CLI=(redis-cli --tls --cacert "$TLS_DIR/ca.crt" -h 127.0.0.1 -p "$TLS_PORT")
}
