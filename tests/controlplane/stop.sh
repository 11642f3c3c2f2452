#!/usr/bin/env bash
# Stop the control plane started by ./start.sh DIR (kube-apiserver first, then etcd).
#
#   ./stop.sh DIR
#
# Sends SIGTERM, waits up to ${ACCESSGATE_CP_STOP_TIMEOUT:-20} s, then SIGKILL.
# Only the PIDs recorded in DIR/*.pid are signalled, and only if that PID still runs
# the expected binary (guards against PID reuse). DIR's data, certs and logs are kept,
# so ./start.sh DIR restarts it; delete DIR to discard it. Exits 0 if nothing runs.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir="$1"
[ -d "$dir" ] || { echo "stop.sh: $dir does not exist" >&2; exit 0; }
timeout="${ACCESSGATE_CP_STOP_TIMEOUT:-20}"
rc=0

ours() { # pid name: is pid alive and running our binary?
  kill -0 "$1" 2>/dev/null || return 1
  local exe
  exe="$(readlink "/proc/$1/exe" 2>/dev/null || true)"
  case "$exe" in */"$2"|*/"$2 (deleted)") return 0 ;; esac
  # /proc/PID/exe may be unreadable (e.g. other user); fall back to argv[0].
  [ -z "$exe" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n1 | grep -q "/$2\$"
}

for name in kube-apiserver etcd; do
  pidfile="$dir/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if [ -z "$pid" ] || ! ours "$pid" "$name"; then
    rm -f "$pidfile"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 $(( timeout * 10 ))); do
    ours "$pid" "$name" || break
    sleep 0.1
  done
  if ours "$pid" "$name"; then
    echo "stop.sh: $name (pid $pid) ignored SIGTERM for ${timeout} s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
    if ours "$pid" "$name"; then echo "stop.sh: could not kill $name (pid $pid)" >&2; rc=1; continue; fi
  fi
  rm -f "$pidfile"
  echo "stop.sh: stopped $name (pid $pid)" >&2
done
exit $rc
