#!/usr/bin/env bash
# Start a loopback control plane (etcd + kube-apiserver) with its state in DIR.
#
#   ./start.sh DIR
#
# Writes into DIR:
#   admin.kubeconfig      cluster-admin (client cert, O=system:masters), certs embedded
#   controlplane.env      shell-sourceable: ACCESSGATE_CP_APISERVER_URL, ports, paths, KUBECTL
#   pki/                  ca.crt/ca.key (kept so tests can mint more client certs),
#                         apiserver.crt/.key, admin.crt/.key, sa.key/sa.pub
#   etcd/                 etcd data
#   etcd.log kube-apiserver.log, etcd.pid kube-apiserver.pid
#
# Environment (all optional):
#   ACCESSGATE_CP_BIN             dir with kube-apiserver, etcd, kubectl (default: ./build.sh output)
#   ACCESSGATE_CP_APISERVER_PORT  kube-apiserver secure port     (default: a free port)
#   ACCESSGATE_CP_ETCD_PORT       etcd client port               (default: a free port)
#   ACCESSGATE_CP_ETCD_PEER_PORT  etcd peer port                 (default: a free port)
#   ACCESSGATE_CP_READY_TIMEOUT   seconds to wait for /readyz    (default: 90)
#   ACCESSGATE_CP_APISERVER_ARGS  extra kube-apiserver flags (word-split). A repeated list flag
#                                 appends to the one here, hence the next two:
#   ACCESSGATE_CP_AUTHORIZATION_MODE          --authorization-mode   (default: RBAC)
#   ACCESSGATE_CP_DISABLE_ADMISSION_PLUGINS   --disable-admission-plugins (default: ServiceAccount;
#                                 set to "" to keep every default plugin, as tests/node does)
#
# Re-running on a DIR whose processes were stopped restarts them on the same ports,
# certs and data. Running it on a DIR that is already running is an error.
# Stop with ./stop.sh DIR. Non-interactive; fine to run as root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
dir="$(cd "$1" && pwd)"

die() { echo "start.sh: $*" >&2; exit 1; }
for tool in openssl curl base64; do command -v "$tool" >/dev/null || die "'$tool' is required"; done

bin="${ACCESSGATE_CP_BIN:-}"
if [ -z "$bin" ]; then
  bin="$("$here/build.sh" | tail -n1)" || die "build.sh failed"
fi
for b in kube-apiserver etcd kubectl; do [ -x "$bin/$b" ] || die "$bin/$b missing (run $here/build.sh)"; done

# Refuse to start twice on the same DIR.
for name in etcd kube-apiserver; do
  if [ -f "$dir/$name.pid" ]; then
    pid="$(cat "$dir/$name.pid")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
      die "$name is already running for $dir (pid $pid); run stop.sh first"
    fi
    rm -f "$dir/$name.pid"
  fi
done

# ---------------------------------------------------------------- ports
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=" "
pick_port() {
  # Below the Linux ephemeral range (32768+) so outgoing connections cannot hold it.
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    case "$taken" in *" $p "*) continue ;; esac
    if port_free "$p"; then taken+="$p "; echo "$p"; return 0; fi
  done
  die "no free port found"
}
restart=0
if [ -f "$dir/controlplane.env" ]; then
  # Restart: keep the ports baked into etcd's member data and the kubeconfig.
  restart=1
  # shellcheck disable=SC1091
  . "$dir/controlplane.env"
fi
# Ports picked here may race with another start.sh picking at the same moment; such a
# clash is detected below (a process exits with "address already in use") and retried.
auto_ports=0
if [ "$restart" = 0 ] && [ -z "${ACCESSGATE_CP_APISERVER_PORT:-}${ACCESSGATE_CP_ETCD_PORT:-}${ACCESSGATE_CP_ETCD_PEER_PORT:-}" ]; then
  auto_ports=1
fi
choose_ports() {
  api_port="${ACCESSGATE_CP_APISERVER_PORT:-$(pick_port)}"; taken+="$api_port "
  etcd_port="${ACCESSGATE_CP_ETCD_PORT:-$(pick_port)}"; taken+="$etcd_port "
  peer_port="${ACCESSGATE_CP_ETCD_PEER_PORT:-$(pick_port)}"; taken+="$peer_port "
  for p in "$api_port" "$etcd_port" "$peer_port"; do port_free "$p" || die "port $p on 127.0.0.1 is in use"; done
  api_url="https://127.0.0.1:${api_port}"
  etcd_url="http://127.0.0.1:${etcd_port}"
  peer_url="http://127.0.0.1:${peer_port}"
}
choose_ports

