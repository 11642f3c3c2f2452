# Shared by bench/grpc.sh and bench/profile.sh (sourced, not run): a work directory removed
# on exit with the processes started in it, and a dev issuer plus one accessgate (one worker)
# serving the policy bench/web on app.example.test.

AUD=4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE REGEX: the first line of FILE matching REGEX (20 s at most).
wait_for() {
  for _ in $(seq 200); do
    if line="$(grep -m1 -E "$2" "$1" 2>/dev/null)"; then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "${0##*/}: no line matching $2 in $1:" >&2; cat "$1" >&2; exit 1
}

# start_accessgate BIN [EXTRA_SPEC_LINES]: the issuer, the policy (its spec extended by the
# given YAML lines) and the server. Sets issuer (URL), auth (host:port) and server_pid.
start_accessgate() {
  local bin="$1" extra="${2:-}"
  "$bin" dev-issuer --listen 127.0.0.1:0 --log-format text >"$work/issuer.log" 2>&1 &
  pids+=($!)
  issuer="$(wait_for "$work/issuer.log" 'dev issuer on ' | awk '{print $4}')"
  mkdir -p "$work/policies"
  cat >"$work/policies/web.yaml" <<YAML
apiVersion: accessgate.dev/v1alpha1
kind: AccessPolicy
metadata: { name: web, namespace: bench }
spec:
  issuer: { url: ${issuer}, jwksUri: ${issuer}/cdn-cgi/access/certs }
  audiences: ["${AUD}"]
  hosts: [app.example.test]
${extra}
YAML
  TOKIO_WORKER_THREADS=1 ACCESSGATE_LOG=info "$bin" serve --policies "$work/policies" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  auth="$(wait_for "$work/server.log" '"listening"' | sed -E 's/.*"auth":"([^"]+)".*/\1/')"
}
