#!/bin/bash
# tests/run.sh — the one test command (README.md, .ci/run). Run as root on a fresh Debian 12 machine:
# installs what the tests need (Debian packages, the zig toolchain for glibc-2.17 builds), builds the cached test
# guests (tests/harness/build-guest.sh: nspawn roots with systemd 252 and RHEL 7's systemd 219, qemu images), then
# runs fmt, clippy and every test; the nspawn suites run on both systemd guests.
# Env: ADE_HARNESS_DIR (cache, default /var/cache/ade-prep-harness), SKIP_VM=1 skips the qemu image build and tests,
#      ADE_SYSTEMD219_TARBALL (the systemd 219 source; default ../shared/vendor/, else a download),
#      ADE_NSPAWN_GUESTS (default "252 219").
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (mounts, nspawn, qemu)" >&2; exit 2; }

log() { printf '== %s\n' "$*"; }

# Debian packages the tests call.
PKGS="psmisc lsof time bc e2fsprogs util-linux procps debootstrap systemd-container dbus shellcheck cryptsetup-bin
      debhelper dpkg-dev fakeroot lintian rpm rpmlint openssl curl"
missing=()
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The release package is built for glibc 2.17 with cargo-zigbuild.
if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
  log "installing ziglang and cargo-zigbuild (pip)"
  pip install -q ziglang cargo-zigbuild
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

# Debian's etcd (tests/fleet): unpacked into the harness cache, never installed (no system service is started).
ETCD_DIR="${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}/etcd"
if [ ! -x "$ETCD_DIR/usr/bin/etcd" ] || [ ! -x "$ETCD_DIR/usr/bin/etcdctl" ]; then
  log "fetching Debian's etcd-server and etcd-client into $ETCD_DIR"
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download -qq etcd-server etcd-client 2>/dev/null) || { apt-get update -qq; (cd "$dl" && apt-get download -qq etcd-server etcd-client); }
  mkdir -p "$ETCD_DIR"
  for deb in "$dl"/*.deb; do dpkg -x "$deb" "$ETCD_DIR"; done
  rm -rf "$dl"
fi
export ADE_ETCD_DIR="$ETCD_DIR"

# The cached guests (skipped steps when already built). Both modes build the systemd 219 guest (about 3 minutes,
# once); in CI a missing 219 source fails here.
if [ -x tests/harness/build-guest.sh ]; then
  if [ "${SKIP_VM:-0}" = 1 ]; then tests/harness/build-guest.sh --nspawn-only; else tests/harness/build-guest.sh; fi
fi

# Every shell script of the repository (found by its #! line, so a new one cannot be forgotten).
log "shellcheck"
mapfile -t scripts < <(git ls-files | while read -r f; do
  [ -f "$f" ] && head -n 1 "$f" | grep -qE '^#!(/usr)?/bin/(env )?(ba)?sh' && echo "$f"; done)
[ ${#scripts[@]} -gt 10 ] || { echo "tests/run.sh: found only ${#scripts[@]} shell scripts" >&2; exit 1; }
shellcheck "${scripts[@]}"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets -- -D warnings
log "cargo test"
# Under the test command a test that cannot run is a failure, not a skip (tests/common skip()).
export ADE_TEST_COMMAND=1
# Every nspawn suite runs on Debian 12's systemd 252 and on RHEL 7's 219 (tests/common nspawn_guests).
export ADE_NSPAWN_GUESTS=${ADE_NSPAWN_GUESTS:-252 219}
cargo test --all-targets --features failpoints   # failpoints: tests/nspawn/crash.rs
log "all tests passed"
