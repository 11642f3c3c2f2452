#!/usr/bin/env bash
# Build what the one-node test cluster needs, into a cache dir:
#   - kubelet, kube-controller-manager, kube-scheduler, kube-proxy (same Go module and flags as
#     ../controlplane/build.sh, whose binaries are built too: kube-apiserver, etcd, kubectl)
#   - node-cri, a minimal CRI client (Debian has no crictl) used by stop.sh
#   - the images: pause (sandbox) and echo (smoke test), FROM scratch, by buildah
#   - installs the Debian packages it needs (containerd runc containernetworking-plugins
#     buildah iptables conntrack) if they are missing
#
#   ./build.sh            build if needed; prints the node bin dir on the last line of stdout
#   ./build.sh --force    rebuild even if the stamps match
#
# Cache: ${ACCESSGATE_NODE_CACHE:-$HOME/.cache/accessgate/node/<KUBE_VERSION>}/bin
# Progress goes to stderr; stdout carries only the bin dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cp="$(cd "$here/../controlplane" && pwd)"
# shellcheck source=../controlplane/versions.env
. "$cp/versions.env"
# shellcheck source=versions.env
. "$here/versions.env"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
log() { echo "node/build.sh: $*" >&2; }

command -v go >/dev/null || { log "'go' not found on PATH"; exit 1; }

cache="${ACCESSGATE_NODE_CACHE:-${HOME:?HOME is not set}/.cache/accessgate/node/${KUBE_VERSION}}"
bin="$cache/bin"
mkdir -p "$cache"

# ---------------------------------------------------------------- Debian packages
ensure_apt() {
  local missing=() p
  for p in $NODE_APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "missing Debian packages (${missing[*]}) and not root to install them"; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  # The package's own service is not wanted (no systemd here anyway): policy-rc.d says no.
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created=1; fi
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }; } >&2 ||
    { [ "$created" = 1 ] && rm -f "$prc"; log "apt-get install failed"; exit 1; }
  [ "$created" = 1 ] && rm -f "$prc"
  return 0
}

# ---------------------------------------------------------------- k8s node binaries
# node-cri: our minimal CRI client (../controlplane/cmd/node-cri; Debian has no crictl).
kbins=(kubelet kube-controller-manager kube-scheduler kube-proxy node-cri)
build_kube() {
  cd "$cp"
  grep -q "^	k8s.io/kubernetes ${KUBE_VERSION}\$" go.mod || { log "go.mod is not for k8s.io/kubernetes ${KUBE_VERSION}; run $cp/gen-replaces.sh"; exit 1; }
  local kube_minor info build_date ldflags tags stamp have_all tmp b start
  kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
  info="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')"
  build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null)"
  build_date="${build_date:-1970-01-01T00:00:00Z}"
  # Same flags as ../controlplane/build.sh (kubernetes' hack/lib/golang.sh, release build).
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${kube_minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  tags="selinux,notest,grpcnotrace"
  local outputflags=(-trimpath -mod=readonly -buildvcs=false -tags="$tags")
  stamp="$( { cat go.mod go.sum; for b in "${kbins[@]}"; do cat "cmd/$b/main.go"; done; go version
              echo "$ldflags ${outputflags[*]} CGO_ENABLED=0"; } | sha256sum | cut -d' ' -f1)"
  have_all=1
  for b in "${kbins[@]}"; do [ -x "$bin/$b" ] || have_all=0; done
  if [ "$force" = 0 ] && [ "$have_all" = 1 ] && [ "$(cat "$bin/.stamp-kube" 2>/dev/null)" = "$stamp" ]; then
    log "kube node binaries up to date (${KUBE_VERSION})"
    return 0
  fi
  tmp="$(mktemp -d "$cache/.build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "building ${kbins[*]} ${KUBE_VERSION} into $bin (nice -n 19, go build -p ${ACCESSGATE_NODE_GO_P:-1}; cold: see README.md)"
  start=$(date +%s)
  CGO_ENABLED=0 GOFLAGS='' nice -n 19 go build "${outputflags[@]}" -p "${ACCESSGATE_NODE_GO_P:-1}" \
    -ldflags="$ldflags" -o "$tmp/" "${kbins[@]/#/./cmd/}" >&2
  log "go build took $(( $(date +%s) - start ))s"
  for b in "${kbins[@]}"; do
    [ -x "$tmp/$b" ] || { log "$b was not produced"; exit 1; }
    [ "$b" = node-cri ] && continue
    "$tmp/$b" --version | grep -q "${KUBE_VERSION}\$" || { log "$b --version: $("$tmp/$b" --version)"; exit 1; }
  done
  mkdir -p "$bin"
  rm -f "$bin/.stamp-kube"
  for b in "${kbins[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
  echo "$stamp" >"$bin/.stamp-kube"
  rm -rf "$tmp"; trap - EXIT
  cd "$here"
}

