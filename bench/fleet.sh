#!/bin/bash
# bench/fleet.sh [VMS [SLOTS [HOLD_MS [POLL_MS]]]] — the fleet semaphore under load: a three-member etcd cluster
# (Debian's etcd 3.4 from ADE_ETCD_DIR, as tests/run.sh unpacks it) on 127.0.0.1 with random free ports in a temp
# folder, and VMS simulated VMs (default 1000) contending for SLOTS slots (default 10), each holding its slot
# HOLD_MS (default 200) and polling every POLL_MS (default 1000, as `fleet acquire --wait`). Prints acquisitions/s,
# time to drain, the most holders ever seen (etcd's history of the key; fails above SLOTS). Everything it starts is
# killed on exit; etcd lives at most 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ETCD_DIR=${ADE_ETCD_DIR:-${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}/etcd}
ETCD=$ETCD_DIR/usr/bin/etcd
[ -x "$ETCD" ] || { echo "bench/fleet.sh: no $ETCD (run tests/run.sh once, or set ADE_ETCD_DIR)" >&2; exit 2; }

cargo build -q --example fleet_bench
BIN=${CARGO_TARGET_DIR:-target}/debug/examples/fleet_bench

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(6)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r -a p <<<"$ports"
cluster="m0=http://127.0.0.1:${p[3]},m1=http://127.0.0.1:${p[4]},m2=http://127.0.0.1:${p[5]}"
endpoints=()
for i in 0 1 2; do
  client=http://127.0.0.1:${p[$i]}
  peer=http://127.0.0.1:${p[$((i + 3))]}
  timeout -s KILL 1800 "$ETCD" --name "m$i" --data-dir "$tmp/m$i" --listen-client-urls "$client" \
    --advertise-client-urls "$client" --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
    --logger zap --log-outputs stderr --log-level error >"$tmp/m$i.log" 2>&1 &
  pids+=($!)
  endpoints+=("$client")
done
for e in "${endpoints[@]}"; do
  for _ in $(seq 1 300); do
    curl -s --noproxy '*' "$e/health" | grep -q '"true"' && break
    sleep 0.2
  done
  curl -s --noproxy '*' "$e/health" | grep -q '"true"' || { echo "etcd at $e did not start" >&2; cat "$tmp"/m*.log >&2; exit 1; }
done
echo "three-member etcd $("$ETCD" --version | head -n 1) at ${endpoints[*]}"
eps=$(IFS=,; echo "${endpoints[*]}")
timeout 1500 "$BIN" "$eps" "${1:-1000}" "${2:-10}" "${3:-200}" "${4:-1000}"
