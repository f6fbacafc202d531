#!/bin/bash
# tests/e2e/docker.sh DRIVER PHASE... - the guest side of the Docker scenarios (issue 14): Debian 12's docker.io
# engine (dockerd, containerd, runc, containerd-shim-runc-v2), /etc/docker/daemon.json with live-restore, a busybox
# image imported from /usr/local/share/ade-e2e/busybox-rootfs.tar (no registry), ade-prep from the package (or the
# binary). Two guests run it:
#   nspawn  the `docker` systemd-nspawn guest (rootfs-docker: the 252 guest + docker.io; tests/nspawn/docker.rs) runs
#           the phases that need no kernel of their own: containerd, no-live-restore, live-restore. The container has
#           cgroup v2 (nspawn-run.sh -g docker) and its root is an overlay: daemon.json adds storage-driver vfs,
#           iptables false and bridge none (the container has its own network namespace with only lo), and `ctr`
#           uses containerd's native snapshotter (CONTAINERD_SNAPSHOTTER; an overlay mount on the overlay root fails
#           with EINVAL). ade-prep is this build's binary (ADE_PREP_BIN), with the generator.
#   qemu    the debian12-docker qemu guest of tests/harness (-s, VMRUN_IMAGE=debian12-docker; tests/vm/e2e.rs) runs
#           the reboot phase, which needs a boot.
# DRIVER: Docker's cgroup driver, `systemd` (the default of Debian 12's docker.io on cgroup v2: each container in a
# docker-<id>.scope unit) or `cgroupfs` (containers in /docker/<id>, no unit: Docker's default on the cgroup v1 hosts
# ADE supports: Ubuntu 16.04-20.04, RHEL/CentOS 7). Phases, run in the order given, in one boot (reboot last):
#   no-live-restore   live-restore false (set before the containers start): prepare, window, restore
#   live-restore      live-restore true (reloaded, the containers keep running): prepare, window, restore
#   reboot            live-restore true: prepare, window, `vm-run-ctl reboot`; boot 2: held through the boot, restore
#                     (qemu guest only)
#   containerd        containerd alone: docker.socket and docker.service stopped and disabled, the docker CLI
#                     moved away (a containerd-only host); a `ctr` task; prepare, window, restore (run first, before
#                     the containers exist, whatever its place in the list)
#   kubelet           a Kubernetes node's order (issue 25; run after containerd, before the containers exist): the
#                     engine down as in the containerd phase, a pod's container in containerd's CRI namespace k8s.io
#                     and a STAND-IN kubelet.service (Debian 12 has no kubelet package: /usr/local/bin/kubelet, a
#                     script that, as kubelet's restartPolicy Always does through the CRI, starts the pod's task again
#                     whenever it is not running, and looks first 5 s after its start). Asserted: prepare stops
#                     kubelet.service before the pod's task and before containerd.service (ade-prep's own log order),
#                     and while prepare ran kubelet started no pod again; in the window kubelet.service is stopped and
#                     masked and the pod's process gone; restore leaves the pod to kubelet (its log says so), kubelet's
#                     first look after restore finds the pod not running (nobody ran `ctr task start` behind it), and
#                     kubelet then starts it: it runs again.
# The containers (created once, reused by every docker phase):
#   always    --restart=always, named volume e2e-vol: one numbered line a second in /data/lines (TERM: exits 0)
#   unless    --restart=unless-stopped, bind mount /srv/e2e: a heartbeat file (TERM: exits 0)
#   no        --restart=no, ignores TERM (sh as PID 1 without a trap): docker's grace, then the engine's SIGKILL
#   exited    ran `true` and exited; must stay exited
#   created   created, never started; must stay created
#   paused    --restart=no, paused with `docker pause`: ade-prep stops it like the others (docker stop of a paused
#             container sends the signal and unpauses it) and `docker start` brings it back running, not paused
# Beside them, containerd's own tasks in namespace e2e (`ctr run`, docs/docker.md bug 2), through the same phases:
#   e2e-ctr          running (TERM: exits 0)
#   e2e-ctr-paused   paused with `ctr task pause`: stopped like the others, started again running (as Docker's)
# Asserted in each window: every running container stopped (exit codes as described, read from the engine's own
# files, since the engine must stay down), no dockerd / containerd / shim process, docker.service, docker.socket,
# containerd.service stopped and masked, `docker ps` does not start the engine, `fuser -vm /` lists none of them,
# no docker/containerd mount left below / (ADE's UnmountOldrootState kills what fuser lists, then `umount /oldroot`,
# which a leftover mount would make fail), `ade-prep scan` sees no workload, the ctr tasks' processes gone. After restore:
# the engine back, exactly the containers that ran are running again with the same ids, the two ctr tasks running
# (same container ids), exited/created ones unchanged, restart policies unchanged,
# every line written to the volume before the stop still there (numbered without a gap), the writer writing again.
# Output: TL (timeline), CHECK lines, INFO lines (what the engine showed), "E2E PASS docker" or "E2E FAIL docker: why".
# shellcheck disable=SC2317   # predicates run through check and wait_for
set -u
BOOT=${VMRUN_BOOT:-1}
STAGE=$(cd "$(dirname "$0")" && pwd)
E=/var/lib/ade-e2e
IMG=ade-e2e/busybox:1
NAMES="always unless no exited created paused"
mkdir -p "$E"
# The guest: nspawn (the `docker` nspawn guest) or qemu (the debian12-docker image).
GUEST=qemu
[ "$(systemd-detect-virt -c 2>/dev/null)" = systemd-nspawn ] && GUEST=nspawn
# In nspawn: containerd's overlayfs snapshotter cannot mount on the container's overlay root (EINVAL); every ctr
# command of this script (and ade-prep's, which inherit it) uses the native snapshotter (copies, bind mounts).
# `ctr run` also asks for cpu shares (1024 by default), which runc writes as cpu.weight: the container's cgroup v2 has
# no cpu controller when the host's controllers are all on v1 (this machine's), so in nspawn the tasks ask for none.
CTR_RUN=(run -d --null-io)
if [ "$GUEST" = nspawn ]; then export CONTAINERD_SNAPSHOTTER=native; CTR_RUN+=(--cpu-shares 0); fi
[ -f "$E/t0" ] || date +%s.%N > "$E/t0"
T0=$(cat "$E/t0")

