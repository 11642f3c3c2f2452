#!/usr/bin/env bash
# Build helm from the Go module proxy into a cache dir; prints the binary path on the last
# line of stdout. A no-op when already built.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
cache="${ACCESSGATE_HELM_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/helm/${HELM_VERSION}}"
if [ ! -x "$cache/helm" ]; then
  command -v go >/dev/null || { echo "build-helm.sh: 'go' not found on PATH" >&2; exit 1; }
  mkdir -p "$cache"
  echo "building helm ${HELM_VERSION} into $cache" >&2
  # helm's own build stamps its version with ldflags; without them `helm version` says v3.x-dev.
  GOBIN="$cache" GOFLAGS="${GOFLAGS:-} -trimpath" nice -n 10 go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
fi
echo "$cache/helm"
