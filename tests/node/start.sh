#!/usr/bin/env bash
# Start a one-node Kubernetes cluster on this machine, with all state in DIR:
#   the control plane of ../controlplane/start.sh (etcd + kube-apiserver, with Node,RBAC
#   authorization and the ServiceAccount/NodeRestriction admission plugins on),
#   + containerd (private root/state/socket) + runc + CNI bridge/host-local/portmap/loopback,
#   + kube-controller-manager + kube-scheduler + kubelet + kube-proxy (iptables mode).
#
#   ./start.sh DIR          (as root)
#
# Writes into DIR (besides the control plane's files, see ../controlplane/start.sh):
#   node.env                shell-sourceable: ACCESSGATE_NODE_*, KUBECONFIG-style paths, KUBECTL
#   node/                   configs, kubeconfigs and certs of the node components
#   containerd/ kubelet/ cni/ pod-logs/   the runtime's, kubelet's and CNI's state
#   <name>.log <name>.pid   for containerd kube-controller-manager kube-scheduler kubelet kube-proxy
#
# Environment (all optional):
#   ACCESSGATE_NODE_BIN        dir with kubelet & co. (default: ./build.sh output)
#   ACCESSGATE_CP_BIN          dir with kube-apiserver, etcd, kubectl (default: ../controlplane/build.sh)
#   ACCESSGATE_NODE_NAME       node name                      (default: accessgate-node)
#   ACCESSGATE_NODE_POD_CIDR   pod network, a /16             (default: 10.88.0.0/16; gateway .0.1)
#   ACCESSGATE_NODE_PROXY_MODE iptables | nftables            (default: iptables)
#   ACCESSGATE_NODE_CONTAINERD debian | v2  Debian's containerd 1.6, or 2.x built by build.sh (default: debian)
#   ACCESSGATE_NODE_READY_TIMEOUT seconds to wait for the node to be Ready (default: 120)
#
# Only one such cluster can run on a machine at a time (one bridge, one set of iptables chains,
# kubelet's port 10250): start.sh refuses if another DIR's cluster is running.
# Nothing is changed permanently: the kernel settings kubelet/kube-proxy/CNI change are
# recorded in DIR/node/sysctl.orig and put back by stop.sh, which also removes the bridge,
# the iptables chains, the mounts and the cgroups. Stop with ./stop.sh DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cpdir="$(cd "$here/../controlplane" && pwd)"

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
dir="$(cd "$1" && pwd)"
die() { echo "node/start.sh: $*" >&2; exit 1; }
log() { printf 'node/start.sh: [%5.1fs] %s\n' "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" "$*" >&2; }
t0=$(date +%s.%N)

[ "$(id -u)" = 0 ] || die "must run as root (containerd, kubelet, kube-proxy, CNI)"
for tool in openssl curl base64 ip iptables runc; do
  command -v "$tool" >/dev/null || die "'$tool' is required (run $here/build.sh, which installs the Debian packages)"
done
# The kubelet below evicts every pod and taints the node below 1 GiB free (evictionHard);
# the images, their unpacked layers and the pods' logs take about 1 GiB more. Refuse to start
# a node that would go into DiskPressure mid-suite (pods evicted and replaced, installs that
# never schedule) and say why instead.
min_free_mib=3072
free_mib=$(df --output=avail -BM "$dir" | tail -n1 | tr -dc 0-9)
[ "$free_mib" -ge "$min_free_mib" ] \
  || die "only ${free_mib} MiB free on the filesystem of $dir; the node needs ${min_free_mib} MiB (the kubelet evicts pods below 1 GiB): free some disk space"
cni_bin=/usr/lib/cni
for p in bridge host-local loopback portmap; do [ -x "$cni_bin/$p" ] || die "$cni_bin/$p missing (containernetworking-plugins)"; done

