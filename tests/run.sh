#!/bin/bash
# tests/run.sh [TIER] — the one test command (README.md, .ci/run). TIER (default: all, what CI runs):
#   fast       no root needed: shellcheck (every shell script), cargo fmt --check, clippy -D warnings with the MSRV
#              check (see msrv below), the unit tests and tests/cli. Under a minute warm. Not root: a test that
#              needs root prints SKIPPED (under CI=true it fails).
#   nspawn     tests/nspawn: every suite on Debian 12's systemd 252 and RHEL 7's 219 (systemd-nspawn guests); the
#              workloads, cluster and docker suites on 252 guests with the real packages (db, ha, docker)
#   packaging  the .deb and .rpm built (packaging/build.sh) and checked (tests/packaging: lintian, rpmlint, rpm --root,
#              the .deb installed, run and purged in a Debian 12 nspawn guest), then tests/cli again against the
#              release binary the packages ship (the release profile's run)
#   vm         tests/vm: the qemu guests (TCG), only where the kernel matters: reboots, power cuts, ADE's pivot,
#              SELinux enforcing, dm-crypt
#   all        every tier: fast first, then the vm tier in one lane and the packaging and nspawn tiers in a second,
#              at the same time (the second lane's output is shown when both are done)
# Run as root on a fresh Debian 12 machine (every tier but fast): installs what the tests need (Debian packages, the
# zig toolchain for glibc-2.17 builds), builds the cached test guests (tests/harness/build-guest.sh, in the background
# while cargo compiles: the qemu images first under `all`), then runs the tier. Each step's time is printed (`== STEP: N s`); tests/harness/NOTES.md
# has the budget.
# Env: ADE_HARNESS_DIR (cache, default /var/cache/ade-prep-harness), SKIP_VM=1 (all: no qemu image build, no vm tier),
#      ADE_SYSTEMD219_TARBALL (the systemd 219 source; default ../shared/vendor/, else a download),
#      ADE_NSPAWN_GUESTS (default "252 219").
set -euo pipefail
cd "$(dirname "$0")/.."
TIER=${1:-all}

# The test targets (tests/NAME/main.rs) of each tier. A new tests/NAME/ goes into one of them: `all` fails on a test
# target that no tier runs.
TESTS_FAST="cli"
TESTS_NSPAWN="nspawn fleet"
TESTS_PACKAGING="packaging"
TESTS_VM="vm"

FAST_ARGS=()
for t in $TESTS_FAST; do FAST_ARGS+=(--test "$t"); done

case $TIER in
  fast | nspawn | packaging | vm | all) ;;
  *) echo "usage: tests/run.sh [fast|nspawn|packaging|vm|all]" >&2; exit 2;;
esac
in_tier() { [ "$TIER" = all ] || [ "$TIER" = "$1" ]; }
[ "$TIER" = all ] && [ "${SKIP_VM:-0}" = 1 ] && NO_VM=1 || NO_VM=0

log() { printf '== %s\n' "$*"; }
T_ALL=$SECONDS
# step NAME CMD...: runs CMD, prints its time.
step() {
  local name=$1 t=$SECONDS rc=0; shift
  log "$name"
  "$@" || rc=$?
  log "$name: $((SECONDS - t)) s$([ $rc = 0 ] || echo ", FAILED (rc $rc)")"
  return $rc
}

ROOT=0; [ "$(id -u)" = 0 ] && ROOT=1
if [ "$TIER" != fast ] && [ $ROOT = 0 ]; then
  echo "tests/run.sh $TIER: run as root (mounts, nspawn, qemu)" >&2; exit 2
fi
# Under the test command a test that cannot run is a failure, not a skip (tests/common skip()); a fast run as
# another user skips what needs root.
[ $ROOT = 1 ] && export ADE_TEST_COMMAND=1
# Every nspawn suite runs on Debian 12's systemd 252 and on RHEL 7's 219 (tests/common nspawn_guests).
export ADE_NSPAWN_GUESTS=${ADE_NSPAWN_GUESTS:-252 219}
# One feature set for every cargo call, so the crate is built once (failpoints: tests/nspawn/crash.rs).
FEATURES=(--features failpoints)

