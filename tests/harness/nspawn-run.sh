#!/bin/bash
# nspawn-run.sh [-t SECS] [-g GUEST] DIR CMD...
#   Boots a guest of build-guest.sh [--nspawn-only] with systemd-nspawn: real
#   systemd as PID 1 + the real system D-Bus. GUEST (-g, else $NSPAWN_GUEST,
#   else 252): 252 = $ADE_HARNESS_DIR/rootfs-ns, Debian 12's systemd 252;
#   219 = $ADE_HARNESS_DIR/rootfs-219, RHEL 7's systemd 219 on the same Debian
#   userland (nspawn gives it cgroup v1); db = $ADE_HARNESS_DIR/rootfs-db, the 252
#   guest with PostgreSQL 15 and MariaDB installed (disabled); ha =
#   $ADE_HARNESS_DIR/rootfs-ha, the 252 guest with Pacemaker and Corosync
#   installed (disabled); docker = $ADE_HARNESS_DIR/rootfs-docker-ns, the 252 guest with Debian 12's docker.io
#   (dockerd, containerd, runc; enabled), booted with what the engine needs: cgroup v2 whatever the host has
#   (nspawn's SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: on a v1/hybrid host nspawn mounts the v1 controllers read-only,
#   where Docker's cgroupfs driver writes), its own network namespace (--private-network: without it /proc/sys/net
#   is read-only and dockerd fails at "Enabling IP forwarding"), and the bpf and @keyring system calls past
#   nspawn's seccomp filter (without them runc fails: "bpf_prog_query(BPF_CGROUP_DEVICE) failed: operation not
#   permitted", its v2 device filter; "unable to join session keyring"). DIR is
#   bind-mounted read-write at /work. Once SystemState is running/degraded,
#   CMD (joined with spaces) runs with `bash -c` as root in /work inside the
#   container (nsenter into all its namespaces, in the scope unit
#   nspawn-run-job.scope, clean env, the container's /run/dbus/system_bus_socket),
#   its stdout/stderr streamed to ours. Then the container is powered off.
# Exit: CMD's exit code; 124 CMD timed out (-t, default 600 s); 125 harness
#   failure (no guest root, boot failed or timed out); 2 usage.
# The root is a throwaway overlay (--volatile=overlay): nothing persists and
# runs may overlap (each gets its own machine name, cgroup and run dir).
# Env: ADE_HARNESS_DIR (/var/cache/ade-prep-harness)
#      NSPAWN_BIND_RO="HOST:GUEST ..."  extra read-only binds (GUEST defaults to HOST)
#      NSPAWN_BIND="HOST:GUEST ..."     extra read-write binds
#      NSPAWN_GUEST (252), NSPAWN_BOOT_TIMEOUT (120 s), NSPAWN_PERSIST=1 (write through to the guest root),
#      NSPAWN_KEEP=1 (keep the run dir with console.log; its path goes to stderr),
#      NSPAWN_TIMING=1 (boot time to stderr)
# shellcheck disable=SC2317   # functions run from traps
set -u
H=${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}
TMO=600 GUEST=${NSPAWN_GUEST:-252}
usage() { echo "usage: $0 [-t secs] [-g 252|219|db|ha|docker] DIR COMMAND..." >&2; exit 2; }
while getopts "t:g:" o; do case $o in t) TMO=$OPTARG;; g) GUEST=$OPTARG;; *) usage;; esac; done
shift $((OPTIND-1))
case $GUEST in 252) ROOT=$H/rootfs-ns;; 219) ROOT=$H/rootfs-219;; db) ROOT=$H/rootfs-db;; ha) ROOT=$H/rootfs-ha;;
  docker) ROOT=$H/rootfs-docker-ns;; *) usage;; esac
