#!/usr/bin/env bash
# Build promtool (Prometheus's rule checker and rule unit-test runner) from the Go module
# proxy into a cache dir; prints the binary path on the last line of stdout. A no-op when
# already built. Prometheus tags its Go module v0.<major*100+minor>.<patch>: v0.316.0 is
# Prometheus 3.16.0.
set -euo pipefail
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
cache="${ACCESSGATE_PROMTOOL_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/promtool/${PROMTOOL_VERSION}}"
if [ ! -x "$cache/promtool" ]; then
  command -v go >/dev/null || { echo "promtool/build.sh: 'go' not found on PATH" >&2; exit 1; }
  mkdir -p "$cache"
  echo "building promtool ${PROMTOOL_VERSION} into $cache" >&2
  # Build into a temp dir and move: an interrupted build never leaves a half binary behind.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" nice -n 10 go install \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMTOOL_VERSION}" \
    "github.com/prometheus/prometheus/cmd/promtool@${PROMTOOL_VERSION}" >&2
  mv "$tmp/promtool" "$cache/promtool"
fi
echo "$cache/promtool"
