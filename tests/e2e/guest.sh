#!/bin/bash
# tests/e2e/guest.sh SCENARIO - the guest side of tests/vm/e2e.rs: one ADE encryption run, end to end, in the
# SELinux qemu guest of tests/harness/vm-run.sh (-s), with real systemd, real workloads and ade-prep installed
# from the package (or, without one, from the binary and the packaged units).
#   success  ADE: transitioning → EncryptionInProgress → power cut (hard reset) → boot 2, the window resumed →
#            VMRestartPending → reboot → boot 3, the window resumed → success, OS Encrypted. The power cut and the
#            clean reboot were two scenarios (success, reset) of two boots each, with the same boot 1 and the same
#            resumed-window checks: one run of three boots makes every check of both (about 4 minutes of TCG less).
#   error    ADE: transitioning → EncryptionInProgress → error (no reboot); before ADE, the package's facts under
#            SELinux enforcing (labels, units, scan) and a command-line prepare/restore round trip (FACT lines)
#   osstep   ADE's OS step itself once the window is open (tests/ade/FINDINGS.md 21-23, replay ubuntu-2004.toml):
#            umount -a, a tmpfs root with ADE's copies, pivot_root, /dev /proc /sys /run moved, then in a new
#            process from the RAM root (as ADE's restarted extension): systemctl rescue, restart of what still
#            runs, swapoff -a, fuser -vm /oldroot, kill -9 of what it lists, telinit u, and `umount /oldroot`, which
#            must succeed at the first try; then the reboot → success, OS Encrypted, everything back.
#   osstep-rhel  the same with RHEL 7's unmount state: no rescue; every running service but the agent and sshd
#            is restarted into the RAM root (ade-prep.service included).
# Data volumes (issue 17), on the second disk vm-run.sh attaches (VMRUN_DATA_DISK_MB; error and success): an ext4
# volume by UUID with nofail at /data, on an Azure-like data disk (virtio-scsi lun 1, /dev/disk/azure/scsi1/lun1),
# held by a workload unit (its cwd and an open file there); ADE's VolumeType is All. Before prepare, ADE's plain
# `umount` of it fails (tests/e2e/ade-data-step.sh exits 3, nothing changed); prepare frees it (the unit stopped and
# held, nothing holds /data, the journal records the volume). Then, in the window:
#   error    ADE's classic data step (ade-data-step.sh) encrypts it; the restore brings the workload back on the
#            mapper with its data; status (exit 0) verifies it encrypted.
#   success  the step is skipped (the volume left plain, as when ADE's umount fails and ADE skips it); after ADE's
#            success, status (exit 1), the daemon's log and check's encryption-status name it not encrypted.
# The job runs once per boot (VMRUN_BOOT=1, 2); state that must survive the reboot is on the guest disk
# (/var/lib/ade-e2e). /work (the 9p share) holds what the host staged: guest.sh, scenarios/, and either
# ade-prep.deb or ade-prep (binary) + units/ + generators/.
# Output: a timeline (TL step, seconds since the scenario started, state), CHECK lines, and at the end
# "E2E PASS SCENARIO" or "E2E FAIL SCENARIO: why" (exit 1).
#
# SELinux decision: restore puts back the mode recorded before prepare (enforcing here), also after the reboot,
# when the guest has come up in the mode its /etc/selinux/config says (success: permissive after the power cut, then,
# the test having configured enforcing in the window, enforcing after the reboot; osstep: enforcing); in between, the
# resumed daemon keeps it permissive. ade-prep never edits that file: the test checks its checksum and that each boot
# came up in the configured mode.
# shellcheck disable=SC2317   # predicates run through check and wait_for
set -u
SCENARIO=${1:?usage: guest.sh success|error|osstep|osstep-rhel}
BOOT=${VMRUN_BOOT:-1}
STAGE=$(cd "$(dirname "$0")" && pwd)
E=/var/lib/ade-e2e
HANDLER=/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.1
CS_DIR=/var/lib/waagent/custom-script/download/0
SVC=ade-prep.service
ENFORCE=/sys/fs/selinux/enforce
DATA_MP=/data
DATA_UNIT=ade-e2e-data.service
DATA_STEP=$STAGE/ade-data-step.sh
case $SCENARIO in error) DATA_PASS=encrypt;; success) DATA_PASS=skip;; *) DATA_PASS='';; esac
mkdir -p "$E"
[ -f "$E/t0" ] || date +%s.%N > "$E/t0"
T0=$(cat "$E/t0")

since() { python3 -c "import time; print(f'{time.time() - $T0:7.1f}')"; }
# tl STEP [STATE]: one timeline line
tl() { printf 'TL %-46s +%ss  %s\n' "$1" "$(since)" "${2:-}"; }
FAILS=0
check() { # check WHAT CONDITION-COMMAND...
  local what=$1; shift
  if "$@"; then echo "CHECK ok   $what"; else echo "CHECK FAIL $what"; FAILS=$((FAILS + 1)); fi
}
die() {
  echo "E2E FAIL $SCENARIO: $*"
  echo "--- ade-prep.service journal:"; journalctl -b -u "$SVC" --no-pager -o short-monotonic | tail -n 60
  echo "--- ade-prep status:"; ade-prep status 2>&1
  echo "--- AVC denials:"; journalctl -b --no-pager -g 'avc: *denied' | tail -n 20
  exit 1
}
finish() {
  [ "$FAILS" = 0 ] || die "$FAILS check(s) failed"
  echo "E2E PASS $SCENARIO"
  exit 0
}
enforce() { cat "$ENFORCE"; }
prop() { systemctl show -p "$2" --value "$1"; }
svc_state() { echo "$(prop "$SVC" ActiveState)/$(prop "$SVC" SubState)"; }
svc_status() { prop "$SVC" StatusText; }
# wait_for SECS WHAT COMMAND...: polls every second. COMMAND runs again each time, but its words are expanded once,
# at the call: give a predicate function, never [ "$(...)" = x ].
wait_for() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs; i++)); do "$@" && return 0; sleep 1; done
  die "timed out after ${secs}s waiting for: $what"
}
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
window_open() { ade-prep status --json | jq_py 'd["window_open"]'; }
lock_state() { ade-prep status --json | jq_py 'd["lock"]'; }
lock_free() { [ "$(lock_state)" = free ]; }
window_closed() { [ "$(window_open)" = False ]; }
unit_active() { [ "$(systemctl is-active "$1")" = active ]; }
svc_ready() { [ "$(svc_state)" = active/running ]; }
svc_started() { [ "$(prop "$SVC" ActiveState)" != inactive ]; }
stopped_masked() { [ "$(systemctl is-active "$1")" != active ] && [ "$(systemctl is-enabled "$1" 2>/dev/null)" = masked-runtime ]; }
held_down() { [ "$(systemctl is-active "$1")" != active ] && [ "$(prop "$1" LoadState)" = masked ]; }
# After ADE's end of a request the service stays up for the next one (the path unit cannot start an active service again).
idle() { [ "$(svc_state)" = active/running ] && status_says "idle: watching for ADE's next request"; }
window_is_open() { [ "$(window_open)" = True ]; }
status_says() { svc_status | grep -q "$1"; }
logged() { journalctl -b -u "$SVC" --no-pager | grep -q "$1"; }

