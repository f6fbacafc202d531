#!/bin/bash
# bench/docker.sh [ADE_PREP_BIN] - issue 14: Docker as it really runs (Debian's docker.io, live-restore on) with
# BENCH_CONTAINERS (20) running containers, in the debian12-docker qemu guest (tests/harness/vm-run.sh; built by
# tests/harness/build-guest.sh). Times, per round:
#   ade-prep prepare   docker stop of all of them (one `docker stop`, the CLI stops them concurrently), then the
#                      units (docker.socket, docker.service, containerd.service), leftovers, the re-scan
#   ade-prep restore   unmask, the units back, `docker start` of the same containers
#   docker stop x N    the same containers stopped one after another (then started again, not timed)
#   systemctl stop docker   the engine alone: with live-restore the containers (and their shims) keep running and
#                      hold / (the count left running is printed)
# Docker's cgroupfs cgroup driver (docs/docker.md, bug 1). Each container's command exits on SIGTERM (a clean stop, no grace period spent). Figures only: nothing is asserted.
# Run as root on the host after `cargo build`; ADE_PREP_BIN defaults to target/debug/ade-prep. Env: BENCH_ROUNDS (1),
# BENCH_CONTAINERS (20), ADE_HARNESS_DIR. TCG on a loaded machine: expect 10-20 minutes.
# Exit: 0, 1 when a step failed, 2 usage; the harness's codes (124, 125) otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != --inside ]; then
  BIN=$(realpath "${1:-$HERE/target/debug/ade-prep}")
  [ -x "$BIN" ] || { echo "bench/docker.sh: no $BIN (cargo build first)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "bench/docker.sh: run as root (qemu guest)" >&2; exit 2; }
  S=$(mktemp -d /tmp/ade-bench-docker.XXXXXX)
  trap 'rm -rf "$S"' EXIT
  cp "$BIN" "$S/ade-prep"; cp "$0" "$S/docker.sh"
  rc=0
  VMRUN_IMAGE=debian12-docker VMRUN_MEM=${VMRUN_MEM:-2048} "$HERE/tests/harness/vm-run.sh" -s -t 3600 "$S" \
    "BENCH_ROUNDS=${BENCH_ROUNDS:-1} BENCH_CONTAINERS=${BENCH_CONTAINERS:-20} bash /work/docker.sh --inside" || rc=$?
  exit "$rc"
fi

# ---- inside the guest ----
ROUNDS=${BENCH_ROUNDS:-1}
N=${BENCH_CONTAINERS:-20}
IMG=ade-e2e/busybox:1
install -m 0755 /work/ade-prep /usr/bin/ade-prep
mkdir -p /etc/ade-prep/config.d
# The containers exit on SIGTERM, so the grace is never spent; a long one keeps ade-prep's `docker stop` (which it
# gives the grace + 60 s for all the containers together) from timing out under TCG (docs/docker.md, bug 4).
printf '[docker]\nstop_grace_secs = 300\n' > /etc/ade-prep/config.d/50-bench.toml
chmod 0644 /etc/ade-prep/config.d/50-bench.toml
# Docker's cgroupfs driver: with the systemd one (Debian 12's default) prepare fails on the containers' scopes
# (docs/docker.md, bug 1).
printf '{\n  "live-restore": true,\n  "exec-opts": ["native.cgroupdriver=cgroupfs"]\n}\n' > /etc/docker/daemon.json
systemctl restart docker.service
for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 1; done
[ "$(docker info -f '{{.LiveRestoreEnabled}}')" = true ] || { echo "live-restore is not on" >&2; exit 1; }
docker import /usr/local/share/ade-e2e/busybox-rootfs.tar "$IMG" >/dev/null
names=()
for i in $(seq "$N"); do
  docker run -d --name "b$i" --restart=unless-stopped "$IMG" sh -c 'trap "exit 0" TERM; while :; do sleep 1 & wait $!; done' >/dev/null
  names+=("b$i")
done
running() { docker ps -q | wc -l; }
wait_running() { # wait_running COUNT
  for _ in $(seq 300); do [ "$(running)" = "$1" ] && return 0; sleep 1; done
  echo "bench: $(running) containers running, want $1" >&2; exit 1
}
wait_running "$N"
# secs COMMAND...: runs it, prints its duration in seconds (stdout), its output to stderr
secs() {
  local t; t=$(date +%s.%N)
  "$@" >&2 || { echo "bench: failed: $*" >&2; exit 1; }
  python3 -c "import time; print(f'{time.time() - $t:.2f}')"
}
echo "bench/docker.sh: $N containers, live-restore on, cgroup driver $(docker info -f '{{.CgroupDriver}}'), $(nproc) vCPU (TCG), docker $(docker version -f '{{.Server.Version}}')"
for r in $(seq "$ROUNDS"); do
  p=$(secs ade-prep prepare --force distro,memory)
  left=$(pgrep -fc '^/usr/bin/containerd-shim' || true)
  q=$(secs ade-prep restore)
  wait_running "$N"
  # shellcheck disable=SC2016   # expanded by that bash
  s=$(secs bash -c 'for c in "$@"; do docker stop -t 10 "$c" >/dev/null; done' _ "${names[@]}")
  docker start "${names[@]}" >/dev/null; wait_running "$N"
  d=$(secs systemctl stop docker.socket docker.service)
  still=$(pgrep -fc '^/usr/bin/containerd-shim' || true)
  systemctl start docker.service; wait_running "$N"
  printf 'round %s: ade-prep prepare %6ss (shims left: %s)  restore %6ss | docker stop x%s one by one %6ss | systemctl stop docker %6ss (shims still running: %s) | prepare vs one-by-one: %sx\n' \
    "$r" "$p" "$left" "$q" "$N" "$s" "$d" "$still" "$(python3 -c "print(f'{$s / $p:.1f}')")"
done
