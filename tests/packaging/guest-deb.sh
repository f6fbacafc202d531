#!/bin/bash
# Runs in the Debian 12 nspawn container (tests/packaging/deb_nspawn.rs through tests/harness/nspawn-run.sh -g 252),
# in /work holding the .deb.
# Installs it, looks at what systemd and the binary make of it, and purges it. Prints KEY=value facts that the Rust
# test asserts on; a step that cannot go on exits non-zero with a message.
set -u
deb=$(ls /work/ade-prep_*_amd64.deb) || { echo "no .deb in /work"; exit 10; }
fact() { printf '%s=%s\n' "$1" "$2"; }
U=/lib/systemd/system

dpkg -i "$deb" > /tmp/dpkg-i.log 2>&1; fact install_rc $?
cat /tmp/dpkg-i.log
fact version "$(ade-prep --version)"
fact service_known "$(systemctl cat ade-prep.service > /dev/null 2>&1 && echo yes || echo no)"
fact path_known "$(systemctl cat ade-prep.path > /dev/null 2>&1 && echo yes || echo no)"
fact path_enabled "$(systemctl is-enabled ade-prep.path 2>&1)"
fact path_active "$(systemctl is-active ade-prep.path 2>&1)"
fact service_enabled "$(systemctl is-enabled ade-prep.service 2>&1)"
fact service_active "$(systemctl is-active ade-prep.service 2>&1)"
fact run_dir "$(stat -c '%a %U' /run/ade-prep 2>&1)"
fact conffile "$(dpkg-query -W -f='${Conffiles}' ade-prep | awk '{print $1}' | tr '\n' ' ')"
systemd-analyze verify --man=no "$U/ade-prep.service" "$U/ade-prep.path" > /tmp/verify.log 2>&1; fact verify_rc $?
cat /tmp/verify.log
for f in /usr/share/man/man1/ade-prep.1.gz /usr/share/bash-completion/completions/ade-prep \
         /usr/share/zsh/vendor-completions/_ade-prep /usr/share/fish/vendor_completions.d/ade-prep.fish; do
  [ -f "$f" ] || fact missing "$f"
done

ade-prep scan > /tmp/scan.txt 2>&1; fact scan_rc $?
head -n 5 /tmp/scan.txt
fact scan_pid1_class "$(awk '$1 == 1 {print $5}' /tmp/scan.txt)"
ade-prep check > /tmp/check.txt 2>&1; fact check_rc $?
cat /tmp/check.txt

# The guest agent's order: ADE's handler folder appears (the path unit starts the service: `run` waits for the
# settings), then config/0.settings, here an enable for the data volumes only: on Debian 12, which ADE does not
# unmount, `run` decides there is nothing to do.
H=/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.7
started() { [ "$(systemctl show -P ExecMainStartTimestampMonotonic ade-prep.service)" != 0 ]; }
mkdir -p /var/lib/waagent; sleep 1; mkdir "$H"
for _ in $(seq 100); do started && break; sleep 0.1; done
fact triggered_by_handler_dir "$(started && echo yes || echo no)"
sleep 2
mkdir "$H/config"
echo '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"Data"}}}]}' \
  > "$H/config/0.settings"
for _ in $(seq 600); do
  [ "$(systemctl show -P ActiveState ade-prep.service)" = activating ] || break; sleep 0.1
done
fact service_after_trigger "$(systemctl show -P ActiveState ade-prep.service) $(systemctl show -P SubState ade-prep.service) $(systemctl show -P Result ade-prep.service)"
fact service_status "$(systemctl show -P StatusText ade-prep.service)"
fact service_decision_logged "$(journalctl -b -u ade-prep.service --no-pager | grep -c 'ADE does not unmount / on this distribution')"
systemctl status --no-pager ade-prep.service ade-prep.path 2>&1 | head -n 20
systemctl stop ade-prep.service ade-prep.path; systemctl reset-failed ade-prep.service ade-prep.path 2>/dev/null
rm -rf /var/lib/waagent

# Purge refuses while the journal says a window is open, and leaves the package installed.
mkdir -p /var/lib/ade-prep
printf '{\n  "version": 1,\n  "phase": "open",\n  "entries": []\n}\n' > /var/lib/ade-prep/state.json
dpkg --purge ade-prep > /tmp/purge1.log 2>&1; fact purge_open_rc $?
cat /tmp/purge1.log
fact after_refusal "$(dpkg-query -W -f='${Status}' ade-prep 2>&1)"
fact after_refusal_binary "$([ -x /usr/bin/ade-prep ] && echo present || echo gone)"

# With the window closed, purge leaves nothing behind (an administrator's drop-in included).
printf '{\n  "version": 1,\n  "phase": "closed",\n  "entries": []\n}\n' > /var/lib/ade-prep/state.json
mkdir -p /etc/ade-prep/config.d; echo '[stray]' > /etc/ade-prep/config.d/50-local.toml
dpkg --purge ade-prep > /tmp/purge2.log 2>&1; fact purge_rc $?
cat /tmp/purge2.log
systemctl daemon-reload
left=
for f in /etc/ade-prep /var/lib/ade-prep /run/ade-prep /usr/bin/ade-prep "$U"/ade-prep.* /usr/lib/systemd/system/ade-prep.* \
         /etc/systemd/system/*/ade-prep.* /etc/systemd/system/ade-prep.* /usr/lib/tmpfiles.d/ade-prep.conf \
         /usr/lib/systemd/system-preset/50-ade-prep.preset /usr/share/man/man1/ade-prep* \
         /lib/systemd/system-generators/ade-prep-generator /usr/lib/systemd/system-generators/ade-prep-generator \
         /var/lib/systemd/deb-systemd-helper-enabled/*ade-prep* /var/lib/systemd/deb-systemd-helper-enabled/*/ade-prep*; do
  if [ -e "$f" ] || [ -L "$f" ]; then left="$left $f"; fi
done
fact left_behind "${left:-nothing}"
fact units_after_purge "$(systemctl list-unit-files 'ade-prep*' --no-legend 2>&1 | wc -l)"
fact status_after_purge "$(dpkg-query -W -f='${Status}' ade-prep 2>&1)"
exit 0
