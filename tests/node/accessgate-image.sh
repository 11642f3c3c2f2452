#!/usr/bin/env bash
# Build accessgate's image from the project's Dockerfile with buildah, for the node suite:
#
#   ./accessgate-image.sh BINARY     (as root; BINARY: the host's `cargo build --release --locked` output)
#
# Nothing can be pulled here, so the Dockerfile's two bases are replaced through its build
# arguments by local images (everything else in the Dockerfile runs as written):
#   RUNTIME_IMAGE  localhost/accessgate/runtime-base:cc-debian12-standin, a stand-in for
#                  gcr.io/distroless/cc-debian12:nonroot built FROM scratch from this host's
#                  Debian 12 files: the shared libraries BINARY links (ldd: glibc's libc, libm,
#                  ld.so, libgcc_s), the CA bundle, distroless's /etc/passwd, /etc/group and
#                  /etc/nsswitch.conf (root, nobody, nonroot 65532), /tmp (1777), /home/nonroot,
#                  USER 65532, WORKDIR /home/nonroot. No shell, no package manager.
#   BINARY_FROM    localhost/accessgate/binary:host, FROM scratch holding BINARY at
#                  /src/target/release/accessgate (where the build stage leaves it); the build
#                  stage (BUILD_IMAGE, rust:1.95-bookworm) is unused and skipped by buildah
#                  (--skip-unused-stages, its default), so its base is never pulled.
# Also builds the `helm test` Pod's image: localhost/accessgate/curl:host, a stand-in for
# curlimages/curl with this host's Debian curl and the libraries it links, FROM scratch.
#
# Writes docker-archive tarballs into ${cache}/images (cache: build.sh's, e.g.
# ~/.cache/accessgate/node/v1.36.3), each rebuilt only when its stamp changes, and prints
# (stdout, one per line) `REF TARBALL` for the accessgate image, then for the curl image.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "node/accessgate-image.sh: $*" >&2; }
[ $# -eq 1 ] || { echo "usage: $0 BINARY" >&2; exit 2; }
binary="$(readlink -f "$1")"
[ -x "$binary" ] || { log "$1 is not an executable"; exit 1; }
command -v buildah >/dev/null || { log "buildah missing (run $here/build.sh)"; exit 1; }

nbin="$("$here/build.sh" | tail -n1)"
cache="$(dirname "$nbin")"
# shellcheck source=buildah.sh
. "$here/buildah.sh"
mkdir -p "$cache/images"
had_varlib=0
[ -e /var/lib/containers ] && had_varlib=1
tmp="$(mktemp -d "$cache/.agimage.XXXXXX")"
# shellcheck disable=SC2064
trap "rm -rf '$tmp'; [ $had_varlib = 1 ] || rm -rf /var/lib/containers" EXIT

# The files of a FROM scratch rootfs holding ELF programs: each program's shared libraries
# (ldd), at the paths the dynamic loader looks them up.
copy_libs() { # rootfs program...
  local rootfs="$1" lib; shift
  for lib in $(ldd "$@" | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}' | sort -u); do
    [ -f "$lib" ] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}
# What distroless's base has for users, certificates and name lookups (its own contents).
base_files() { # rootfs
  local r="$1"
  mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/home/nonroot"
  chmod 1777 "$r/tmp"; chmod 700 "$r/home/nonroot"; chown 65532:65532 "$r/home/nonroot"
  cp -L /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$r/etc/group"
  printf 'passwd:         files\ngroup:          files\nshadow:         files\nhosts:          files dns\nnetworks:       files\nprotocols:      files\nservices:       files\nethers:         files\nrpc:            files\n' >"$r/etc/nsswitch.conf"
}
# A stamp: the sha256 of everything that goes into an image, plus the recipe itself.
stamp_of() { { cat "$0"; sha256sum "$@"; buildah --version; } | sha256sum | cut -d' ' -f1; }
# build NAME REF CONTEXT [bud args...]: buildah bud into REF, exported to images/NAME.tar.
build() {
  local name="$1" ref="$2" ctx="$3"; shift 3
  buildah_ rmi -f "$ref" >/dev/null 2>&1 || true
  buildah_ bud --quiet --network none --layers=false --timestamp 0 -t "$ref" "$@" "$ctx" >&2
  rm -f "$tmp/$name.tar"
  buildah_ push --quiet "$ref" "docker-archive:$tmp/$name.tar:$ref" >&2
  mv -f "$tmp/$name.tar" "$cache/images/$name.tar"
}
fresh() { [ -s "$cache/images/$1.tar" ] && [ "$(cat "$cache/images/$1.stamp" 2>/dev/null)" = "$2" ]; }

# ---------------------------------------------------------------- the runtime base stand-in
base_ref=localhost/accessgate/runtime-base:cc-debian12-standin
libs="$(ldd "$binary" | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}' | sort -u | xargs readlink -f)"
base_stamp="$(stamp_of $libs /etc/ssl/certs/ca-certificates.crt)"
if ! fresh runtime-base "$base_stamp" || ! buildah_ inspect "$base_ref" >/dev/null 2>&1; then
  mkdir -p "$tmp/base/rootfs"
  copy_libs "$tmp/base/rootfs" "$binary"
  base_files "$tmp/base/rootfs"
  printf 'FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\nWORKDIR /home/nonroot\n' >"$tmp/base/Containerfile"
  build runtime-base "$base_ref" "$tmp/base" -f "$tmp/base/Containerfile"
  echo "$base_stamp" >"$cache/images/runtime-base.stamp"
  log "built $base_ref"
fi

# ---------------------------------------------------------------- accessgate, from the Dockerfile
bin_stamp="$(stamp_of "$binary" "$root/Dockerfile" "$cache/images/runtime-base.tar")"
ag_ref="localhost/accessgate/accessgate:node-${bin_stamp:0:12}"
if ! fresh accessgate "$bin_stamp"; then
  mkdir -p "$tmp/binary"
  cp "$binary" "$tmp/binary/accessgate"
  strip "$tmp/binary/accessgate" 2>/dev/null || true # as the build stage does
  printf 'FROM scratch\nCOPY accessgate /src/target/release/accessgate\n' >"$tmp/binary/Containerfile"
  buildah_ rmi -f localhost/accessgate/binary:host >/dev/null 2>&1 || true
  buildah_ bud --quiet --network none --layers=false --timestamp 0 -t localhost/accessgate/binary:host \
    -f "$tmp/binary/Containerfile" "$tmp/binary" >&2
  # The project's Dockerfile as written; an empty context: the runtime stage needs nothing
  # from it (only the build stage copies sources, and it is skipped).
  mkdir -p "$tmp/ctx"
  build accessgate "$ag_ref" "$tmp/ctx" -f "$root/Dockerfile" \
    --build-arg RUNTIME_IMAGE="$base_ref" --build-arg BINARY_FROM=localhost/accessgate/binary:host
  echo "$bin_stamp" >"$cache/images/accessgate.stamp"
  log "built $ag_ref from $root/Dockerfile"
fi

# ---------------------------------------------------------------- curl, for `helm test`
curl_ref=localhost/accessgate/curl:host
curl_bin="$(readlink -f "$(command -v curl)")"
curl_libs="$(ldd "$curl_bin" | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}' | sort -u | xargs readlink -f)"
curl_stamp="$(stamp_of "$curl_bin" $curl_libs /etc/ssl/certs/ca-certificates.crt)"
if ! fresh curl "$curl_stamp"; then
  mkdir -p "$tmp/curl/rootfs/usr/bin"
  copy_libs "$tmp/curl/rootfs" "$curl_bin"
  base_files "$tmp/curl/rootfs"
  cp "$curl_bin" "$tmp/curl/rootfs/usr/bin/curl"
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\nUSER 65532:65532\nENTRYPOINT ["curl"]\n' >"$tmp/curl/Containerfile"
  build curl "$curl_ref" "$tmp/curl" -f "$tmp/curl/Containerfile"
  echo "$curl_stamp" >"$cache/images/curl.stamp"
  log "built $curl_ref"
fi

echo "$ag_ref $cache/images/accessgate.tar"
echo "$curl_ref $cache/images/curl.tar"