# write_status OPERATION STATUS CODE MESSAGE OS (env DATA_STATE, default NotMounted): status/0.status as ADE's HandlerUtil.do_status_report writes it
# (truncate, then the JSON; version and code as strings; the substatus message the JSON of the encryption status).
write_status() {
  python3 - "$HANDLER/status/${SEQ:-0}.status" "$@" "${DATA_STATE:-NotMounted}" <<'EOF'
import json, sys, time
path, op, st, code, msg, os_state, data_state = sys.argv[1:]
name = "Microsoft.Azure.Security.AzureDiskEncryptionForLinux"
sub = json.dumps({"os": os_state, "data": data_state})
doc = [{"version": "1.4.0.1", "timestampUTC": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": {"name": name, "operation": op, "status": st, "code": code,
                   "formattedMessage": {"lang": "en-US", "message": msg},
                   "substatus": [{"name": name, "operation": op, "status": st, "code": code,
                                  "formattedMessage": {"lang": "en-US", "message": sub}}]}}]
with open(path, "w+") as f:
    f.write(json.dumps(doc))
EOF
  tl "ADE status: $2 $1 os=$5 (seq ${SEQ:-0})" "service $(svc_state)"
}

# A custom-script-like extension process, running from the Custom Script download folder as the guest agent runs a
# handler operation (tests/ade/FINDINGS.md 28-29: its verb on the command line, in an `enable_<uuid>.scope` of the
# extension's azure-vmextensions slice): it goes on until ade-prep.service has logged its wait for it (at most 300 s)
# and CS_SECS more (whatever the guest's speed), then exits; prepare must wait for it. (A plain process under that folder is not a handler
# operation, and ade-prep rightly does not wait for it.)
start_custom_script() {
  mkdir -p "$CS_DIR"
  cat > "$CS_DIR/script.sh" <<EOF
#!/bin/bash
until [ "\$(systemctl show -p ActiveState --value $SVC)" != inactive ]; do sleep 1; done
# Until the service has seen this operation (its wait logged), at most 300 s: on a loaded TCG guest the service's work
# before its wait (checks, scan) took longer than CS_SECS, the script was gone when it looked, and nothing was waited
# for. If the service never sees it, it ends after 300 + CS_SECS s and "prepare waited for the custom script" fails.
for _ in \$(seq 300); do
  journalctl -b -u $SVC --no-pager 2>/dev/null | grep -q 'waiting for extension handlers to finish: custom-script' && break
  sleep 1
done
sleep ${CS_SECS:-15}
date +%s.%N > $E/cs-done
EOF
  chmod 755 "$CS_DIR/script.sh"
  local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
  (cd "$CS_DIR" && setsid systemd-run --scope --quiet --unit="enable_$uuid" \
    --slice=azure-vmextensions-Microsoft.Azure.Extensions.CustomScript.slice "$CS_DIR/script.sh" enable \
    </dev/null >/dev/null 2>&1 &)
  tl "custom script started" "pid $(pgrep -f "$CS_DIR/script.sh" | head -n1)"
}

# A second extension script serialised by the lock: records what the journal said when it got to run, then that it
# ran (lock-ran last: its presence means the status was written).
start_lock_waiter() {
  rm -f "$E/lock-ran" "$E/lock-ran.status"
  setsid ade-prep lock -- /bin/sh -c "ade-prep status --json > $E/lock-ran.status; date +%s.%N > $E/lock-ran" \
    </dev/null >"$E/lock-waiter.log" 2>&1 &
  echo $! > "$E/lock-waiter.pid"
  tl "lock waiter started" "pid $(cat "$E/lock-waiter.pid")"
}

