#!/usr/bin/env bash
# Stop the one-node cluster started by ./start.sh DIR and undo what it did to the host.
#
#   ./stop.sh DIR
#
# Order: kube-proxy, kubelet, scheduler, controller-manager (SIGTERM, SIGKILL after
# ${ACCESSGATE_NODE_STOP_TIMEOUT:-20} s); every pod sandbox is stopped and removed through CRI
# (node-cri teardown: CNI DEL, netns and shm unmounted); containerd and any shim left of it;
# then the host: mounts under DIR, the kubepods cgroups, the bridge and its routes, the
# KUBE-*/CNI-* iptables chains (and kube-proxy's nftables tables), the kernel settings recorded
# by start.sh, the files kubelet/CNI put under /var/log/containers and /var/lib/cni; last the
# control plane (../controlplane/stop.sh). DIR's data, certs and logs are kept. Only processes
# recorded in DIR's pid files (or whose command line names DIR) are signalled. Running it twice
# is harmless; it exits 0 if nothing runs.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "node/stop.sh: $1 does not exist" >&2; exit 0; }
dir="$(cd "$1" && pwd)"
timeout="${ACCESSGATE_NODE_STOP_TIMEOUT:-20}"
rc=0
say() { echo "node/stop.sh: $*" >&2; }
nd="$dir/node"
bridge=ag-cni0
nbin=""
ctr=(ctr)
if [ -f "$dir/node.env" ]; then
  nbin="$(sed -n 's/^ACCESSGATE_NODE_BIN=//p' "$dir/node.env")"
  c="$(sed -n 's/^ACCESSGATE_NODE_CTR="\(.*\) --address .*/\1/p' "$dir/node.env")"
  [ -n "$c" ] && [ -x "$c" ] && ctr=("$c")
fi

ours() { # pid name
  kill -0 "$1" 2>/dev/null || return 1
  local exe
  exe="$(readlink "/proc/$1/exe" 2>/dev/null || true)"
  case "$exe" in */"$2"|*/"$2 (deleted)") return 0 ;; esac
  return 1
}
stop_pid() { # name
  local name="$1" pidfile="$dir/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if [ -z "$pid" ] || ! ours "$pid" "$name"; then rm -f "$pidfile"; return 0; fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 $(( timeout * 10 ))); do ours "$pid" "$name" || break; sleep 0.1; done
  if ours "$pid" "$name"; then
    say "$name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null; sleep 0.5
    if ours "$pid" "$name"; then say "could not kill $name (pid $pid)"; rc=1; return; fi
  fi
  rm -f "$pidfile"
  say "stopped $name (pid $pid)"
}

# ---------------------------------------------------------------- node components
stop_pid kube-proxy
stop_pid kubelet
stop_pid kube-scheduler
stop_pid kube-controller-manager
stop_pid dnsmasq