since() { python3 -c "import time; print(f'{time.time() - $T0:7.1f}')"; }
tl() { printf 'TL %-50s +%ss  %s\n' "$1" "$(since)" "${2:-}"; }
info() { echo "INFO $*"; }
FAILS=0
check() { # check WHAT CONDITION-COMMAND...
  local what=$1; shift
  if "$@"; then echo "CHECK ok   $what"; else echo "CHECK FAIL $what"; FAILS=$((FAILS + 1)); fi
}
die() {
  echo "E2E FAIL docker: $*"
  echo "--- ade-prep status:"; ade-prep status 2>&1 | head -n 40
  echo "--- units:"; systemctl --no-pager list-units 'docker*' 'containerd*' 2>&1
  echo "--- processes:"
  # shellcheck disable=SC2009   # the forest, not pids
  ps -eo pid,ppid,stat,comm,args --forest | grep -E '[d]ocker|[c]ontainerd|[r]unc|[s]h -c'
  exit 1
}
finish() {
  [ "$FAILS" = 0 ] || die "$FAILS check(s) failed"
  echo "E2E PASS docker"
  exit 0
}
wait_for() { # wait_for SECS WHAT COMMAND...
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs; i++)); do "$@" && return 0; sleep 1; done
  die "timed out after ${secs}s waiting for: $what"
}
# timed LABEL COMMAND...: runs COMMAND, prints its output indented, records its duration in $E/times
timed() {
  local label=$1 t rc; shift
  t=$(date +%s.%N)
  "$@" > "$E/out" 2>&1; rc=$?
  t=$(python3 -c "import time; print(f'{time.time() - $t:.1f}')")
  sed 's/^/    | /' "$E/out"
  echo "$label ${t}s rc=$rc" >> "$E/times"
  tl "$label: rc=$rc in ${t}s"
  return $rc
}
unit_active() { [ "$(systemctl is-active "$1")" = active ]; }
masked() { case $(systemctl is-enabled "$1" 2>/dev/null) in masked | masked-runtime) true;; *) false;; esac; }
engine_up() { docker info >/dev/null 2>&1; }
# id NAME: the full id of a container, from the engine
cid() { docker inspect -f '{{.Id}}' "$1"; }
# inspect: one line per container (name id status paused restart-policy exit-code), sorted by name
inspect_all() {
  # shellcheck disable=SC2046
  docker inspect -f '{{.Name}} {{.Id}} {{.State.Status}} {{.State.Paused}} {{.HostConfig.RestartPolicy.Name}} {{.State.ExitCode}}' \
    $(docker ps -aq) | sed 's,^/,,' | sort
}
# state NAME: the container's state from the engine's own file (the engine is down during the window)
state_file() {
  python3 - "/var/lib/docker/containers/$(grep "^$1 " "$E/ids" | cut -d' ' -f2)/config.v2.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))["State"]
print(f"running={s['Running']} paused={s['Paused']} exit={s['ExitCode']}")
EOF
}
engine_pids() { pgrep -x dockerd; pgrep -x containerd; pgrep -f '^/usr/bin/containerd-shim'; pgrep -x docker-proxy; }