# shellcheck source=../controlplane/versions.env
. "$cpdir/versions.env"
nbin="${ACCESSGATE_NODE_BIN:-}"
[ -n "$nbin" ] || nbin="$("$here/build.sh" | tail -n1)" || die "build.sh failed"
cache="$(dirname "$nbin")"
for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do [ -x "$nbin/$b" ] || die "$nbin/$b missing"; done
for i in pause echo; do [ -s "$cache/images/$i.tar" ] || die "$cache/images/$i.tar missing (run $here/build.sh)"; done
cpbin="${ACCESSGATE_CP_BIN:-}"
[ -n "$cpbin" ] || cpbin="$("$cpdir/build.sh" | tail -n1)" || die "controlplane build.sh failed"

# containerd: Debian's 1.6 (default) or 2.x built by build.sh (ACCESSGATE_NODE_CONTAINERD=v2).
. "$here/versions.env"
cflavor="${ACCESSGATE_NODE_CONTAINERD:-debian}"
case "$cflavor" in
  debian) cdbin="$(dirname "$(command -v containerd || echo /usr/bin/containerd)")" ;;
  v2) cdbin="$cache/containerd-${CONTAINERD2_VERSION}/bin" ;;
  *) die "ACCESSGATE_NODE_CONTAINERD must be debian or v2" ;;
esac
for b in containerd ctr containerd-shim-runc-v2; do
  [ -x "$cdbin/$b" ] || die "$cdbin/$b missing (ACCESSGATE_NODE_CONTAINERD=$cflavor $here/build.sh)"
done

node_name="${ACCESSGATE_NODE_NAME:-accessgate-node}"
pod_cidr="${ACCESSGATE_NODE_POD_CIDR:-10.88.0.0/16}"
case "$pod_cidr" in *.0.0/16) ;; *) die "ACCESSGATE_NODE_POD_CIDR must be an a.b.0.0/16" ;; esac
gw="${pod_cidr%.0.0/16}.0.1"
svc_cidr=10.0.0.0/24          # ../controlplane/start.sh's --service-cluster-ip-range
bridge=ag-cni0
proxy_mode="${ACCESSGATE_NODE_PROXY_MODE:-iptables}"
sandbox_image="localhost/accessgate/pause:3.10-ag"

# ---------------------------------------------------------------- one node per machine
lock=/run/accessgate-node.dir
if [ -f "$lock" ] && [ "$(cat "$lock")" != "$dir" ]; then
  other="$(cat "$lock")"
  if [ -f "$other/kubelet.pid" ] && kill -0 "$(cat "$other/kubelet.pid")" 2>/dev/null; then
    die "another node cluster is running from $other (stop it with $here/stop.sh $other)"
  fi
  for n in containerd kube-proxy; do
    if [ -f "$other/$n.pid" ] && kill -0 "$(cat "$other/$n.pid")" 2>/dev/null; then
      die "$n of another node cluster is still running from $other (stop it with $here/stop.sh $other)"
    fi
  done
fi
for name in containerd kube-controller-manager kube-scheduler kubelet kube-proxy; do
  if [ -f "$dir/$name.pid" ]; then
    pid="$(cat "$dir/$name.pid")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
      die "$name is already running for $dir (pid $pid); run stop.sh first"
    fi
    rm -f "$dir/$name.pid"
  fi
done
if ip link show "$bridge" >/dev/null 2>&1 && ! [ -f "$lock" ]; then
  die "bridge $bridge exists but no node cluster is recorded in $lock; remove it with: ip link del $bridge"
fi
# The pod network must not overlap anything routed here already (the default route aside).
if ip -4 route show | grep -v "dev $bridge" | grep -v '^default' | awk '{print $1}' | grep -q "^${pod_cidr%.0.0/16}\."; then
  die "pod CIDR $pod_cidr overlaps an existing route: $(ip -4 route show | grep "^${pod_cidr%.0.0/16}\.")"
fi
echo "$dir" >"$lock"

nd="$dir/node"
mkdir -p "$nd" "$dir/cni/net.d" "$dir/cni/ipam" "$dir/pod-logs" "$dir/kubelet" "$dir/containerd"
chmod 700 "$nd"

