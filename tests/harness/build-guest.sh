#!/bin/bash
# build-guest.sh [--nspawn-only | --vm-only | --with-plain-image] - build ade-prep's test guests (idempotent, cached).
#
# Output under H=${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}:
#   qemu-root/   private qemu-system-x86 7.2 from extracted .debs (the host's
#                qemu-utils 10.0 from backports Breaks qemu-system-common 7.2,
#                so it cannot be apt-installed)
#   rootfs/      debootstrapped Debian 12 minbase: systemd 252, dbus, kernel,
#                psmisc, python3-minimal, redis-server (installed, DISABLED:
#                tests `systemctl enable --now redis-server` themselves)
#                + guest-overlay/ (vm-job.target, vm-run-job.service, runner)
#   images/      vmlinuz, initrd.img (small, virtio + ext4 only),
#                debian12-selinux.img (raw ext4, 3 GB sparse; vm-run.sh boots a
#                qcow2 overlay of it per run; step crypt adds cryptsetup to it),
#                debian12-docker.img (step docker), debian12.img (the plain image
#                vm-run.sh boots without -s: step plain, only with --with-plain-image;
#                no test of the test command boots it, smoke.sh's VM part does)
#   rootfs-se/   rootfs + SELinux packages, labeled (source of the SELinux image)
#   rootfs-ns/   copy of rootfs for nspawn-run.sh, without the guest-overlay files
#   systemd219/  RHEL 7's systemd 219 (systemd-rhel/rhel-7 at 9b2dad78f2, CentOS 7.9's
#                systemd), built from source with systemd219-fixes.sh, `make install`ed here
#   rootfs-219/  rootfs-ns with Debian's systemd 252 replaced by that 219 build, for
#                `nspawn-run.sh -g 219` (Debian's libsystemd0/libudev1 stay)
#   rootfs-db/   rootfs-ns + Debian 12's postgresql (15, cluster 15/main) and mariadb-server, both
#                DISABLED (tests/nspawn workloads suite, `nspawn-run.sh -g db`)
#   rootfs-ha/   rootfs-ns + Debian 12's pacemaker (2.1), pacemaker-cli-utils and corosync (3.1), both
#                DISABLED; the test writes its own one-node corosync.conf (tests/nspawn ha suite,
#                `nspawn-run.sh -g ha`)
#   rootfs-docker-ns/  rootfs-ns + Debian 12's docker.io (dockerd, containerd, runc; enabled, as the package leaves
#                them) and busybox-static, /etc/docker/daemon.json for nspawn (live-restore, vfs, no iptables, no
#                bridge) and the busybox rootfs tar the docker step's image has (tests/nspawn docker suite,
#                `nspawn-run.sh -g docker`). (rootfs-docker/ is the docker step's scratch copy, not this.)
#   logs/STEP.log, logs/timings
# Steps: qemu rootfs selinux overlay image nspawn systemd219 rootfs-219 docker crypt rootfs-db rootfs-ha
# rootfs-docker-ns (plain). A step is skipped while its
# marker $H/.done-STEP holds the current recipe hash (its code, package lists,
# overlay contents and the hashes of the steps it derives from) and its output
# exists; otherwise it is redone from scratch (markers are written last, so an
# interrupted step is redone). Editing guest-overlay/ redoes overlay + image
# (~30 s), not debootstrap, selinux or rootfs-ns.
#   --nspawn-only  build only rootfs, overlay, nspawn, systemd219, rootfs-219, rootfs-db, rootfs-ha,
#                  rootfs-docker-ns (enough for nspawn-run.sh on every guest)
#   --vm-only      build only what the qemu guests boot (qemu, rootfs, selinux, overlay, image, docker, crypt) and
#                  rootfs-ns (nspawn: seconds; the packaging tier's .deb test boots it); tests/run.sh builds these
#                  first, then --nspawn-only, so that the vm tier, the longest, starts as early as it can
#   --with-plain-image  every step and the plain image (step plain: images/debian12.img)
# The systemd 219 source: $ADE_SYSTEMD219_TARBALL, else systemd-rhel7-9b2dad78f2.tar.xz in
# ../shared/vendor/ beside the checkout (or beside the main checkout when this is a git
# worktree), else a download of GitHub systemd-rhel/rhel-7 at that commit into $H/src/ (that
# path is untested here: these machines cannot reach GitHub). Without a source the two 219
# steps are skipped with a warning, and are a failure under CI=true.
# Host packages are apt-installed when missing. Run as root.
# Env: ADE_HARNESS_DIR, MIRROR (default: the Debian mirror of /etc/apt/sources.list*),
#      ADE_SYSTEMD219_TARBALL, CI.
# Exit: 0 ok, 1 failure (the failing step's log tail is printed), 2 usage.
set -u -o pipefail
H=${ADE_HARNESS_DIR:-/var/cache/ade-prep-harness}
HERE=$(cd "$(dirname "$0")" && pwd)
OVERLAY=$HERE/guest-overlay
ROOT_PKGS=systemd,systemd-sysv,dbus,udev,linux-image-amd64,initramfs-tools,kmod,procps,iproute2,psmisc,python3-minimal,redis-server
SE_PKGS="selinux-basics selinux-policy-default auditd"
STEPS="qemu rootfs selinux overlay image nspawn systemd219 rootfs-219"
declare -A DEPS=([qemu]="" [rootfs]="" [selinux]=rootfs [overlay]=rootfs [image]="overlay selinux" [nspawn]=rootfs
                 [systemd219]="" [rootfs-219]="nspawn systemd219")
