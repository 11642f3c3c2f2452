#!/usr/bin/env bash
# All benchmarks, end to end, from a fresh clone: installs wrk and nginx, builds the peers
# (oauth2-proxy, Ory Oathkeeper) from the Go module proxy, then runs the end-to-end
# benchmark (writes docs/benchmarks.md) and the criterion micro-benchmarks.
# Not a test: numbers are reported with ratios against baselines from the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v openssl >/dev/null || need_apt+=(openssl)
if ((${#need_apt[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -x bench/peers/build.sh ] || [ -f bench/peers/build.sh ]; then
  echo "peers: $(bash bench/peers/build.sh | tail -n1)" || echo "peers could not be built; the report says why"
fi

cargo bench --locked --bench e2e
cargo bench --locked --bench verify