[ $# -ge 2 ] || usage
[ -d "$1" ] || { echo "nspawn-run: no such dir: $1" >&2; exit 2; }
DIR=$(realpath "$1"); shift; CMD=$*
[ -x "$ROOT/usr/lib/systemd/systemd" ] || { echo "nspawn-run: no $ROOT (run build-guest.sh --nspawn-only; guest $GUEST)" >&2; exit 125; }
[ "$(id -u)" = 0 ] || { echo "nspawn-run: must run as root" >&2; exit 125; }

NAME=adens-$$                          # unique machine name: runs may overlap
RUN=$(mktemp -d /tmp/nspawn-run.XXXXXX); mkdir "$RUN/dbus"
BUS=unix:path=$RUN/dbus/system_bus_socket   # the container's /run/dbus, seen from the host
NS=/run/systemd/nspawn; NS_EXISTED=0; [ -e $NS ] && NS_EXISTED=1
LOCK=$NS/locks/inode-$(stat -c %d:%i "$ROOT")  # nspawn's lock file for the image dir
LOCK_EXISTED=0; [ -e "$LOCK" ] && LOCK_EXISTED=1
NSPID='' LEADER='' CPID=''
fail() { echo "nspawn-run: $*" >&2; tail -n 20 "$RUN/console.log" >&2; exit 125; }
sysstate() { busctl --address="$BUS" --timeout=5 get-property org.freedesktop.systemd1 \
  /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager SystemState 2>/dev/null; }

BINDS=(--bind="$DIR:/work")
for b in ${NSPAWN_BIND_RO:-}; do BINDS+=(--bind-ro="$b"); done
for b in ${NSPAWN_BIND:-}; do BINDS+=(--bind="$b"); done

# A private cgroup per run: with --keep-unit (no systemd on the host) nspawn
# puts payload/ and supervisor/ below its own cgroup, which overlapping runs
# would otherwise share. Both the name=systemd v1 and the unified hierarchy.
CGS=()
for h in /sys/fs/cgroup/systemd:name=systemd /sys/fs/cgroup/unified: /sys/fs/cgroup:; do
  d=${h%%:*}; t=$(stat -fc %T "$d" 2>/dev/null)
  { [ "$t" = cgroupfs ] && [ "${h#*:}" = name=systemd ]; } || [ "$t" = cgroup2fs ] || continue
  CGS+=("$d$(sed -n "s/^[0-9]*:${h#*:}:\(.*\)/\1/p" /proc/self/cgroup | sed 's|/$||')/$NAME")
done

# Power off via D-Bus, or SIGTERM to nspawn while the bus is not up (re-sent
# every 5 s: a request early in boot is lost); after 60 s SIGKILL the
# container's PID 1, which kills its whole PID namespace.
stop_container() {
  local i
  for i in $(seq 0 119); do
    if [ $((i % 10)) = 0 ]; then
      busctl --address="$BUS" --timeout=5 call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
        org.freedesktop.systemd1.Manager PowerOff >/dev/null 2>&1 || kill -TERM "$NSPID" 2>/dev/null
    fi
    # If CMD still runs (interrupt), systemd-shutdown SIGSTOPs it; nsenter
    # mirrors that by stopping itself and must be continued to reap CMD.
    [ -n "$CPID" ] && kill -CONT "$CPID" 2>/dev/null
    kill -0 "$NSPID" 2>/dev/null || return; sleep 0.5
  done
  echo "nspawn-run: container did not power off in 60s, killing it" >&2
  LEADER=${LEADER:-$(pgrep -P "$NSPID" | head -n1)}
  [ -n "$LEADER" ] && kill -KILL "$LEADER"; sleep 2; kill -KILL "$NSPID" 2>/dev/null
}
cleanup() {
  trap '' INT TERM                  # a second signal must not cut the cleanup short
  if [ -n "$CPID" ]; then           # interrupted: TERM CMD via its in-container timeout
    pkill -TERM -P "$CPID"          # (which SIGKILLs it 10 s later), before powering off
    for _ in $(seq 30); do kill -0 "$CPID" || break; sleep 0.5; done 2>/dev/null
  fi
  [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null && stop_container
  [ -n "$NSPID" ] && wait "$NSPID" 2>/dev/null
  [ -n "$CPID" ] && kill -CONT "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null
  # nspawn leftovers on the host: this machine's entry; the lock file (stale if
  # nspawn was killed) and the directories only if this run created them.
  rm -rf "${NS:?}/propagate/$NAME"
  [ "$LOCK_EXISTED" = 1 ] || { [ -e "$LOCK" ] && flock -n "$LOCK" rm -f "$LOCK"; }
  [ "$NS_EXISTED" = 1 ] || rmdir "$NS/locks" "$NS/propagate" "$NS" 2>/dev/null
  for c in "${CGS[@]}"; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null; done
  if [ "${NSPAWN_KEEP:-0}" = 1 ]; then echo "nspawn-run: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT; trap 'exit 130' INT TERM

VOL=(--volatile=overlay); [ "${NSPAWN_PERSIST:-0}" = 1 ] && VOL=()
GUEST_ARGS=()     # what the guest needs beyond the defaults (see the header)
if [ "$GUEST" = docker ]; then
  GUEST_ARGS=(--private-network --system-call-filter='bpf @keyring'); export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
fi
T0=$(date +%s%N)
( for c in "${CGS[@]}"; do mkdir -p "$c" && echo $BASHPID > "$c/cgroup.procs" || exit 125; done
  exec systemd-nspawn -q -b -D "$ROOT" "${VOL[@]}" -M "$NAME" --register=no --keep-unit \
    "${GUEST_ARGS[@]}" --bind="$RUN/dbus:/run/dbus" "${BINDS[@]}" ) </dev/null >"$RUN/console.log" 2>&1 &
NSPID=$!

# Wait for the boot to finish (SystemState running or degraded).
booted() { case $(sysstate) in *'"running"'*|*'"degraded"'*) return 0;; esac; return 1; }
for _ in $(seq $((10 * ${NSPAWN_BOOT_TIMEOUT:-120}))); do
  kill -0 $NSPID 2>/dev/null || fail "systemd-nspawn exited during boot; console tail:"
  booted && break
  sleep 0.1
done
booted || fail "boot timed out ($(sysstate)); console tail:"
LEADER=$(pgrep -P $NSPID | head -n1)           # the container's PID 1 (systemd)
grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$LEADER/status" 2>/dev/null || fail "cannot find container init"
[ "${NSPAWN_TIMING:-0}" = 1 ] && echo "nspawn-run: booted in $((($(date +%s%N) - T0) / 1000000)) ms" >&2

# Run CMD in all the container's namespaces, with its PID 1's root and cwd
# (-r -w: without them the host's root leaks in), clean env, in /work, inside
# the transient unit nspawn-run-job.scope (so GetUnitByPID on the job's own pid
# answers as vm-run-job.service does in the VM). The timeout runs inside the
# container so that nsenter always outlives and reaps CMD; setsid keeps
# terminal signals away from them: an interrupt reaches only this script,
# whose cleanup stops CMD.
# systemd 219 manages only the v1 name=systemd hierarchy: systemd-run --scope moves the job into its scope there,
# but in the unified hierarchy the job would stay in this script's cgroup, outside the container's cgroup
# namespace (/proc/PID/cgroup: 0::/../..), unlike every process the container's systemd starts (0::/). So for
# 219 the job first joins PID 1's unified cgroup.
UPROCS=''
if [ "$GUEST" = 219 ]; then
  for u in /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ "$(stat -fc %T "$u" 2>/dev/null)" = cgroup2fs ] || continue
    UPROCS=$u$(sed -n 's/^0::\(.*\)/\1/p' "/proc/$LEADER/cgroup" | sed 's|/$||')/cgroup.procs; break
  done
fi
# shellcheck disable=SC2016   # $0, $$ and $@ are the inner shell's
setsid sh -c '[ -z "$0" ] || echo $$ > "$0" || exit 125; exec "$@"' "$UPROCS" \
  nsenter -t "$LEADER" -a -r -w -- timeout -k 10 "$TMO" \
  systemd-run --scope -q --unit=nspawn-run-job env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "cd /work || exit 125
$CMD" </dev/null &
CPID=$!
wait $CPID 2>/dev/null; RC=$?; CPID=''     # (2>/dev/null: no "Killed" job notice)
[ $RC = 124 ] && echo "nspawn-run: timeout after ${TMO}s" >&2
exit $RC
