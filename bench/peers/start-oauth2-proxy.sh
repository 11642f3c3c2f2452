#!/usr/bin/env bash
# Run oauth2-proxy in the foreground as a JWT-bearer auth endpoint (the caller backgrounds it).
#
#   ./start-oauth2-proxy.sh PORT ISSUER_URL AUD
#
# Request shape (ingress-nginx auth-url = http://127.0.0.1:PORT/oauth2/auth):
#   GET /oauth2/auth   with   Authorization: Bearer <JWT>
#   -> 202 Accepted + X-Auth-Request-User (sub) / X-Auth-Request-Email (email); 401 otherwise.
# The JWT is verified locally on every request (no token cache): signature against the
# issuer's JWKS (jwks_uri from OIDC discovery at ISSUER_URL/.well-known/openid-configuration,
# done once at start-up, so the issuer must be up first; keys fetched on first use and again
# when an unknown kid shows up), iss == ISSUER_URL, AUD in aud, exp and nbf. The `type` claim
# is not checked. Cookie sessions exist too, but no cookie is ever issued (no login flow).
#
# Env: OAUTH2_PROXY_BIN (default: the bin dir printed by ./build.sh),
#      PEER_LOG=1 to keep oauth2-proxy's per-request access/auth logs (off by default).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 3 ] || { echo "usage: $0 PORT ISSUER_URL AUD" >&2; exit 2; }
port="$1"; issuer="${2%/}"; aud="$3"

binary="${OAUTH2_PROXY_BIN:-$("$here/build.sh" | tail -n1)/oauth2-proxy}"
[ -x "$binary" ] || { echo "start-oauth2-proxy: no binary at $binary" >&2; exit 1; }

logging=(--request-logging=false --auth-logging=false)
[ "${PEER_LOG:-0}" = 1 ] && logging=(--request-logging=true --auth-logging=true)

# A cookie secret must be 16, 24 or 32 bytes; it only seals (unused) session cookies.
cookie_secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"   # 32 hex chars

# No config file is needed: everything is a flag. exec so the caller's PID is oauth2-proxy's.
exec "$binary" \
  --http-address="127.0.0.1:${port}" \
  --provider=oidc \
  --oidc-issuer-url="${issuer}" \
  --client-id="${aud}" \
  --client-secret=unused \
  --skip-jwt-bearer-tokens=true \
  --email-domain='*' \
  --upstream=static://202 \
  --set-xauthrequest=true \
  --cookie-secret="${cookie_secret}" \
  --cookie-secure=false \
  --redirect-url="http://127.0.0.1:${port}/oauth2/callback" \
  --skip-provider-button=true \
  "${logging[@]}"