install_agent() {
  if [ -f "$STAGE/ade-prep.deb" ]; then
    DEBIAN_FRONTEND=noninteractive dpkg -i "$STAGE/ade-prep.deb" >"$E/dpkg.log" 2>&1 || { cat "$E/dpkg.log"; die "dpkg -i failed"; }
    tl "installed the package" "$(dpkg-query -W -f='${Package} ${Version}' ade-prep)"
  else
    # ADE_PREP_BIN, ADE_PREP_GENERATOR: the binary and the generator of this build (the nspawn suite), else staged
    # beside this script (the qemu guest's ADE_E2E_BINARY=1).
    install -m 0755 "${ADE_PREP_BIN:-$STAGE/ade-prep}" /usr/bin/ade-prep
    install -m 0755 -D "${ADE_PREP_GENERATOR:-$STAGE/ade-prep-generator}" \
      /usr/lib/systemd/system-generators/ade-prep-generator
    command -v restorecon >/dev/null && restorecon /usr/bin/ade-prep /usr/lib/systemd/system-generators/ade-prep-generator
    tl "installed the binary and the generator" "no .deb staged"
  fi
  mkdir -p /etc/ade-prep/config.d
  # A short grace: the `no` container ignores SIGTERM, so docker kills it after this; the others exit on TERM.
  cat > /etc/ade-prep/config.d/50-e2e.toml <<'EOF'
[docker]
stop_grace_secs = 10
EOF
  chmod 0644 /etc/ade-prep/config.d/50-e2e.toml
}

daemon_json() { # daemon_json LIVE-RESTORE: /etc/docker/daemon.json with the cgroup driver of this run
  { printf '{\n  "live-restore": %s,\n' "$1"
    # In nspawn: vfs (overlay2 on the overlay root fails: "failed to mount overlay: invalid argument"), no iptables
    # (the container may not touch nf_tables) and no bridge (its network namespace has only lo).
    [ "$GUEST" = nspawn ] && printf '  "storage-driver": "vfs",\n  "iptables": false,\n  "bridge": "none",\n'
    printf '  "exec-opts": ["native.cgroupdriver=%s"]\n}\n' "$DRIVER"; } > /etc/docker/daemon.json
}
set_live_restore() { # set_live_restore true|false: daemon.json, then a reload (dockerd reloads live-restore on SIGHUP)
  daemon_json "$1"
  if unit_active docker.service; then systemctl reload docker.service || die "reload docker"; fi
  wait_for 60 "docker answers" engine_up
  local now; now=$(docker info -f '{{.LiveRestoreEnabled}}')
  check "live-restore is $1 in the engine ($now)" [ "$now" = "$1" ]
}

# shellcheck disable=SC2016   # expanded by the container's sh
WRITER='trap "exit 0" TERM; n=$(cat /data/lines 2>/dev/null | wc -l); while :; do n=$((n + 1)); echo "$n $(date +%s)" >> /data/lines; sleep 1 & wait $!; done'
# The heartbeat is written to a temporary file and renamed over the old one: `date > heartbeat` truncates first, and a
# reader between the truncation and the write saw an empty file (CI's run on 326ff4c failed the check so, once).
BEAT='trap "exit 0" TERM; while :; do date +%s > /srv/e2e/heartbeat.new && mv /srv/e2e/heartbeat.new /srv/e2e/heartbeat; sleep 1 & wait $!; done'
SLEEPER='while :; do sleep 1; done'
PAUSER='trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'

setup_image() {
  systemctl start docker.service || die "docker does not start"
  wait_for 120 "docker answers" engine_up
  tl "engine up" "$(docker version -f 'server {{.Server.Version}}' 2>&1)"
  docker import /usr/local/share/ade-e2e/busybox-rootfs.tar "$IMG" >/dev/null || die "docker import failed"
  docker save -o "$E/busybox.tar" "$IMG" || die "docker save failed"
  tl "image imported" "$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMG")"
}

