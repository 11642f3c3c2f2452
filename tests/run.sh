#!/usr/bin/env bash
# Every test accessgate has, from a fresh clone: installs what the tests need (idempotent),
# then format and lint checks, the release build, then both test tiers:
# - the fast tier, `cargo test` alone: unit tests, quick tests that start only accessgate
#   and its dev issuer (in-process and over loopback HTTP/gRPC), layers, CRD, docs;
# - the real-process tier, `cargo test --features e2e` (which also runs the fast tier):
#   accessgate behind real nginx, Caddy and Traefik (tests/proxies), the controller against a
#   real kube-apiserver, Helm (tests/cluster), the chart's pods on a real one-node cluster
#   (tests/node_e2e.rs, as root), and the accessgate-only suites that wait on real timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)     # control-plane certificates
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)               # end-to-end tests run real nginx
command -v caddy >/dev/null || need_apt+=(caddy)        # ... and real Caddy (forward_auth)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)   # the chart's pod, sandboxed as a kubelet would run it
if ((${#need_apt[@]})); then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for tool in cargo rustfmt cargo-clippy go; do
  command -v "$tool" >/dev/null || { echo "missing $tool: the Rust toolchain (with rustfmt, clippy) and Go are required" >&2; exit 1; }
done

# A fresh clone's build takes about 8 GiB; the node suite then needs 3 GiB free (its kubelet
# evicts pods below 1 GiB, tests/node/start.sh refuses to start below 3). Say so up front.
free_gib=$(( $(df --output=avail -BM . | tail -n1 | tr -dc 0-9) / 1024 ))
if (( free_gib < 12 )); then
  echo "warning: only ${free_gib} GiB free here; the build and the node suite need about 12 GiB" >&2
fi

# kube-apiserver, etcd and kubectl from the Go module proxy; cached, so a no-op when built.
echo "control plane binaries: $(ACCESSGATE_CP_GO_P="${ACCESSGATE_CP_GO_P:-2}" bash tests/controlplane/build.sh | tail -n1)"
echo "helm: $(bash tests/controlplane/build-helm.sh | tail -n1)"
echo "traefik: $(bash tests/traefik/build.sh | tail -n1)"
echo "grpc-client: $(bash tests/grpc-client/build.sh | tail -n1)"
echo "gateway CRDs: $(bash tests/gateway-crds/fetch.sh | tail -n1)"
echo "promtool: $(bash tests/promtool/build.sh | tail -n1)"
echo "assertion verifiers: $(bash tests/verifiers/build.sh | tail -n2 | tr '\n' ' ')"
# The one-node cluster (kubelet, controller-manager, scheduler, kube-proxy from the same Go
# module; Debian's containerd, runc, CNI plugins, buildah, dnsmasq installed if missing).
echo "node binaries: $(bash tests/node/build.sh | tail -n1)"

cargo fmt --check
cargo clippy --locked --all-targets --features e2e -- -D warnings
# Broken intra-doc links (a renamed or removed item a doc still names) fail too.
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
# The Dockerfile's build stage, exactly; tests/node_e2e.rs builds the image from the project's
# Dockerfile with this binary in place of the build stage's (tests/node/accessgate-image.sh).
cargo build --release --locked
cargo test --locked --features e2e
