#!/usr/bin/env bash
# Build Traefik from the Go module proxy into a cache dir; prints the binary path on the last
# line of stdout (progress and go's output go to stderr). A no-op when already built.
#
#   tests/traefik/build.sh            build if missing
#   tests/traefik/build.sh --force    rebuild
#
# Cache: ${ACCESSGATE_TRAEFIK_CACHE:-$HOME/.cache/accessgate/traefik/<version>}/traefik
#
# `go install github.com/traefik/traefik/v3/cmd/traefik@VERSION` cannot build it (traefik's
# go.mod has replace directives, one of them a local path), so it is built as a `tool` of the
# throwaway module mod/ (see mod/gen-gomod.sh). The version is in versions.env.
# Gentle on a shared machine: `nice -n 15`; ACCESSGATE_TRAEFIK_GO_P=N sets `go build -p N`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

cache="${ACCESSGATE_TRAEFIK_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/traefik/${TRAEFIK_VERSION}}"
bin="$cache/traefik"
if [ "$force" = 0 ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH" >&2; exit 1; }
grep -Eq "^	github.com/traefik/traefik/v3 ${TRAEFIK_VERSION}( |\$)" "$here/mod/go.mod" \
  || { echo "build.sh: mod/go.mod is not for traefik ${TRAEFIK_VERSION}; run mod/gen-gomod.sh" >&2; exit 1; }

mkdir -p "$cache"
goflags=(-trimpath -buildvcs=false)
[ -n "${ACCESSGATE_TRAEFIK_GO_P:-}" ] && goflags+=(-p "$ACCESSGATE_TRAEFIK_GO_P")
pkg=github.com/traefik/traefik/v3/pkg/version
ldflags="-s -w -X ${pkg}.Version=${TRAEFIK_VERSION} -X ${pkg}.Codename=accessgate-tests -X ${pkg}.BuildDate=unknown"

echo "build.sh: building traefik ${TRAEFIK_VERSION} into $cache ..." >&2
t0=$SECONDS
tmp="$(mktemp "$cache/.traefik.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
( cd "$here/mod" && CGO_ENABLED=0 GOFLAGS="-mod=readonly" nice -n 15 \
    go build "${goflags[@]}" -ldflags "$ldflags" -o "$tmp" github.com/traefik/traefik/v3/cmd/traefik ) >&2
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
printf 'build.sh: built traefik %s in %ss (%s bytes)\n' "$TRAEFIK_VERSION" $((SECONDS - t0)) "$(stat -c %s "$bin")" >&2
echo "$bin"