CTR_NS=e2e
ctr_tasks() { ctr -n "$CTR_NS" task ls | awk 'NR > 1 {print $1, $3}' | sort | tr '\n' ' '; }
ctr_pids() { ctr -n "$CTR_NS" task ls | awk 'NR > 1 {print $2}' | tr '\n' ' '; }
setup_tasks() { # containerd's own tasks beside Docker's containers
  ctr -n "$CTR_NS" image import "$E/busybox.tar" >/dev/null || die "ctr -n $CTR_NS image import failed"
  local ref; ref=$(ctr -n "$CTR_NS" image ls -q | grep busybox | head -n1)
  { ctr -n "$CTR_NS" "${CTR_RUN[@]}" "$ref" e2e-ctr sh -c "$PAUSER" >/dev/null &&
    ctr -n "$CTR_NS" "${CTR_RUN[@]}" "$ref" e2e-ctr-paused sh -c "$PAUSER" >/dev/null; } || die "ctr run failed"
  sleep 1
  ctr -n "$CTR_NS" task pause e2e-ctr-paused || die "ctr task pause failed"
  tl "ctr tasks up in namespace $CTR_NS" "$(ctr_tasks)"
}

setup_containers() {
  daemon_json false
  systemctl restart docker.service || die "docker does not start"
  wait_for 120 "docker answers" engine_up
  local d; d=$(docker info -f '{{.CgroupDriver}} (cgroup v{{.CgroupVersion}})')
  check "cgroup driver $DRIVER ($d)" [ "${d%% *}" = "$DRIVER" ]
  set_live_restore false
  mkdir -p /srv/e2e
  if ! { docker run -d --name always --restart=always -v e2e-vol:/data "$IMG" sh -c "$WRITER" >/dev/null &&
    docker run -d --name unless --restart=unless-stopped -v /srv/e2e:/srv/e2e "$IMG" sh -c "$BEAT" >/dev/null &&
    docker run -d --name no --restart=no "$IMG" sh -c "$SLEEPER" >/dev/null &&
    docker run --name exited "$IMG" true &&
    docker create --name created "$IMG" true >/dev/null &&
    docker run -d --name paused "$IMG" sh -c "$PAUSER" >/dev/null &&
    docker pause paused >/dev/null; }; then
    die "starting the containers failed"
  fi
  local n; for n in $NAMES; do echo "$n $(cid "$n")"; done > "$E/ids"
  inspect_all > "$E/before"
  sed 's/^/    | /' "$E/before"
  tl "containers up" "$(docker ps -q | wc -l) running (paused included), $(docker ps -aq | wc -l) in all"
  setup_tasks
}

lines_ok() { # the volume's lines numbered 1..N without a gap or a torn line
  awk '$1 != NR || NF != 2 { bad = 1 } END { exit bad }' /var/lib/docker/volumes/e2e-vol/_data/lines
}

# The mounts below / (TARGET FSTYPE): not / itself, which is an overlay in the nspawn guest (--volatile=overlay).
below_root() { findmnt -rn -o TARGET,FSTYPE | awk '$1 != "/"'; }