SD219_COMMIT=9b2dad78f267ab3944d8b1145e3efe6c97bef4cf
SD219_VENDORED=systemd-rhel7-9b2dad78f2.tar.xz
SD219_URL=https://github.com/systemd-rhel/rhel-7/archive/$SD219_COMMIT.tar.gz
STEPS="$STEPS docker"; DEPS[docker]=image   # step_docker: images/debian12-docker.img
STEPS="$STEPS crypt"; DEPS[crypt]=image     # step_crypt: cryptsetup in images/debian12-selinux.img
DEPS[plain]=image                           # step_plain: images/debian12.img (--with-plain-image)
STEPS="$STEPS rootfs-db"; DEPS[rootfs-db]=nspawn   # step_rootfs-db: rootfs-ns + PostgreSQL 15 and MariaDB
DB_PKGS="postgresql mariadb-server mariadb-client"
STEPS="$STEPS rootfs-ha"; DEPS[rootfs-ha]=nspawn   # step_rootfs-ha: rootfs-ns + Pacemaker and Corosync
HA_PKGS="pacemaker pacemaker-cli-utils corosync"
STEPS="$STEPS rootfs-docker-ns"; DEPS[rootfs-docker-ns]=nspawn   # step_rootfs-docker-ns: rootfs-ns + docker.io
DOCKER_NS_PKGS="docker.io busybox-static python3"   # python3: docker.sh reads JSON (the SELinux image has it)

die() { echo "build-guest: $*" >&2; exit 1; }
case ${1:-} in
  --nspawn-only) STEPS="rootfs overlay nspawn systemd219 rootfs-219 rootfs-db rootfs-ha rootfs-docker-ns";;
  --vm-only) STEPS="qemu rootfs selinux overlay image nspawn docker crypt";;
  --with-plain-image) STEPS="$STEPS plain";;
  "") ;;
  *) echo "usage: $0 [--nspawn-only | --vm-only | --with-plain-image]" >&2; exit 2;;
esac
[ "$(id -u)" = 0 ] || die "must run as root"
[ -d "$OVERLAY" ] || die "missing $OVERLAY"
mkdir -p "$H/logs" || die "cannot create $H"
exec 9>"$H/.lock"
flock -n 9 || { echo "build-guest: waiting for another build-guest.sh on $H" >&2; flock 9; }

# apt-get install, with one `apt-get update` retry (fresh machines have no lists).
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" && return
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# Host tools, installed only when missing.
PKGS=()
for p in debootstrap:debootstrap systemd-nspawn:systemd-container busctl:systemd \
         mkfs.ext4:e2fsprogs nsenter:util-linux flock:util-linux pgrep:procps \
         fuser:psmisc qemu-img:qemu-utils sha256sum:coreutils; do
  command -v "${p%%:*}" >/dev/null || PKGS+=("${p#*:}")
