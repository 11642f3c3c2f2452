#!/usr/bin/env bash
# Build the Envoy-shaped gRPC ext_authz test client (main.go here; Envoy's Go protos and
# grpc-go from the Go module proxy) into a cache dir; prints the binary path on the last
# line of stdout (progress and go's output go to stderr). A no-op when already built.
#
#   tests/grpc-client/build.sh            build if missing
#   tests/grpc-client/build.sh --force    rebuild
#
# Cache: ${ACCESSGATE_GRPC_CLIENT_CACHE:-$HOME/.cache/accessgate/grpc-client/<version>}/grpc-client
# where <version> is a hash of go.mod, go.sum and main.go, so an edit builds a new binary.
# Gentle on a shared machine: `nice -n 15`; ACCESSGATE_GRPC_CLIENT_GO_P=N sets `go build -p N`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

version="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
cache="${ACCESSGATE_GRPC_CLIENT_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/grpc-client/${version}}"
bin="$cache/grpc-client"
if [ "$force" = 0 ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH" >&2; exit 1; }
mkdir -p "$cache"
goflags=(-trimpath -buildvcs=false)
[ -n "${ACCESSGATE_GRPC_CLIENT_GO_P:-}" ] && goflags+=(-p "$ACCESSGATE_GRPC_CLIENT_GO_P")

echo "build.sh: building grpc-client ${version} into $cache ..." >&2
t0=$SECONDS
tmp="$(mktemp "$cache/.grpc-client.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# -mod=readonly: go.mod and go.sum are the pinned versions; a mismatch fails, never edits them.
( cd "$here" && CGO_ENABLED=0 GOFLAGS="-mod=readonly" nice -n 15 \
    go build "${goflags[@]}" -ldflags "-s -w" -o "$tmp" . ) >&2
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
printf 'build.sh: built grpc-client %s in %ss (%s bytes)\n' "$version" $((SECONDS - t0)) "$(stat -c %s "$bin")" >&2
echo "$bin"
