#!/bin/bash
# packaging/build.sh: builds the .deb (dpkg-buildpackage) and the .rpm (rpmbuild) from this checkout into
# target/packages/, with the version from Cargo.toml. Needs cargo, cargo-zigbuild (pip install ziglang
# cargo-zigbuild), debhelper, dpkg-dev and rpm; tests/run.sh installs them. One build at a time (flock).
# Exit: 0 ok, 1 a build failed.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
OUT=$SRC/target/packages
V=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$V" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
# dpkg-buildpackage writes its results next to the checkout (..), which git worktrees beside each other share (and
# removes the old ones there first): one build at a time in that folder too.
exec 8>"$SRC/../.ade-prep-build.lock"
flock 8
T0=$SECONDS

# .deb: dpkg-buildpackage writes next to the checkout (..); the results are moved into target/packages.
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo "$OUT"/*.rpm
rm -f ../ade-prep_"$V"_amd64.{deb,changes,buildinfo}
dpkg-buildpackage -us -uc -b
mv ../ade-prep_"$V"_amd64.{deb,changes,buildinfo} "$OUT"/
echo "build.sh: .deb built in $((SECONDS - T0))s"

# .rpm, built in place (the binary and the generated docs are already there: cargo finds nothing to do).
T1=$SECONDS
rm -rf "$SRC/target/rpmbuild"
rpmbuild -bb --build-in-place --define "_topdir $SRC/target/rpmbuild" --define "ade_version $V" \
  --define "cargo_target_dir $SRC/target" rpm/ade-prep.spec
mv "$SRC"/target/rpmbuild/RPMS/x86_64/ade-prep-"$V"-1.x86_64.rpm "$OUT"/
echo "build.sh: .rpm built in $((SECONDS - T1))s"
ls -l "$OUT"
