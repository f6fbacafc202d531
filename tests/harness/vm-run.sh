#!/bin/bash
# vm-run.sh [-s] [-t SECS] DIR CMD...
#   Boots the Debian 12 qemu guest (TCG; real systemd 252 PID 1 + dbus, built by
#   build-guest.sh) on a fresh qcow2 overlay of the base image, shares DIR
#   read-write at /work (9p), runs CMD (joined with spaces) with bash in /work
#   as root (unit vm-run-job.service), prints its stdout+stderr (captured in
#   the guest, printed after the run) and exits with its exit code.
#   -s  SELinux image (booted permissive, /sys/fs/selinux/enforce exists; write
#       1 to it for enforcing). The enforce value at exit goes to stderr.
# Exit: CMD's exit code; 124 timeout (-t, whole run incl. reboots, default
#   600 s); 125 harness failure (no image, qemu/boot failure, guest stopped
#   without a result, too many boots); 2 usage.
# In the guest: env VMRUN_BOOT (1, 2, ...) and VMRUN_CTL=/run/ctl (the ctl
#   share: cmd, boot, output.N, rc, request-*).
# Reboot within one run: the disk overlay persists for the whole run, so disk
#   changes survive reboots and resets. qemu runs with -no-reboot, so any guest
#   reboot or poweroff ends the qemu process; if ctl/request-reboot exists
#   then, the host removes it and boots qemu again on the same disk and the job
#   runs again with VMRUN_BOOT+1 (branch on it). In the guest:
#     vm-run-ctl expect-reboot   mark only (e.g. before software under test
#                                reboots; or then just exit: the runner reboots)
#     vm-run-ctl reboot          mark + systemctl reboot; does not return
#   A guest that stops without ctl/rc and without that mark fails the run (125).
# Hard reset (power cut): when ctl/request-hard-reset appears, the host kills
#   qemu -9 at once, removes the mark and boots again on the same disk with
#   VMRUN_BOOT+1. In the guest: `vm-run-ctl hard-reset` (does not return;
#   whatever the guest did not sync is lost, as on real power loss).
# Env: ADE_HARNESS_DIR (/var/cache/ade-prep-harness), VMRUN_MEM (MiB, 1024),
#   VMRUN_SMP (2), VMRUN_MAX_BOOTS (5), VMRUN_APPEND (extra kernel args),
#   VMRUN_KERNEL, VMRUN_INITRD (default images/vmlinuz, images/initrd.img),
#   VMRUN_IMAGE=NAME boot images/NAME.img instead (e.g. debian12-docker, made
#   from the SELinux image: give -s too),
#   VMRUN_ACCEL=tcg|kvm (tcg; kvm hangs stock kernels on PVM hosts),
#   VMRUN_DATA_DISK_MB=N a second disk for the run: N MiB, raw, sparse, empty
#   (the guest makes its filesystem), made in the run dir and kept across the
#   run's boots; on a virtio-scsi controller at lun 1, where the guest sees
#   /dev/sda (H:C:T:L 0:0:0:1): no IDE disk, not lun 0, as an Azure data disk
#   (ADE's selection: DiskUtil.py:1191-1266, see NOTES.md),
#   VMRUN_KEEP=1 keep the run dir (disk.qcow2, serial.N.log, ctl/) and print it,
#   VMRUN_QUIET=1 no summary line (rc, boots, seconds per boot) on stderr.
# shellcheck disable=SC2317   # functions run from traps
set -u
H=${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}
SEL=0; TMO=600
usage() { echo "usage: $0 [-s] [-t secs] DIR COMMAND..." >&2; exit 2; }
while getopts "st:" o; do case $o in s) SEL=1;; t) TMO=$OPTARG;; *) usage;; esac; done
shift $((OPTIND-1))
[ $# -ge 2 ] || usage
[ -d "$1" ] || { echo "vm-run: no such dir: $1" >&2; exit 2; }
DIR=$(realpath "$1"); shift
QEMU=$H/qemu-root/usr/bin/qemu-system-x86_64
KERNEL=${VMRUN_KERNEL:-$H/images/vmlinuz}; INITRD=${VMRUN_INITRD:-$H/images/initrd.img}
IMG=$H/images/debian12.img
# panic=-1: a guest panic ends qemu at once (-no-reboot) instead of hanging until -t.
APPEND="root=/dev/vda rw console=ttyS0 panic=-1 systemd.unit=vm-job.target ${VMRUN_APPEND:-}"
if [ $SEL = 1 ]; then IMG=$H/images/debian12-selinux.img; APPEND="$APPEND security=selinux selinux=1"; fi
[ -z "${VMRUN_IMAGE:-}" ] || IMG=$H/images/$VMRUN_IMAGE.img
for f in "$QEMU" "$KERNEL" "$INITRD" "$IMG"; do
  [ -e "$f" ] || { echo "vm-run: missing $f (run build-guest.sh)" >&2; exit 125; }
done
case ${VMRUN_ACCEL:-tcg} in
  kvm) ACCEL=(-accel kvm -cpu "host,-arch-capabilities");;
  *)   ACCEL=(-accel "tcg,thread=multi" -cpu max);;