install_agent() {
  if [ -f "$STAGE/ade-prep.deb" ]; then
    enforce > "$E/enforce-at-install"
    DEBIAN_FRONTEND=noninteractive dpkg -i "$STAGE/ade-prep.deb" >"$E/dpkg.log" 2>&1; echo $? > "$E/install-rc"
    [ "$(cat "$E/install-rc")" = 0 ] || { cat "$E/dpkg.log"; die "dpkg -i failed"; }
    tl "installed the package" "$(dpkg-query -W -f='${Package} ${Version} ${Status}' ade-prep)"
  else
    install -m 0755 "$STAGE/ade-prep" /usr/bin/ade-prep
    install -m 0644 "$STAGE"/units/* /usr/lib/systemd/system/
    install -m 0755 "$STAGE"/generators/* /usr/lib/systemd/system-generators/
    command -v restorecon >/dev/null &&
      restorecon /usr/bin/ade-prep /usr/lib/systemd/system/ade-prep.* /usr/lib/systemd/system-generators/ade-prep-generator
    systemctl daemon-reload
    systemctl enable --now ade-prep.path
    tl "installed binary + packaged units and generator" "no .deb staged"
  fi
  # ADE does not encrypt Debian 12's OS disk (the distro check fails): force it for the test, and the memory check
  # a 1 GiB guest fails (ADE wants 8 GB for its RAM root).
  mkdir -p /etc/systemd/system/ade-prep.service.d
  cat > /etc/systemd/system/ade-prep.service.d/test.conf <<EOF
[Service]
ExecStart=
ExecStart=/usr/bin/ade-prep run --force ${FORCE}
EOF
  systemctl daemon-reload
  check "ade-prep.path enabled and active" [ "$(systemctl is-active ade-prep.path)" = active ]
}

setup_workloads() {
  mkdir -p /etc/ade-prep/config.d
  cat > /etc/ade-prep/config.d/50-e2e.toml <<'EOF'
# tests/e2e/guest.sh: the workloads of this guest
[workloads.redis]
units = ["redis-server.service"]
comms = ["redis-server"]
stop_timeout_secs = 60
pre_stop = [{ argv = ["redis-cli", "save"], user = "redis", timeout_secs = 60, ok_exit_codes = [0] }]

[workloads.fake-docker]
units = ["fake-docker.service"]
stop_timeout_secs = 30

# A workload whose unit file is in /etc (as SAP's and admins' units are): held by the generator, not a runtime mask.
[workloads.etc-unit]
units = ["ade-e2e-etc.service"]
stop_timeout_secs = 30

[window]
extension_wait_secs = 300
EOF
  systemctl enable --now redis-server.service >/dev/null 2>&1 || die "redis-server does not start"
  wait_for 30 "redis answers" sh -c 'redis-cli ping 2>/dev/null | grep -q PONG'
  KEY_VALUE="e2e-$SCENARIO-$(date +%s%N)"
  echo "$KEY_VALUE" > "$E/key"
  [ "$(redis-cli set e2e-key "$KEY_VALUE")" = OK ] || die "redis SET failed"
  "$STAGE/scenarios/install.sh" || die "scenarios/install.sh failed"
  systemctl enable --now fake-docker.socket fake-docker.service >/dev/null 2>&1 || die "fake-docker does not start"
  printf '[Service]\nExecStart=/bin/sh -c "exec 3>>%s/etc-unit.log; exec sleep infinity"\n[Install]\nWantedBy=multi-user.target\n' \
    "$E" > /etc/systemd/system/ade-e2e-etc.service
  systemctl daemon-reload
  systemctl enable --now ade-e2e-etc.service >/dev/null 2>&1 || die "ade-e2e-etc (unit in /etc) does not start"
  for u in redis-server.service fake-docker.socket fake-docker.service ade-e2e-etc.service; do
    check "$u active before prepare" [ "$(systemctl is-active "$u")" = active ]
  done
  tl "workloads up" "redis key set, fake-docker shim pid $(cat /run/fake-docker/shim.pid)"
}

# pids of workload processes: the units' cgroups, and the docker-like shim (KillMode=process leftover)
workload_pids() {
  local u
  for u in redis-server.service fake-docker.service ade-e2e-etc.service $DATA_UNIT; do
    cat "/sys/fs/cgroup/system.slice/$u/cgroup.procs" 2>/dev/null
  done
  pgrep -x redis-server
  pgrep -f fake-dockerd.sh
  [ -f /run/fake-docker/shim.pid ] && kill -0 "$(cat /run/fake-docker/shim.pid)" 2>/dev/null && cat /run/fake-docker/shim.pid
}

assert_window() {
  local pids holders p bad='' fuser_out
  fuser_out=$(fuser -m / 2>/dev/null)
  holders=$(echo "$fuser_out" | tr -cs '0-9' '\n' | sort -un)
  pids=$(workload_pids | sort -un)
  for p in $pids; do echo "$holders" | grep -qx "$p" && bad="$bad $p($(cat /proc/"$p"/comm 2>/dev/null))"; done
  check "no workload process holds / (fuser -m /: $(echo "$holders" | wc -w) holders, workload pids: ${pids//$'\n'/ })" [ -z "$bad" ]
  [ -z "$bad" ] || echo "  holding: $bad"
  local scan_workloads
  scan_workloads=$(set -o pipefail; ade-prep scan --json |
    jq_py '" ".join(str(p["pid"]) + ":" + p["comm"] for p in d["processes"] if p["class"] == "workload")') ||
    scan_workloads="(ade-prep scan --json failed)"
  check "ade-prep scan --json: no workload holds / [$scan_workloads]" [ -z "$scan_workloads" ]
  for u in redis-server.service fake-docker.service fake-docker.socket; do
    check "$u stopped and masked ($(systemctl is-active "$u"), $(systemctl is-enabled "$u" 2>/dev/null))" \
      stopped_masked "$u"
  done
  check "ade-e2e-etc.service (unit in /etc) stopped and held by the generator ($(systemctl is-active ade-e2e-etc.service), LoadState $(prop ade-e2e-etc.service LoadState))" \
    held_down ade-e2e-etc.service
  check "SELinux permissive during the window (enforce=$(enforce))" [ "$(enforce)" = 0 ]
  check "journal: window open" [ "$(window_open)" = True ]
  # The window holds the lock through the journal (the daemon keeps no flock while it waits): `lock` waits for it.
  check "lock waiter still waiting" [ ! -e "$E/lock-ran" ]
}

assert_restored() {
  local u
  for u in redis-server.service fake-docker.socket fake-docker.service ade-e2e-etc.service; do
    wait_for 60 "$u active again" unit_active "$u"
    check "$u active again, $(systemctl is-enabled "$u")" [ "$(systemctl is-enabled "$u")" = enabled ]
  done
  wait_for 30 "redis answers" sh -c 'redis-cli ping 2>/dev/null | grep -q PONG'
  local got; got=$(redis-cli get e2e-key)
  check "redis key reads back ($got)" [ "$got" = "$(cat "$E/key")" ]
  check "SELinux enforcing again, as before prepare (enforce=$(enforce))" [ "$(enforce)" = 1 ]
  check "/etc/selinux/config untouched" sha256sum -c --quiet "$E/selinux-config.sha256"
  wait_for 60 "the lock waiter ran" [ -e "$E/lock-ran" ]
  # Not compared with when this script saw the close (up to a poll late): the waiter itself recorded
  # the journal's state when it ran.
  check "the lock waiter ran only after the window closed (it saw: $(jq_py 'd["journal"]["phase"]' < "$E/lock-ran.status"))" \
    [ "$(jq_py 'd["window_open"]' < "$E/lock-ran.status")" = False ]
  wait_for 30 "the lock is free" lock_free
  check "journal: window closed" [ "$(window_open)" = False ]
  # After ADE's end of a request, success or error, the service stays up for ADE's next one (the path unit cannot
  # start an active service again): a retry, or a data disk added after the OS pass (issue 23).
  wait_for 30 "the service idle, watching for ADE's next request" idle
  check "service: still running, watching for ADE's next request ($(svc_status))" idle
  tl "restored" "$(ade-prep status --json | jq_py 'd["journal"]["phase"]'), lock $(lock_state), enforce=$(enforce)"
}

# The ADE verdict that ends the window; waits for the restore and records when the window closed.
complete() {
  write_status "$@"
  wait_for 240 "window closed" window_closed
  tl "window closed" "service $(svc_state): $(svc_status)"
  assert_restored
}

# ---- data volumes (issue 17): the second disk, ADE's data step (ade-data-step.sh), the verification ----
data_src() { findmnt -no SOURCE --mountpoint "$DATA_MP" 2>/dev/null; }
data_main_pid() { prop "$DATA_UNIT" MainPID; }
# The device number (major:minor) of the filesystem under the workload's cwd.
data_cwd_dev() {
  local pid; pid=$(data_main_pid)
  [ "$pid" != 0 ] && stat -L -c '%Hd:%Ld' "/proc/$pid/cwd"
}
payload_intact() { (cd "$DATA_MP" && sha256sum -c --quiet "$E/data-payload.sha256"); }
# status_volume KEY: a field of the journal's data volume at $DATA_MP in `ade-prep status --json` ('-' when none).
status_volume() {
  ade-prep status --json | jq_py "next((str($1) for v in d.get('volumes', []) if v['volume']['mount_point'] == '$DATA_MP'), '-')"
}
encryption_status_check() {
  ade-prep check --json | jq_py "next(c['result'] + ': ' + c['evidence'] for c in d['checks'] if c['id'] == 'encryption-status')"
}

# The disk (vm-run.sh's VMRUN_DATA_DISK_MB: virtio-scsi lun 1, serial ade-e2e-data), named by an Azure-like udev
# link as Azure's storage rules name data disks (/dev/disk/azure/scsi1/lun<N>; ADE's crypttab uses that link,
# DiskUtil.py:748-776); an ext4 volume on it by UUID with nofail at /data; a workload unit (in /etc, held by the
# generator across a reboot) with its cwd and an open file on /data, configured as a workload.
setup_data_volume() {
  local byid=/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_ade-e2e-data uuid
  udevadm settle
  wait_for 60 "the data disk ($byid; vm-run.sh VMRUN_DATA_DISK_MB)" [ -e "$byid" ]
  DATA_DEV=$(realpath "$byid")
  cat > /etc/udev/rules.d/66-ade-e2e-azure-storage.rules <<'EOF'
SUBSYSTEM=="block", KERNEL=="sd*", ENV{DEVTYPE}=="disk", ENV{ID_SERIAL_SHORT}=="ade-e2e-data", PROGRAM="/bin/sh -c 'readlink /sys/class/block/%k/device | cut -d: -f4'", SYMLINK+="disk/azure/scsi1/lun$result"
EOF
  udevadm control --reload && udevadm trigger --action=add "$DATA_DEV" && udevadm settle
  mkfs.ext4 -q "$DATA_DEV" || die "mkfs.ext4 $DATA_DEV"
  uuid=$(blkid -o value -s UUID "$DATA_DEV")
  echo "UUID=$uuid $DATA_MP ext4 defaults,nofail 0 2" >> /etc/fstab
  mkdir -p "$DATA_MP"; systemctl daemon-reload
  mount "$DATA_MP" || die "mount $DATA_MP (fstab: UUID=$uuid)"
  head -c 1048576 /dev/urandom > "$DATA_MP/payload"; : > "$DATA_MP/workload.log"
  (cd "$DATA_MP" && sha256sum payload) > "$E/data-payload.sha256"
  command -v restorecon >/dev/null && restorecon -R "$DATA_MP"
  head -c 64 /dev/urandom > "$E/data.key"; chmod 600 "$E/data.key"
  echo "$DATA_DEV" > "$E/data-dev"
  cat > /etc/ade-prep/config.d/60-e2e-data.toml <<EOF
# tests/e2e/guest.sh: the workload on the data volume $DATA_MP
[workloads.datastore]
units = ["$DATA_UNIT"]
stop_timeout_secs = 30
EOF
  # No RequiresMountsFor=, as a database's unit has none for its data folder: were /data not mounted, the unit
  # would start in the empty folder on / (restore mounts the ground first: error scenario).
  printf '%s\n' '[Unit]' '[Service]' "WorkingDirectory=$DATA_MP" \
    "ExecStart=/bin/sh -c 'exec 3>>$DATA_MP/workload.log; echo started >&3; exec sleep infinity'" \
    '[Install]' 'WantedBy=multi-user.target' > "/etc/systemd/system/$DATA_UNIT"
  systemctl daemon-reload
  systemctl enable --now "$DATA_UNIT" >/dev/null 2>&1 || die "$DATA_UNIT does not start"
  check "$DATA_UNIT active before prepare" unit_active "$DATA_UNIT"
  check "$DATA_MP: $DATA_DEV ($(data_src)), the disk at /dev/disk/azure/scsi1/lun1 ($(readlink -f /dev/disk/azure/scsi1/lun1))" \
    sh -c "[ \"\$(findmnt -no SOURCE --mountpoint $DATA_MP)\" = $DATA_DEV ] && [ \"\$(readlink -f /dev/disk/azure/scsi1/lun1)\" = $DATA_DEV ]"
  tl "data volume up" "$DATA_DEV ($uuid) on $DATA_MP, $(lsblk -bndo SIZE "$DATA_DEV") bytes; $DATA_UNIT pid $(data_main_pid)"
}

# Before prepare: ADE's step would fail here (the workload holds /data), and changes nothing when it does.
data_before_prepare() {
  local pid rc fstab_sum held dry dry_rc
  pid=$(data_main_pid)
  held=$(fuser -m "$DATA_MP" 2>/dev/null | tr -s ' ' '\n' | grep -x "$pid")
  check "fuser -m $DATA_MP lists the workload ($DATA_UNIT pid $pid: cwd $(readlink /proc/"$pid"/cwd))" [ -n "$held" ]
  check "ade-prep scan --mount $DATA_MP: the workload unit holds it" sh -c \
    "ade-prep scan --mount $DATA_MP --json | python3 -c 'import json,sys; sys.exit(\"$DATA_UNIT\" not in json.load(sys.stdin)[\"verdict\"][\"workload_units\"])'"
  dry=$(ade-prep prepare --dry-run --volume-type all --force "$FORCE" 2>&1); dry_rc=$?
  echo "$dry" | grep "$DATA_MP" | sed 's/^/  dry-run| /'
  check "prepare --dry-run --volume-type all (rc $dry_rc) lists $DATA_MP held by $DATA_UNIT" \
    sh -c "echo \"\$1\" | grep -q '$DATA_MP held by: .*$DATA_UNIT'" _ "$dry"
  fstab_sum=$(sha256sum < /etc/fstab)
  bash "$DATA_STEP" "$DATA_DEV" "$DATA_MP" "$E/data.key" > "$E/data-step-busy.log" 2>&1; rc=$?
  sed 's/^/  /' "$E/data-step-busy.log"
  check "ADE's data step before prepare: its plain umount fails, the volume is skipped (rc $rc, 3 expected)" [ "$rc" = 3 ]
  check "... and nothing changed: $DATA_MP still on $DATA_DEV, ext4, fstab as it was, no crypttab" sh -c \
    "[ \"\$(findmnt -no SOURCE --mountpoint $DATA_MP)\" = $DATA_DEV ] && [ \"\$(blkid -o value -s TYPE $DATA_DEV)\" = ext4 ] &&
     [ \"\$(sha256sum < /etc/fstab)\" = '$fstab_sum' ] && [ ! -e /etc/crypttab ]"
  check "$DATA_UNIT still running, same pid ($(data_main_pid))" [ "$(data_main_pid)" = "$pid" ]
}

# In the window: the volume is freed and recorded; then ADE's data step, or not (DATA_PASS).
data_in_window() {
  local rc t
  check "$DATA_UNIT (unit in /etc) stopped and held ($(systemctl is-active "$DATA_UNIT"), LoadState $(prop "$DATA_UNIT" LoadState))" \
    held_down "$DATA_UNIT"
  check "nothing holds $DATA_MP (fuser -m: '$(fuser -m "$DATA_MP" 2>/dev/null | tr -s ' ')')" \
    sh -c "[ -z \"\$(fuser -m $DATA_MP 2>/dev/null | tr -d ' ')\" ]"
  check "the journal records the data volume $DATA_MP ($(status_volume "v['volume']['device']"))" \
    [ "$(status_volume "v['volume']['device']")" = "$DATA_DEV" ]
  check "status: $DATA_MP freed for ADE, not verified while the window is open" \
    sh -c "ade-prep status | grep -q 'data volume $DATA_MP ($DATA_DEV): freed for ADE'"
  if [ "$DATA_PASS" = skip ]; then
    tl "ADE's data step: skipped" "$DATA_MP left plain, as when ADE's umount fails and ADE skips the volume"
    return
  fi
  # ADE encrypts the data volumes first with VolumeType All (handle.py:2168-2209), reporting 'Encrypting N data
  # volumes' (handle.py:1980-1986).
  DATA_STATE=EncryptionInProgress write_status EnableEncryption transitioning 0 "Encrypting 1 data volumes" NotEncrypted
  t=$SECONDS
  bash "$DATA_STEP" "$DATA_DEV" "$DATA_MP" "$E/data.key" > "$E/data-step.log" 2>&1; rc=$?
  sed 's/^/  /' "$E/data-step.log"
  tl "ADE's data step (ade-data-step.sh)" "rc $rc in $((SECONDS - t))s: $DATA_MP on $(data_src)"
  check "ADE's data step succeeded in the window (rc $rc)" [ "$rc" = 0 ]
  check "$DATA_MP mounted through the mapper ($(data_src)), $DATA_DEV is LUKS ($(blkid -o value -s TYPE "$DATA_DEV"))" \
    sh -c "findmnt -no SOURCE --mountpoint $DATA_MP | grep -q '^/dev/mapper/' && [ \"\$(blkid -o value -s TYPE $DATA_DEV)\" = crypto_LUKS ]"
  check "the data kept (payload checksum)" payload_intact
  check "crypttab: the mapper over /dev/disk/azure/scsi1/lun1, luks,nofail ($(cat /etc/crypttab))" \
    grep -qE "^$(basename "$(data_src)") /dev/disk/azure/scsi1/lun1 \S+ luks,nofail$" /etc/crypttab
}

# After a restore: the workload is back, on the volume as ADE left it; status's verdict on it.
data_after_restore() {
  local out rc mapper
  wait_for 60 "$DATA_UNIT active again" unit_active "$DATA_UNIT"
  check "$DATA_UNIT active again, $(systemctl is-enabled "$DATA_UNIT")" [ "$(systemctl is-enabled "$DATA_UNIT")" = enabled ]
  check "the data kept (payload checksum)" payload_intact
  out=$(ade-prep status 2>&1); rc=$?
  echo "$out" | grep -E "data volume|^error" | sed 's/^/  status| /'
  if [ "$DATA_PASS" = encrypt ]; then
    mapper=$(data_src)
    check "$DATA_UNIT came back on the encrypted volume: its cwd on $mapper ($(data_cwd_dev) = $(lsblk -ndo MAJ:MIN "$mapper" | tr -d ' '))" \
      [ "$(data_cwd_dev)" = "$(lsblk -ndo MAJ:MIN "$mapper" | tr -d ' ')" ]
    check "status: $DATA_MP ($DATA_DEV) encrypted ($mapper), exit 0 (rc $rc)" \
      sh -c "[ $rc = 0 ] && echo \"\$1\" | grep -qF 'data volume $DATA_MP ($DATA_DEV): encrypted ($mapper)'" _ "$out"
    check "status --json: verdict encrypted" [ "$(status_volume "v['check']['verdict']")" = encrypted ]
  else
    check "$DATA_UNIT came back on the plain volume ($(data_src))" [ "$(data_src)" = "$DATA_DEV" ]
    check "status: error naming $DATA_MP ($DATA_DEV) not encrypted, exit 1 (rc $rc)" \
      sh -c "[ $rc = 1 ] && echo \"\$1\" | grep -qF 'error: data volume $DATA_MP ($DATA_DEV) is not encrypted'" _ "$out"
    check "status --json: verdict not_encrypted ($(status_volume "v['check'].get('why')"))" \
      [ "$(status_volume "v['check']['verdict']")" = not_encrypted ]
    check "the daemon logged $DATA_MP ($DATA_DEV) not encrypted" logged "data volume $DATA_MP ($DATA_DEV) is not encrypted"
  fi
}

# At the end (ADE reported success, data Encrypted): check's encryption-status holds ADE to it.
data_final_check() {
  local c; c=$(encryption_status_check)
  echo "  check| encryption-status $c"
  if [ "$DATA_PASS" = encrypt ]; then
    check "check encryption-status: nothing about $DATA_DEV not encrypted" sh -c "! echo \"\$1\" | grep -qF '$DATA_DEV ($DATA_MP) is not'" _ "$c"
    check "status exits 0 (no data volume error)" sh -c 'ade-prep status >/dev/null 2>&1'
  else
    check "check encryption-status fails naming $DATA_DEV ($DATA_MP)" \
      sh -c "echo \"\$1\" | grep -q '^fail: .*$DATA_DEV ($DATA_MP) is not'" _ "$c"
  fi
}

# The package under SELinux enforcing (error scenario; was tests/vm/packaging.rs's own boot of the SELinux image, see
# tests/vm/e2e.rs e2e_vm_ade_error): "FACT key=value" lines the Rust test asserts on. pkg_facts_install right after
# install_agent (which installed the .deb while enforcing); pkg_facts_roundtrip once the workloads are up: a prepare
# and restore from the command line (not the service) with redis-server, enforcing -> permissive -> enforcing, the
# checks forced exactly as `check` names them (this guest is no Azure VM).
fact() { printf 'FACT %s=%s\n' "$1" "$2"; }
pkg_facts_install() {
  fact enforce_at_install "$(cat "$E/enforce-at-install")"
  fact install_rc "$(cat "$E/install-rc")"
  fact label_service "$(stat -c %C /lib/systemd/system/ade-prep.service | cut -d: -f3)"
  fact label_binary "$(stat -c %C /usr/bin/ade-prep | cut -d: -f3)"
  fact label_config "$(stat -c %C /etc/ade-prep/config.toml | cut -d: -f3)"
  fact path_enabled "$(systemctl is-enabled ade-prep.path 2>&1)"
  fact path_active "$(systemctl is-active ade-prep.path 2>&1)"
  ade-prep scan > "$E/pkg-scan.txt" 2>&1; fact scan_rc $?
  head -n 5 "$E/pkg-scan.txt" | sed 's/^/  scan| /'
}
pkg_facts_roundtrip() {
  local force rc
  fact redis_before "$(systemctl is-active redis-server.service)"
  fact enforce_before "$(enforce)"
  ade-prep check > "$E/pkg-check.txt" 2>&1; fact check_rc $?
  force=$(grep -o -- '--force [a-z0-9,-]*' "$E/pkg-check.txt" | head -n 1)
  fact force "$force"
  # shellcheck disable=SC2086   # "--force IDS" is two words
  ade-prep -v prepare $force > "$E/pkg-prepare.log" 2>&1; rc=$?; fact prepare_rc $rc
  [ "$rc" = 0 ] || sed 's/^/  prepare| /' "$E/pkg-prepare.log"
  fact redis_during "$(systemctl is-active redis-server.service)"
  fact enforce_during "$(enforce)"
  ade-prep -v restore > "$E/pkg-restore.log" 2>&1; rc=$?; fact restore_rc $rc
  [ "$rc" = 0 ] || sed 's/^/  restore| /' "$E/pkg-restore.log"
  fact redis_after "$(systemctl is-active redis-server.service)"
  fact enforce_after "$(enforce)"
  wait_for 30 "redis answers after the command-line round trip" sh -c 'redis-cli ping 2>/dev/null | grep -q PONG'
  tl "package round trip (command line)" "prepare and restore done, enforce=$(enforce)"
}

boot1() {
  tl "boot 1" "scenario $SCENARIO, enforce=$(enforce)"
  # osstep: an image configured enforcing (as RHEL's are), so the reboot brings SELinux back enforcing mid-window;
  # success: configured permissive (the image's default) for the power cut, enforcing before its reboot (boot 2).
  if [[ $SCENARIO == osstep* ]]; then sed -i 's/^SELINUX=.*/SELINUX=enforcing/' /etc/selinux/config; fi
  sha256sum /etc/selinux/config > "$E/selinux-config.sha256"
  echo 1 > "$ENFORCE"
  tl "SELinux enforcing" "enforce=$(enforce), config: $(grep '^SELINUX=' /etc/selinux/config)"
  install_agent
  [ "$SCENARIO" != error ] || pkg_facts_install
  setup_workloads
  [ "$SCENARIO" != error ] || pkg_facts_roundtrip
  if [ -n "$DATA_PASS" ]; then setup_data_volume; data_before_prepare; fi
  start_custom_script
  # ADE arrives as the guest agent delivers it: the handler folder first (the path unit starts the service on it),
  # the settings a few seconds later, then enable writes its status.
  mkdir -p "$HANDLER/config" "$HANDLER/status"
  tl "ADE handler folder created" "service $(svc_state)"
  sleep 5
  cat > "$HANDLER/config/0.settings" <<'EOF'
{"runtimeSettings":[{"handlerSettings":{"protectedSettingsCertThumbprint":"1BE9A13AA1321C7C515EF109746998BAB6D86FD1","protectedSettings":"MIIByAYJKoZIhvcNAQcDoIIBuTCCAbUCAQAxggFxMIIBbQIBADBVMEE","publicSettings":{"EncryptionOperation":"EnableEncryption","KeyVaultURL":"https://kv.vault.azure.net/","VolumeType":"All","KeyEncryptionAlgorithm":"RSA-OAEP","SequenceVersion":"8c1d3a4e"}}}]}
EOF
  tl "ADE settings written (0.settings)" "service $(svc_state)"
  write_status EnableEncryption transitioning 0 "Enable encryption started" NotEncrypted
  wait_for 60 "ade-prep.service started by the path unit" svc_started
  tl "service started" "$(svc_state): $(svc_status)"
  wait_for 420 "ade-prep.service READY (window open)" svc_ready
  date +%s.%N > "$E/ready-at"
  tl "service READY: ADE would start" "$(svc_status)"
  check "prepare waited for the custom script (it ended before READY)" \
    python3 -c "import sys; sys.exit(not $(cat "$E/cs-done" 2>/dev/null || echo 1e12) <= $(cat "$E/ready-at"))"
  check "the service logged the wait for custom-script/download/0" \
    logged "waiting for extension handlers to finish: custom-script/download/0"
  start_lock_waiter
  sleep 3
  assert_window
  [ -z "$DATA_PASS" ] || data_in_window
  tl "window asserted" "journal phase $(ade-prep status --json | jq_py 'd["journal"]["phase"]'), flock $(lock_state)"
  write_status EnableEncryptionOSVolume transitioning 0 "Encrypting the OS volume" EncryptionInProgress
  sleep 3
  check "service waits through EncryptionInProgress ($(svc_state))" svc_ready
  case $SCENARIO in
    error)
      if [ -n "$DATA_PASS" ]; then
        # ADE's stripdown unmounts every idle filesystem (umount -a, StripdownState.py:48) before its OS step
        # fails: /data is left unmounted, its workload stopped (issue 23 item 10).
        umount "$DATA_MP" || die "umount $DATA_MP"
        tl "ADE left $DATA_MP unmounted" "$(findmnt -no SOURCE --mountpoint "$DATA_MP" || echo 'not mounted')"
      fi
      complete EnableEncryption error 10 "Failed to encrypt the OS volume: unmount of / failed" NotEncrypted
      [ -z "$DATA_PASS" ] || check "restore mounted $DATA_MP again before starting its workload" \
        logged "mounting data.mount again"
      check "service logged ADE's failure" logged "failed (code 10)"
      [ -z "$DATA_PASS" ] || data_after_restore
      # The operator retries: the guest agent writes settings seq 1; the same service prepares again.
      SEQ=1
      sed 's/"SequenceVersion":"[^"]*"/"SequenceVersion":"retry-1"/' "$HANDLER/config/0.settings" > "$HANDLER/config/1.settings"
      tl "ADE retried: settings seq 1 written" "service $(svc_state): $(svc_status)"
      write_status EnableEncryption transitioning 0 "Enable encryption started" NotEncrypted
      wait_for 240 "the window open again for seq 1" window_is_open
      wait_for 120 "prepare for seq 1 done" status_says "waiting for ADE"
      tl "window open again (seq 1)" "$(svc_status)"
      start_lock_waiter
      sleep 3
      assert_window
      DATA_STATE=Encrypted complete EnableEncryption success 0 "Encryption succeeded for all volumes" Encrypted
      [ -z "$DATA_PASS" ] || data_final_check
      finish;;
    success)
      sync
      tl "hard reset (power cut)" "service $(svc_state), enforce=$(enforce)"
      vm-run-ctl hard-reset;;
    osstep|osstep-rhel)
      os_step_stripdown;;
  esac
  die "still running after the reboot request"
}

