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
#   all        every tier, in that order
# Run as root on a fresh Debian 12 machine (every tier but fast): installs what the tests need (Debian packages, the
# zig toolchain for glibc-2.17 builds), builds the cached test guests (tests/harness/build-guest.sh, in the background
# while cargo compiles), then runs the tier. Each step's time is printed (`== STEP: N s`); tests/harness/NOTES.md
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
# The nspawn guests (rootfs-ns, rootfs-219, and rootfs-db, rootfs-ha, rootfs-docker-ns derived from rootfs-ns:
# packaging and nspawn tiers) first, while cargo compiles; then, for the vm
# tier, the qemu images (build-guest.sh without --nspawn-only: qemu, the SELinux image, docker, crypt), while the
# packaging and nspawn tests run. Both build the systemd 219 guest (3-6 minutes, once); in CI a missing 219 source
# fails here. build-guest.sh replaces no output another run uses: rootfs-ns and rootfs-219 stay as they are while
# the images are built.
GUESTS_PID='' GUESTS_LOG='' GUESTS_KIND='' GUESTS_NEXT=''
guests_start() { # guests_start nspawn|vm
  local mode=()
  [ "$1" = nspawn ] && mode=(--nspawn-only)
  mkdir -p target
  GUESTS_LOG=$(mktemp target/build-guest.XXXXXX.log)
  log "guests ($1): tests/harness/build-guest.sh ${mode[*]} (background; log $GUESTS_LOG)"
  GUESTS_T=$SECONDS GUESTS_KIND=$1
  # Its own process group (setsid), so that an interrupted or failed run stops the whole build.
  setsid tests/harness/build-guest.sh "${mode[@]}" > "$GUESTS_LOG" 2>&1 &
  GUESTS_PID=$!
}
# guests_need nspawn|vm: waits for the build those tests need, shows its log, fails the run when it failed; then
# starts the next build, if any.
guests_need() {
  [ -n "$GUESTS_PID" ] || return 0
  [ "$1" = nspawn ] && [ "$GUESTS_KIND" = vm ] && [ -z "$GUESTS_NEXT" ] && [ "$TIER" = all ] && return 0
  local rc=0 t=$SECONDS
  wait "$GUESTS_PID" || rc=$?
  GUESTS_PID=''
  sed 's/^/   | /' "$GUESTS_LOG"; rm -f "$GUESTS_LOG"
  log "guests ($GUESTS_KIND): built in $((SECONDS - GUESTS_T)) s (waited $((SECONDS - t)) s for it)"
  [ $rc = 0 ] || { echo "tests/run.sh: tests/harness/build-guest.sh failed (rc $rc)" >&2; exit 1; }
  if [ -n "$GUESTS_NEXT" ]; then GUESTS_NEXT=''; guests_start vm; fi
}
# An interrupted or failed run does not leave the build going.
trap '[ -z "$GUESTS_PID" ] || kill -TERM -- "-$GUESTS_PID" 2>/dev/null || true' EXIT
case $TIER in
  nspawn | packaging) guests_start nspawn;;
  vm) guests_start vm;;
  all) guests_start nspawn; [ "$NO_VM" = 1 ] || GUESTS_NEXT=vm;;
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
  step "cargo build: ${args[*]}" cargo test "${FEATURES[@]}" --no-run "${args[@]}"
  guests_need "$need"
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

# ---- packaging ----------------------------------------------------------------------------------------------------
if in_tier packaging; then
  build_packages
  # shellcheck disable=SC2086
  cargo_test nspawn $TESTS_PACKAGING
  # The release profile: the cli suite against the binary the packages ship (LTO, panic=abort, stripped).
  REL=$(realpath "${CARGO_TARGET_DIR:-target}")/x86_64-unknown-linux-gnu/release/ade-prep
  [ -x "$REL" ] || { echo "tests/run.sh: no $REL after packaging/build.sh" >&2; exit 1; }
  step "cargo test: tests/{$TESTS_FAST} against the release binary ($REL)" \
    env ADE_PREP_TEST_BIN="$REL" cargo test "${FEATURES[@]}" "${FAST_ARGS[@]}"
fi

# ---- nspawn -------------------------------------------------------------------------------------------------------
# shellcheck disable=SC2086
if in_tier nspawn; then cargo_test nspawn $TESTS_NSPAWN; fi

# ---- vm -----------------------------------------------------------------------------------------------------------
# shellcheck disable=SC2086
# One guest at a time (tests/common one_guest); --nocapture shows each scenario's timeline and its time.
if in_tier vm && [ $NO_VM = 0 ]; then build_packages; cargo_test vm $TESTS_VM -- --nocapture; fi

guests_need vm
log "tests/run.sh $TIER: all passed in $((SECONDS - T_ALL)) s"
