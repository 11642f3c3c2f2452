#!/usr/bin/env bash
# End-to-end check of the control plane: build (if needed), start, exercise, stop.
#
#   ./smoke-test.sh [DIR]     (default: a fresh temp dir, removed afterwards on success)
#
# Checks: kubectl get ns; a CRD with an x-kubernetes-validations (CEL) rule is served,
# a valid object is accepted and an invalid one is rejected by CEL; a ServiceAccount
# token can be minted (TokenRequest) and is accepted by the apiserver; RBAC denies that
# ServiceAccount `list pods`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bin="$("$here/build.sh" | tail -n1)"
export ACCESSGATE_CP_BIN="$bin"
tmpdir=0
if [ $# -ge 1 ]; then dir="$1"; else dir="$(mktemp -d "${TMPDIR:-/tmp}/accessgate-cp.XXXXXX")"; tmpdir=1; fi
trap '"$here/stop.sh" "$dir" || true' EXIT

"$here/start.sh" "$dir"
k() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
step() { echo "--- $*" >&2; }

step "kubectl version"
k version

step "kubectl get ns"
k get ns
k get ns default -o name | grep -qx namespace/default

step "CRD with a CEL rule"
k apply -f - <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer}
              maxSize: {type: integer}
            x-kubernetes-validations:
            - rule: "self.size <= self.maxSize"
              message: "size must not exceed maxSize"
EOF
k wait --for=condition=Established --timeout=60s crd/widgets.example.dev
k apply -f - <<'EOF'
apiVersion: example.dev/v1
kind: Widget
metadata: {name: small, namespace: default}
spec: {size: 1, maxSize: 3}
EOF
k get widgets.example.dev small -o jsonpath='{.spec.size}' | grep -qx 1
if out="$(k apply -f - 2>&1 <<'EOF'
apiVersion: example.dev/v1
kind: Widget
metadata: {name: big, namespace: default}
spec: {size: 5, maxSize: 3}
EOF
)"; then
  echo "smoke-test: FAIL: invalid Widget was accepted" >&2; exit 1
fi
echo "$out" | grep -q "size must not exceed maxSize" || { echo "smoke-test: FAIL: unexpected error: $out" >&2; exit 1; }
echo "CEL rejected the invalid Widget: $out" >&2

step "ServiceAccount token"
k create serviceaccount x -n default
token="$(k create token x -n default --duration=10m)"
[ -n "$token" ] || { echo "smoke-test: FAIL: empty token" >&2; exit 1; }
# ...and authenticates as the ServiceAccount. Use a kubeconfig without the admin client
# cert: with both, the apiserver's x509 authenticator wins and we would see the admin.
# shellcheck disable=SC1091
. "$dir/controlplane.env"
"$bin/kubectl" config --kubeconfig="$dir/sa-x.kubeconfig" set-cluster t \
  --server="$ACCESSGATE_CP_APISERVER_URL" --certificate-authority="$ACCESSGATE_CP_CA_CERT" --embed-certs >/dev/null
"$bin/kubectl" config --kubeconfig="$dir/sa-x.kubeconfig" set-credentials x --token="$token" >/dev/null
"$bin/kubectl" config --kubeconfig="$dir/sa-x.kubeconfig" set-context t --cluster=t --user=x >/dev/null
whoami="$("$bin/kubectl" --kubeconfig="$dir/sa-x.kubeconfig" --context=t auth whoami -o jsonpath='{.status.userInfo.username}')"
[ "$whoami" = "system:serviceaccount:default:x" ] || { echo "smoke-test: FAIL: token authenticated as '$whoami'" >&2; exit 1; }
echo "token authenticates as $whoami" >&2

step "RBAC"
ans="$(k auth can-i --as=system:serviceaccount:default:x list pods || true)"
[ "$ans" = "no" ] || { echo "smoke-test: FAIL: can-i answered '$ans'" >&2; exit 1; }
echo "can-i list pods as system:serviceaccount:default:x: $ans" >&2
ans="$(k auth can-i list pods)"
[ "$ans" = "yes" ] || { echo "smoke-test: FAIL: admin can-i answered '$ans'" >&2; exit 1; }

step "stop"
"$here/stop.sh" "$dir"
trap - EXIT
for name in etcd kube-apiserver; do [ ! -f "$dir/$name.pid" ] || { echo "smoke-test: FAIL: $name.pid left behind" >&2; exit 1; }; done
[ "$tmpdir" = 1 ] && rm -rf "$dir"
echo "smoke-test: OK" >&2