done
if [ ${#PKGS[@]} -gt 0 ]; then
  echo "build-guest: installing host packages: ${PKGS[*]}"
  apt_install "${PKGS[@]}" >"$H/logs/host.log" 2>&1 || die "apt-get install ${PKGS[*]} failed, see $H/logs/host.log"
fi

MIRROR=${MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
  /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^(URIs:|deb )/' |
  grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ')}
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*; set MIRROR"

# fresh DIR: unmount whatever an interrupted chroot/debootstrap left below DIR,
# then delete DIR without crossing into other filesystems.
fresh() {
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m"; done
  rm -rf --one-file-system "$1"
}

step_qemu() {
  fresh "$H/qemu-root"; rm -rf "$H/debs"; mkdir -p "$H/qemu-root" "$H/debs"
  # Install qemu-system-x86's dependencies (seabios, ipxe-qemu, qemu-system-data,
  # libraries) but not qemu-system-{common,x86} themselves.
  local deps
  deps=$(apt-get install -s --no-install-recommends qemu-system-x86 |
         awk '/^Inst/{print $2}' | grep -vxE 'qemu-system-(common|x86)' || true)
  # shellcheck disable=SC2086   # word splitting of the package list is intended
  [ -z "$deps" ] || apt_install $deps
  (cd "$H/debs" && apt-get -o APT::Sandbox::User=root download qemu-system-x86 qemu-system-common)
  for d in "$H"/debs/*.deb; do dpkg-deb -x "$d" "$H/qemu-root"; done
  # qemu finds firmware relative to its own prefix: link the host's copies in.
  mkdir -p "$H/qemu-root/usr/share/qemu" "$H/qemu-root/usr/lib/ipxe"
  ln -sf /usr/share/qemu/* "$H/qemu-root/usr/share/qemu/"
  ln -sfn /usr/share/seabios "$H/qemu-root/usr/share/seabios"
  ln -sfn /usr/lib/ipxe/qemu "$H/qemu-root/usr/lib/ipxe/qemu"
  "$H/qemu-root/usr/bin/qemu-system-x86_64" --version
  ls -L "$H/qemu-root/usr/share/seabios/bios-256k.bin" "$H/qemu-root/usr/share/qemu/linuxboot_dma.bin"
  rm -rf "$H/debs"
}

step_rootfs() {
  local R=$H/rootfs
  fresh "$R"
  debootstrap --variant=minbase --include="$ROOT_PKGS" bookworm "$R" "$MIRROR"
  echo adeguest > "$R/etc/hostname"
  echo '/dev/vda / ext4 rw 0 1' > "$R/etc/fstab"
  rm -f "$R/etc/resolv.conf"              # host's copy; the guests have no network
  chroot "$R" passwd -d root
  : > "$R/etc/machine-id"                 # fresh transient machine id on every boot
  # redis-server: installed for end-to-end tests, started only when a test asks.
  chroot "$R" systemctl disable redis-server.service
  if chroot "$R" systemctl is-enabled -q redis-server.service; then echo "redis still enabled"; exit 1; fi
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/*_Packages
}

# SELinux tree: rootfs + selinux-basics, selinux-policy-default, auditd, fully
# labeled (the overlay step adds and labels the harness files).
step_selinux() {
  local R=$H/rootfs-se
  fresh "$R"; cp -a "$H/rootfs" "$R"
  # shellcheck disable=SC2064    # expand $R now
  trap "umount '$R/proc' 2>/dev/null || true" EXIT   # never leave proc mounted
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  chroot "$R" apt-get update
  # shellcheck disable=SC2086
  chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $SE_PKGS
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/*_Packages
  rm -f "$R/etc/resolv.conf" "$R/usr/sbin/policy-rc.d"
  grep -E '^SELINUX=' "$R/etc/selinux/config"
  # Label the whole tree now instead of an /.autorelabel boot; without /proc
  # mounted ~20k files fail. mkfs.ext4 -d keeps the security.selinux xattrs.
  mount -t proc proc "$R/proc"
  chroot "$R" setfiles -F -q -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
  umount "$R/proc"
}

# put_overlay TREE: copy guest-overlay/ into TREE, root-owned, existing
# directories keep their modes. Files that an earlier overlay version put
# there (TREE.overlay-manifest) are removed first.
put_overlay() {
  local f
  if [ -f "$1.overlay-manifest" ]; then
    while read -r f; do rm -f "${1:?}/$f"; done < "$1.overlay-manifest"
  fi
  tar -C "$OVERLAY" -c . | tar -C "$1" -x --no-overwrite-dir --no-same-owner
  (cd "$OVERLAY" && find . ! -type d) > "$1.overlay-manifest"
  [ -x "$1/usr/local/sbin/vm-run-job" ]
}

step_overlay() { put_overlay "$H/rootfs"; }

# Kernel, a small initrd, and the SELinux disk image (rootfs-se gets the overlay
# here, relabeled). The plain image is step plain's.
step_image() {
  local k=("$H"/rootfs/boot/vmlinuz-*) R=$H/rootfs-se img
  if [ ${#k[@]} != 1 ] || [ ! -f "${k[0]}" ]; then echo "need exactly one kernel"; return 1; fi
  mkdir -p "$H/images"
  cp "${k[0]}" "$H/images/vmlinuz"
  # A small initrd for qemu (MODULES=list: virtio + ext4, 6 MB instead of the
  # 36 MB MODULES=most one in /boot): unpacking it under TCG saves ~7 s a boot.
  local c=$H/rootfs/tmp/ade-initramfs
  rm -rf "$c"; cp -a "$H/rootfs/etc/initramfs-tools" "$c"
  sed -i 's/^MODULES=.*/MODULES=list/' "$c/initramfs.conf"
  printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >> "$c/modules"
  chroot "$H/rootfs" mkinitramfs -d /tmp/ade-initramfs -o /tmp/ade-initrd.img "${k[0]##*/vmlinuz-}"
  mv "$H/rootfs/tmp/ade-initrd.img" "$H/images/initrd.img"; rm -rf "$c"
  if [ -d "$R" ]; then
    put_overlay "$R"
    # shellcheck disable=SC2064
    trap "umount '$R/proc' 2>/dev/null || true" EXIT   # setfiles needs /proc
    mount -t proc proc "$R/proc"
    chroot "$R" setfiles -F /etc/selinux/default/contexts/files/file_contexts /etc/systemd/system /usr/local
    umount "$R/proc"
  fi
  rm -f "$H/images/debian12-selinux.img"
  mkfs.ext4 -q -F -L root -d "$R" "$H/images/debian12-selinux.img.tmp" 3G
  mv "$H/images/debian12-selinux.img.tmp" "$H/images/debian12-selinux.img"
}

# images/debian12.img: the plain image (rootfs with the overlay, no SELinux), for vm-run.sh without -s.
step_plain() {
  rm -f "$H/images/debian12.img"
  mkfs.ext4 -q -F -L root -d "$H/rootfs" "$H/images/debian12.img.tmp" 3G
  mv "$H/images/debian12.img.tmp" "$H/images/debian12.img"
}

# rootfs-ns: rootfs without the harness's guest files (the container boots the
# default target and must never start the VM job), so editing guest-overlay/
# does not redo this copy.
step_nspawn() {
  local T=$H/rootfs-ns.tmp f
  fresh "$T"; cp -a "$H/rootfs" "$T"
  if [ -f "$H/rootfs.overlay-manifest" ]; then
    while read -r f; do rm -f "${T:?}/$f"; done < "$H/rootfs.overlay-manifest"
  fi
  rm -rf "$T/etc/systemd/system/vm-job.target.wants"
  fresh "$H/rootfs-ns"; mv "$T" "$H/rootfs-ns"
}

# RHEL 7's systemd 219, configured for what the tests need (PID 1, journald, systemctl, busctl, tmpfiles,
# sysusers): no PAM, SELinux, networkd, resolved, timesyncd, cryptsetup, gudev, logind, machined, ...
SD219_BUILD_DEPS="autoconf automake libtool gperf intltool m4 pkg-config gcc make xz-utils libcap-dev libmount-dev libkmod-dev"
step_systemd219() {
  local B=$H/build-219 D=$H/systemd219.tmp p missing=()
  for p in $SD219_BUILD_DEPS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
  fresh "$B"; fresh "$D"; mkdir -p "$B"
  tar -xf "$SD219_SRC" -C "$B" --strip-components=1
  bash "$HERE/systemd219-fixes.sh" "$B"
  cd "$B"
  ./autogen.sh
  ./configure --prefix=/usr --with-rootprefix=/usr --sysconfdir=/etc --localstatedir=/var \
    --libdir=/usr/lib/x86_64-linux-gnu --with-rootlibdir=/usr/lib/x86_64-linux-gnu \
    --disable-manpages --disable-pam --disable-selinux --disable-networkd --disable-resolved --disable-timesyncd \
    --disable-libcryptsetup --disable-gudev --disable-compat-libs --disable-python-devel --disable-audit \
    --disable-seccomp --disable-apparmor --disable-xz --disable-lz4 --disable-zlib --disable-bzip2 --disable-gcrypt \
    --disable-gnutls --disable-microhttpd --disable-qrencode --disable-libcurl --disable-libidn --disable-libiptc \
    --disable-elfutils --disable-efi --disable-acl --disable-smack --disable-blkid --disable-hostnamed \
    --disable-localed --disable-timedated --disable-machined --disable-importd --disable-coredump \
    --disable-bootchart --disable-firstboot --disable-backlight --disable-rfkill --disable-vconsole \
    --disable-readahead --disable-quotacheck --disable-hwdb --disable-binfmt --disable-randomseed \
    --disable-logind --disable-polkit --disable-myhostname --disable-ldconfig --disable-hibernate --disable-ima \
    --disable-tests CFLAGS='-O1 -g0 -Wno-error'
  make -j"$(nproc)"
  make install DESTDIR="$D"
  "$D/usr/lib/systemd/systemd" --version | grep '^systemd 219$'
  cd /; rm -rf "$B"
  fresh "$H/systemd219"; mv "$D" "$H/systemd219"
}

# rootfs-219: rootfs-ns (same Debian 12 userland as the 252 guest: dbus, python3, procps, psmisc, redis) with
# the files of Debian's systemd and udev packages removed and the 219 build installed over it. Kept from Debian:
# libsystemd0 and libudev1 (dbus-daemon links libsystemd0; 252's is a superset of 219's ABI), systemd-sysv's
# init/halt/poweroff links (they point at paths 219 installs too), libkmod2 (219's PID 1 and udevadm use it).
step_rootfs-219() {
  local T=$H/rootfs-219.tmp S=$H/systemd219 L=usr/lib/x86_64-linux-gnu f
  fresh "$T"; cp -a "$H/rootfs-ns" "$T"
  [ -f "$T/$L/libkmod.so.2" ]
  # Files only: a listed directory (or a merged-/usr link like /bin, /lib) stays.
  chroot "$T" dpkg-query -L systemd udev | while read -r f; do [ -d "$T$f" ] || rm -f "$T$f"; done
  tar -C "$S" -c --exclude="./$L/libsystemd.*" --exclude="./$L/libudev.*" --exclude="./$L/pkgconfig" \
    --exclude=./usr/include . | tar -C "$T" -x --keep-directory-symlink --no-overwrite-dir
  # Enablement links (from 252's postinst) to units 219 does not have.
  chroot "$T" find /etc/systemd/system -xtype l -print -delete
  chroot "$T" systemd-sysusers
  chroot "$T" systemd-machine-id-setup
  # tmpfiles.d/etc.conf copies /etc/pam.d only when built with PAM; drop such a line if there is one.
  sed -i '\|^C /etc/pam.d|d' "$T/usr/lib/tmpfiles.d/etc.conf"
  # Under nspawn --volatile=overlay this unit's commit of /etc/machine-id fails the boot's state: mask it.
  ln -sfn /dev/null "$T/etc/systemd/system/systemd-machine-id-commit.service"
  chroot "$T" /usr/lib/systemd/systemd --version | grep '^systemd 219$'
  chroot "$T" systemctl --version | grep '^systemd 219$'
  fresh "$H/rootfs-219"; mv "$T" "$H/rootfs-219"
}

# images/debian12-docker.img: the SELinux image (rootfs-se as the image step left it: overlay in, labeled) plus
# Debian's docker.io engine (dockerd, containerd, runc, containerd-shim-runc-v2; enabled as the package leaves them)
# with live-restore in /etc/docker/daemon.json, and /usr/local/share/ade-e2e/busybox-rootfs.tar (a busybox-static
# tree: no registry is reachable, the guest `docker import`s it). Only this image: the others are not rebuilt.
step_docker() {
  local R=$H/rootfs-docker pkgs="docker.io busybox-static"
  fresh "$R"; cp -a "$H/rootfs-se" "$R"
  # shellcheck disable=SC2064    # expand $R now
  trap "umount '$R/proc' 2>/dev/null || true" EXIT
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  chroot "$R" apt-get update
  # shellcheck disable=SC2086
  chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/*_Packages
  rm -f "$R/etc/resolv.conf" "$R/usr/sbin/policy-rc.d"
  mkdir -p "$R/etc/docker"
  printf '{\n  "live-restore": true\n}\n' > "$R/etc/docker/daemon.json"
  local t=$R/tmp/bb
  rm -rf "$t"; mkdir -p "$t/bin" "$t/tmp" "$t/data" "$R/usr/local/share/ade-e2e"
  cp "$R/bin/busybox" "$t/bin/busybox"
  chroot "$t" /bin/busybox --install -s /bin
  tar -C "$t" --numeric-owner --owner=0 --group=0 -cf "$R/usr/local/share/ade-e2e/busybox-rootfs.tar" .
  rm -rf "$t"
  chroot "$R" dpkg-query -W docker.io containerd runc busybox-static
  chroot "$R" systemctl is-enabled docker.service docker.socket containerd.service
  mount -t proc proc "$R/proc"
  chroot "$R" setfiles -F -q -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
  umount "$R/proc"
  mkfs.ext4 -q -F -L root -d "$R" "$H/images/debian12-docker.img.tmp" 3G
  mv "$H/images/debian12-docker.img.tmp" "$H/images/debian12-docker.img"
  fresh "$R"
}

# cryptsetup (Debian's cryptsetup-bin) added to images/debian12-selinux.img, for the e2e data-volume step
# (tests/e2e/ade-data-step.sh, issue 17): installed in a loop-mounted copy of the image, the new files labelled,
# the copy moved over the image. Only this image, and no other step's output changes: rebuilding rootfs-se or the
# images (the docker image with them) for one package would cost minutes; redone whenever the image step is.
step_crypt() {
  local img=$H/images/debian12-selinux.img M=$H/mnt-crypt
  fresh "$M"; rm -f "$img.crypt.tmp"; mkdir -p "$M"
  cp --sparse=always "$img" "$img.crypt.tmp"
  # shellcheck disable=SC2064    # expand $M now
  trap "umount '$M/proc' 2>/dev/null || true; umount '$M' 2>/dev/null || true; rmdir '$M' 2>/dev/null || true; rm -f '$img.crypt.tmp'" EXIT
  mount -o loop "$img.crypt.tmp" "$M"
  cp /etc/resolv.conf "$M/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$M/usr/sbin/policy-rc.d"; chmod +x "$M/usr/sbin/policy-rc.d"
  chroot "$M" apt-get update
  chroot "$M" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cryptsetup-bin
  chroot "$M" apt-get clean
  rm -rf "$M"/var/lib/apt/lists/*_Packages
  rm -f "$M/etc/resolv.conf" "$M/usr/sbin/policy-rc.d"
  chroot "$M" cryptsetup --version
  mount -t proc proc "$M/proc"
  chroot "$M" setfiles -F -q /etc/selinux/default/contexts/files/file_contexts /etc /usr /var
  umount "$M/proc"; umount "$M"
  mv "$img.crypt.tmp" "$img"
}

# derive_rootfs NAME PKGS UNITS: $H/rootfs-NAME.tmp = rootfs-ns + Debian's PKGS (no recommends), installed through
# chroot apt-get with services kept from starting (policy-rc.d), then UNITS disabled: a test starts the one it needs.
# rootfs-ns is left as it is (the other suites do not pay for these packages). The caller checks the tree, then
# moves it in place (done_rootfs NAME).
derive_rootfs() {
  local T=$H/rootfs-$1.tmp
  fresh "$T"; cp -a "$H/rootfs-ns" "$T"
  # shellcheck disable=SC2064    # expand $T now
  trap "umount '$T/proc' 2>/dev/null || true" EXIT
  cp /etc/resolv.conf "$T/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$T/usr/sbin/policy-rc.d"; chmod +x "$T/usr/sbin/policy-rc.d"
  mount -t proc proc "$T/proc"
  chroot "$T" apt-get update
  # shellcheck disable=SC2086
  chroot "$T" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $2
  umount "$T/proc"
  chroot "$T" apt-get clean
  rm -rf "$T"/var/lib/apt/lists/*_Packages
  rm -f "$T/etc/resolv.conf" "$T/usr/sbin/policy-rc.d"
  # shellcheck disable=SC2086
  chroot "$T" systemctl disable $3 2>&1 || true
}
done_rootfs() { fresh "$H/rootfs-$1"; mv "$H/rootfs-$1.tmp" "$H/rootfs-$1"; }

# rootfs-db: rootfs-ns plus Debian 12's PostgreSQL 15 and MariaDB (the workloads suite: real packages, their own
# units).
step_rootfs-db() {
  local T=$H/rootfs-db.tmp
  derive_rootfs db "$DB_PKGS" "postgresql.service postgresql@15-main.service mariadb.service"
  chroot "$T" dpkg-query -W postgresql-15 mariadb-server
  [ -f "$T/etc/postgresql/15/main/postgresql.conf" ]
  done_rootfs db
}

# rootfs-ha: rootfs-ns plus Debian 12's Pacemaker and Corosync (the ha suite: a one-node cluster with the real
# packages). pacemaker-cli-utils brings crm_mon, crm_attribute, crm_resource, crm_node (Recommends of pacemaker,
# which --no-install-recommends would leave out); crmsh and pcs are not installed (the catalogue uses only the tools
# of pacemaker and corosync themselves). Both services disabled: the test writes corosync.conf and starts them.
step_rootfs-ha() {
  local T=$H/rootfs-ha.tmp
  derive_rootfs ha "$HA_PKGS" "pacemaker.service corosync.service"
  chroot "$T" dpkg-query -W pacemaker pacemaker-cli-utils corosync
  [ -x "$T/usr/sbin/crm_attribute" ] && [ -x "$T/usr/sbin/corosync-quorumtool" ]
  done_rootfs ha
}

# rootfs-docker-ns: rootfs-ns plus Debian 12's docker.io (the docker suite: tests/e2e/docker.sh's phases that need no
# kernel of their own, with the real engine, in nspawn). The units stay enabled, as in the docker step's image. The
# daemon.json lets the engine start at boot in the container (nspawn-run.sh -g docker): vfs (overlay2 cannot mount on
# the container's overlay root), no iptables (nf_tables is the host's), no bridge (the container's network namespace
# has only lo); docker.sh rewrites it with the cgroup driver and live-restore of each phase. The busybox tree is made
# as the docker step makes it (no registry: the guest `docker import`s it). derive_rootfs is given no unit to disable.
# The same packages' initramfs trigger runs in the chroot as for the other derived roots (unused: nspawn boots no
# kernel).
step_rootfs-docker-ns() {
  local T=$H/rootfs-docker-ns.tmp t
  derive_rootfs docker-ns "$DOCKER_NS_PKGS" ""
  chroot "$T" systemctl enable docker.service docker.socket containerd.service
  mkdir -p "$T/etc/docker"
  printf '{\n  "live-restore": true,\n  "storage-driver": "vfs",\n  "iptables": false,\n  "bridge": "none"\n}\n' \
    > "$T/etc/docker/daemon.json"
  t=$T/tmp/bb
  rm -rf "$t"; mkdir -p "$t/bin" "$t/tmp" "$t/data" "$T/usr/local/share/ade-e2e"
  cp "$T/bin/busybox" "$t/bin/busybox"
  chroot "$t" /bin/busybox --install -s /bin
  tar -C "$t" --numeric-owner --owner=0 --group=0 -cf "$T/usr/local/share/ade-e2e/busybox-rootfs.tar" .
  rm -rf "$t"
  chroot "$T" dpkg-query -W docker.io containerd runc busybox-static
  chroot "$T" systemctl is-enabled docker.service docker.socket containerd.service
  done_rootfs docker-ns
}

output_ok() {
  case $1 in
    qemu)    [ -x "$H/qemu-root/usr/bin/qemu-system-x86_64" ];;
    rootfs)  [ -x "$H/rootfs/usr/lib/systemd/systemd" ];;
    overlay) [ -x "$H/rootfs/usr/local/sbin/vm-run-job" ];;
    selinux) [ -x "$H/rootfs-se/usr/sbin/setfiles" ];;
    image)   [ -f "$H/images/vmlinuz" ] && [ -f "$H/images/initrd.img" ] && [ -f "$H/images/debian12-selinux.img" ];;
    plain)   [ -f "$H/images/debian12.img" ];;
    nspawn)  [ -x "$H/rootfs-ns/usr/lib/systemd/systemd" ];;
    systemd219) [ -x "$H/systemd219/usr/lib/systemd/systemd" ];;
    rootfs-219) [ -x "$H/rootfs-219/usr/lib/systemd/systemd" ] && [ -x "$H/rootfs-219/usr/bin/systemd-sysusers" ];;
    docker)  [ -f "$H/images/debian12-docker.img" ];;
    rootfs-db) [ -x "$H/rootfs-db/usr/lib/postgresql/15/bin/postgres" ] && [ -x "$H/rootfs-db/usr/sbin/mariadbd" ];;
    rootfs-ha) [ -x "$H/rootfs-ha/usr/sbin/pacemakerd" ] && [ -x "$H/rootfs-ha/usr/sbin/corosync" ];;
    rootfs-docker-ns) [ -x "$H/rootfs-docker-ns/usr/sbin/dockerd" ] &&
                      [ -f "$H/rootfs-docker-ns/usr/local/share/ade-e2e/busybox-rootfs.tar" ];;
    crypt)   debugfs -R 'stat /usr/sbin/cryptsetup' "$H/images/debian12-selinux.img" 2>/dev/null | grep -q 'Type: regular';;
  esac
}

# Hash of everything step $1's output depends on.
recipe() {
  { declare -f "step_$1"; echo "$ROOT_PKGS|$SE_PKGS"; [ "$1" = rootfs-db ] && echo "$DB_PKGS"
    [ "$1" = rootfs-ha ] && echo "$HA_PKGS"
    [ "$1" = rootfs-docker-ns ] && echo "$DOCKER_NS_PKGS"
    case $1 in rootfs-db|rootfs-ha|rootfs-docker-ns) declare -f derive_rootfs done_rootfs;; esac
    [ "$1" = overlay ] && tar -C "$OVERLAY" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -c .
    [ "$1" = systemd219 ] && { echo "$SD219_SHA"; cat "$HERE/systemd219-fixes.sh"; }
    for d in ${DEPS[$1]}; do echo "$d=$(cat "$H/.done-$d" 2>/dev/null)"; done
  } | sha256sum | cut -c1-16
}

# The systemd 219 source (see the header): sets SD219_SRC and SD219_SHA, or drops the 219 steps.
sd219_source() {
  local main c
  main=$(git -C "$HERE" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
  for c in ${ADE_SYSTEMD219_TARBALL:+"$ADE_SYSTEMD219_TARBALL"} "$HERE/../../../shared/vendor/$SD219_VENDORED" \
           ${main:+"$(dirname "$main")/../shared/vendor/$SD219_VENDORED"} "$H/src/rhel-7-$SD219_COMMIT.tar.gz"; do
    [ -f "$c" ] && { SD219_SRC=$(realpath "$c"); return 0; }
    [ "$c" = "${ADE_SYSTEMD219_TARBALL:-}" ] && die "ADE_SYSTEMD219_TARBALL=$c: no such file"
  done
  echo "build-guest: no $SD219_VENDORED in ../shared/vendor/; downloading $SD219_URL"
  mkdir -p "$H/src"
  if curl -fsSL --retry 2 --connect-timeout 20 --max-time 900 -o "$H/src/download.tmp" "$SD219_URL" && tar -tzf "$H/src/download.tmp" >/dev/null; then
    mv "$H/src/download.tmp" "$H/src/rhel-7-$SD219_COMMIT.tar.gz"
    SD219_SRC=$H/src/rhel-7-$SD219_COMMIT.tar.gz; return 0
  fi
  rm -f "$H/src/download.tmp"
  return 1
}
if [[ " $STEPS " = *" systemd219 "* ]]; then
  if sd219_source; then
    SD219_SHA=$(sha256sum < "$SD219_SRC" | cut -c1-16)
    echo "build-guest: systemd 219 source: $SD219_SRC ($SD219_SHA)"
  elif [ "${CI:-}" = true ]; then
    die "no systemd 219 source (set ADE_SYSTEMD219_TARBALL, put $SD219_VENDORED in ../shared/vendor/ or allow the download)"
  else
    echo "build-guest: WARNING: no systemd 219 source: skipping the systemd219 and rootfs-219 steps" >&2
    STEPS=${STEPS/ systemd219 rootfs-219/}
  fi
fi

echo "build-guest: ADE_HARNESS_DIR=$H mirror=$MIRROR steps: $STEPS"
T0=$SECONDS
for s in $STEPS; do
  r=$(recipe "$s")
  if [ "$(cat "$H/.done-$s" 2>/dev/null)" = "$r" ] && output_ok "$s"; then
    echo "[$s] up to date"; continue
  fi
  rm -f "$H/.done-$s"
  echo "[$s] building (log: $H/logs/$s.log)"; t=$SECONDS
  ( set -e; "step_$s" ) >"$H/logs/$s.log" 2>&1
  rc=$?
  if [ $rc != 0 ] || ! output_ok "$s"; then
    tail -n 25 "$H/logs/$s.log" >&2
    die "step '$s' FAILED (rc=$rc) after $((SECONDS-t))s; full log: $H/logs/$s.log"
  fi
  echo "$r" > "$H/.done-$s"
  echo "[$s] done in $((SECONDS-t))s"
  echo "$(date -Is) $s $((SECONDS-t))s" >> "$H/logs/timings"
done
echo "build-guest: complete in $((SECONDS-T0))s"
