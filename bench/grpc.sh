#!/usr/bin/env bash
# gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) against the HTTP dialect
# (/auth/{ns}/{name}) on the same accessgate listener, same machine, same run. Not a test:
# it prints numbers and asserts none.
#
#   bench/grpc.sh                  release build, then a markdown table on stdout
#   bench/grpc.sh --report FILE    also writes the table, ratios and verdicts as a part of
#                                  docs/benchmarks.md (bench/run.sh joins the parts)
#
# The server gets one core's worth of workers (TOKIO_WORKER_THREADS=1, as in benches/e2e.rs);
# load generators share the machine's other core. Each row runs ACCESSGATE_BENCH_SECONDS (8)
# with ACCESSGATE_BENCH_CONNECTIONS (32) concurrent callers:
#   - HTTP with wrk (-t1, 32 keep-alive HTTP/1.1 connections), as benches/e2e.rs measures it;
#   - gRPC with ghz (built from the Go module proxy, cached), 32 concurrent calls over one
#     HTTP/2 connection, as a gateway multiplexes them;
#   - both again with the same generator (tests/grpc-client `load` / `load-http`, N calls).
# Allow = a valid token (200 / OK with identity headers); deny = no token (401 / UNAUTHENTICATED).
# "server CPU µs/req" (user + system time of the accessgate process over the row, from
# /proc) does not depend on how fast the load generator is.
set -euo pipefail
cd "$(dirname "$0")/.."

report=""
if [ "${1:-}" = "--report" ]; then report="${2:?--report needs a file}"; fi
started="$(date +%s)"
DURATION="${ACCESSGATE_BENCH_SECONDS:-8}"
CONC="${ACCESSGATE_BENCH_CONNECTIONS:-32}"
CALLS="${ACCESSGATE_BENCH_CALLS:-100000}"
GHZ_VERSION="${GHZ_VERSION:-v0.93.0}"   # the only version the module proxy lists for cmd/ghz

for tool in cargo go curl python3; do
  command -v "$tool" >/dev/null || { echo "grpc.sh: $tool is required" >&2; exit 1; }
done
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --locked --bin accessgate >&2
bin="$PWD/target/release/accessgate"
client="$(bash tests/grpc-client/build.sh | tail -n1)"
ghz_dir="${HOME:?}/.cache/accessgate/ghz/${GHZ_VERSION}"
if [ ! -x "$ghz_dir/ghz" ]; then
  mkdir -p "$ghz_dir"
  echo "grpc.sh: building ghz ${GHZ_VERSION} into $ghz_dir" >&2
  GOBIN="$ghz_dir" CGO_ENABLED=0 nice -n 10 go install -trimpath "github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION}" >&2
fi
ghz="$ghz_dir/ghz"

load_before="$(cut -d" " -f1-3 /proc/loadavg)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_accessgate "$bin"

token="$(curl -sf -X POST "$issuer/mint" -H 'content-type: application/json' \
  -d "{\"aud\": [\"$AUD\"], \"email\": \"alice@example.com\"}")"

# CheckRequests as Envoy sends them, named policy via context extensions.
check_json() {  # $1: extra header JSON members (may be empty)
  cat <<EOF
{"attributes": {
  "source": {"address": {"socketAddress": {"address": "203.0.113.7", "portValue": 53412}}},
  "request": {"http": {"id": "1", "method": "GET", "host": "app.example.test", "path": "/",
    "scheme": "https", "protocol": "HTTP/1.1",
    "headers": {":authority": "app.example.test", ":method": "GET", ":path": "/", ":scheme": "https",
      "user-agent": "curl/8", "x-forwarded-proto": "https", "x-request-id": "r-1"$1}}},
  "contextExtensions": {"namespace": "bench", "name": "web"}}}
EOF
}
check_json ", \"cf-access-jwt-assertion\": \"$token\"" >"$work/allow.json"
check_json "" >"$work/deny.json"
"$client" protoset -out "$work/authz.protoset" >/dev/null

# Sanity (and warm-up: keys fetched, caches filled) before measuring.
grep -q '"code":16' <("$client" check -addr "$auth" -request "$work/deny.json") \
  || { echo "grpc.sh: deny request not denied" >&2; exit 1; }
"$client" check -addr "$auth" -request "$work/allow.json" | grep -q '"ok_response"' \
  || { echo "grpc.sh: allow request not allowed" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-Original-URL: https://app.example.test/" \
  -H "Cf-Access-Jwt-Assertion: $token" "http://$auth/auth/bench/web")" = 200 ] \
  || { echo "grpc.sh: HTTP allow request not allowed" >&2; exit 1; }

rows=()
tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

# Each runner prints "rps<TAB>p50 ms<TAB>p99 ms<TAB>answers<TAB>requests".
run_wrk() {  # HEADERS...
  local args=() h
  for h in "$@"; do args+=(-H "$h"); done
  wrk -t1 -c"$CONC" -d"${DURATION}s" --latency "${args[@]}" "http://$auth/auth/bench/web" \
  | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s.strip())
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
n = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print("%.0f\t%.2f\t%.2f\t%s non-2xx\t%d" % (rps, p50, p99, non2xx.group(1) if non2xx else 0, n))'
}