boot2() {
  local configured
  configured=$(sed -n 's/^SELINUX=//p' /etc/selinux/config)
  tl "boot $BOOT" "enforce=$(enforce), configured SELINUX=$configured, service $(svc_state)"
  local after; after=$([ "$SCENARIO" = success ] && [ "$BOOT" = 2 ] && echo "power cut" || echo reboot)
  # The service resumed the window before this job ran: when the boot brought SELinux back enforcing (as configured),
  # it has set it permissive again and said so; when configured permissive, it had nothing to do.
  if [ "$configured" = enforcing ]; then
    check "came up enforcing, as configured; the service set it permissive again" \
      logged "enforcing -> permissive again"
  else
    check "came up permissive, as configured (enforce=$(enforce)); nothing for the service to set" \
      sh -c "[ \"\$(cat $ENFORCE)\" = 0 ] && ! journalctl -b -u $SVC --no-pager | grep -q 'permissive again'"
  fi
  check "/etc/selinux/config untouched by the window" sha256sum -c --quiet "$E/selinux-config.sha256"
  wait_for 300 "ade-prep.service started again at boot and waiting" svc_ready
  tl "service resumed the window" "$(svc_status)"
  # The reboot dropped prepare's runtime masks: the generator held the units down through the boot.
  local u
  for u in redis-server.service fake-docker.socket fake-docker.service ade-e2e-etc.service; do
    check "$u held down through the boot ($(systemctl is-active "$u"), LoadState $(prop "$u" LoadState))" \
      held_down "$u"
  done
  check "redis does not answer during the window" sh -c '! redis-cli ping >/dev/null 2>&1'
  check "SELinux permissive for the rest of the window (enforce=$(enforce))" [ "$(enforce)" = 0 ]
  check "the service logged the units held since boot" logged "unit(s) held masked since boot"
  check "journal: window still open after the $after" [ "$(window_open)" = True ]
  check "the resumed service took the window from the journal" \
    logged "waiting for ADE"
  start_lock_waiter
  sleep 3
  check "lock waiter waits while the window is open" [ ! -e "$E/lock-ran" ]
  if [[ $SCENARIO == osstep* ]]; then
    check "boot 1 unmounted /oldroot at its first try (ctl/output.1)" grep -q '^OSSTEP umount /oldroot: first try ok' /run/ctl/output.1
  fi
  if [ -n "$DATA_PASS" ]; then
    check "$DATA_UNIT held down through the boot ($(systemctl is-active "$DATA_UNIT"), LoadState $(prop "$DATA_UNIT" LoadState))" \
      held_down "$DATA_UNIT"
    check "$DATA_MP mounted again at boot from fstab ($(data_src))" [ "$(data_src)" = "$(cat "$E/data-dev")" ]
  fi
  if [ "$SCENARIO" = success ] && [ "$BOOT" = 2 ]; then
    # The power cut came while ADE encrypted the OS volume; ADE carries on after the boot and asks for its restart.
    # Before it, SELinux is configured enforcing (as a hardening run might do in the window; ade-prep never edits
    # the file), so that the reboot brings SELinux back enforcing mid-window and the resumed service must set it
    # permissive again (boot 3).
    sed -i 's/^SELINUX=.*/SELINUX=enforcing/' /etc/selinux/config
    sha256sum /etc/selinux/config > "$E/selinux-config.sha256"
    write_status EnableEncryptionOSVolume success 0 "OS disk successfully encrypted, please reboot the VM" VMRestartPending
    sleep 3
    check "service waits through VMRestartPending ($(svc_status))" status_says "waiting through the restart"
    sync
    tl "rebooting" "service $(svc_state), enforce=$(enforce), configured SELINUX=enforcing"
    vm-run-ctl reboot
    die "still running after the reboot request"
  fi
  if [ -n "$DATA_PASS" ]; then
    DATA_DEV=$(cat "$E/data-dev")
    DATA_STATE=Encrypted complete EnableEncryption success 0 "Encryption succeeded for all volumes" Encrypted
    data_after_restore
    data_final_check
  else
    complete EnableEncryption success 0 "Encryption succeeded for all volumes" Encrypted
  fi
  finish
}

