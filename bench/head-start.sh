#!/bin/bash
# bench/head-start.sh [ADE_PREP_BIN] - issue 11 §5: the time from ADE's settings file appearing to ade-prep.service's
# READY (the window open), in a real systemd 252 booted with tests/harness/nspawn-run.sh, with what a busy Azure VM
# runs besides: AMA-like resident daemons (`agent.py -metrics`, `-syslogconfig`) and a LAD-like `diagnostic.py
# -daemon` (never to be waited for: FINDINGS 30), 10 workload units (tests/scenarios ade-slow@1..10, 2 s stops), and
# a Custom-Script-like handler operation (`custom-script-shim enable`, run by a stand-in of the agent's
# `-run-exthandlers` process) that ends 20 s after the settings appear (waited for: FINDINGS 28-29).
# The real units: ade-prep.path starts ade-prep.service (`--force distro` through a drop-in: the guest is Debian).
# Goal: READY within 45 s of the settings (ADE's daemon starts its OS work 60 s after its enable). Prints the figure;
# asserts nothing. Run as root on the host after `cargo build`; ADE_PREP_BIN defaults to target/debug/ade-prep.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != --inside ]; then
  BIN=$(realpath "${1:-$HERE/target/debug/ade-prep}")
  [ -x "$BIN" ] || { echo "bench/head-start.sh: no $BIN (cargo build first)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "bench/head-start.sh: run as root (systemd-nspawn)" >&2; exit 2; }
  NSPAWN_BIND_RO="$(dirname "$BIN"):/ade-bench" exec "$HERE/tests/harness/nspawn-run.sh" -t 600 "$HERE" \
    "bench/head-start.sh --inside /ade-bench/$(basename "$BIN")"
fi

# ---- inside the container ----
BIN=$2
W=/var/lib/waagent
ADE=$W/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12
AMA=$W/Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.29.4
LAD=$W/Microsoft.Azure.Diagnostics.LinuxDiagnostic-4.0.0
CSE=$W/Microsoft.Azure.Extensions.CustomScript-2.1.10
UNITS=(ade-slow@{1..10}.service)

tests/scenarios/install.sh
install -d -m 0755 /etc/ade-prep/config.d
printf '[workloads.slow]\nunits = ["ade-slow@*.service"]\n' > /etc/ade-prep/config.d/50-bench.toml
chmod 0644 /etc/ade-prep/config.d/50-bench.toml
install -m 0755 "$BIN" /usr/bin/ade-prep
cp packaging/usr/lib/systemd/system/ade-prep.service packaging/usr/lib/systemd/system/ade-prep.path /etc/systemd/system/
mkdir -p /etc/systemd/system/ade-prep.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/bin/ade-prep run --force distro\n' \
  > /etc/systemd/system/ade-prep.service.d/bench.conf
systemctl daemon-reload
systemctl start "${UNITS[@]}"
sleep 1

# Resident daemons of other extensions (started by their enable long ago, reparented to 1).
mkdir -p "$AMA" "$LAD" "$CSE/bin" "$W"
printf 'while :; do sleep 3600; done\n' > "$AMA/agent.py"
printf 'while :; do sleep 3600; done\n' > "$LAD/diagnostic.py"
setsid /bin/sh "$AMA/agent.py" -metrics </dev/null >/dev/null 2>&1 &
setsid /bin/sh "$AMA/agent.py" -syslogconfig </dev/null >/dev/null 2>&1 &
setsid /bin/sh "$LAD/diagnostic.py" -daemon </dev/null >/dev/null 2>&1 &
# The agent's handler runner and a Custom Script enable that ends after 20 s.
printf 'sleep 20\n' > "$CSE/bin/custom-script-shim"
printf 'sh -c "/bin/sh %s/bin/custom-script-shim enable"\nsleep 3600\n' "$CSE" > /tmp/bench-agent
systemctl start ade-prep.path

now() { date +%s.%N; }
t0=$(now)
setsid /bin/sh /tmp/bench-agent -run-exthandlers </dev/null >/dev/null 2>&1 &
# The agent delivers ADE: folder, settings (in place), and the handler's enable would follow.
mkdir -p "$ADE/config" "$ADE/status"
printf '%s' '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"All"}}}]}' \
  > "$ADE/config/0.settings"
until [ "$(systemctl show -P ActiveState ade-prep.service)" = active ]; do
  [ "$(systemctl show -P ActiveState ade-prep.service)" = failed ] && { journalctl -u ade-prep.service --no-pager | tail; exit 1; }
  sleep 0.1
done
t1=$(now)
for u in "${UNITS[@]}"; do echo "$u: $(systemctl is-active "$u")"; done | sort | uniq -c -f1 | sed 's/^/  /'
journalctl -u ade-prep.service --no-pager -o cat | grep -E "waiting for extension|prepare finished|still running" | sed 's/^/  /' || true
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "head start: READY %.1f s after ADE'"'"'s settings appeared (goal <= 45 s; a custom-script enable of 20 s, AMA/LAD daemons, 10 units)\n", b - a }'
/usr/bin/ade-prep restore >/dev/null
