#!/usr/bin/env bash
# Every test accessgate has, from a fresh clone: installs what the tests need (idempotent),
# then format and lint checks, then `cargo test` (unit, integration, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)            # end-to-end tests run real nginx
if ((${#need_apt[@]})); then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install the Rust toolchain (rustup) with rustfmt and clippy" >&2; exit 1; }
done

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