# ---- osstep: ADE's OS step (tests/ade/FINDINGS.md 21-23; ADE's oscrypto/ubuntu_2004/encryptstates/) ----
# What boot 2 needs is on the disk before the pivot (/var/lib/ade-e2e: t0, key, selinux-config.sha256); after it,
# the RAM root's copies vanish at the reboot. Between the two phases: /run/ade-e2e-osstep (/run is moved along).
OS=/run/ade-e2e-osstep

# window_fingerprint ROOT: what ade-prep keeps of its window under ROOT (journal, hold list, config), its runtime
# masks and the SELinux mode. Frozen means: the same after the pivot as just before it.
window_fingerprint() {
  (cd "$1/" && find var/lib/ade-prep etc/ade-prep -type f 2>/dev/null | sort | xargs -r sha256sum)
  find /run/systemd/system -maxdepth 1 -type l -lname /dev/null -printf 'mask %f\n' 2>/dev/null | sort
  echo "enforce $(cat "$ENFORCE" 2>/dev/null || echo 'none (selinuxfs not mounted)')"
}

# assert_frozen WHEN: ade-prep changed nothing on the disk (/oldroot) nor in its RAM copy (/) since the pivot.
assert_frozen() {
  local root where
  for root in /oldroot ''; do
    where=${root:-/ (RAM copy)}
    window_fingerprint "$root" > "$OS/fingerprint.now"
    check "frozen, $1: ade-prep's files under $where, its masks and the SELinux mode as at the pivot" \
      cmp -s "$OS/fingerprint.pivot" "$OS/fingerprint.now"
    cmp -s "$OS/fingerprint.pivot" "$OS/fingerprint.now" || diff "$OS/fingerprint.pivot" "$OS/fingerprint.now" | sed 's/^/  /'
  done
  local u
  for u in redis-server.service fake-docker.socket fake-docker.service; do
    check "frozen, $1: $u still down ($(systemctl is-active "$u"), $(systemctl is-enabled "$u" 2>/dev/null))" \
      [ "$(systemctl is-active "$u")" != active ]
  done
}

