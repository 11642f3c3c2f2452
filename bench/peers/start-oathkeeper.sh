#!/usr/bin/env bash
# Run Ory Oathkeeper in the foreground with its decisions API on PORT (the caller backgrounds it).
#
#   ./start-oathkeeper.sh PORT ISSUER_URL AUD
#
# Request shape (ingress-nginx auth-url = http://127.0.0.1:PORT/decisions$request_uri):
#   GET /decisions/<any path>   with   Authorization: Bearer <JWT>
#   -> 200 + X-User (sub) / X-User-Email (email); 401 otherwise (JSON error body).
# One access rule matches every URL/method; authenticator jwt (RS256 only, JWKS at
# ISSUER_URL/cdn-cgi/access/certs cached 30 s by default, trusted_issuers ISSUER_URL,
# target_audience AUD, exp/nbf/iat), authorizer allow, mutator header.
#
# `oathkeeper serve` always also opens a reverse proxy and a Prometheus port: they listen on
# 127.0.0.1:PORT+1 and :PORT+2 unless OATHKEEPER_PROXY_PORT / OATHKEEPER_METRICS_PORT say otherwise.
# Env: OATHKEEPER_BIN (default: the bin dir printed by ./build.sh),
#      TOKEN_HEADER (default Authorization = `Bearer <JWT>`; any other header name is read raw,
#      e.g. TOKEN_HEADER=Cf-Access-Jwt-Assertion), PEER_LOG=1 for info-level (per-request) logs.
# Generated config lives in a temp dir, removed on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 3 ] || { echo "usage: $0 PORT ISSUER_URL AUD" >&2; exit 2; }
port="$1"; issuer="${2%/}"; aud="$3"
proxy_port="${OATHKEEPER_PROXY_PORT:-$((port + 1))}"
metrics_port="${OATHKEEPER_METRICS_PORT:-$((port + 2))}"
token_header="${TOKEN_HEADER:-Authorization}"
level=warn; [ "${PEER_LOG:-0}" = 1 ] && level=info

binary="${OATHKEEPER_BIN:-$("$here/build.sh" | tail -n1)/oathkeeper}"
[ -x "$binary" ] || { echo "start-oathkeeper: no binary at $binary" >&2; exit 1; }

dir="$(mktemp -d "${TMPDIR:-/tmp}/oathkeeper-peer.XXXXXX")"
cp "$here/oathkeeper/rules.json.tmpl" "$dir/rules.json"
sed -e "s#@API_PORT@#${port}#g" \
    -e "s#@PROXY_PORT@#${proxy_port}#g" \
    -e "s#@METRICS_PORT@#${metrics_port}#g" \
    -e "s#@ISSUER@#${issuer}#g" \
    -e "s#@AUD@#${aud}#g" \
    -e "s#@RULES_FILE@#${dir}/rules.json#g" \
    -e "s#@TOKEN_HEADER@#${token_header}#g" \
    -e "s#@LOG_LEVEL@#${level}#g" \
    "$here/oathkeeper/config.yaml.tmpl" > "$dir/config.yaml"
if grep -n '@[A-Z_]*@' "$dir/config.yaml" >&2; then
  echo "start-oathkeeper: unsubstituted placeholder in config" >&2; rm -rf "$dir"; exit 1
fi

# Not exec: the temp dir must go when oathkeeper stops. Forward TERM/INT to it.
"$binary" serve --disable-telemetry --config "$dir/config.yaml" &
child=$!
cleanup() { kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; rm -rf "$dir"; }
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 130' INT
trap 'rm -rf "$dir"' EXIT
set +e
wait "$child"
rc=$?
set -e
exit "$rc"