# ---- what the tests need (every tier but fast) ------------------------------------------------------------------
install_tools() {
  # Debian packages the tests call.
  local p missing=()
  local PKGS="psmisc lsof time bc e2fsprogs util-linux procps debootstrap systemd-container dbus shellcheck
      cryptsetup-bin debhelper dpkg-dev fakeroot lintian rpm rpmlint openssl curl"
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
  local deb dl etcd_dir="${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}/etcd"
  if [ ! -x "$etcd_dir/usr/bin/etcd" ] || [ ! -x "$etcd_dir/usr/bin/etcdctl" ]; then
    log "fetching Debian's etcd-server and etcd-client into $etcd_dir"
    dl=$(mktemp -d)
    (cd "$dl" && apt-get download -qq etcd-server etcd-client 2>/dev/null) ||
      { apt-get update -qq; (cd "$dl" && apt-get download -qq etcd-server etcd-client); }
    mkdir -p "$etcd_dir"
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$etcd_dir"; done
    rm -rf "$dl"
  fi
}
[ "$TIER" = fast ] || step "tools" install_tools
export ADE_ETCD_DIR="${ADE_ETCD_DIR:-${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}/etcd}"

# ---- the cached guests, built in the background while cargo compiles and tests run ------------------------------
# The vm tier is the longest (TCG), so under `all` its guests come first (build-guest.sh --vm-only: the qemu images,
# and rootfs-ns for the packaging tier), then the nspawn guests (--nspawn-only: the 219 build, rootfs-db, -ha,
# -docker-ns), built while the vm tier runs; in CI a missing 219 source fails there. build-guest.sh replaces no
# output another run uses. Each build's log and exit code land in
# target/guests/KIND.{log,rc}; guests_need waits for one.
GUESTS_PID='' GUESTS_DIR=target/guests PKG_GUESTS=nspawn
guests_start() { # guests_start KIND... (vm | nspawn): builds them in turn, in the background
  rm -rf "$GUESTS_DIR"; mkdir -p "$GUESTS_DIR"
  log "guests ($*): tests/harness/build-guest.sh, in the background (logs in $GUESTS_DIR/)"
  PKG_GUESTS=nspawn; case " $* " in *" vm "*) PKG_GUESTS=vm;; esac   # rootfs-ns: in both builds
  # Its own process group (setsid), so that an interrupted or failed run stops the whole build.
  # shellcheck disable=SC2016   # expanded by that bash
  setsid bash -c 'd=$1; shift
    for k in "$@"; do
      t=$SECONDS; tests/harness/build-guest.sh "--$k-only" > "$d/$k.log" 2>&1; rc=$?
      echo "$rc $((SECONDS - t))" > "$d/$k.rc"; [ "$rc" = 0 ] || exit "$rc"
    done' guests "$GUESTS_DIR" "$@" &
  GUESTS_PID=$!
}
guests_need() { # guests_need KIND: waits for that build, shows its log, fails the run when it failed
  [ -n "$GUESTS_PID" ] || return 0
  local t=$SECONDS rc took
  while [ ! -e "$GUESTS_DIR/$1.rc" ]; do
    if ! kill -0 "$GUESTS_PID" 2>/dev/null && [ ! -e "$GUESTS_DIR/$1.rc" ]; then
      echo "tests/run.sh: tests/harness/build-guest.sh ended before the $1 guests (an earlier build failed)" >&2
      return 1
    fi
    sleep 2
  done
  read -r rc took < "$GUESTS_DIR/$1.rc"
  sed 's/^/   | /' "$GUESTS_DIR/$1.log"
  log "guests ($1): built in $took s (waited $((SECONDS - t)) s for it)"
  [ "$rc" = 0 ] || { echo "tests/run.sh: tests/harness/build-guest.sh --$1-only failed (rc $rc)" >&2; return 1; }
}
# An interrupted or failed run leaves neither the build nor the nspawn lane (see `all` below) going.
LANE_PID=''
stop_background() {
  [ -z "$GUESTS_PID" ] || kill -TERM -- "-$GUESTS_PID" 2>/dev/null || true
  [ -z "$LANE_PID" ] || kill -TERM -- "-$LANE_PID" 2>/dev/null || true
}
trap stop_background EXIT
case $TIER in
  nspawn | packaging) guests_start nspawn;;
  vm) guests_start vm;;
  all) if [ "$NO_VM" = 1 ]; then guests_start nspawn; else guests_start vm nspawn; fi;;