# ---------------------------------------------------------------- images
# Every image is built here: nothing can be pulled. Static Go binaries (images/*/main.go,
# standard library only) in FROM scratch images, built by buildah with its own storage under
# the cache (vfs driver: no mounts left behind, nothing under /var/lib/containers), exported
# as docker-archive tarballs that start.sh imports with `ctr -n k8s.io images import`.
images=(pause echo)
image_ref() { # name -> image reference used in containerd (and in pod specs)
  case "$1" in
    pause) echo "localhost/accessgate/pause:3.10-ag" ;;
    *) echo "localhost/accessgate/$1:test" ;;
  esac
}
# buildah_: buildah with its own storage and config under the cache (buildah.sh).
# shellcheck source=buildah.sh
. "$here/buildah.sh"
build_images() {
  local stamp name tmp ref
  stamp="$( { find "$here/images" -type f | LC_ALL=C sort | xargs cat; go version; buildah --version
              for name in "${images[@]}"; do image_ref "$name"; done; } | sha256sum | cut -d' ' -f1)"
  local have_all=1
  for name in "${images[@]}"; do [ -s "$cache/images/$name.tar" ] || have_all=0; done
  if [ "$force" = 0 ] && [ "$have_all" = 1 ] && [ "$(cat "$cache/images/.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "images up to date (${images[*]})"
    return 0
  fi
  local had_varlib=0
  [ -e /var/lib/containers ] && had_varlib=1
  tmp="$(mktemp -d "$cache/.images.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  for name in "${images[@]}"; do
    ref="$(image_ref "$name")"
    mkdir -p "$tmp/$name"
    cp "$here/images/$name/Containerfile" "$tmp/$name/"
    (cd "$here/images" && CGO_ENABLED=0 GOFLAGS='' go build -trimpath -buildvcs=false -ldflags="-s -w" \
       -o "$tmp/$name/$name" "./$name") >&2
    buildah_ rmi -f "$ref" >/dev/null 2>&1 || true
    buildah_ bud --quiet --network none --layers=false --timestamp 0 -t "$ref" -f "$tmp/$name/Containerfile" "$tmp/$name" >&2
    buildah_ push --quiet "$ref" "docker-archive:$tmp/$name.tar:$ref" >&2
    log "image $ref: $(du -h "$tmp/$name.tar" | cut -f1)"
  done
  [ "$had_varlib" = 1 ] || rm -rf /var/lib/containers
  mkdir -p "$cache/images"
  rm -f "$cache/images/.stamp"
  for name in "${images[@]}"; do mv -f "$tmp/$name.tar" "$cache/images/$name.tar"; done
  echo "$stamp" >"$cache/images/.stamp"
  rm -rf "$tmp"; trap - EXIT
}

# ---------------------------------------------------------------- containerd 2.x (optional)
build_containerd2() {
  [ "${ACCESSGATE_NODE_CONTAINERD:-debian}" = v2 ] || return 0
  local d="$cache/containerd-${CONTAINERD2_VERSION}/bin" tmp stamp b start
  local pkgs=(containerd ctr containerd-shim-runc-v2)
  local tags="no_btrfs,no_devmapper,no_zfs"
  local ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD2_VERSION} -X github.com/containerd/containerd/v2/version.Revision=gomod"
  stamp="$( { echo "${CONTAINERD2_VERSION} $tags $ldflags CGO_ENABLED=0 -trimpath"; go version; } | sha256sum | cut -d' ' -f1)"
  local have_all=1
  for b in "${pkgs[@]}"; do [ -x "$d/$b" ] || have_all=0; done
  if [ "$force" = 0 ] && [ "$have_all" = 1 ] && [ "$(cat "$d/.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "containerd ${CONTAINERD2_VERSION} up to date"
    return 0
  fi
  tmp="$(mktemp -d "$cache/.containerd.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "building containerd ${CONTAINERD2_VERSION} (go install from the module proxy; ~3 min cold)"
  start=$(date +%s)
  local args=()
  for b in "${pkgs[@]}"; do args+=("github.com/containerd/containerd/v2/cmd/$b@${CONTAINERD2_VERSION}"); done
  # Module mode, outside any main module: containerd's own go.mod and go.sum decide every version.
  (cd "$tmp" && CGO_ENABLED=0 GOFLAGS='' GOBIN="$tmp" nice -n 19 go install -p "${ACCESSGATE_NODE_GO_P:-1}" -trimpath \
     -tags "$tags" -ldflags "$ldflags" "${args[@]}") >&2 ||
    { log "containerd build failed"; exit 1; }
  log "containerd build took $(( $(date +%s) - start ))s"
  "$tmp/containerd" --version | grep -q "${CONTAINERD2_VERSION}" || { log "containerd --version: $("$tmp/containerd" --version)"; exit 1; }
  mkdir -p "$d"
  rm -f "$d/.stamp"
  for b in "${pkgs[@]}"; do mv -f "$tmp/$b" "$d/$b"; done
  echo "$stamp" >"$d/.stamp"
  rm -rf "$tmp"; trap - EXIT
}

ensure_apt
build_kube
build_images
build_containerd2
echo "$bin"