# The stripdown (StripdownState.py:48-67), run by the job itself: every step as ADE runs it, in its order.
os_step_stripdown() {
  local i before unmounted copied='' skipped=''
  mkdir -p "$OS"
  workload_pids | sort -un > "$OS/workload-pids"
  prop "$SVC" MainPID > "$OS/ade-prep-pid"
  echo "--- ade-prep.service journal up to the OS step (this boot's journal stays on the old root):"
  journalctl -b -u "$SVC" --no-pager -o short-monotonic | tail -n 30 | sed 's/^/  /'
  tl "ADE's OS step begins" "window open; guest memory $(free -m | awk '/^Mem:/ {print $2 " MiB, " $7 " MiB available"}')"
  before=$(awk '{print $2}' /proc/mounts | sort)
  umount -a 2>/dev/null   # StripdownState.py:48: no failure check (busy ones stay)
  unmounted=$(comm -23 <(echo "$before") <(awk '{print $2}' /proc/mounts | sort) | tr '\n' ' ')
  tl "umount -a" "unmounted: ${unmounted:-nothing}; $(wc -l < /proc/mounts) mounts left"
  rm -rf /tmp/tmproot
  mkdir /tmp/tmproot || die "mkdir /tmp/tmproot"
  mount -t tmpfs none /tmp/tmproot || die "mount -t tmpfs none /tmp/tmproot"
  # ADE's directories (StripdownState.py:50), and work: the 9p share this script and the next phase run from.
  for i in proc sys dev run usr var tmp root oldroot boot work; do mkdir "/tmp/tmproot/$i"; done
  for i in /bin /etc /mnt /sbin /lib /lib64 /root /usr/bin /usr/sbin /usr/lib /usr/lib64 /usr/share \
    /var/lib /var/local /var/lock /var/opt /var/run /var/spool /var/tmp; do
    if [ -e "$i" ] || [ -L "$i" ]; then
      cp -ax "$i" "/tmp/tmproot$(dirname "$i")/" || die "cp -ax $i /tmp/tmproot"
      copied="$copied $i"
    else skipped="$skipped $i"; fi
  done
  mkdir /tmp/tmproot/var/log
  if [ -e /var/log/azure ]; then cp -ax /var/log/azure /tmp/tmproot/var/log/; else skipped="$skipped /var/log/azure"; fi
  tl "tmpfs root filled" "$(df -m --output=used /tmp/tmproot | tail -n1 | tr -d ' ') MiB; not here:${skipped:- none}"
  sed -i "s@root:x:0:0:root:/root:/bin/bash@root:x:0:0:root:/root:/usr/sbin/nologin@g" /tmp/tmproot/etc/passwd
  mount --make-rprivate / || die "mount --make-rprivate /"
  [ -e /tmp/tmproot/var/lib/ade-prep/state.json ] || die "the RAM copy has no /var/lib/ade-prep/state.json"
  tl "systemctl stop walinuxagent: skipped" "no guest agent in this guest"
  window_fingerprint "" > "$OS/fingerprint.pivot"
  pivot_root /tmp/tmproot /tmp/tmproot/oldroot || die "pivot_root /tmp/tmproot /tmp/tmproot/oldroot"
  for i in dev proc sys run; do mount --move "/oldroot/$i" "/$i" || die "mount --move /oldroot/$i /$i"; done
  # The harness's shares: /run/ctl came with /run; /work (this script, the next phase) is moved too.
  mount --move /oldroot/work /work || die "mount --move /oldroot/work /work"
  tl "pivot_root done, /dev /proc /sys /run /work moved" "/ $(findmnt -no FSTYPE /), /oldroot $(findmnt -no SOURCE /oldroot)"
  # ADE exits here and its extension is started again from the RAM root (StripdownState.py:74-85): the unmount
  # steps run in a new process whose programs come from the RAM copies, in a scope that `systemctl rescue` leaves
  # alone (as ADE's daemon outlives the agent's stop, KillMode=process). This job, mapped from the old root, is
  # stopped by the rescue (its service is not wanted by rescue.target) or killed by the fuser step.
  # The harness's job chain (the bash running ctl/cmd, vm-run-job): see os_step_unmount.
  echo "$PPID $(ps -o ppid= -p "$PPID" | tr -d ' ')" > "$OS/harness-pids"
  setsid systemd-run --scope --quiet --unit=ade-e2e-osstep /bin/bash "$STAGE/guest.sh" osstep-unmount "$SCENARIO" \
    </dev/null &
  wait $!
  die "the unmount phase ended (rc $?) while the job that started it still ran"
}