assert_window() { # assert_window PHASE
  local p=$1 n st out
  for n in always unless paused; do
    st=$(state_file "$n")
    check "$p: $n stopped cleanly, exit 0 ($st)" [ "$st" = "running=False paused=False exit=0" ]
  done
  st=$(state_file no)
  check "$p: no (ignores TERM) killed by the engine after the grace, exit 137 ($st)" [ "$st" = "running=False paused=False exit=137" ]
  for n in exited created; do
    st=$(state_file "$n")
    check "$p: $n still not running ($st)" [ "${st%% *}" = running=False ]
  done
  out=$(engine_pids | tr '\n' ' ')
  check "$p: no dockerd, containerd, containerd-shim, docker-proxy process [${out}]" [ -z "$out" ]
  for n in docker.socket docker.service containerd.service; do
    check "$p: $n stopped and masked ($(systemctl is-active $n), $(systemctl is-enabled $n 2>/dev/null))" \
      eval "! unit_active $n && masked $n"
  done
  out=$(timeout 30 docker ps 2>&1); info "$p: docker ps in the window: rc=$? $out"
  sleep 2
  check "$p: docker ps did not start the engine ($(systemctl is-active docker.service), dockerd: $(pgrep -x dockerd))" \
    eval '! unit_active docker.service && ! pgrep -x dockerd >/dev/null'
  out=$(fuser -vm / 2>&1)
  echo "$out" > "$E/fuser.$p"
  local hit
  hit=$(echo "$out" | grep -E 'dockerd|containerd|runc|docker-proxy|[[:space:]]sh$|sleep$' | tr -s ' ' | tr '\n' ';')
  check "$p: fuser -vm / lists none of them [${hit}]" [ -z "$hit" ]
  out=$(below_root | grep -E '/var/lib/(docker|containerd)|/run/(docker|containerd)|overlay' | tr '\n' ';')
  check "$p: no docker/containerd mount left below / (umount /oldroot would fail) [${out}]" [ -z "$out" ]
  out=$(set -o pipefail; ade-prep scan --json | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(" ".join(str(p["pid"]) + ":" + p["comm"] for p in d["processes"] if p["class"] == "workload"))') ||
    out="(ade-prep scan --json failed)"
  check "$p: ade-prep scan sees no workload [${out}]" [ -z "$out" ]
  local pid alive="" pids
  read -ra pids < "$E/ctr.pids.$p"
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
  check "$p: the ctr tasks' processes are gone ($(cat "$E/ctr.pids.$p")) [alive:${alive}]" [ -z "$alive" ]
  cp /var/lib/docker/volumes/e2e-vol/_data/lines "$E/lines.window"
  check "$p: the volume's $(wc -l < "$E/lines.window") lines numbered without a gap" lines_ok
  sleep 2
  check "$p: nothing writes to the volume in the window" cmp -s "$E/lines.window" /var/lib/docker/volumes/e2e-vol/_data/lines
}

assert_restored() { # assert_restored PHASE
  local p=$1 n
  for n in docker.socket docker.service containerd.service; do
    check "$p: $n active again, $(systemctl is-enabled $n 2>/dev/null)" \
      eval "unit_active $n && [ \"\$(systemctl is-enabled $n)\" = enabled ]"
  done
  wait_for 60 "docker answers" engine_up
  inspect_all > "$E/after.$p"
  sed 's/^/    | /' "$E/after.$p"
  local want
  want=$(sed -E 's/ (running|paused|exited|created) (true|false) / X X /; s/ [0-9]+$//' "$E/before" | sort)
  check "$p: the same containers, ids and restart policies" \
    [ "$want" = "$(sed -E 's/ (running|paused|exited|created) (true|false) / X X /; s/ [0-9]+$//' "$E/after.$p" | sort)" ]
  for n in always unless no paused; do
    check "$p: $n running again ($(grep "^$n " "$E/after.$p" | cut -d' ' -f3,4))" \
      [ "$(grep "^$n " "$E/after.$p" | cut -d' ' -f3,4)" = "running false" ]
  done
  check "$p: exited still exited ($(grep '^exited ' "$E/after.$p" | cut -d' ' -f3))" \
    [ "$(grep '^exited ' "$E/after.$p" | cut -d' ' -f3)" = exited ]
  check "$p: created still created ($(grep '^created ' "$E/after.$p" | cut -d' ' -f3))" \
    [ "$(grep '^created ' "$E/after.$p" | cut -d' ' -f3)" = created ]
  local L=/var/lib/docker/volumes/e2e-vol/_data/lines
  sleep 3
  check "$p: every line written before the stop is in the volume ($(wc -l < "$E/lines.window") lines)" \
    cmp -s "$E/lines.window" <(head -n "$(wc -l < "$E/lines.window")" "$L")
  check "$p: the writer writes again ($(wc -l < "$L") lines), numbered without a gap" \
    eval "[ \$(wc -l < $L) -gt \$(wc -l < $E/lines.window) ] && lines_ok"
  local beat; beat=$(cat /srv/e2e/heartbeat 2>/dev/null || true)
  check "$p: the bind-mounted heartbeat beats again (last beat $((${beat:-0} - $(date +%s))) s)" \
    eval "[ \$(( \$(date +%s) - \$(cat /srv/e2e/heartbeat) )) -le 5 ]"
  local t; t=$(ctr_tasks)
  check "$p: ctr tasks in $CTR_NS running again, the paused one running [$t]" \
    [ "$t" = "e2e-ctr RUNNING e2e-ctr-paused RUNNING " ]
  t=$(ctr -n "$CTR_NS" containers ls -q | sort | tr '\n' ' ')
  check "$p: the same ctr containers [$t]" [ "$t" = "e2e-ctr e2e-ctr-paused " ]
  check "$p: journal: window closed" eval "ade-prep status --json | grep -q '\"window_open\": *false'"
}

# The ctr tasks trap TERM: each must have ended on its SIGTERM, the paused one too (resumed after the signal), with no
# SIGKILL after the grace (prepare's output of the phase, in $E/out).
sigterm_only() {
  local k; k=$(grep -E 'containerd task .* still runs after SIGTERM' "$E/out" | tr '\n' ';')
  check "$1: the ctr tasks ended on SIGTERM, none needed the SIGKILL [${k}]" [ -z "$k" ]
  check "$1: prepare stopped the ctr tasks ($(grep -c 'stopped containerd task' "$E/out"))" grep -q 'stopped containerd task' "$E/out"
}

# Back to the state before the window (the paused one paused again), for the next phase.
repause() {
  [ "$(docker inspect -f '{{.State.Paused}}' paused)" = true ] || docker pause paused >/dev/null
  case $(ctr_tasks) in *"e2e-ctr-paused PAUSED"*) ;; *) ctr -n "$CTR_NS" task pause e2e-ctr-paused;; esac
  info "ctr tasks before prepare: $(ctr_tasks)"
  ctr_pids > "$E/ctr.pids.$1"
}

