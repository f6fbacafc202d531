#!/bin/sh
# packaging/cargo-build.sh DOCS_DIR: the release binary (glibc 2.17, for CentOS 7: one binary for every distribution
# ADE supports) and the generated docs (man pages, completions) into DOCS_DIR. debian/rules and rpm/ade-prep.spec
# both call it, so both package builds run cargo with one command line and one environment.
# The environment matters: dpkg-buildpackage exports the distribution's C flags and SOURCE_DATE_EPOCH, rpmbuild does
# not, and ring's build script (cc) tracks them: the .rpm's build after the .deb's found ring stale and rebuilt the
# LTO binary (3 min 20 s of packaging/build.sh's 7 min, measured in tests/run.sh's log). None of them reaches the
# binary: Rust code ignores them, zig links (not LDFLAGS), and ring's C has no fortified call either way.
set -eu
[ $# = 1 ] || { echo "usage: packaging/cargo-build.sh DOCS_DIR" >&2; exit 2; }
unset CFLAGS CPPFLAGS CXXFLAGS LDFLAGS ASFLAGS OBJCFLAGS OBJCXXFLAGS FFLAGS FCFLAGS GCJFLAGS DFLAGS SOURCE_DATE_EPOCH
# A build id, as rpm wants for its debuginfo and build-id links (zig's linker adds none by default).
RUSTFLAGS="-C link-arg=-Wl,--build-id=sha1" cargo zigbuild --release --locked --target x86_64-unknown-linux-gnu.2.17
rm -rf "$1"
cargo run --locked --example gen-docs -- "$1"
