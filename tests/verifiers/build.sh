#!/usr/bin/env bash
# Install the two independent verifiers of accessgate's signed upstream assertion (an ES256
# JWT checked against accessgate's JWKS) into a cache dir. Neither shares code with accessgate:
#   node: node/verify.mjs on panva/jose from the npm registry (pinned in node/package-lock.json)
#   go:   go/main.go on github.com/go-jose/go-jose/v4 from the Go module proxy (go/go.sum)
# Both take `--jwks URL --issuer ISS --audience AUD --token TOKEN`, print the verified payload
# plus the header's "kid" as one JSON line and exit 0, or print `error: <reason>` to stderr
# and exit 1.
#
#   tests/verifiers/build.sh            install/build what is missing or out of date
#   tests/verifiers/build.sh --force    reinstall and rebuild both
#
# The last two lines of stdout are the commands (progress, npm's and go's output go to stderr):
#   node=<cache>/node/<lock hash>/verify.mjs     run as `node <path> --jwks ...`
#   go=<cache>/go/<source hash>/verify-go
# Cache: ${ACCESSGATE_VERIFIERS_CACHE:-$HOME/.cache/accessgate/verifiers}. The node dir is keyed
# by a hash of package.json and package-lock.json (`npm ci` runs only when they change; an edit
# of verify.mjs alone is copied in); the Go dir by a hash of go.mod, go.sum and main.go. A
# no-op when both are up to date. Node.js and npm are installed from Debian's packages
# (nodejs, npm) when missing; Go is required. Gentle on a shared machine: `nice -n 15`;
# ACCESSGATE_VERIFIERS_GO_P=N sets `go build -p N`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

cache="${ACCESSGATE_VERIFIERS_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/verifiers}"
mkdir -p "$cache/node" "$cache/go"
# One build at a time (test binaries may run this concurrently); the second waits, then finds
# everything up to date.
exec 9>"$cache/.lock"
flock 9

# --- Node.js + jose ---------------------------------------------------------------------------
need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
  echo "verifiers/build.sh: installing: ${need_apt[*]}" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

nver="$(cat "$here/node/package.json" "$here/node/package-lock.json" | sha256sum | cut -c1-16)"
ndir="$cache/node/$nver"
if [ "$force" = 1 ] || [ ! -f "$ndir/.installed" ] || [ ! -f "$ndir/node_modules/jose/package.json" ]; then
  echo "verifiers/build.sh: npm ci (jose) into $ndir ..." >&2
  t0=$SECONDS
  tmp="$(mktemp -d "$cache/node/.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/node/package.json" "$here/node/package-lock.json" "$tmp/"
  # --prefer-offline: from npm's cache when it has the pinned tarball, else the registry;
  # the lock file's integrity hash is checked either way. jose has no install scripts.
  ( cd "$tmp" && nice -n 15 npm ci --prefer-offline --ignore-scripts --no-audit --no-fund \
      --loglevel=error ) >&2
  touch "$tmp/.installed"
  rm -rf "$ndir"
  mv "$tmp" "$ndir"
  trap - EXIT
  echo "verifiers/build.sh: jose $(sed -n 's/^ *"version": "\(.*\)",*$/\1/p' "$ndir/node_modules/jose/package.json" | head -n1) installed in $((SECONDS - t0))s" >&2
fi
if ! cmp -s "$here/node/verify.mjs" "$ndir/verify.mjs"; then
  cp "$here/node/verify.mjs" "$ndir/.verify.mjs.tmp"
  chmod +x "$ndir/.verify.mjs.tmp"
  mv -f "$ndir/.verify.mjs.tmp" "$ndir/verify.mjs"
fi

# --- Go + go-jose -----------------------------------------------------------------------------
command -v go >/dev/null || { echo "verifiers/build.sh: 'go' not found on PATH" >&2; exit 1; }
gver="$(cat "$here/go/go.mod" "$here/go/go.sum" "$here/go/main.go" | sha256sum | cut -c1-16)"
gdir="$cache/go/$gver"
gbin="$gdir/verify-go"
if [ "$force" = 1 ] || [ ! -x "$gbin" ]; then
  mkdir -p "$gdir"
  goflags=(-trimpath -buildvcs=false)
  [ -n "${ACCESSGATE_VERIFIERS_GO_P:-}" ] && goflags+=(-p "$ACCESSGATE_VERIFIERS_GO_P")
  echo "verifiers/build.sh: building verify-go ${gver} into $gdir ..." >&2
  t0=$SECONDS
  tmp="$(mktemp "$gdir/.verify-go.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  # -mod=readonly: go.mod and go.sum are the pinned versions; a mismatch fails, never edits them.
  ( cd "$here/go" && CGO_ENABLED=0 GOFLAGS="-mod=readonly" nice -n 15 \
      go build "${goflags[@]}" -ldflags "-s -w" -o "$tmp" . ) >&2
  chmod +x "$tmp"
  mv -f "$tmp" "$gbin"
  trap - EXIT
  echo "verifiers/build.sh: built verify-go in $((SECONDS - t0))s" >&2
fi

echo "node=$ndir/verify.mjs"
echo "go=$gbin"
