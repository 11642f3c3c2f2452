#!/usr/bin/env bash
# Build the benchmark peers (oauth2-proxy, Ory Oathkeeper) from the Go module proxy.
#
#   ./build.sh            build what is missing or stale; print the bin dir on the last line of stdout
#   ./build.sh --force    rebuild both
#
# Cache: ${ACCESSGATE_PEERS_CACHE:-$HOME/.cache/accessgate/peers}/bin
# A binary is skipped when it exists and its stamp (bin/.<name>.stamp) matches a hash of the
# version, the go version, the build flags (and, for oathkeeper, oathkeeper-mod/go.mod+go.sum).
#
# oauth2-proxy: `go install github.com/oauth2-proxy/oauth2-proxy/v7@VERSION`.
# oathkeeper:   `go install` cannot build it (replace directive in its go.mod, and the proxy
#               refuses its version list, which go install reads for deprecations), so it is
#               built as a `tool` of the throwaway module oathkeeper-mod/ (see gen-gomod.sh).
#
# Gentle on a shared machine: `nice -n 10`; ACCESSGATE_PEERS_GO_P=N sets `go build -p N`.
# Progress and go's output go to stderr; stdout carries only the bin dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
# shellcheck source=versions.env
. ./versions.env

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH" >&2; exit 1; }
grep -Eq "^	github.com/ory/oathkeeper ${OATHKEEPER_VERSION}( |\$)" oathkeeper-mod/go.mod \
  || { echo "build.sh: oathkeeper-mod/go.mod is not for oathkeeper ${OATHKEEPER_VERSION}; run oathkeeper-mod/gen-gomod.sh" >&2; exit 1; }

cache="${ACCESSGATE_PEERS_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/peers}"
bin="$cache/bin"
mkdir -p "$bin"

export CGO_ENABLED=0
goflags=(-trimpath -buildvcs=false)
[ -n "${ACCESSGATE_PEERS_GO_P:-}" ] && goflags+=(-p "$ACCESSGATE_PEERS_GO_P")
gover="$(go version)"

stamp_of() { { printf '%s\n' "$@"; echo "$gover ${goflags[*]} CGO_ENABLED=$CGO_ENABLED"; } | sha256sum | cut -d' ' -f1; }
fresh() { # name stamp
  [ "$force" = 0 ] && [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.stamp" 2>/dev/null)" = "$2" ]
}
report() { # name seconds
  printf 'build.sh: built %s in %ss (%s bytes)\n' "$1" "$2" "$(stat -c %s "$bin/$1")" >&2
}

# --- oauth2-proxy -----------------------------------------------------------------------
o2p_ldflags="-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=${OAUTH2_PROXY_VERSION}"
o2p_stamp="$(stamp_of "oauth2-proxy ${OAUTH2_PROXY_VERSION}" "$o2p_ldflags")"
if fresh oauth2-proxy "$o2p_stamp"; then
  echo "build.sh: oauth2-proxy ${OAUTH2_PROXY_VERSION} up to date" >&2
else
  echo "build.sh: building oauth2-proxy ${OAUTH2_PROXY_VERSION} ..." >&2
  stage="$(mktemp -d "$cache/.stage.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
  t0=$SECONDS
  # Outside any module, so no go.mod/go.work of the caller interferes.
  ( cd "$stage" && GOBIN="$stage" GOFLAGS="" nice -n 10 go install "${goflags[@]}" -ldflags "$o2p_ldflags" \
      "github.com/oauth2-proxy/oauth2-proxy/v7@${OAUTH2_PROXY_VERSION}" ) >&2
  mv -f "$stage/oauth2-proxy" "$bin/oauth2-proxy"
  echo "$o2p_stamp" > "$bin/.oauth2-proxy.stamp"
  rm -rf "$stage"; trap - EXIT
  report oauth2-proxy $((SECONDS - t0))
fi

# --- oathkeeper -------------------------------------------------------------------------
ok_ldflags="-s -w -X github.com/ory/oathkeeper/x.Version=${OATHKEEPER_VERSION}"
ok_stamp="$(stamp_of "oathkeeper ${OATHKEEPER_VERSION}" "$ok_ldflags" "$(cat oathkeeper-mod/go.mod oathkeeper-mod/go.sum | sha256sum)")"
if fresh oathkeeper "$ok_stamp"; then
  echo "build.sh: oathkeeper ${OATHKEEPER_VERSION} up to date" >&2
else
  echo "build.sh: building oathkeeper ${OATHKEEPER_VERSION} ..." >&2
  t0=$SECONDS
  ( cd oathkeeper-mod && GOFLAGS="-mod=readonly" nice -n 10 go build "${goflags[@]}" -ldflags "$ok_ldflags" \
      -o "$bin/oathkeeper.tmp" github.com/ory/oathkeeper ) >&2
  mv -f "$bin/oathkeeper.tmp" "$bin/oathkeeper"
  echo "$ok_stamp" > "$bin/.oathkeeper.stamp"
  report oathkeeper $((SECONDS - t0))
fi

echo "$bin"