docker_phase() { # docker_phase NAME (no-live-restore | live-restore)
  local p=$1
  if [ "$p" = no-live-restore ]; then set_live_restore false; else set_live_restore true; fi
  repause "$p"
  inspect_all > "$E/before.$p"
  timed "$p: ade-prep prepare" ade-prep prepare --force distro,memory -v || die "$p: prepare failed"
  sigterm_only "$p"
  assert_window "$p"
  timed "$p: ade-prep restore" ade-prep restore -v || FAILS=$((FAILS + 1))
  assert_restored "$p"
}

reboot_phase() {
  set_live_restore true
  repause reboot
  timed "reboot: ade-prep prepare" ade-prep prepare --force distro,memory -v || die "reboot: prepare failed"
  sigterm_only reboot
  assert_window reboot
  echo "$FAILS" > "$E/fails"
  sync
  tl "rebooting in the window"
  vm-run-ctl reboot
  die "still running after the reboot request"
}

reboot_boot2() {
  FAILS=$(cat "$E/fails")
  tl "boot $BOOT" "window open: $(ade-prep status --json | grep -o '"window_open": *[a-z]*')"
  sleep 5
  local out n
  for n in docker.socket docker.service containerd.service; do
    check "boot $BOOT: $n held down through the boot ($(systemctl is-active $n), $(systemctl show -p LoadState --value $n))" \
      eval "! unit_active $n && [ \"\$(systemctl show -p LoadState --value $n)\" = masked ]"
  done
  out=$(engine_pids | tr '\n' ' ')
  check "boot $BOOT: no engine process [${out}]" [ -z "$out" ]
  out=$(timeout 30 docker ps 2>&1); info "boot $BOOT: docker ps in the window: rc=$? $out"
  check "boot $BOOT: docker ps did not start the engine" eval '! unit_active docker.service && ! pgrep -x dockerd >/dev/null'
  timed "boot $BOOT: ade-prep restore" ade-prep restore -v || FAILS=$((FAILS + 1))
  assert_restored reboot
}

# ---- kubelet (a stand-in: Debian 12 has no kubelet package) ----
K=/run/kubelet-standin   # its log: "started pod-a (found STATE)", "first look: STATE", "stopped"
pod_status() { ctr -n k8s.io task ls | awk '$1 == "pod-a" {print $3}'; }
pod_running() { [ "$(pod_status)" = RUNNING ]; }
# line NUMBER of the first line of $E/out matching a pattern (0 if none)
line_of() { grep -n -m1 -E "$1" "$E/out" | cut -d: -f1 | grep . || echo 0; }

