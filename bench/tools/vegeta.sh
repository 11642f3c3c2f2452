#!/usr/bin/env bash
# Builds vegeta (an open-loop HTTP load generator: requests leave at a fixed rate whether or
# not earlier ones have been answered) from the Go module proxy, cached under
# ~/.cache/accessgate/vegeta/VERSION. Prints the binary's path on its last line.
set -euo pipefail
VERSION="${VEGETA_VERSION:-v12.13.0}"
dir="${HOME:?}/.cache/accessgate/vegeta/${VERSION}"
if [ ! -x "$dir/vegeta" ]; then
  mkdir -p "$dir"
  echo "vegeta.sh: building vegeta ${VERSION} into $dir" >&2
  GOBIN="$dir" CGO_ENABLED=0 nice -n 10 go install -trimpath "github.com/tsenart/vegeta/v12@${VERSION}" >&2
fi
echo "$dir/vegeta"