# ---------------------------------------------------------------- pods, containerd
sock="$dir/containerd/containerd.sock"
if [ -f "$dir/containerd.pid" ] && ours "$(cat "$dir/containerd.pid")" containerd && [ -S "$sock" ]; then
  if [ -n "$nbin" ] && [ -x "$nbin/node-cri" ]; then
    "$nbin/node-cri" -endpoint "unix://$sock" -timeout 60s teardown >&2 || { say "node-cri teardown reported errors"; }
  fi
  # Anything left (e.g. node-cri missing): kill the tasks directly.
  for t in $("${ctr[@]}" --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    "${ctr[@]}" --address "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
fi
stop_pid containerd
# Shims outlive containerd by design; ours name our socket on their command line.
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock( |\$)" 2>/dev/null); do
  grep -qa -- "$sock" "/proc/$pid/cmdline" 2>/dev/null || continue
  # Their containers first (children), then the shim.
  for c in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$c" 2>/dev/null; done
  kill -KILL "$pid" 2>/dev/null && say "killed leftover shim $pid"
done
sleep 0.2

# ---------------------------------------------------------------- mounts under DIR
# Deepest first. Shared-propagation copies under containerd's state can appear twice.
for _ in 1 2 3; do
  mapfile -t mnts < <(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | uniq)
  [ ${#mnts[@]} = 0 ] && break
  for m in "${mnts[@]}"; do
    m="$(printf '%b' "$m")"   # mountinfo escapes spaces as \040
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
done
left="$(awk -v d="$dir/" 'index($5, d) == 1' /proc/self/mountinfo | wc -l)"
[ "$left" = 0 ] || { say "$left mounts under $dir remain"; rc=1; }

# ---------------------------------------------------------------- cgroups (cgroupfs driver)
# kubelet's kubepods hierarchy; removable once no process is left in it.
for root in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do
  [ -d "$root/kubepods" ] || [ -d "$root/kubepods.slice" ] || continue
  find "$root"kubepods* -depth -type d 2>/dev/null | while read -r cg; do rmdir "$cg" 2>/dev/null; done
  [ -d "$root/kubepods" ] && { say "cgroup $root/kubepods not empty"; rc=1; }
done

# ---------------------------------------------------------------- network
if ip link show "$bridge" >/dev/null 2>&1; then
  # veths of pods whose netns is gone have gone with it; any still attached go too.
  for v in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null
  done
  ip link del "$bridge" && say "removed bridge $bridge"
fi
if [ -n "$nbin" ] && [ -x "$nbin/kube-proxy" ] && [ -f "$nd/kube-proxy.yaml" ]; then
  "$nbin/kube-proxy" --cleanup --config="$nd/kube-proxy.yaml" >>"$dir/kube-proxy.log" 2>&1 || true
fi
# What kube-proxy --cleanup leaves (kubelet's canary/hint chains, CNI portmap chains).
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null || continue
  for table in filter nat mangle; do
    $ipt -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' | grep -Ev '^-A (KUBE|CNI)-' |
      sed 's/^-A /-D /' | while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null; done
    chains="$($ipt -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE|CNI)-/ {print $2}')"
    for c in $chains; do $ipt -t "$table" -F "$c" 2>/dev/null; done
    for c in $chains; do $ipt -t "$table" -X "$c" 2>/dev/null; done
  done
done
if command -v nft >/dev/null; then
  for fam in ip ip6; do nft delete table "$fam" kube-proxy 2>/dev/null; done
  # Tables that iptables-nft created for us and that now hold no rule: gone, as before start.sh.
  if [ -f "$nd/nft-tables.orig" ]; then
    nft list tables 2>/dev/null | while read -r _ fam name; do
      grep -qx "table $fam $name" "$nd/nft-tables.orig" && continue
      if [ -z "$(nft list table "$fam" "$name" 2>/dev/null | grep -vE '^[[:space:]]*(table |chain |type |\}|$)')" ]; then
        nft delete table "$fam" "$name" 2>/dev/null
      fi
    done
  fi
fi

# ---------------------------------------------------------------- host files and settings
if [ -d /var/log/containers ]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null
  grep -qx /var/log/containers "$nd/paths.orig" 2>/dev/null || rmdir /var/log/containers 2>/dev/null
fi
if [ -d /var/lib/cni ]; then
  rm -f /var/lib/cni/results/accessgate-* 2>/dev/null
  if ! grep -qx /var/lib/cni "$nd/paths.orig" 2>/dev/null; then
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null
  fi
fi
# Paths with a compiled-in location that start.sh found missing: remove what is ours, then any
# directory left empty. One that existed before start.sh is left as it was (but for our files).
rm -f /var/lib/kubelet/device-plugins/kubelet.sock 2>/dev/null
for p in /var/lib/kubelet /run/containerd /usr/libexec/kubernetes; do
  [ -d "$p" ] || continue
  grep -qx "$p" "$nd/paths.orig" 2>/dev/null && continue
  find "$p" -depth -type d -empty -delete 2>/dev/null
  [ -e "$p" ] && say "left $p in place: not empty"
done
# IP allocations of pods that no longer exist (the sandboxes were removed above).
find "$dir/cni/ipam" -mindepth 1 -delete 2>/dev/null
if [ -f "$nd/sysctl.orig" ]; then
  while IFS='=' read -r k v; do
    [ -n "$k" ] && [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ] && sysctl -qw "$k=$v" 2>/dev/null
  done <"$nd/sysctl.orig"
fi

# ---------------------------------------------------------------- control plane
"$here/../controlplane/stop.sh" "$dir" || rc=1
if [ -f /run/accessgate-node.dir ] && [ "$(cat /run/accessgate-node.dir)" = "$dir" ]; then
  rm -f /run/accessgate-node.dir
fi
exit $rc
