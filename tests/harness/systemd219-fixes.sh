#!/bin/bash
# systemd219-fixes.sh SRCDIR - make RHEL 7's systemd 219 tree (systemd-rhel/rhel-7 at 9b2dad78f2) build on
# Debian 12 (glibc 2.36, gcc 12, gperf 3.1) with build-guest.sh's minimal configure. Run before autogen.sh.
# Each fix is applied only where the tree still needs it and is checked afterwards: a tree the fixes do not fit
# fails here, loudly, instead of halfway through the compile. -Wno-error is passed in CFLAGS by the caller.
set -euo pipefail
S=${1:?usage: $0 SRCDIR}
cd "$S"
die() { echo "systemd219-fixes: $*" >&2; exit 1; }
has() { grep -qF -- "$2" "$1"; }

# 1. configure's renameat2 declaration check: glibc 2.36 declares renameat2 in <stdio.h>. The check's prologue
#    does not include it, so configure says "not declared" and src/shared/missing.h then defines its own
#    renameat2, which collides with glibc's. Include <stdio.h> in that check.
f=configure.ac
if ! sed -n '/^AC_CHECK_DECLS(\[gettid, pivot_root/,/\]\])/p' $f | has /dev/stdin '<stdio.h>'; then
  sed -i '/^AC_CHECK_DECLS(\[gettid, pivot_root/,/\]\])/ s|^#include <sys/types.h>$|&\n#include <stdio.h>|' $f
fi
sed -n '/^AC_CHECK_DECLS(\[gettid, pivot_root/,/\]\])/p' $f | has /dev/stdin '<stdio.h>' || die "$f: renameat2 check"

# 2. gperf 3.1 generates lookup functions with size_t lengths. The RHEL tree already has configure's
#    GPERF_LEN_TYPE check; an older tree would declare `unsigned` lengths and fail to compile.
has configure.ac GPERF_LEN_TYPE || die "configure.ac: no GPERF_LEN_TYPE (gperf 3.1 size_t lengths) in this tree"

# 3. major()/minor()/makedev() live in <sys/sysmacros.h> since glibc 2.28 (no longer via <sys/types.h>).
has src/shared/macro.h '<sys/sysmacros.h>' ||
  sed -i '0,/^#include <sys\/types.h>$/s||&\n#include <sys/sysmacros.h>|' src/shared/macro.h
has src/shared/macro.h '<sys/sysmacros.h>' || die "src/shared/macro.h: sys/sysmacros.h"

# 4. mtd_probe.h uses uint8_t/uint32_t without <stdint.h>.
f=src/udev/mtd_probe/mtd_probe.h
has $f '<stdint.h>' || sed -i 's|^#include <mtd/mtd-user.h>$|&\n#include <stdint.h>|' $f
has $f '<stdint.h>' || die "$f: stdint.h"

# 5. autogen.sh writes a docs/gtk-doc.make stub itself when gtkdocize is missing; make sure one exists either way
#    (automake includes it).
[ -f docs/gtk-doc.make ] || echo 'EXTRA_DIST =' > docs/gtk-doc.make

# 6. JournalFile.last_seen_generation sits inside `#ifdef HAVE_GCRYPT` (with the FSS fields) but sd-journal.c uses
#    it unconditionally: move it out, after the #endif that closes the FSS block.
f=src/journal/journal-file.h
if awk '/^#ifdef HAVE_GCRYPT/{g=1} g&&/last_seen_generation/{found=1} /^#endif/{g=0} END{exit !found}' $f; then
  awk '/^#ifdef HAVE_GCRYPT/{g=1}
       g && /unsigned last_seen_generation;/ {held=$0; next}
       {print}
       g && /^#endif/ {g=0; if (held != "") {print held; held=""}}' $f > $f.new && mv $f.new $f
fi
awk '/^#ifdef HAVE_GCRYPT/{g=1} g&&/last_seen_generation/{bad=1} /^#endif/{g=0} END{exit bad}' $f ||
  die "$f: last_seen_generation still under HAVE_GCRYPT"
has $f 'unsigned last_seen_generation;' || die "$f: last_seen_generation lost"

# 7. selinux-access.h defines mac_selinux_runtime_unit_access_check only under HAVE_SELINUX; without SELinux
#    dbus-manager.c calls an undeclared function and the link fails. Add the no-SELinux stub (allow: 0).
f=src/core/selinux-access.h
if [ "$(grep -c 'define mac_selinux_runtime_unit_access_check' $f)" = 1 ]; then
  sed -i '/^#define mac_selinux_unit_access_check(unit, message, permission, error) 0$/a #define mac_selinux_runtime_unit_access_check(message, permission, error) 0' $f
fi
[ "$(grep -c 'define mac_selinux_runtime_unit_access_check' $f)" = 2 ] || die "$f: no-SELinux stub"

echo "systemd219-fixes: ok"
