#!/bin/bash
# tests/e2e/ade-data-step.sh DEVICE MOUNTPOINT KEYFILE - a stand-in for ADE's classic (not online) in-place
# encryption of one data volume, as ADE's daemon runs it for EnableEncryption with VolumeType Data or All
# (issue 17). Every step is ADE's own, in ADE's order, with ADE's commands; file:line of Azure/azure-linux-extensions
# branch ade-sp-release-1.4.0.12 (commit affba5a9), paths under VMEncryption/main/.
#   DEVICE      the volume as ADE's lsblk lists it (/dev/sda)
#   MOUNTPOINT  where it is mounted (the lsblk MOUNTPOINT ADE saw when it selected it)
#   KEYFILE     the passphrase file (ADE's comes from the BEK volume; here a file the caller wrote)
# Exit: 0 encrypted, opened as /dev/mapper/<uuid> and mounted there again; 3 the plain `umount` failed, so ADE
# skips the volume and goes on to report success for the data volumes (nothing is changed); 1 a later step failed
# (ADE gives up on the volume there: "return device_item", handle.py:2012-2014). Output: DATASTEP lines.
#
# Where it differs from ADE, and why (none of it changes the layout ADE leaves, nor when it fails):
# - The data move: ADE backs up the first block, luksFormats the device in place and copies the (shrunk) filesystem
#   from its end forwards by the header's size, then the first block (handle.py:1414-1436, :1464-1497). Here the
#   shrunk filesystem is copied to a file first (the "copy" of issue 17), the device luksFormatted, and the copy
#   written into the mapper: the same result (a LUKS2 header, the same filesystem behind it), without ADE's
#   resumable slice copier.
# - The key derivation: `--pbkdf pbkdf2 --pbkdf-force-iterations 1000` on luksFormat: cryptsetup's default
#   (argon2id, ~2 s and up to 1 GiB of memory) would cost minutes under TCG in a 1 GiB guest; what is tested does
#   not depend on it.
set -u
DEV=${1:?usage: ade-data-step.sh DEVICE MOUNTPOINT KEYFILE}
MP=${2:?usage: ade-data-step.sh DEVICE MOUNTPOINT KEYFILE}
KEY=${3:?usage: ade-data-step.sh DEVICE MOUNTPOINT KEYFILE}
say() { echo "DATASTEP $*"; }
fail() { say "FAILED at $*"; exit 1; }

# enable_encryption_all_in_place (handle.py:1988-1993) and DiskUtil.umount (DiskUtil.py:597-599): a plain `umount
# <mountpoint>`, no retry, no lazy unmount, no kill. On failure ADE logs and skips the volume.
if ! out=$(umount "$MP" 2>&1); then
  say "skipped $DEV: error occured when do the umount for: $MP ($out)"
  exit 3
fi
say "umount $MP: ok"