# ---------------------------------------------------------------- certs
pki="$dir/pki"
mkdir -p "$pki"
chmod 700 "$pki"
if [ ! -f "$pki/admin.crt" ]; then
  (
    cd "$pki"
    umask 077
    exec >openssl.log 2>&1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -sha256 \
      -subj "/CN=accessgate-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"

    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -new -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
      -days 3650 -sha256 -extfile apiserver.ext

    cat >client.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    openssl req -new -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=accessgate-admin"
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt \
      -days 3650 -sha256 -extfile client.ext

    # Service-account token signing key pair (TokenRequest / kubectl create token).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    openssl pkey -in sa.key -pubout -out sa.pub
    rm -f ./*.csr
  ) || die "openssl failed, see $pki/openssl.log"
fi

# ---------------------------------------------------------------- helpers
start_bg() { # name, argv...  -> runs detached (own session), all fds to DIR/name.log
  local name="$1"; shift
  echo "=== start.sh: starting $name at $(date -u +%FT%TZ)" >>"$dir/$name.log"
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}
alive() { kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }
stop_ours() { "$here/stop.sh" "$dir" >/dev/null 2>&1 || true; }
fail_with_log() { # name, message
  echo "start.sh: $2; last lines of $dir/$1.log:" >&2
  tail -n 40 "$dir/$1.log" >&2 || true
  stop_ours
  exit 1
}
port_clash() { # name: did it die because a port was taken after we checked it?
  [ "$auto_ports" = 1 ] && ! alive "$1" &&
    awk '/^=== start.sh: starting/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$dir/$1.log" |
      grep -q "address already in use"
}

t0=$(date +%s.%N)

for attempt in 1 2 3; do
  # ---------------------------------------------------------------- etcd
  [ "$restart" = 1 ] || rm -rf "$dir/etcd"
  mkdir -p "$dir/etcd"
  chmod 700 "$dir/etcd"
  start_bg etcd "$bin/etcd" \
    --name=accessgate-test \
    --data-dir="$dir/etcd" \
    --listen-client-urls="$etcd_url" \
    --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" \
    --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="accessgate-test=$peer_url" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn

  # Healthy *and* ours: the member list must carry our peer URL (another etcd could have
  # won a race for the client port).
  etcd_ok() {
    curl -fsS --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' &&
      curl -fsS --max-time 2 -X POST -d '{}' "$etcd_url/v3/cluster/member/list" 2>/dev/null | grep -qF "\"$peer_url\""
  }
  etcd_up=0
  for _ in $(seq 1 300); do
    alive etcd || break
    if etcd_ok; then etcd_up=1; break; fi
    sleep 0.1
  done
  if [ "$etcd_up" = 0 ]; then
    if port_clash etcd && [ "$attempt" -lt 3 ]; then
      echo "start.sh: etcd lost a port race; retrying with other ports" >&2
      stop_ours; choose_ports; continue
    fi
    alive etcd && fail_with_log etcd "etcd not healthy after 30 s"
    fail_with_log etcd "etcd exited"
  fi

  # ---------------------------------------------------------------- kube-apiserver
  # Flags follow envtest's defaults. No controller-manager runs: no default ServiceAccount per
  # namespace (hence the ServiceAccount admission plugin is off), no GC, no pods scheduled.
  # --endpoint-reconciler-type=none: the apiserver cannot publish a loopback address in the
  # `kubernetes` Endpoints and would log an error every few seconds otherwise.
  # shellcheck disable=SC2206
  extra=(${ACCESSGATE_CP_APISERVER_ARGS:-})
  start_bg kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode="${ACCESSGATE_CP_AUTHORIZATION_MODE:-RBAC}" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --disable-admission-plugins="${ACCESSGATE_CP_DISABLE_ADMISSION_PLUGINS-ServiceAccount}" \
    --service-account-issuer="$api_url" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --profiling=false \
    --endpoint-reconciler-type=none \
    "${extra[@]}"

  timeout="${ACCESSGATE_CP_READY_TIMEOUT:-90}"
  deadline=$(( $(date +%s) + timeout ))
  ready=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    alive kube-apiserver || break
    if [ "$(curl -sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
            "$api_url/readyz" 2>/dev/null)" = "ok" ]; then
      ready=1; break
    fi
    sleep 0.25
  done
  if [ "$ready" = 0 ]; then
    if port_clash kube-apiserver && [ "$attempt" -lt 3 ]; then
      echo "start.sh: kube-apiserver lost a port race; retrying with other ports" >&2
      stop_ours; choose_ports; continue
    fi
    alive kube-apiserver && fail_with_log kube-apiserver "kube-apiserver not ready (/readyz) after ${timeout} s"
    fail_with_log kube-apiserver "kube-apiserver exited"
  fi
  break
done
t1=$(date +%s.%N)

# ---------------------------------------------------------------- outputs
b64() { base64 -w0 <"$1"; }
umask 077
cat >"$dir/admin.kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: accessgate-test
  cluster:
    server: $api_url
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: accessgate-admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: accessgate-test
  context:
    cluster: accessgate-test
    user: accessgate-admin
    namespace: default
current-context: accessgate-test
EOF
mv -f "$dir/admin.kubeconfig.tmp" "$dir/admin.kubeconfig"

cat >"$dir/controlplane.env" <<EOF
ACCESSGATE_CP_DIR=$dir
ACCESSGATE_CP_BIN=$bin
ACCESSGATE_CP_APISERVER_URL=$api_url
ACCESSGATE_CP_APISERVER_PORT=$api_port
ACCESSGATE_CP_ETCD_URL=$etcd_url
ACCESSGATE_CP_ETCD_PORT=$etcd_port
ACCESSGATE_CP_ETCD_PEER_PORT=$peer_port
ACCESSGATE_CP_CA_CERT=$pki/ca.crt
ACCESSGATE_CP_CA_KEY=$pki/ca.key
ACCESSGATE_CP_KUBECONFIG=$dir/admin.kubeconfig
KUBECTL=$bin/kubectl
EOF

printf 'start.sh: control plane ready at %s after %.1f s (kubeconfig: %s)\n' \
  "$api_url" "$(awk "BEGIN{print $t1 - $t0}")" "$dir/admin.kubeconfig" >&2
