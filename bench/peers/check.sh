#!/usr/bin/env bash
# Smoke-check the benchmark peers against accessgate's dev issuer.
#
#   ./check.sh
#
# Builds the peers if needed (./build.sh), starts `accessgate dev-issuer`, oauth2-proxy and
# Oathkeeper on free loopback ports, mints tokens, and asserts for each peer:
#   valid token -> 2xx, no token -> 401, expired -> 401/403, wrong audience -> 401/403,
#   wrong issuer -> 401/403, tampered signature -> 401/403.
# Also reports (without asserting) how each treats a token whose nbf is an hour ahead.
# Every process it started is stopped on exit (each runs in its own process group).
#
# Env: ACCESSGATE_BIN (default /work/main/target/release/accessgate, built with
#      `cargo build --release` when missing), AUD, ACCESSGATE_PEERS_CACHE (see build.sh),
#      PEER_LOG=1 to keep the peers' per-request logs (printed on failure).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
AUD="${AUD:-4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2}"

command -v curl >/dev/null || { echo "check.sh: curl not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "check.sh: python3 not found (used to pick free ports)" >&2; exit 1; }

ag="${ACCESSGATE_BIN:-$root/target/release/accessgate}"
if [ ! -x "$ag" ]; then
  echo "check.sh: building accessgate (cargo build --release) ..." >&2
  (cd "$root" && nice -n 10 cargo build --release) >&2
fi
bindir="$("$here/build.sh" | tail -n1)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/peers-check.XXXXXX")"
pids=()
cleanup() {
  local pid i
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: run CMD in its own session/process group, log to $tmp/NAME.log.
start() {
  local name="$1"; shift
  setsid "$@" > "$tmp/$name.log" 2>&1 < /dev/null &
  pids+=("$!")
}
# wait_ok NAME URL: until URL answers 200 (30 s).
wait_ok() {
  local i code
  for i in $(seq 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$2" || true)"
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  echo "check.sh: $1 did not come up at $2 (last status ${code:-none}); its log:" >&2
  cat "$tmp/$1.log" >&2
  exit 1
}
# Free loopback ports: issuer, oauth2-proxy, oathkeeper api/proxy/metrics.
read -r p_iss p_o2p p_ok p_okp p_okm < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
issuer="http://127.0.0.1:$p_iss"

start issuer "$ag" dev-issuer --listen "127.0.0.1:$p_iss" --log warn
wait_ok issuer "$issuer/.well-known/openid-configuration"

# oauth2-proxy runs OIDC discovery once at start-up, so the issuer must be up first.
start oauth2-proxy env OAUTH2_PROXY_BIN="$bindir/oauth2-proxy" \
  "$here/start-oauth2-proxy.sh" "$p_o2p" "$issuer" "$AUD"
start oathkeeper env OATHKEEPER_BIN="$bindir/oathkeeper" OATHKEEPER_PROXY_PORT="$p_okp" OATHKEEPER_METRICS_PORT="$p_okm" \
  "$here/start-oathkeeper.sh" "$p_ok" "$issuer" "$AUD"
wait_ok oauth2-proxy "http://127.0.0.1:$p_o2p/ping"
wait_ok oathkeeper "http://127.0.0.1:$p_ok/health/ready"

mint() {
  local out
  out="$(curl -sf -X POST "$issuer/mint" -H 'content-type: application/json' -d "$1")" \
    || { echo "check.sh: mint failed for $1" >&2; exit 1; }
  printf '%s' "$out"
}
base='"email":"alice@example.com"'
valid="$(mint "{\"aud\":[\"$AUD\"],$base}")"
expired="$(mint "{\"aud\":[\"$AUD\"],$base,\"ttl\":-3600}")"
wrongaud="$(mint "{\"aud\":[\"0000000000000000000000000000000000000000000000000000000000000000\"],$base}")"
wrongiss="$(mint "{\"aud\":[\"$AUD\"],$base,\"claims\":{\"iss\":\"http://127.0.0.1:1\"}}")"
notyet="$(mint "{\"aud\":[\"$AUD\"],$base,\"nbf_offset\":3600}")"
# Tampered: change one character in the middle of the signature.
sig="${valid##*.}"; mid=$(( ${#sig} / 2 )); c="${sig:$mid:1}"; [ "$c" = A ] && r=B || r=A
tampered="${valid%.*}.${sig:0:$mid}${r}${sig:$((mid + 1))}"

declare -A url=(
  [oauth2-proxy]="http://127.0.0.1:$p_o2p/oauth2/auth"
  [oathkeeper]="http://127.0.0.1:$p_ok/decisions/app/some/path?q=1"
)
pass=0; fail=0; summary=()
# probe PEER CASE TOKEN EXPECT(2xx|401|4xx|info)
probe() {
  local peer="$1" case="$2" token="$3" expect="$4" hdrs code ok
  hdrs=(-H "X-Forwarded-Host: app.example.com" -H "X-Forwarded-Proto: https" -H "X-Original-URL: https://app.example.com/some/path")
  [ -n "$token" ] && hdrs+=(-H "Authorization: Bearer $token")
  code="$(curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --max-time 5 "${hdrs[@]}" "${url[$peer]}" || true)"
  case "$expect" in
    2xx) [[ "$code" == 2?? ]] && ok=1 || ok=0 ;;
    401) [ "$code" = 401 ] && ok=1 || ok=0 ;;
    4xx) [[ "$code" == 401 || "$code" == 403 ]] && ok=1 || ok=0 ;;
    info) summary+=("$(printf '  info %-12s %-18s -> %s (not asserted)' "$peer" "$case" "$code")"); return 0 ;;
  esac
  local extra=""
  if [ "$expect" = 2xx ]; then
    extra="$(grep -iE '^x-(auth-request-)?(user|email)' "$tmp/headers" | tr -d '\r' | tr '\n' ' ' || true)"
  fi
  if [ "$ok" = 1 ]; then
    pass=$((pass + 1)); summary+=("$(printf '  ok   %-12s %-18s -> %s %s' "$peer" "$case" "$code" "$extra")")
  else
    fail=$((fail + 1)); summary+=("$(printf '  FAIL %-12s %-18s -> %s (want %s) %s' "$peer" "$case" "$code" "$expect" "$(head -c 200 "$tmp/body")")")
  fi
}
for peer in oauth2-proxy oathkeeper; do
  probe "$peer" valid "$valid" 2xx
  probe "$peer" missing "" 401
  probe "$peer" expired "$expired" 4xx
  probe "$peer" wrong-audience "$wrongaud" 4xx
  probe "$peer" wrong-issuer "$wrongiss" 4xx
  probe "$peer" bad-signature "$tampered" 4xx
  probe "$peer" nbf-in-future "$notyet" info
done

echo "peers check (issuer $issuer, aud ${AUD:0:12}...):"
printf '%s\n' "${summary[@]}"
if [ "$fail" -ne 0 ]; then
  for name in issuer oauth2-proxy oathkeeper; do echo "--- $name log (tail)"; tail -n 30 "$tmp/$name.log"; done >&2
fi
echo "check: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