esac
mkdir -p "$H/runs"; RUN=$(mktemp -d "$H/runs/run.XXXXXX"); CTL=$RUN/ctl; mkdir "$CTL"
printf '%s\n' "$*" > "$CTL/cmd"
qemu-img create -q -f qcow2 -F raw -b "$IMG" "$RUN/disk.qcow2" ||
  { echo "vm-run: qemu-img create failed" >&2; rm -rf "$RUN"; exit 125; }

DATA=()
if [ -n "${VMRUN_DATA_DISK_MB:-}" ]; then
  case $VMRUN_DATA_DISK_MB in ''|*[!0-9]*) echo "vm-run: VMRUN_DATA_DISK_MB=$VMRUN_DATA_DISK_MB: not a number of MiB" >&2; rm -rf "$RUN"; exit 2;; esac
  qemu-img create -q -f raw "$RUN/data.raw" "${VMRUN_DATA_DISK_MB}M" ||
    { echo "vm-run: qemu-img create of the data disk failed" >&2; rm -rf "$RUN"; exit 125; }
  # shellcheck disable=SC2054   # qemu's option values have commas
  DATA=(-device virtio-scsi-pci,id=vscsi -drive "file=$RUN/data.raw,if=none,id=data0,format=raw"
        -device scsi-hd,drive=data0,bus=vscsi.0,channel=0,scsi-id=0,lun=1,serial=ade-e2e-data)
fi

QPID=''
cleanup() {
  [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null
  if [ "${VMRUN_KEEP:-0}" = 1 ]; then echo "vm-run: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT; trap 'exit 130' INT TERM

BOOT=0; DEADLINE=$((SECONDS + TMO)); TIMES=''; R=''; FAIL=1
while :; do
  BOOT=$((BOOT + 1)); echo $BOOT > "$CTL/boot"; T=$SECONDS
  "$QEMU" "${ACCEL[@]}" -smp "${VMRUN_SMP:-2}" -m "${VMRUN_MEM:-1024}" \
    -nodefaults -display none -no-reboot -nic none \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
    -drive file="$RUN/disk.qcow2",if=virtio,format=qcow2 "${DATA[@]}" \
    -virtfs local,path="$CTL",mount_tag=ctl,security_model=none,id=ctl \
    -virtfs local,path="$DIR",mount_tag=work,security_model=none,id=work \
    -serial file:"$RUN/serial.$BOOT.log" </dev/null >>"$RUN/qemu.log" 2>&1 &
  QPID=$!; WHY='exit'
  while kill -0 "$QPID" 2>/dev/null; do
    if [ -e "$CTL/request-hard-reset" ]; then WHY=reset; kill -9 "$QPID"; break; fi
    if [ $SECONDS -ge $DEADLINE ]; then WHY=timeout; kill -9 "$QPID"; break; fi
    sleep 0.2
  done
  wait "$QPID" 2>/dev/null; QRC=$?; QPID=''
  TIMES="$TIMES boot$BOOT=$((SECONDS - T))s"
  if [ $WHY = timeout ]; then echo "vm-run: timeout after ${TMO}s (boot $BOOT)" >&2; R=124; break; fi
  if [ $WHY = exit ] && [ -f "$CTL/rc" ]; then
    R=$(cat "$CTL/rc"); case $R in ''|*[!0-9]*) echo "vm-run: bad rc '$R'" >&2; R=125;; *) FAIL=0;; esac; break
  fi
  if [ $WHY = exit ] && [ -e "$CTL/request-reboot" ]; then WHY=reboot; fi
  if [ $WHY = exit ]; then
    echo "vm-run: guest stopped without a result in boot $BOOT (qemu rc=$QRC; a reboot needs vm-run-ctl expect-reboot)" >&2
    R=125; break
  fi
  if [ $WHY = reset ]; then rm -f "$CTL/request-hard-reset"; else rm -f "$CTL/request-reboot"; fi
  if [ $BOOT -ge "${VMRUN_MAX_BOOTS:-5}" ]; then echo "vm-run: too many boots ($BOOT)" >&2; R=125; break; fi
  [ "${VMRUN_QUIET:-0}" = 1 ] || echo "vm-run: boot $BOOT ended by $WHY, booting again" >&2
done

for n in $(seq "$BOOT"); do
  [ "$BOOT" = 1 ] || echo "vm-run: --- output of boot $n ---" >&2
  [ -f "$CTL/output.$n" ] && cat "$CTL/output.$n"
done
[ -f "$CTL/selinux-enforce-at-exit" ] && echo "vm-run: selinux enforce at exit=$(cat "$CTL/selinux-enforce-at-exit")" >&2
if [ $FAIL = 1 ]; then
  echo "vm-run: qemu/serial tail:" >&2
  tail -n 5 "$RUN/qemu.log" >&2; tail -n 25 "$RUN/serial.$BOOT.log" >&2
fi
[ "${VMRUN_QUIET:-0}" = 1 ] || echo "vm-run: rc=$R boots=$BOOT$TIMES" >&2
exit "$R"
