#!/usr/bin/env bash
# Build, start the one-node cluster, prove that pods run and Services route, stop.
#
#   ./smoke-test.sh [DIR]      (as root; DIR defaults to a new temp dir, removed at the end)
#   ACCESSGATE_NODE_KEEP=1 ./smoke-test.sh DIR    leave the cluster running
#
# Checks, each printed with its command's output:
#   1. the node registers and is Ready (kubectl get nodes -o wide)
#   2. a Deployment of 2 pods from the locally built FROM-scratch image becomes Available
#      through its readiness probe (kubectl get pods -o wide)
#   3. the host reaches the pods through the Service's ClusterIP (kube-proxy), both pods answer
#   4. a pod reaches the other pod through the Service's ClusterIP
#   5. a pod reaches the API server through the `kubernetes` Service (10.0.0.1:443) with its
#      projected ServiceAccount token, as an in-cluster client does
#   6. kubectl logs / exec work (API server -> kubelet)
#   7. stop.sh leaves no process, mount, bridge or KUBE-/CNI- chain behind
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
own_dir=0
if [ $# -ge 1 ]; then mkdir -p "$1"; dir="$(cd "$1" && pwd)"; else dir="$(mktemp -d /tmp/accessgate-node.XXXXXX)"; own_dir=1; fi
say() { printf '\n### %s\n' "$*"; }
fail() { echo "SMOKE FAIL: $*" >&2; "$here/stop.sh" "$dir" || true; exit 1; }

bin="$("$here/build.sh" | tail -n1)"
t0=$(date +%s.%N)
ACCESSGATE_NODE_BIN="$bin" "$here/start.sh" "$dir"
printf 'start.sh took %.1f s\n' "$(awk "BEGIN{print $(date +%s.%N) - $t0}")"
# shellcheck disable=SC1091
. "$dir/controlplane.env"
k() { "$KUBECTL" --kubeconfig "$ACCESSGATE_CP_KUBECONFIG" "$@"; }

say "1. kubectl get nodes -o wide"
k get nodes -o wide

say "2. Deployment echo (2 replicas, localhost/accessgate/echo:test) + Service"
k apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: localhost/accessgate/echo:test
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /healthz, port: 8080}}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
EOF
t1=$(date +%s.%N)
k rollout status deploy/echo --timeout=120s || { k describe pods -l app=echo | tail -30; fail "deployment not available"; }
printf 'pods Ready %.1f s after apply\n' "$(awk "BEGIN{print $(date +%s.%N) - $t1}")"
k get pods -o wide

say "3. curl the ClusterIP from the host"
ip="$(k get svc echo -o jsonpath='{.spec.clusterIP}')"
echo "Service echo: ClusterIP $ip"
# Ready pods reach kube-proxy's rules a moment later (EndpointSlice, then a sync, at most
# one per second): until then the ClusterIP has no endpoints and kube-proxy REJECTs.
t2=$(date +%s.%N)
for _ in $(seq 1 100); do curl -s --max-time 1 -o /dev/null "http://$ip/" && break; sleep 0.1; done
printf 'ClusterIP answering %.1f s after the rollout finished\n' "$(awk "BEGIN{print $(date +%s.%N) - $t2}")"
seen=""
for i in $(seq 1 20); do
  out="$(curl -sS --max-time 5 "http://$ip/from-host")" || fail "curl http://$ip/ failed"
  if [ "$i" -le 3 ]; then echo "curl http://$ip/from-host -> $out"; fi
  seen+="$(echo "$out" | awk '{print $3}')"$'\n'
done
echo "20 requests answered by: $(echo "$seen" | sort -u | grep -c .) distinct pods"
[ "$(echo "$seen" | sort -u | grep -c .)" = 2 ] || fail "expected both pods to answer"

say "4. pod -> Service ClusterIP"
pod="$(k get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')"
k exec "$pod" -- /echo -get "http://$ip/from-pod" || fail "pod -> ClusterIP failed"

say "5. pod -> API server through the kubernetes Service, with its ServiceAccount token"
k exec "$pod" -- /echo -get "https://10.0.0.1:443/version" || fail "pod -> kubernetes Service failed"
k exec "$pod" -- /echo -get "https://10.0.0.1:443/api/v1/namespaces/default/pods" | head -1 || true
echo "(a 403 above is RBAC speaking: the default ServiceAccount may not list pods, so the token was sent and checked)"

say "6. kubectl logs / exec"
k logs "$pod" | head -3
k exec "$pod" -- /echo -h 2>&1 | head -1 || true

if [ "${ACCESSGATE_NODE_KEEP:-0}" = 1 ]; then
  echo "cluster left running: $here/stop.sh $dir"
  exit 0
fi
say "7. stop.sh"
"$here/stop.sh" "$dir"
left="$(pgrep -f -- "$dir/" || true)"   # our daemons name files in DIR; this script names DIR only
[ -z "$left" ] || fail "processes left: $left"
[ "$(awk -v d="$dir/" 'index($5, d) == 1' /proc/self/mountinfo | wc -l)" = 0 ] || fail "mounts left under $dir"
! ip link show ag-cni0 >/dev/null 2>&1 || fail "bridge ag-cni0 left"
! iptables-save | grep -qE '^:(KUBE|CNI)-' || fail "iptables chains left: $(iptables-save | grep -E '^:(KUBE|CNI)-' | head -3)"
echo "nothing left behind"
[ "$own_dir" = 1 ] && rm -rf "$dir"
echo "SMOKE OK"