kubelet_phase() {
  local out ref tpid
  systemctl disable --now docker.socket docker.service >/dev/null 2>&1
  unit_active containerd.service || systemctl start containerd.service
  ctr -n k8s.io image import "$E/busybox.tar" >/dev/null || die "ctr -n k8s.io image import failed"
  ref=$(ctr -n k8s.io image ls -q | grep busybox | head -n1)
  # The pod's container, as kubelet would have had the CRI create it (here with ctr: no CRI client in the guest).
  ctr -n k8s.io "${CTR_RUN[@]}" "$ref" pod-a sh -c "$PAUSER" >/dev/null || die "ctr -n k8s.io run failed"
  rm -rf "$K"
  # The stand-in: starts the pod's task again whenever it is not running (kubelet's restartPolicy Always, which the
  # real kubelet carries out through the CRI); its first look comes 5 s after its start (kubelet's own start takes
  # seconds), so that a task someone else started in between shows as RUNNING there.
  cat > /usr/local/bin/kubelet <<'EOS'
#!/bin/bash
# A STAND-IN for kubelet (tests/e2e/docker.sh, phase kubelet): keeps the pod pod-a of namespace k8s.io running.
K=/run/kubelet-standin; mkdir -p $K
trap 'echo stopped >> $K/log; exit 0' TERM
pod() { ctr -n k8s.io task ls 2>/dev/null | awk '$1 == "pod-a" {print $3}'; }
sleep 5 & wait $!
echo "first look: $(pod)" >> $K/log
while :; do
  st=$(pod)
  if [ "$st" != RUNNING ] && ctr -n k8s.io containers info pod-a >/dev/null 2>&1; then
    [ -n "$st" ] && ctr -n k8s.io task delete pod-a >/dev/null 2>&1
    ctr -n k8s.io task start --null-io -d pod-a >/dev/null 2>&1 && echo "started pod-a (found ${st:-no task})" >> $K/log
  fi
  sleep 0.5 & wait $!
done
EOS
  chmod 0755 /usr/local/bin/kubelet
  printf '[Unit]
Description=STAND-IN kubelet (tests/e2e/docker.sh)

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
' \
    > /etc/systemd/system/kubelet.service
  systemctl daemon-reload; systemctl start kubelet.service || die "kubelet.service does not start"
  wait_for 30 "the stand-in kubelet's first look" grep -q '^first look' "$K/log"
  tpid=$(ctr -n k8s.io task ls | awk '$1 == "pod-a" {print $2}')
  tl "kubelet: pod-a in k8s.io" "pid $tpid, kubelet $(systemctl show -p MainPID --value kubelet.service); $(tr '\n' ';' < "$K/log")"
  local starts; starts=$(grep -c '^started' "$K/log")
  timed "kubelet: ade-prep prepare" ade-prep prepare --force distro,memory -v || die "kubelet: prepare failed"
  local k t c
  k=$(line_of 'stopped kubelet\.service') t=$(line_of 'stopped containerd task pod-a in namespace k8s\.io')
  c=$(line_of 'stopped containerd\.service')
  check "kubelet: prepare stopped kubelet.service (line $k), then the pod's task (line $t), then containerd.service (line $c)" \
    eval "[ $k -gt 0 ] && [ $k -lt $t ] && [ $t -lt $c ]"
  check "kubelet: kubelet started no pod while prepare ran [$(tr '\n' ';' < "$K/log")]" \
    [ "$(grep -c '^started' "$K/log")" = "$starts" ]
  check "kubelet: kubelet.service stopped and masked ($(systemctl is-active kubelet.service), $(systemctl is-enabled kubelet.service 2>/dev/null))" \
    eval '! unit_active kubelet.service && masked kubelet.service'
  check "kubelet: the pod's process is gone (pid $tpid)" eval "! kill -0 $tpid 2>/dev/null"
  out=$(engine_pids | tr '\n' ' ')
  check "kubelet: no containerd or shim process [${out}]" [ -z "$out" ]
  : > "$K/log"
  timed "kubelet: ade-prep restore" ade-prep restore -v || FAILS=$((FAILS + 1))
  check "kubelet: restore left the pod to kubelet" grep -q 'task pod-a in namespace k8s.io.* left to kubelet' "$E/out"
  check "kubelet: restore did not start the pod with ctr" eval "! grep -q 'started containerd task pod-a' '$E/out'"
  check "kubelet: kubelet.service active again" unit_active kubelet.service
  wait_for 30 "the stand-in kubelet's first look after restore" grep -q '^first look' "$K/log"
  check "kubelet: kubelet's first look after restore found the pod not running [$(grep '^first look' "$K/log")]" \
    [ "$(grep '^first look' "$K/log")" != "first look: RUNNING" ]
  wait_for 30 "kubelet to start the pod again" pod_running
  check "kubelet: kubelet started the pod again, it runs ($(pod_status)) [$(tr '\n' ';' < "$K/log")]" \
    eval "pod_running && grep -q '^started pod-a' '$K/log'"
  # Back to a host without kubelet for the next phases.
  systemctl disable --now kubelet.service >/dev/null 2>&1; rm -f /etc/systemd/system/kubelet.service /usr/local/bin/kubelet
  systemctl daemon-reload
  ctr -n k8s.io task kill -s KILL pod-a >/dev/null 2>&1; sleep 1
  ctr -n k8s.io task delete pod-a >/dev/null 2>&1; ctr -n k8s.io container delete pod-a >/dev/null 2>&1
  systemctl enable --now docker.socket docker.service >/dev/null 2>&1
}