esac

# ---- fast ---------------------------------------------------------------------------------------------------------
shellcheck_all() {
  # Every shell script of the repository (found by its #! line, so a new one cannot be forgotten).
  local scripts
  mapfile -t scripts < <(git ls-files | while read -r f; do
    [ -f "$f" ] && head -n 1 "$f" | grep -qE '^#!(/usr)?/bin/(env )?(ba)?sh' && echo "$f"; done)
  [ ${#scripts[@]} -gt 10 ] || { echo "tests/run.sh: found only ${#scripts[@]} shell scripts" >&2; return 1; }
  shellcheck "${scripts[@]}"
}
# The MSRV (Cargo.toml's rust-version): rustup cannot download toolchains here, so no build with that toolchain.
# Instead: clippy's incompatible_msrv lint, denied, flags a use of a standard-library item stabilised after it (clippy
# reads rust-version from Cargo.toml); and every locked dependency must declare a rust-version no newer (or none).
# Neither catches a language feature newer than the MSRV: a build with that toolchain would (README says so).
MSRV_PY='
import json, sys
m = json.load(sys.stdin)
ours = next(p for p in m["packages"] if p["id"] in m["workspace_members"])
def v(s):
    return (tuple(int(x) for x in s.split(".")) + (0, 0))[:3]
ids = {n["id"] for n in m["resolve"]["nodes"]}
bad = [p["name"] + " " + p["version"] + " needs rust " + p["rust_version"] for p in m["packages"]
       if p["id"] in ids and p.get("rust_version") and v(p["rust_version"]) > v(ours["rust_version"])]
if bad:
    sys.exit("dependencies newer than rust-version " + ours["rust_version"] + ": " + "; ".join(bad))
print("msrv: %d crates in the build, none declares a rust-version newer than %s" % (len(ids), ours["rust_version"]))
'
msrv_dependencies() {
  cargo metadata --format-version 1 --locked "${FEATURES[@]}" | python3 -c "$MSRV_PY"
}
if in_tier fast; then
  if command -v shellcheck >/dev/null || [ "$TIER" = all ]; then step "shellcheck" shellcheck_all
  else log "shellcheck: not installed (tests/run.sh with no tier installs it): skipped"; fi
  step "cargo fmt --check" cargo fmt --all -- --check
  step "cargo clippy (MSRV: incompatible_msrv denied)" \
    cargo clippy --all-targets "${FEATURES[@]}" -- -D warnings -D clippy::incompatible_msrv
  step "msrv: dependencies' rust-version" msrv_dependencies
  step "cargo test: unit tests, tests/{$TESTS_FAST}" cargo test "${FEATURES[@]}" --lib --bins --examples "${FAST_ARGS[@]}"
fi

# Every test target belongs to a tier.
if [ "$TIER" = all ]; then
  for d in tests/*/main.rs; do
    t=$(basename "$(dirname "$d")")
    case " $TESTS_FAST $TESTS_NSPAWN $TESTS_PACKAGING $TESTS_VM " in
      *" $t "*) ;;
      *) echo "tests/run.sh: tests/$t is in no tier (add it to a TESTS_* list)" >&2; exit 1;;
    esac
  done
fi

# cargo_test nspawn|vm TARGETS... [-- TEST-ARGS...]: the tests/NAME targets, built first (while the guests may still
# build), then run once the guests they need (nspawn or vm, see guests_need) are there.
cargo_test() {
  local need=$1 args=(); shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=(--test "$1"); shift; done
  step "cargo build: ${args[*]}" cargo test "${FEATURES[@]}" --no-run "${args[@]}" || return
  guests_need "$need" || return
  step "cargo test: ${args[*]}" cargo test "${FEATURES[@]}" "${args[@]}" "$@"
}

# The .deb and .rpm (a release build for glibc 2.17: minutes from nothing, overlapping the guests' build), once; the
# packaging and vm tests find them fresh (tests/common/packages.rs).
PACKAGES_BUILT=0
build_packages() {
  [ $PACKAGES_BUILT = 0 ] || return 0
  mkdir -p target
  step "packages: packaging/build.sh (log target/packaging-build.log)" \
    sh -c 'packaging/build.sh > target/packaging-build.log 2>&1' || { tail -n 40 target/packaging-build.log; return 1; }
  PACKAGES_BUILT=1
}

# ---- packaging, nspawn, vm -------------------------------------------------------------------------------------
# Each returns at its first failure, also where the caller tests it (`||`, where bash's set -e does not apply).
packaging_tier() {
  build_packages || return
  # shellcheck disable=SC2086
  cargo_test "$PKG_GUESTS" $TESTS_PACKAGING || return
  # The release profile: the cli suite against the binary the packages ship (LTO, panic=abort, stripped).
  local rel
  rel=$(realpath "${CARGO_TARGET_DIR:-target}")/x86_64-unknown-linux-gnu/release/ade-prep
  [ -x "$rel" ] || { echo "tests/run.sh: no $rel after packaging/build.sh" >&2; return 1; }
  step "cargo test: tests/{$TESTS_FAST} against the release binary ($rel)" \
    env ADE_PREP_TEST_BIN="$rel" cargo test "${FEATURES[@]}" "${FAST_ARGS[@]}"
}
# shellcheck disable=SC2086
nspawn_tier() { cargo_test nspawn $TESTS_NSPAWN; }
# One guest at a time (tests/common one_guest); --nocapture shows each scenario's timeline and its time.
# shellcheck disable=SC2086
vm_tier() { build_packages || return; cargo_test vm $TESTS_VM -- --nocapture; }

if [ "$TIER" = all ] && [ "$NO_VM" = 0 ]; then
  # Two lanes. The vm tier (qemu under TCG, ~25 minutes) leaves the CPU idle whenever its guest waits (ADE's
  # stand-in, the service's timers, the tests' polls); the packaging and nspawn tiers, in a second lane, run in
  # those gaps, and the nspawn guests build while the first scenarios run (measured in tests/harness/NOTES.md).
  # Every test binary is built first, so that the lanes' cargo calls only run tests. The second lane's output is
  # written to target/lane-nspawn.log and shown when the vm tier is done; a failure of either fails the run.
  build_packages
  ALL_TARGETS=()
  for t in $TESTS_PACKAGING $TESTS_NSPAWN $TESTS_VM; do ALL_TARGETS+=(--test "$t"); done
  step "cargo build: every test target" cargo test "${FEATURES[@]}" --no-run "${ALL_TARGETS[@]}"
  log "lane nspawn: the packaging and nspawn tiers, beside the vm tier (output: target/lane-nspawn.log)"
  set -m   # the lane in its own process group, which stop_background can end whole
  ( trap - EXIT; set -e; packaging_tier; nspawn_tier ) > target/lane-nspawn.log 2>&1 &
  LANE_PID=$!
  set +m
  VM_RC=0
  vm_tier || VM_RC=$?
  LANE_RC=0
  wait "$LANE_PID" || LANE_RC=$?
  LANE_PID=''
  log "lane nspawn: its output"
  cat target/lane-nspawn.log
  log "lane nspawn: $([ $LANE_RC = 0 ] && echo passed || echo "FAILED (rc $LANE_RC)"); vm tier: $([ $VM_RC = 0 ] && echo passed || echo "FAILED (rc $VM_RC)")"
  [ $LANE_RC = 0 ] && [ $VM_RC = 0 ] || exit 1
else
  if in_tier packaging; then packaging_tier; fi
  if in_tier nspawn; then nspawn_tier; fi
  if in_tier vm && [ "$NO_VM" = 0 ]; then vm_tier; fi
fi

log "tests/run.sh $TIER: all passed in $((SECONDS - T_ALL)) s"
