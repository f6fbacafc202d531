#!/bin/bash
# Runs in the SELinux qemu guest (vm-run.sh -s) from tests/packaging_vm.rs, in /work holding the .deb.
#   guest-selinux.sh install     install the .deb with SELinux enforcing; labels, units, scan under enforcing
#   guest-selinux.sh roundtrip   the same, then prepare/restore with a real workload unit (redis-server):
#                                enforcing -> permissive for the window -> enforcing again
# Prints KEY=value facts the Rust test asserts on. While enforcing, this job may not write to the 9p share, so the
# output goes to a local file, printed at the end once SELinux is permissive again.
set -u
mode=${1:?install or roundtrip}
exec 3>&1 > /root/out.log 2>&1
fact() { printf '%s=%s\n' "$1" "$2"; }
E=/sys/fs/selinux/enforce
cp /work/ade-prep_*_amd64.deb /root/ || { echo "no .deb in /work" >&3; exit 10; }

if [ "$mode" = roundtrip ]; then
  # A real workload on /: redis-server (installed, disabled in the guest image), named in a config drop-in.
  mkdir -p /etc/ade-prep/config.d
  printf '[workloads.redis]\nunits = ["redis-server.service"]\ncomms = ["redis-server"]\n' \
    > /etc/ade-prep/config.d/50-test.toml
  systemctl enable --now redis-server.service
fi

echo 1 > $E
fact enforce_at_install "$(cat $E)"
dpkg -i /root/ade-prep_*_amd64.deb; fact install_rc $?
fact label_service "$(stat -c %C /lib/systemd/system/ade-prep.service | cut -d: -f3)"
fact label_binary "$(stat -c %C /usr/bin/ade-prep | cut -d: -f3)"
fact label_config "$(stat -c %C /etc/ade-prep/config.toml | cut -d: -f3)"
fact path_enabled "$(systemctl is-enabled ade-prep.path 2>&1)"
fact path_active "$(systemctl is-active ade-prep.path 2>&1)"
ade-prep scan > /root/scan.txt 2>&1; fact scan_rc $?
head -n 5 /root/scan.txt

if [ "$mode" = roundtrip ]; then
  fact redis_before "$(systemctl is-active redis-server.service)"
  fact enforce_before "$(cat $E)"
  # This guest is no Azure VM (no guest agent, no ADE, 1 GB): force exactly the checks `check` says fail.
  ade-prep check; fact check_rc $?
  force=$(ade-prep check 2>&1 | grep -o -- '--force [a-z0-9,-]*' | head -n 1)
  fact force "$force"
  # shellcheck disable=SC2086   # "--force IDS" is two words
  ade-prep -v prepare $force; fact prepare_rc $?
  fact redis_during "$(systemctl is-active redis-server.service)"
  fact enforce_during "$(cat $E)"
  ade-prep -v restore; fact restore_rc $?
  fact redis_after "$(systemctl is-active redis-server.service)"
  fact enforce_after "$(cat $E)"
fi

echo 0 > $E
cat /root/out.log >&3
exit 0