run_ghz() {  # DATA_FILE
  "$ghz" --insecure --protoset "$work/authz.protoset" \
    --call envoy.service.auth.v3.Authorization.Check -D "$1" \
    -c "$CONC" --connections 1 -z "${DURATION}s" -O json "$auth" \
  | python3 -c '
import json, sys
r = json.load(sys.stdin)
lat = {int(d["percentage"]): d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
dist = r.get("statusCodeDistribution") or {}
codes = ",".join("%s:%s" % kv for kv in dist.items())
print("%.0f\t%.2f\t%.2f\trpc %s\t%d" % (r["rps"], lat.get(50, float("nan")), lat.get(99, float("nan")), codes, sum(dist.values())))'
}

go_load() {  # grpc-client load|load-http ARGS...
  "$client" "$@" -n "$CALLS" -c "$CONC" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.0f\t%.2f\t%.2f\t%s\t%d" % (r["rps"], r["p50_ms"], r["p99_ms"], ",".join("%s:%s" % kv for kv in r["outcomes"].items()), r["requests"]))'
}

# measure PROTOCOL TOOL OUTCOME RUNNER ARGS...: one row, with the server's CPU time (user +
# system, from /proc) per request over the run.
measure() {
  local protocol="$1" tool="$2" outcome="$3"; shift 3
  local t0 t1 out rps p50 p99 answers n
  t0="$(cpu_ticks)"
  out="$("$@")"
  t1="$(cpu_ticks)"
  IFS=$'\t' read -r rps p50 p99 answers n <<<"$out"
  local cpu_us
  cpu_us="$(awk -v d="$((t1 - t0))" -v t="$tck" -v n="$n" 'BEGIN { printf "%.1f", d * 1e6 / t / n }')"
  rows+=("| $protocol | $tool | $outcome | $rps | $p50 | $p99 | $cpu_us | $answers |")
  last_rps="$rps"; last_cpu="$cpu_us"
}

H_URL="X-Original-URL: https://app.example.test/"
H_TOKEN="Cf-Access-Jwt-Assertion: $token"
HTTP="HTTP/1.1 /auth/{ns}/{name}"
GRPC="gRPC Check (h2c, 1 conn)"
echo "measuring (${DURATION}s per wrk/ghz row, ${CALLS} calls per grpc-client row, ${CONC} concurrent) ..." >&2
measure "$HTTP" "wrk" "allow" run_wrk "$H_URL" "$H_TOKEN"
wrk_rps="$last_rps"; http_cpu="$last_cpu"
measure "$GRPC" "ghz ${GHZ_VERSION}" "allow" run_ghz "$work/allow.json"
ghz_rps="$last_rps"; grpc_cpu="$last_cpu"
measure "$HTTP" "wrk" "deny (401)" run_wrk "$H_URL"
measure "$GRPC" "ghz ${GHZ_VERSION}" "deny (401)" run_ghz "$work/deny.json"
measure "$HTTP" "grpc-client load-http" "allow" \
  go_load load-http -url "http://$auth/auth/bench/web" -H "$H_URL" -H "$H_TOKEN"
go_http_rps="$last_rps"
measure "$GRPC" "grpc-client load" "allow" go_load load -addr "$auth" -request "$work/allow.json"
go_grpc_rps="$last_rps"
measure "$HTTP" "grpc-client load-http" "deny (401)" \
  go_load load-http -url "http://$auth/auth/bench/web" -H "$H_URL"
measure "$GRPC" "grpc-client load" "deny (401)" go_load load -addr "$auth" -request "$work/deny.json"

# verdict NAME NUMERATOR DENOMINATOR TARGET: one ratio row, met when ratio >= TARGET.
verdict() {
  awk -v n="$1" -v a="$2" -v b="$3" -v t="$4" 'BEGIN {
    r = (b > 0) ? a / b : 0
    if (t == "-") printf "| %s | %.2f× | (context) | met |\n", n, r
    else printf "| %s | %.2f× | ≥ %s | %s |\n", n, r, t, (r >= t) ? "met" : "missed" }'
}
table="$(
  echo "| protocol | load generator | outcome | req/s | p50 ms | p99 ms | server CPU µs/req | answers |"
  echo "|---|---|---|---:|---:|---:|---:|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$(nproc) cores, $(uname -m), load average before: ${load_before}; server TOKIO_WORKER_THREADS=1; ${CONC} concurrent callers."
)"
echo "$table"
verdicts="$(
  echo "| ratio | measured | target | |"
  echo "|---|---:|---|---|"
  verdict "gRPC vs HTTP throughput, same generator (grpc-client load vs load-http), allow" "$go_grpc_rps" "$go_http_rps" 0.8
  verdict "gRPC vs HTTP capacity: server CPU per HTTP request / per gRPC check, allow" "$http_cpu" "$grpc_cpu" 0.8
  verdict "gRPC (ghz) vs HTTP (wrk) throughput, allow; different generators" "$ghz_rps" "$wrk_rps" -
)"
echo
echo "$verdicts"
if [ -n "$report" ]; then
  mkdir -p "$(dirname "$report")"
  {
    echo "## gRPC ext_authz against the HTTP dialect"
    echo
    echo "One accessgate (one worker), both protocols on its one listener, same token, allow = 200/OK with identity headers, deny = no token. ghz (Go) needs more CPU per call than wrk (C) on the same 2 cores, so the throughput ratio is also given with one generator for both protocols (the load and load-http modes of tests/grpc-client), and as the server's own CPU per request, which does not depend on the generator. ghz counts calls still in flight when its duration ends as Unavailable."
    echo
    echo "_This part took $(( $(date +%s) - started ))s._"
    echo
    echo "$table"
    echo
    echo "$verdicts"
    echo
  } >"$report"
  echo "wrote $report" >&2
fi