# encrypt_inplace_without_separate_header_file (handle.py:1335-1366): a new uuid4 as the mapper name, and the
# device's persistent path (DiskUtil.get_persistent_path_by_sdx_path, DiskUtil.py:748-776): an Azure udev link
# (/dev/disk/azure/..., DiskUtil.py:827-843), else a mapper, else a /dev/disk/by-uuid link, else the device itself.
MAPPER=$(cat /proc/sys/kernel/random/uuid)
real=$(realpath "$DEV")
persistent=''
for l in /dev/disk/azure/* /dev/disk/azure/*/* /dev/mapper/* /dev/disk/by-uuid/*; do
  [ -L "$l" ] && [ "$(realpath "$l")" = "$real" ] && { persistent=$l; break; }
done
persistent=${persistent:-$DEV}
say "mapper name $MAPPER, persistent path $persistent"

# Only ext2/3/4 in place (handle.py:1392-1401).
fs=$(blkid -o value -s TYPE "$DEV")
case $fs in ext2|ext3|ext4) ;; *) fail "file system '$fs': not supported in place (handle.py:1392-1401)";; esac

# The LUKS2 header size for cryptsetup >= 2.1 (DiskUtil.get_luks_header_size, DiskUtil.py:1379-1386;
# Common.py:110: 32768 sectors), and the size the filesystem is shrunk to (handle.py:1384-1385).
HDR=$((32768 * 512))
size=$(blockdev --getsize64 "$DEV")
shrink_to=$(((size - HDR) / 512))

# check_shrink_fs (handle.py:1403; DiskUtil.py:281-304): `e2fsck -f -y`, then `resize2fs DEV <sectors>s`.
e2fsck -f -y "$DEV" >/dev/null 2>&1; rc=$?
[ $rc = 0 ] || [ $rc = 1 ] || fail "e2fsck -f -y $DEV: rc $rc"
resize2fs "$DEV" "${shrink_to}s" >/dev/null 2>&1 || fail "resize2fs $DEV ${shrink_to}s"
say "e2fsck, resize2fs to ${shrink_to}s: ok"

# The copy of the shrunk filesystem (see the header: ADE moves it in place instead).
COPY=/var/tmp/ade-data-step.$MAPPER.copy
head -c $((shrink_to * 512)) "$DEV" > "$COPY" || { rm -f "$COPY"; fail "copy of $DEV"; }

# encrypt_disk (handle.py:1443-1447; DiskUtil.py:266-279): `cryptsetup luksFormat DEV -d KEY -q` (DiskUtil.py:324),
# then `cryptsetup luksOpen DEV MAPPER -d KEY -q` (DiskUtil.py:524). luksFormat opens the device exclusively: a
# device still mounted fails here.
cryptsetup luksFormat "$DEV" -d "$KEY" -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 ||
  { rm -f "$COPY"; fail "cryptsetup luksFormat $DEV"; }
cryptsetup luksOpen "$DEV" "$MAPPER" -d "$KEY" -q || { rm -f "$COPY"; fail "cryptsetup luksOpen $DEV $MAPPER"; }
say "luksFormat, luksOpen $DEV as $MAPPER: ok"

# The filesystem into the mapper (handle.py:1464-1497, see the header).
dd if="$COPY" of="/dev/mapper/$MAPPER" bs=1M conv=fsync status=none || fail "copy into /dev/mapper/$MAPPER"
rm -f "$COPY"

# modify_fstab_entry_encrypt (handle.py:1518-1521; CryptMountConfigUtil.py:702-747): a backup of fstab, the line
# whose mount point is MP gets the mapper as its device and `nofail` if absent, the BEK volume's line is added if
# missing (Common.py:40), the old line appended to /etc/fstab.azure.backup.
python3 - "$MP" "/dev/mapper/$MAPPER" <<'EOF' || fail "fstab"
import shutil, sys, uuid
mp, mapper = sys.argv[1:]
shutil.copy2("/etc/fstab", "/etc/fstab.backup." + str(uuid.uuid4()))
lines = open("/etc/fstab").readlines()
old = None
for i, line in enumerate(lines):
    f = line.split()
    if line.strip().startswith("#") or len(f) < 4 or f[1] != mp:
        continue
    old = line
    new = line.replace(f[0], mapper)
    if "nofail" not in f[3].split(","):
        new = new.replace(f[3], ",".join(["nofail"] + f[3].split(",")))
    lines[i] = new
    break
if not any("azure_bek_disk" in l for l in lines):
    lines.append("LABEL=BEK\\040VOLUME /mnt/azure_bek_disk auto defaults,discard,nofail 0 0\n")
open("/etc/fstab", "w").writelines(lines)
if old is not None:
    open("/etc/fstab.azure.backup", "a+").write(old)
EOF
say "fstab: $(awk -v m="$MP" '$2 == m' /etc/fstab)"

# Mounted again through the mapper (handle.py:1526-1527; DiskUtil.mount_filesystem, DiskUtil.py:556-566).
mount "/dev/mapper/$MAPPER" "$MP" || fail "mount /dev/mapper/$MAPPER $MP"

# add_crypt_item_to_crypttab (handle.py:1528-1529; CryptMountConfigUtil.py:506-570): "<mapper> <persistent path>
# <key file> luks,nofail" (:523), the key file named after the Azure controller and lun of the disk when it has
# one (:514-521; DiskUtil.py:889-910), and the crypttab and fstab lines backed up on the volume.
kf=/mnt/azure_bek_disk/LinuxPassPhraseFileName
[[ $persistent =~ ^/dev/disk/azure/scsi([0-9]+)/lun([0-9]+)$ ]] && kf=${kf}_${BASH_REMATCH[1]}_${BASH_REMATCH[2]}
# The BEK volume holds that file on Azure; here the caller's key is put there if it is not.
[ -e "$kf" ] || install -D -m 0600 "$KEY" "$kf"
line="$MAPPER $persistent $kf luks,nofail"
[ -e /etc/crypttab ] || install -m 0644 /dev/null /etc/crypttab
echo "$line" >> /etc/crypttab
mkdir -p "$MP/.azure_ade_backup_mount_info"
printf '%s' "$line" > "$MP/.azure_ade_backup_mount_info/crypttab_line"
awk -v m="$MP" -v d="/dev/mapper/$MAPPER" '$2 == m && index($1, d)' /etc/fstab > "$MP/.azure_ade_backup_mount_info/fstab_line"
say "crypttab: $line"

# expand_fs (handle.py:1543; DiskUtil.py:286-288): `resize2fs /dev/mapper/<mapper>`.
resize2fs "/dev/mapper/$MAPPER" >/dev/null 2>&1 || say "resize2fs /dev/mapper/$MAPPER failed (ADE logs it and goes on)"
say "encrypted $DEV: $MP mounted from /dev/mapper/$MAPPER"
