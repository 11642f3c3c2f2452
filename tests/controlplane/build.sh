#!/usr/bin/env bash
# Build kube-apiserver, etcd and kubectl from the Go module proxy into a cache dir.
#
#   ./build.sh            build if needed, print the bin dir on the last line of stdout
#   ./build.sh --force    rebuild even if the stamp matches
#
# Cache: ${ACCESSGATE_CP_CACHE:-$HOME/.cache/accessgate/controlplane/<KUBE_VERSION>}/bin
# The build is skipped when all three binaries exist and bin/.stamp matches a hash of
# go.mod, go.sum, cmd/{kube-apiserver,etcd,kubectl}/main.go, the go version and the build flags.
#
# It is deliberately gentle on a shared machine: `nice -n 19` and `go build -p 1`
# (override with ACCESSGATE_CP_GO_P=N). Cold build: see README.md for measured time/RAM.
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

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH (need Go >= $(awk '$1=="go"{print $2}' go.mod))" >&2; exit 1; }

# go.mod must match versions.env (someone bumped versions.env without ./gen-replaces.sh?).
grep -q "^	k8s.io/kubernetes ${KUBE_VERSION}\$" go.mod || { echo "build.sh: go.mod is not for k8s.io/kubernetes ${KUBE_VERSION}; run ./gen-replaces.sh" >&2; exit 1; }
grep -q "^	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" go.mod || { echo "build.sh: go.mod is not for etcd ${ETCD_VERSION}; run ./gen-replaces.sh" >&2; exit 1; }

cache="${ACCESSGATE_CP_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/controlplane/${KUBE_VERSION}}"
bin="$cache/bin"
bins=(kube-apiserver etcd kubectl)

kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
# Reproducible build date: the tag time recorded by the module proxy.
info="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')"
build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null)"
build_date="${build_date:-1970-01-01T00:00:00Z}"

# Same flags as kubernetes' hack/lib/golang.sh for non-debug release builds.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=1"
  ldflags+=" -X ${pkg}.gitMinor=${kube_minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=${build_date}"
done
# etcd's own build sets only GitSHA (version.Version is a constant). There is no git
# checkout here, so record where the source came from instead of a SHA.
ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=gomod-${ETCD_VERSION}"
tags="selinux,notest,grpcnotrace"
outputflags=(-trimpath -mod=readonly -buildvcs=false -tags="$tags")
# Parallelism (-p) changes how fast, not what is built: it is not part of the stamp.
goflags=("${outputflags[@]}" -p "${ACCESSGATE_CP_GO_P:-1}")

# Only this script's own cmd/ dirs: the module also holds tests/node's kubelet & co.,
# whose main.go changes must not force a rebuild here (go.mod/go.sum changes still do).
stamp="$( { cat go.mod go.sum; for b in "${bins[@]}"; do cat "cmd/$b/main.go"; done; go version; echo "$ldflags ${outputflags[*]} CGO_ENABLED=0"; } | sha256sum | cut -d' ' -f1)"

have_all=1
for b in "${bins[@]}"; do [ -x "$bin/$b" ] || have_all=0; done
if [ "$force" = 0 ] && [ "$have_all" = 1 ] && [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "build.sh: up to date (k8s ${KUBE_VERSION}, etcd ${ETCD_VERSION})" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "build.sh: building kube-apiserver ${KUBE_VERSION}, kubectl ${KUBE_VERSION}, etcd ${ETCD_VERSION} into $bin" >&2
echo "build.sh: a cold build takes a long time on 2 cores (see README.md); running under nice -n 19, go build -p ${ACCESSGATE_CP_GO_P:-1}" >&2
start=$(date +%s)
# GOFLAGS from the environment is cleared so it cannot fight -mod=readonly etc.
CGO_ENABLED=0 GOFLAGS= nice -n 19 go build "${goflags[@]}" -ldflags="$ldflags" -o "$tmp/" ./cmd/kube-apiserver ./cmd/etcd ./cmd/kubectl >&2
echo "build.sh: go build took $(( $(date +%s) - start ))s" >&2

for b in "${bins[@]}"; do
  [ -x "$tmp/$b" ] || { echo "build.sh: $b was not produced" >&2; exit 1; }
done
# Sanity: the binaries run and report the right versions.
"$tmp/kube-apiserver" --version | grep -qx "Kubernetes ${KUBE_VERSION}" || { echo "build.sh: kube-apiserver --version: $("$tmp/kube-apiserver" --version)" >&2; exit 1; }
"$tmp/etcd" --version | grep -q "etcd Version: ${ETCD_VERSION#v}" || { echo "build.sh: etcd --version: $("$tmp/etcd" --version)" >&2; exit 1; }
"$tmp/kubectl" version --client -o yaml | grep -q "gitVersion: ${KUBE_VERSION}" || { echo "build.sh: kubectl version wrong" >&2; exit 1; }

mkdir -p "$bin"
rm -f "$bin/.stamp"
for b in "${bins[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
echo "$stamp" > "$bin/.stamp"
echo "build.sh: done" >&2
echo "$bin"