# ctl_end RC: the unmount phase ends the run itself (the harness job that would have was stopped by the rescue).
ctl_end() {
  if [ "$1" = 0 ]; then
    : > /run/ctl/request-reboot
    systemctl reboot
  else
    echo "$1" > /run/ctl/rc.tmp && mv /run/ctl/rc.tmp /run/ctl/rc
    sync
    systemctl poweroff -ff
  fi
}

# The unmount state, in a new process of the RAM root: Ubuntu's (ubuntu_2004/.../UnmountOldrootState.py:44-126) for
# osstep, RHEL 7's (rhel_72/.../UnmountOldrootState.py:44-118) for osstep-rhel.
os_step_unmount() {
  SCENARIO=${2:?osstep-unmount needs the scenario}
  trap 'ctl_end $?' EXIT
  local line s restarted='' out pid victims='' comm unit bad=''
  tl "ADE's unmount state: new process in the RAM root" "pid $$, / $(findmnt -no FSTYPE /), /oldroot mounted: $(mountpoint -q /oldroot && echo yes)"
  check "ADE's own test of the stripped-down OS: / is a tmpfs in /proc/mounts" grep -qE '^\S+ / tmpfs' /proc/mounts
  check "ade-prep.service still running after the pivot ($(svc_state))" svc_ready
  assert_frozen "after the pivot"
  if [ "$SCENARIO" = osstep ]; then
    systemctl rescue || echo "  systemctl rescue: rc $?"
    tl "systemctl rescue" "ade-prep.service $(svc_state), ade-prep.path $(systemctl is-active ade-prep.path), vm-run-job.service $(systemctl is-active vm-run-job.service)"
    # Stopped by the rescue or still running there, ade-prep must change nothing while / is the RAM root (FINDINGS
    # 23: it "may be stopped or restarted"); the frozen checks around this step hold it to that, whichever it was.
    tl "ade-prep.service after the rescue" "$(svc_state)"
    check "systemctl rescue stopped ade-prep.path ($(systemctl is-active ade-prep.path))" \
      [ "$(systemctl is-active ade-prep.path)" = inactive ]
    tl "systemctl start sshd, walinuxagent: skipped" "neither is in this guest"
  else
    tl "mkdir /var/empty/sshd, restart sshd, dhclient: skipped" "no sshd, no network in this guest"
  fi
  # Restart every unit listed running but the agent and sshd (ubuntu_2004 :54-69, rhel_72 :54-67).
  while read -r s; do
    systemctl restart "$s" && restarted="$restarted $s" || restarted="$restarted $s(failed)"
  done < <(systemctl list-units | awk '/running/ && !/walinuxagent\.service|waagent\.service|sshd\.service/ {
    for (i = 1; i <= NF; i++) if ($i ~ /\.service$/) { print $i; break } }')
  tl "restarted the running services" "${restarted:- none}"
  if [ "$SCENARIO" = osstep-rhel ]; then
    tl "ade-prep.service after its restart" "$(svc_state), pid $(prop "$SVC" MainPID): $(svc_status)"
  fi
  assert_frozen "after the $([ "$SCENARIO" = osstep ] && echo 'rescue and the ')restarts"
  swapoff -a
  for line in /oldroot/mnt /oldroot/azure_bek_disk /azure_bek_disk; do
    [ -e "$line" ] && umount "$line" 2>/dev/null
  done
  [ -e /mnt ] && umount -R /mnt 2>/dev/null
  tl "swapoff -a, umount of /mnt and the BEK volume (UnmountOldrootState.py:71-85)" "swaps: $(tail -n +2 /proc/swaps | wc -l)"
  # Harness only: where the rescue did not stop the job chain (RHEL), stop it (SIGSTOP) so that vm-run-job cannot
  # end the run (rc, poweroff) when ADE's kill -9 of its child comes before its own; kill -9 still ends them.
  local chain held=''
  read -ra chain < "$OS/harness-pids"
  for pid in "${chain[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -STOP "$pid" && held="$held $pid"
  done
  tl "harness: job chain stopped (SIGSTOP) before fuser" "pids:${held:- none (the rescue stopped them)}"
  out=$(fuser -vm /oldroot 2>"$OS/fuser.table")
  tl "fuser -vm /oldroot" "pids:${out:- none}"
  sed 's/^/  fuser| /' "$OS/fuser.table"
  # UnmountOldrootState.py:89-120: kill -9 every listed pid but init, in ADE's order (reverse string sort)
  for pid in $(echo "$out" | tr -s ' \t' '\n' | grep -E '^[0-9]+$' | sort -r); do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null)
    unit=$(sed -n 's#^0::.*/\([^/]*\)$#\1#p' "/proc/$pid/cgroup" 2>/dev/null)
    if grep -qx "$pid" "$OS/workload-pids" || [ "$pid" = "$(cat "$OS/ade-prep-pid")" ] ||
      [[ $unit == redis-server.service || $unit == fake-docker.* || $unit == ade-prep.* ]]; then
      bad="$bad $pid:$comm($unit)"
    fi
    if [ "$pid" = 1 ]; then victims="$victims 1:skipped(init)"; continue; fi
    if [ "$pid" = $$ ]; then victims="$victims $$:skipped(this phase itself)"; continue; fi
    kill -9 "$pid" 2>/dev/null
    victims="$victims $pid:$comm($unit)"
  done
  tl "kill -9 of what fuser listed" "${victims:- nothing}"
  check "fuser -vm /oldroot lists no workload and no ade-prep process [${bad# }]" [ -z "$bad" ]
  if command -v telinit >/dev/null; then telinit u; s="telinit u"; else systemctl daemon-reexec; s="systemctl daemon-reexec (no telinit here)"; fi
  sleep 3
  tl "$s" "PID 1 $(readlink /proc/1/exe)"
  if umount /oldroot 2>"$OS/umount.err"; then
    echo "OSSTEP umount /oldroot: first try ok"
    check "umount /oldroot at its first try" true
    tl "umount /oldroot: first try ok" "/oldroot mounted: $(mountpoint -q /oldroot && echo yes || echo no)"
  else
    echo "OSSTEP umount /oldroot: first try FAILED: $(cat "$OS/umount.err")"
    echo "  still on /oldroot: $(fuser -m /oldroot 2>/dev/null)"; fuser -vm /oldroot 2>&1 | sed 's/^/  fuser| /'
    echo "  mounts under /oldroot:"; awk '$2 ~ "^/oldroot" {print "   ", $0}' /proc/mounts
    echo "  units running: $(systemctl list-units --state=running --no-legend | awk '{print $1}' | tr '\n' ' ')"
    echo "--- AVC denials:"; journalctl -b --no-pager -g 'avc: *denied' 2>/dev/null | tail -n 20
    echo "E2E FAIL osstep: umount /oldroot failed at its first try"
    exit 1
  fi
  echo "--- AVC denials in the RAM root:"; journalctl -b --no-pager -g 'avc: *denied' 2>/dev/null | tail -n 20
  tl "rebooting (ADE would encrypt the OS volume here, then reboot)" "checks failed so far: $FAILS"
  exit 0
}

FORCE=${ADE_E2E_FORCE:-distro,memory}
if [ "$SCENARIO" = osstep-unmount ]; then os_step_unmount "$@"
elif [ "$BOOT" = 1 ]; then boot1
else boot2
fi
