#!/bin/bash
# smoke.sh [--nspawn-only] - self-test of the harness; prints timings.
#   Builds what is missing (build-guest.sh --with-plain-image | --nspawn-only; SMOKE_NO_BUILD=1
#   skips that), then checks:
#   nspawn: systemd Version over the system bus, a transient unit started and
#           active, the job's own unit by GetUnitByPID, redis-server disabled
#           but startable (PONG), exit code, -t timeout, NSPAWN_BIND_RO; the
#           same on the systemd 219 guest (-g 219)
#   vm:     plain guest (systemd, /work share, redis PONG, exit code); SELinux guest
#           (enforce exists, writing 1 makes it enforcing, /work writable and
#           executable while enforcing, a reboot requested while enforcing,
#           permissive again after it); reboot round trip
#           (boot 2 sees a file written in boot 1, then a hard reset, boot 3
#           sees both files)
# Ends with "N passed, N failed"; exit 0 only when all passed.
# shellcheck disable=SC2016   # the job scripts expand in the guest
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ONLY=''
# The VM part boots the plain image too, which only --with-plain-image builds (no test of tests/run.sh boots it).
case ${1:-} in --nspawn-only) ONLY=--nspawn-only;; "") ONLY=--with-plain-image;; *) echo "usage: $0 [--nspawn-only]" >&2; exit 2;; esac
if [ "${SMOKE_NO_BUILD:-0}" != 1 ]; then
  "$HERE/build-guest.sh" $ONLY || { echo "smoke: build-guest.sh failed"; echo "0 passed, 1 failed"; exit 1; }
fi
W=$(mktemp -d /tmp/ade-smoke.XXXXXX); trap 'rm -rf "$W"' EXIT
PASS=0 FAILED=0
# check NAME EXPECTED_RC GREP_PATTERN... -- RUNNER ARGS... : run, compare rc, grep output
check() {
  local name=$1 want=$2 pats=() t rc p bad=''
  shift 2
  while [ "$1" != -- ]; do pats+=("$1"); shift; done; shift
  t=$(date +%s%N)
  "$@" > "$W/out" 2> "$W/err"; rc=$?
  t=$((($(date +%s%N) - t) / 1000000))
  [ "$rc" = "$want" ] || bad="rc=$rc, want $want"
  for p in "${pats[@]}"; do grep -qE -- "$p" "$W/out" "$W/err" || bad="$bad; no /$p/"; done
  if [ -z "$bad" ]; then
    PASS=$((PASS + 1)); printf 'ok   %-34s %6d ms\n' "$name" "$t"
  else
    FAILED=$((FAILED + 1)); printf 'FAIL %-34s %6d ms: %s\n' "$name" "$t" "$bad"
    sed 's/^/  out| /' "$W/out"; sed 's/^/  err| /' "$W/err" | tail -n 40
  fi
  grep -h '^vm-run: rc=' "$W/err" | sed 's/^/     /'
  grep -h '^nspawn-run: booted' "$W/err" | sed 's/^/     /'
}

# --- nspawn ---------------------------------------------------------------
mkdir -p "$W/ro"; echo hello-ro > "$W/ro/f"
NSCMD='set -e
busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager Version
busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager GetUnitByPID u $$
systemd-run -q --unit=ade-smoke.service sleep 300
systemctl is-active ade-smoke.service
systemctl stop ade-smoke.service
systemctl is-enabled redis-server.service || true
systemctl start redis-server.service; redis-cli ping
cat /ro/f; echo written > /work/ns-file; exit 3'
NSPAWN_TIMING=1 NSPAWN_BIND_RO="$W/ro:/ro" check "nspawn: bus, units, redis" 3 \
  '^s "252' 'nspawn_2drun_2djob_2escope' '^active$' '^disabled$' '^PONG$' 'hello-ro' -- \
  "$HERE/nspawn-run.sh" "$W" "$NSCMD"
[ "$(cat "$W/ns-file" 2>/dev/null)" = written ] || { FAILED=$((FAILED + 1)); echo "FAIL nspawn: /work not written"; }
check "nspawn: -t timeout" 124 -- "$HERE/nspawn-run.sh" -t 2 "$W" 'sleep 30'
rm -f "$W/ns-file"
NSPAWN_TIMING=1 NSPAWN_BIND_RO="$W/ro:/ro" check "nspawn -g 219: bus, units, redis" 3 \
  '^s "219' 'nspawn_2drun_2djob_2escope' '^active$' '^disabled$' '^PONG$' 'hello-ro' -- \
  "$HERE/nspawn-run.sh" -g 219 "$W" "$NSCMD"
[ "$(cat "$W/ns-file" 2>/dev/null)" = written ] || { FAILED=$((FAILED + 1)); echo "FAIL nspawn -g 219: /work not written"; }

if [ -z "$ONLY" ]; then
# --- vm -------------------------------------------------------------------
check "vm: plain, redis" 7 '^systemd 252' '^work-ok$' '^PONG$' 'rc=7 boots=1' -- "$HERE/vm-run.sh" "$W" \
  'systemctl --version | head -n1; test -f ns-file && echo work-ok; test ! -e /sys/fs/selinux/enforce
  systemctl start redis-server; redis-cli ping; exit 7'

# boot 1 goes enforcing and reboots from there (vm-run-ctl must get its
# request out through 9p); boot 2 comes up permissive again.
check "vm -s: selinux enforcing, reboot" 0 '^before=0$' '^after=1$' '^work-write-exec-ok$' '^boot2 enforce=0$' 'rc=0 boots=2' -- \
  "$HERE/vm-run.sh" -s "$W" 'set -e; test -e /sys/fs/selinux/enforce
  if [ "$VMRUN_BOOT" = 1 ]; then
    echo before=$(cat /sys/fs/selinux/enforce); echo 1 > /sys/fs/selinux/enforce
    echo after=$(cat /sys/fs/selinux/enforce)
    echo x > /work/se-file && cp /bin/true /work/se-true && /work/se-true && echo work-write-exec-ok
    vm-run-ctl reboot
  fi
  echo boot2 enforce=$(cat /sys/fs/selinux/enforce); echo 1 > /sys/fs/selinux/enforce'
grep -q 'enforce at exit=1' "$W/err" || { FAILED=$((FAILED + 1)); echo "FAIL vm -s: enforce at exit not reported"; }

check "vm: reboot + hard reset" 0 '^boot1$' '^boot2 sees a$' '^boot3 sees a b$' 'rc=0 boots=3' -- \
  "$HERE/vm-run.sh" "$W" 'case $VMRUN_BOOT in
  1) echo boot1; echo a > /var/tmp/smoke-a; sync; vm-run-ctl reboot;;
  2) echo "boot2 sees $(cat /var/tmp/smoke-a)"; echo b > /var/tmp/smoke-b; sync; vm-run-ctl hard-reset;;
  3) echo "boot3 sees $(cat /var/tmp/smoke-a /var/tmp/smoke-b | tr "\n" " " | sed "s/ $//")";;
  *) exit 9;;
esac'
fi

echo "$PASS passed, $FAILED failed"
[ "$FAILED" = 0 ]