task_status() { ctr task ls | awk '$1 == "e2e-task" {print $3}'; }
task_running() { [ "$(task_status)" = RUNNING ]; }

containerd_phase() {
  local out
  systemctl disable --now docker.socket docker.service >/dev/null 2>&1
  unit_active containerd.service || systemctl start containerd.service
  ctr image import "$E/busybox.tar" >/dev/null || die "ctr image import failed"
  local ref; ref=$(ctr image ls -q | grep busybox | head -n1)
  ctr "${CTR_RUN[@]}" "$ref" e2e-task sh -c "$PAUSER" >/dev/null || die "ctr run failed"
  sleep 2
  # A host with the docker CLI installed but the engine down (its units stopped): prepare must not depend on it.
  local rc=0
  out=$(ade-prep prepare --dry-run --force distro,memory 2>&1) || rc=$?
  check "containerd, docker CLI installed, engine down: prepare --dry-run succeeds (rc=$rc: $(echo "$out" | grep -m1 -i docker))" \
    [ "$rc" = 0 ]
  # Then as on a containerd-only host, without the docker CLI.
  mv /usr/bin/docker /usr/bin/docker.moved-away
  ctr task ls | sed 's/^/    | /'
  local tpid; tpid=$(ctr task ls | awk '$1 == "e2e-task" {print $2}')
  tl "containerd alone: ctr task e2e-task" "pid $tpid, shim $(pgrep -f containerd-shim | tr '\n' ' ')"
  info "containerd: fuser -vm / before:"; fuser -vm / 2>&1 | grep -E 'containerd|sh$' | sed 's/^/    | /'
  timed "containerd: ade-prep prepare" ade-prep prepare --force distro,memory -v || die "containerd: prepare failed"
  sigterm_only containerd
  out=$(engine_pids | tr '\n' ' ')
  check "containerd: no containerd or shim process [${out}]" [ -z "$out" ]
  check "containerd: the task's process is gone (pid $tpid)" eval "! kill -0 $tpid 2>/dev/null"
  check "containerd: containerd.service stopped and masked" eval '! unit_active containerd.service && masked containerd.service'
  out=$(fuser -vm / 2>&1 | grep -E 'containerd|[[:space:]]sh$' | tr -s ' ' | tr '\n' ';')
  check "containerd: fuser -vm / lists none of them [${out}]" [ -z "$out" ]
  out=$(below_root | grep -E '/var/lib/containerd|/run/containerd|overlay' | tr '\n' ';')
  check "containerd: no containerd mount left below / [${out}]" [ -z "$out" ]
  timed "containerd: ade-prep restore" ade-prep restore -v || FAILS=$((FAILS + 1))
  check "containerd: containerd.service active again" unit_active containerd.service
  sleep 3
  ctr task ls | sed 's/^/    | /'
  check "containerd: the task runs again ($(task_status))" task_running
  ctr task kill -s KILL e2e-task >/dev/null 2>&1; sleep 1
  ctr task delete e2e-task >/dev/null 2>&1; ctr container delete e2e-task >/dev/null 2>&1
  mv /usr/bin/docker.moved-away /usr/bin/docker
  systemctl enable --now docker.socket docker.service >/dev/null 2>&1
}

DRIVER=${1:?usage: docker.sh systemd|cgroupfs PHASE...}; shift
if [ "$BOOT" = 1 ]; then
  echo "$*" > "$E/phases"
  tl "boot 1" "phases: $*; $(dpkg-query -W -f='${Package} ${Version}; ' docker.io containerd runc)"
  install_agent
  setup_image
  # containerd alone first, before any Docker container exists (with live-restore they would outlive dockerd).
  case " $* " in *" containerd "*) tl "phase containerd"; containerd_phase;; esac
  case " $* " in *" kubelet "*) tl "phase kubelet"; kubelet_phase;; esac
  case " $* " in *" live-restore "* | *" no-live-restore "* | *" reboot "*) setup_containers;; esac
  for phase in "$@"; do
    case $phase in containerd | kubelet) continue;; esac
    tl "phase $phase"
    case $phase in
      no-live-restore | live-restore) docker_phase "$phase";;
      reboot) [ "$GUEST" = qemu ] || die "the reboot phase needs the qemu guest"; reboot_phase;;
      *) die "unknown phase $phase";;
    esac
  done
  cat "$E/times"
  finish
else
  reboot_boot2
  cat "$E/times"
  finish
fi