# ---------------------------------------------------------------- host settings, recorded
# kubelet (vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
# kernel.keys.*), kube-proxy (conntrack, route_localnet) and the CNI bridge plugin
# (ip_forward) change these; stop.sh restores the values recorded the first time.
sysctls="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.all.route_localnet
net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max
net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
net.netfilter.nf_conntrack_tcp_be_liberal"
if [ ! -f "$nd/sysctl.orig" ]; then
  for s in $sysctls; do v="$(sysctl -n "$s" 2>/dev/null)" && printf '%s=%s\n' "$s" "$v"; done >"$nd/sysctl.orig.tmp"
  # Host paths the kubelet / CNI libraries create when missing: stop.sh removes them only if
  # they did not exist before.
  # (/var/log/containers: kubelet's log symlinks; /var/lib/kubelet/device-plugins: kubelet's device
  # plugin socket, a path compiled in; /run/containerd/s: containerd 1.6's shim sockets, ditto;
  # /var/lib/cni: libcni's result cache.)
  for p in /var/log/containers /var/lib/cni /var/lib/kubelet /run/containerd /usr/libexec/kubernetes; do
    if [ -e "$p" ]; then echo "$p"; fi
  done >"$nd/paths.orig"
  # nftables tables (iptables-nft makes ip/ip6 filter, nat, mangle on first use).
  if command -v nft >/dev/null; then nft list tables 2>/dev/null; fi >"$nd/nft-tables.orig"
  mv "$nd/sysctl.orig.tmp" "$nd/sysctl.orig"
fi
# kube-proxy needs bridged pod traffic to pass through iptables (pod -> Service -> pod).
sysctl -qw net.bridge.bridge-nf-call-iptables=1

# ---------------------------------------------------------------- bridge (before the apiserver)
# Created here rather than by the CNI bridge plugin at the first pod, so the gateway address
# exists from the start: kube-apiserver advertises it (the `kubernetes` Service's endpoint,
# so pods reach the API) and the kubelet uses it as the node IP.
if ! ip link show "$bridge" >/dev/null 2>&1; then
  ip link add "$bridge" type bridge
fi
ip addr replace "$gw/16" dev "$bridge"
ip link set "$bridge" up
# Service IPs are only ever DNATed on this host; should a packet to one escape DNAT, it goes to
# the (local) bridge, not out of the default route.
ip route replace "$svc_cidr" dev "$bridge" src "$gw"

# ---------------------------------------------------------------- control plane
# Extra kube-apiserver flags (last one wins): the Node authorizer and NodeRestriction for the
# kubelet's system:node identity, the ServiceAccount admission plugin back on (the
# controller-manager makes the default ServiceAccounts), kubelet client credentials for
# logs/exec, and the `kubernetes` Service endpoint at the bridge gateway (reachable from pods).
export ACCESSGATE_CP_AUTHORIZATION_MODE=Node,RBAC ACCESSGATE_CP_DISABLE_ADMISSION_PLUGINS=""
export ACCESSGATE_CP_APISERVER_ARGS="--enable-admission-plugins=NodeRestriction \
 --kubelet-client-certificate=$dir/pki/admin.crt --kubelet-client-key=$dir/pki/admin.key \
 --kubelet-certificate-authority=$dir/pki/ca.crt \
 --kubelet-preferred-address-types=InternalIP \
 --bind-address=0.0.0.0 --advertise-address=$gw --endpoint-reconciler-type=lease \
 ${ACCESSGATE_CP_APISERVER_ARGS:-}"
cp_running=0
if [ -f "$dir/kube-apiserver.pid" ] && kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then cp_running=1; fi
if [ "$cp_running" = 0 ]; then
  ACCESSGATE_CP_BIN="$cpbin" "$cpdir/start.sh" "$dir" || die "control plane failed to start"
fi
# shellcheck disable=SC1091
. "$dir/controlplane.env"
log "control plane up at $ACCESSGATE_CP_APISERVER_URL"
kubectl=("$KUBECTL" --kubeconfig "$ACCESSGATE_CP_KUBECONFIG")

