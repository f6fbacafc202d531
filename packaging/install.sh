#!/bin/sh
# packaging/install.sh DESTDIR BINARY DOCSDIR: installs ade-prep into DESTDIR, the one install logic of both packages
# (debian/rules and rpm/ade-prep.spec call it). packaging/ mirrors the installed tree; BINARY is the built ade-prep;
# DOCSDIR is the output of `cargo run --example gen-docs -- DOCSDIR` (man/, completions/).
# Env (the places that differ between distributions):
#   UNITDIR  systemd units       (default /usr/lib/systemd/system; debhelper 13.11 wants /lib/systemd/system)
#   ZSHDIR   zsh completions     (default /usr/share/zsh/site-functions; Debian: /usr/share/zsh/vendor-completions)
#   GENDIR   systemd generators  (default /usr/lib/systemd/system-generators; bookworm's systemd: /lib/...)
set -eu
[ $# -eq 3 ] || { echo "usage: $0 DESTDIR BINARY DOCSDIR" >&2; exit 2; }
D=$1 BIN=$2 DOCS=$3
SRC=$(cd "$(dirname "$0")" && pwd)
UNITDIR=${UNITDIR:-/usr/lib/systemd/system}
ZSHDIR=${ZSHDIR:-/usr/share/zsh/site-functions}
GENDIR=${GENDIR:-/usr/lib/systemd/system-generators}

install -D -m 0755 "$BIN" "$D/usr/bin/ade-prep"
for u in "$SRC"/usr/lib/systemd/system/*; do install -D -m 0644 "$u" "$D$UNITDIR/${u##*/}"; done
install -D -m 0755 "$SRC/usr/lib/systemd/system-generators/ade-prep-generator" "$D$GENDIR/ade-prep-generator"
install -D -m 0644 "$SRC/usr/lib/systemd/system-preset/50-ade-prep.preset" \
  "$D/usr/lib/systemd/system-preset/50-ade-prep.preset"
install -D -m 0644 "$SRC/usr/lib/tmpfiles.d/ade-prep.conf" "$D/usr/lib/tmpfiles.d/ade-prep.conf"
install -D -m 0644 "$SRC/etc/ade-prep/config.toml" "$D/etc/ade-prep/config.toml"
for m in "$DOCS"/man/*.1; do install -D -m 0644 "$m" "$D/usr/share/man/man1/${m##*/}"; done
install -D -m 0644 "$DOCS/completions/ade-prep.bash" "$D/usr/share/bash-completion/completions/ade-prep"
install -D -m 0644 "$DOCS/completions/_ade-prep" "$D$ZSHDIR/_ade-prep"
install -D -m 0644 "$DOCS/completions/ade-prep.fish" "$D/usr/share/fish/vendor_completions.d/ade-prep.fish"
