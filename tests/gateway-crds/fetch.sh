#!/usr/bin/env bash
# Fetch the upstream CRDs the gateway examples are validated against (tests/proxies/gateway_examples.rs)
# from the Go module proxy: for each set pinned in ./pins (module, version, h1 hash, files), the
# module zip is downloaded, checked against the pinned hash (extract.go, standard library
# only) and only the listed files are kept. Idempotent: a set already in the cache is not
# fetched again. Nothing fetched here is committed to the repository.
#
#   tests/gateway-crds/fetch.sh            fetch what is missing
#   tests/gateway-crds/fetch.sh --force    fetch everything again
#
# Cache: ${ACCESSGATE_GATEWAY_CRDS_CACHE:-$HOME/.cache/accessgate/gateway-crds}/<name>-<version>/
# (files at their module-relative paths). stdout: one "<name><TAB><dir>" line per set, then
# the cache dir on the last line; progress goes to stderr. Proxy: the first URL in
# `go env GOPROXY`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

root="${ACCESSGATE_GATEWAY_CRDS_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/gateway-crds}"
mkdir -p "$root"

proxy=""
lines=()
while read -r name module version sum patterns; do
  case "$name" in ''|'#'*) continue ;; esac
  [ -n "$patterns" ] || { echo "fetch.sh: pins: no files for $name" >&2; exit 1; }
  dir="$root/$name-$version"
  # The stamp records the whole pin line, so changed patterns fetch the set again.
  stamp="$module $version $sum $patterns"
  if [ "$force" = 0 ] && [ "$(cat "$dir/.pin" 2>/dev/null)" = "$stamp" ]; then
    lines+=("$name	$dir")
    continue
  fi

  command -v go >/dev/null || { echo "fetch.sh: 'go' not found on PATH" >&2; exit 1; }
  command -v curl >/dev/null || { echo "fetch.sh: 'curl' not found on PATH" >&2; exit 1; }
  if [ -z "$proxy" ]; then
    proxy="$(go env GOPROXY | tr ',|' '\n\n' | grep -m1 -E '^https?://' || true)"
    [ -n "$proxy" ] || { echo "fetch.sh: no proxy URL in GOPROXY=$(go env GOPROXY)" >&2; exit 1; }
    proxy="${proxy%/}"
  fi
  # Module path escaping of the proxy protocol: an upper-case letter is "!" + its lower case.
  escaped="$(printf '%s' "$module" | sed 's/[A-Z]/!\L&/g')"
  url="$proxy/$escaped/@v/$version.zip"

  tmp="$(mktemp -d "$root/.fetch-$name.XXXXXX")"
  t0=$SECONDS
  echo "fetch.sh: $name: $url" >&2
  if ! curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$tmp/module.zip" "$url"; then
    rm -rf "$tmp"
    echo "fetch.sh: $name: download failed: $url" >&2
    exit 1
  fi
  # shellcheck disable=SC2086 # patterns are whitespace-separated on purpose (no spaces in them)
  if ! (set -f; GOFLAGS= go run "$here/extract.go" "$tmp/module.zip" "$sum" "$module@$version" "$tmp/files" $patterns); then
    rm -rf "$tmp"
    echo "fetch.sh: $name: $module@$version rejected (see above)" >&2
    exit 1
  fi
  printf '%s\n' "$stamp" >"$tmp/files/.pin"
  rm -rf "$dir.old"
  [ -e "$dir" ] && mv "$dir" "$dir.old"
  # Another fetch may have finished this set meanwhile; either copy is the same files.
  mv -T "$tmp/files" "$dir" 2>/dev/null || [ "$(cat "$dir/.pin" 2>/dev/null)" = "$stamp" ]
  rm -rf "$tmp" "$dir.old"
  echo "fetch.sh: $name $version: $((SECONDS - t0))s" >&2
  lines+=("$name	$dir")
done <"$here/pins"

printf '%s\n' "${lines[@]}"
echo "$root"