stop_all() { "$here/stop.sh" "$dir" >/dev/null 2>&1 || true; }
fail_with_log() { # name, message
  echo "node/start.sh: $2; last lines of $dir/$1.log:" >&2
  tail -n 40 "$dir/$1.log" >&2 || true
  stop_all
  exit 1
}
start_bg() { # name, argv...
  local name="$1"; shift
  echo "=== node/start.sh: starting $name at $(date -u +%FT%TZ)" >>"$dir/$name.log"
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}
alive() { kill -0 "$(cat "$dir/$1.pid" 2>/dev/null)" 2>/dev/null; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# ---------------------------------------------------------------- certs + kubeconfigs
pki="$dir/pki"
mkcert() { # name subject [san]  -> $nd/name.crt/.key signed by the control plane's CA
  local name="$1" subj="$2" san="${3:-}" eku=clientAuth
  [ -f "$nd/$name.crt" ] && return 0
  [ -n "$san" ] && eku="serverAuth,clientAuth"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$nd/$name.ext"
  (umask 077
   openssl req -new -newkey rsa:2048 -nodes -keyout "$nd/$name.key" -out "$nd/$name.csr" -subj "$subj" &&
   openssl x509 -req -in "$nd/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
     -out "$nd/$name.crt" -days 3650 -sha256 -extfile "$nd/$name.ext") >>"$nd/openssl.log" 2>&1 ||
    die "openssl failed for $name, see $nd/openssl.log"
  rm -f "$nd/$name.csr" "$nd/$name.ext"
}
mkkubeconfig() { # name user-cert-name -> $nd/name.kubeconfig
  umask 077
  cat >"$nd/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: accessgate-test
  cluster:
    server: $ACCESSGATE_CP_APISERVER_URL
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $nd/$2.crt
    client-key: $nd/$2.key
contexts:
- name: default
  context: {cluster: accessgate-test, user: $1}
current-context: default
EOF
  umask 022
}
mkcert kubelet "/O=system:nodes/CN=system:node:$node_name"
mkcert kubelet-serving "/O=system:nodes/CN=system:node:$node_name" "IP:$gw,IP:127.0.0.1,DNS:$node_name,DNS:localhost"
mkcert kube-controller-manager "/CN=system:kube-controller-manager"
mkcert kube-scheduler "/CN=system:kube-scheduler"
mkcert kube-proxy "/CN=system:kube-proxy"
mkkubeconfig kubelet kubelet
mkkubeconfig kube-controller-manager kube-controller-manager
mkkubeconfig kube-scheduler kube-scheduler
mkkubeconfig kube-proxy kube-proxy
log "certificates and kubeconfigs ready"

# ---------------------------------------------------------------- containerd
cd_sock="$dir/containerd/containerd.sock"
cdver="$("$cdbin/containerd" --version | awk '{print $3}')"
# This machine's root lacks CAP_SYS_RESOURCE (not in the bounding set), so no process may lower
# its oom_score_adj; containerd gives every sandbox -998 and runc then fails with
# "nsexec: failed to update /proc/self/oom_score_adj: Permission denied": restrict_oom_score_adj
# clamps it to containerd's own (0).
if [ "$cflavor" = debian ]; then
cat >"$dir/containerd/config.toml" <<EOF
# containerd $cdver for the accessgate test node: everything under $dir.
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$cd_sock"
[ttrpc]
  address = "$cd_sock.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$dir/containerd/runc"
        SystemdCgroup = false
EOF
else
cat >"$dir/containerd/config.toml" <<EOF
# containerd $cdver for the accessgate test node: everything under $dir.
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
imports = []
# nri would listen on /var/run/nri/nri.sock.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$cd_sock"
[ttrpc]
  address = "$cd_sock.ttrpc"
[debug]
  level = "info"
[plugins]
  # Default /opt/containerd (created at start), and the image verifier's dir under it.
  [plugins.'io.containerd.internal.v1.opt']
    path = "$dir/containerd/opt"
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = "$dir/containerd/opt/image-verifier/bin"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$sandbox_image"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "$dir/containerd/certs.d"
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$(command -v runc)"
          Root = "$dir/containerd/runc"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["$cni_bin"]
      conf_dir = "$dir/cni/net.d"
EOF
fi
cat >"$dir/cni/net.d/10-accessgate.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "accessgate",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gw"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
# PATH: containerd finds containerd-shim-runc-v2 there; ours first.
start_bg containerd env PATH="$cdbin:$PATH" "$cdbin/containerd" --config "$dir/containerd/config.toml"
ctr_() { "$cdbin/ctr" --address "$cd_sock" -n k8s.io "$@"; }
for _ in $(seq 1 100); do
  alive containerd || fail_with_log containerd "containerd exited"
  ctr_ version >/dev/null 2>&1 && break
  sleep 0.1
done
ctr_ version >/dev/null 2>&1 || fail_with_log containerd "containerd not answering on $cd_sock"
for i in pause echo; do
  ctr_ images import --all-platforms "$cache/images/$i.tar" >/dev/null 2>>"$dir/containerd.log" ||
    fail_with_log containerd "ctr images import $i.tar failed"
done
log "containerd $cdver ($cdbin) up, images imported: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

# ---------------------------------------------------------------- controller-manager, scheduler
kcm_port="$(pick_port)"
start_bg kube-controller-manager "$nbin/kube-controller-manager" \
  --kubeconfig="$nd/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$nd/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$nd/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" \
  --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --service-cluster-ip-range="$svc_cidr" \
  --allocate-node-cidrs=false \
  --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
  --profiling=false
sched_port="$(pick_port)"
cat >"$nd/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $nd/kube-scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
start_bg kube-scheduler "$nbin/kube-scheduler" \
  --config="$nd/kube-scheduler.yaml" \
  --authentication-kubeconfig="$nd/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$nd/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$sched_port" \
  --profiling=false

# ---------------------------------------------------------------- cluster DNS (stand-in)
# No CoreDNS: dnsmasq (Debian's dnsmasq-base) on the bridge address answers the names of
# DIR/dns/hosts (`IP name.namespace.svc.cluster.local`, written by the tests for the Services
# they use, re-read on SIGHUP) and NXDOMAIN for the rest of cluster.local; nothing else
# (no upstream: no outside network). Pods get it as their nameserver (kubelet clusterDNS).
mkdir -p "$dir/dns"; touch "$dir/dns/hosts"
dnsmasq_bin="$(command -v dnsmasq || true)"
cluster_dns=""
if [ -n "$dnsmasq_bin" ]; then
  start_bg dnsmasq "$dnsmasq_bin" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --addn-hosts="$dir/dns/hosts" --local=/cluster.local/ --domain-needed --bind-interfaces \
    --listen-address="$gw" --port=53 --user=root --group=root --pid-file= --cache-size=0 \
    --log-facility=-
  for _ in $(seq 1 20); do grep -q "^dnsmasq: started" "$dir/dnsmasq.log" 2>/dev/null && break; sleep 0.1; done
  alive dnsmasq || die "dnsmasq exited: $(tail -n 3 "$dir/dnsmasq.log")"
  cluster_dns="clusterDNS: [$gw]"
else
  log "dnsmasq not found (dnsmasq-base): pods get no cluster DNS"
fi

# ---------------------------------------------------------------- kubelet
cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1; kubelet >= 1.35 refuses to start on it unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$cd_sock
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $nd/kubelet-serving.crt
tlsPrivateKeyFile: $nd/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
$cluster_dns
resolvConf: /etc/resolv.conf
podLogsDir: $dir/pod-logs
# Default /usr/libexec/kubernetes/kubelet-plugins/volume/exec/, which it would create on the host.
volumePluginDir: $dir/kubelet/volume-plugins
failSwapOn: false
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
# The disk is shared with everything else on the machine: evict only when it is nearly full,
# and never garbage-collect the locally built images (they cannot be pulled back).
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1Gi"
  imagefs.available: "1Gi"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
kubelet_started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
start_bg kubelet "$nbin/kubelet" \
  --config="$nd/kubelet.yaml" \
  --kubeconfig="$nd/kubelet.kubeconfig" \
  --root-dir="$dir/kubelet" \
  --cert-dir="$nd/kubelet-pki" \
  --hostname-override="$node_name" \
  --node-ip="$gw"

# ---------------------------------------------------------------- kube-proxy
proxy_health="$(pick_port)"; proxy_metrics="$(pick_port)"
cat >"$nd/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $nd/kube-proxy.kubeconfig
hostnameOverride: $node_name
mode: $proxy_mode
clusterCIDR: $pod_cidr
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_health
metricsBindAddress: 127.0.0.1:$proxy_metrics
# Leave the host's conntrack table size and timeouts alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  # NodePorts on 127.0.0.1 would need net.ipv4.conf.all.route_localnet=1.
  localhostNodePorts: false
nodePortAddresses: ["$gw/32"]
EOF
start_bg kube-proxy "$nbin/kube-proxy" --config="$nd/kube-proxy.yaml"

cat >"$dir/node.env" <<EOF
ACCESSGATE_NODE_DIR=$dir
ACCESSGATE_NODE_BIN=$nbin
ACCESSGATE_NODE_NAME=$node_name
ACCESSGATE_NODE_IP=$gw
ACCESSGATE_NODE_POD_CIDR=$pod_cidr
ACCESSGATE_NODE_SERVICE_CIDR=$svc_cidr
ACCESSGATE_NODE_BRIDGE=$bridge
ACCESSGATE_NODE_PROXY_MODE=$proxy_mode
ACCESSGATE_NODE_CONTAINERD_SOCK=$cd_sock
ACCESSGATE_NODE_SANDBOX_IMAGE=$sandbox_image
ACCESSGATE_NODE_IMAGES_DIR=$cache/images
ACCESSGATE_NODE_KCM_PORT=$kcm_port
ACCESSGATE_NODE_SCHEDULER_PORT=$sched_port
ACCESSGATE_NODE_PROXY_HEALTHZ=127.0.0.1:$proxy_health
ACCESSGATE_NODE_CONTAINERD=$cflavor
ACCESSGATE_NODE_CTR="$cdbin/ctr --address $cd_sock -n k8s.io"
EOF

# ---------------------------------------------------------------- wait
timeout="${ACCESSGATE_NODE_READY_TIMEOUT:-120}"
deadline=$(( $(date +%s) + timeout ))
ok() { [ "$(curl -sk --max-time 2 "$1" 2>/dev/null)" = ok ]; }
state=""
while :; do
  for n in containerd kube-controller-manager kube-scheduler kubelet kube-proxy; do
    alive "$n" || fail_with_log "$n" "$n exited"
  done
  [ "$(date +%s)" -lt "$deadline" ] || {
    echo "node/start.sh: not ready after ${timeout}s (waiting for: $state)" >&2
    for n in kubelet kube-proxy kube-controller-manager kube-scheduler containerd; do
      echo "--- $n.log" >&2; tail -n 15 "$dir/$n.log" >&2
    done
    stop_all; exit 1; }
  state=""
  ok "https://127.0.0.1:$kcm_port/healthz" || state+=" kube-controller-manager"
  ok "https://127.0.0.1:$sched_port/healthz" || state+=" kube-scheduler"
  ok "http://127.0.0.1:10248/healthz" || state+=" kubelet"
  curl -sf --max-time 2 "http://127.0.0.1:$proxy_health/healthz" >/dev/null 2>&1 || state+=" kube-proxy"
  # Ready, as reported by this kubelet (on a restart the node object still says Ready from before).
  ready="$("${kubectl[@]}" get node "$node_name" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null || true)"
  if [ "${ready%% *}" != True ] || [[ "${ready#* }" < "$kubelet_started" ]]; then state+=" node-Ready"; fi
  "${kubectl[@]}" -n default get serviceaccount default >/dev/null 2>&1 || state+=" default-serviceaccount"
  [ -z "$state" ] && break
  sleep 0.5
done
log "node $node_name Ready (kubectl: $KUBECTL --kubeconfig $ACCESSGATE_CP_KUBECONFIG)"
