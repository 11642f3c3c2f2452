#!/usr/bin/env bash
# A flame graph of accessgate answering cached `/auth/{ns}/{name}` requests under wrk load
# (the "direct, cached" row of the benchmarks): perf samples the server, inferno (from
# crates.io, cached) draws the SVG.
#
#   bench/profile.sh OUT.svg [TITLE]
#
# Builds the `profiling` profile (the release build with symbols). Needs perf (Debian's
# linux-perf) and wrk. One worker thread, as in the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bench/profile.sh OUT.svg [TITLE]}"
title="${2:-accessgate, cached /auth/{ns}/{name} under wrk -c32 (one worker)}"

for tool in perf wrk curl; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is required" >&2; exit 1; }
done
inferno="${HOME:?}/.cache/accessgate/inferno"
if [ ! -x "$inferno/bin/inferno-flamegraph" ]; then
  nice cargo install --locked --root "$inferno" inferno@0.12.8 >&2
fi
cargo build --profile profiling --locked --bin accessgate >&2
bin="$PWD/target/profiling/accessgate"

# shellcheck source=bench/lib.sh
source bench/lib.sh
start_accessgate "$bin" "  claimHeaders:
    - { header: X-Auth-Request-Email, claim: email }"
token="$(curl -sf -X POST "$issuer/mint" -H 'content-type: application/json' \
  -d "{\"aud\": [\"$AUD\"], \"email\": \"alice@example.com\"}")"
url="http://$auth/auth/bench/web"
headers=(-H "X-Original-URL: https://app.example.test/" -H "Cf-Access-Jwt-Assertion: $token")
[ "$(curl -s -o /dev/null -w '%{http_code}' "${headers[@]}" "$url")" = 200 ] \
  || { echo "profile.sh: the token is not allowed" >&2; exit 1; }

wrk -t1 -c32 -d3s "${headers[@]}" "$url" >/dev/null # warm-up
wrk -t1 -c32 -d12s "${headers[@]}" "$url" >"$work/wrk.txt" &
load=$!
sleep 2
perf record -F 999 -g --call-graph dwarf,16384 -p "$server_pid" -o "$work/perf.data" -- sleep 8 >&2 2>/dev/null
wait "$load"
perf script -i "$work/perf.data" 2>/dev/null | "$inferno/bin/inferno-collapse-perf" >"$work/folded"
mkdir -p "$(dirname "$out")"
# Frames under 0.2 % of samples are left out: the SVG stays small enough to keep in docs/.
"$inferno/bin/inferno-flamegraph" --title "$title" --width 1400 --minwidth 0.2 <"$work/folded" >"$out"
echo "$(grep 'Requests/sec' "$work/wrk.txt") (under perf)" >&2
echo "wrote $out" >&2
