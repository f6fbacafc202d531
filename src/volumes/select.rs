//! ADE's selection of the data volumes to encrypt in place, as a pure function of what was read: ADE 1.4.0.12
//! `handle.py:1893-1921` (`find_all_devices_to_encrypt`) applying `DiskUtil.py:1215-1266`
//! (`should_skip_for_inplace_encryption`) and `DiskUtil.py:1191-1213` (`is_data_disk`). It must not read anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::lsblk::BlkItem;
use super::DataVolume;
use crate::mountinfo::Mount;

/// ADE's `min_filesystem_size_support` (`Common.py:113`): 150 MiB.
pub const MIN_SIZE: u64 = 52_428_800 * 3;
/// The device types ADE encrypts in place (`DiskUtil.py:1237`).
pub const SUPPORTED_TYPES: &[&str] = &["disk", "part", "raid0", "raid1", "raid5", "raid10", "lvm"];

/// ADE's VolumeType for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    /// `Data`: `is_data_disk` also applies (root disk, resource disk, BEK volume skipped by device id and label).
    Data,
    /// `All`: only the shared rules (the OS volume is taken apart by its own path).
    All,
}

/// What ADE's selection is decided on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// `lsblk -P` over every device, in its order.
    pub items: Vec<BlkItem>,
    /// Lines `lsblk <device>` printed, per name (the device and everything below it); a name missing here is a
    /// device lsblk was not asked about (ADE asks only for the ones that pass the earlier rules).
    pub lines_below: BTreeMap<String, usize>,
    /// The Hyper-V device id (`udevadm info -a ... | grep device_id`, from sysfs), per name; missing: none.
    pub device_ids: BTreeMap<String, String>,
    /// Names of the devices on ADE's "special azure devices" (IDE, scsi0, the root/resource links) and below them
    /// (`DiskUtil.py:1268-1293`).
    pub special: BTreeSet<String>,
    /// The mount table.
    pub mounts: Vec<Mount>,
    /// The devices a `/dev/disk/azure` link leads to (`get_block_device_to_azure_udev_table`,
    /// `DiskUtil.py:827-843`): EncryptFormatAll formats only those (and NVMe namespaces).
    pub azure_named: BTreeSet<PathBuf>,
}

/// A device ADE passes over, and ADE's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// Why ADE skips `it` (None: selected). `lines_below` None means not known (lsblk not asked).
pub fn skip_reason(it: &BlkItem, m: &Machine, vt: VolumeType, lines_below: Option<usize>) -> Option<String> {
    if let Some(why) = reason_before_children(it, m, vt) {
        return Some(why);
    }
    if lines_below.is_some_and(|n| n > 1) {
        return Some("has devices below it (partitions, LVM, RAID, crypt)".into());
    }
    if it.fstype == "crypto_LUKS" {
        return Some("already LUKS".into());
    }
    if it.kind == "crypt" {
        return Some("a crypt mapping".into());
    }
    if it.mountpoint == "/" {
        return Some("mounted on /".into());
    }
    if m.special.contains(&it.name) {
        return Some("a special Azure device (IDE, scsi0, root or resource link)".into());
    }
    None
}

/// ADE's rules before it asks lsblk what is below the device (`DiskUtil.py:1226-1244`; the lsblk call is at
/// `:1245`): only a device that passes them is asked about.
pub fn reason_before_children(it: &BlkItem, m: &Machine, vt: VolumeType) -> Option<String> {
    let id = m.device_ids.get(&it.name).map(String::as_str).unwrap_or("");
    if vt == VolumeType::Data {
        // is_data_disk, DiskUtil.py:1191-1213
        if id.starts_with("00000000-0000") {
            return Some("the root disk (device id 00000000-0000)".into());
        }
        if id.starts_with("00000000-0001") {
            return Some("the resource disk (device id 00000000-0001)".into());
        }
        if it.fstype == "vfat" && it.label.eq_ignore_ascii_case("bek") {
            return Some("the BEK volume".into());
        }
        if m.special.contains(&it.name) {
            return Some("a special Azure device (IDE, scsi0, root or resource link)".into());
        }
    }
    // should_skip_for_inplace_encryption, DiskUtil.py:1215-1266, in its order
    if it.fstype.is_empty() {
        return Some("no filesystem".into());
    }
    if it.size < MIN_SIZE {
        return Some(format!("smaller than 150 MiB ({} bytes)", it.size));
    }
    if !SUPPORTED_TYPES.contains(&it.kind.as_str()) {
        return Some(format!("device type {} is not encrypted in place", it.kind));
    }
    if it.uuid.is_empty() {
        return Some("no filesystem UUID".into());
    }
    None
}

/// `/dev/<name>`, or `/dev/mapper/<name>` for device-mapper names (ADE's `get_device_path`, `DiskUtil.py:778-788`,
/// takes the first that exists; lsblk names mapper devices by their mapper name).
pub fn device_path(it: &BlkItem) -> PathBuf {
    if matches!(it.kind.as_str(), "lvm" | "crypt" | "dm" | "mpath") {
        PathBuf::from(format!("/dev/mapper/{}", it.name))
    } else {
        PathBuf::from(format!("/dev/{}", it.name))
    }
}

/// Where a device is mounted now, from mountinfo by device number (the mount of the filesystem's root first).
pub fn mount_of(mounts: &[Mount], dev: (u32, u32)) -> Option<PathBuf> {
    let on: Vec<&Mount> = mounts.iter().filter(|m| m.dev == dev).collect();
    on.iter().find(|m| m.root == "/").or(on.first()).map(|m| m.mount_point.clone())
}

/// The volumes ADE selects (each name once, in lsblk's order), and the ones it passes over with why.
pub fn select(m: &Machine, vt: VolumeType) -> (Vec<DataVolume>, Vec<Skipped>) {
    select_for(m, vt, false)
}

/// EncryptFormatAll's extra rules (`handle.py:1912-1919`), after the in-place ones: mounted (lsblk's MOUNTPOINT),
/// and `/dev/<name>` reached by a `/dev/disk/azure` link or an NVMe name.
fn format_all_reason(it: &BlkItem, m: &Machine) -> Option<String> {
    if it.mountpoint.is_empty() {
        return Some("not mounted (EncryptFormatAll formats mounted volumes only)".into());
    }
    if !m.azure_named.contains(&PathBuf::from(format!("/dev/{}", it.name))) && !it.name.starts_with("nvme") {
        return Some("no /dev/disk/azure link leads to it (EncryptFormatAll)".into());
    }
    None
}

/// [`select`], for EncryptFormatAll when `format_all`.
pub fn select_for(m: &Machine, vt: VolumeType, format_all: bool) -> (Vec<DataVolume>, Vec<Skipped>) {
    let mut chosen: Vec<DataVolume> = vec![];
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut skipped = vec![];
    for it in &m.items {
        if names.contains(it.name.as_str()) {
            continue;
        }
        let why = skip_reason(it, m, vt, m.lines_below.get(&it.name).copied())
            .or_else(|| format_all.then(|| format_all_reason(it, m)).flatten());
        match why {
            Some(why) => skipped.push(Skipped { name: it.name.clone(), why }),
            None => {
                names.insert(&it.name);
                chosen.push(DataVolume {
                    device: device_path(it),
                    uuid: it.uuid.clone(),
                    fstype: it.fstype.clone(),
                    mount: mount_of(&m.mounts, it.majmin),
                    size_bytes: it.size,
                })
            }
        }
    }
    (chosen, skipped)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encrypt_format_all_takes_only_mounted_azure_named_volumes() {
        let mut m = machine(vec![
            item("sdc1", "part", "ext4", "u", G, "/data"),
            item("sdd1", "part", "ext4", "v", G, ""),
            item("sde1", "part", "ext4", "w", G, "/e"),
            item("nvme0n2p1", "part", "ext4", "x", G, "/n"),
        ]);
        m.azure_named = ["/dev/sdc1", "/dev/sdd1"].iter().map(PathBuf::from).collect();
        assert_eq!(select(&m, VolumeType::Data).0.len(), 4);
        let (v, s) = select_for(&m, VolumeType::Data, true);
        let got: Vec<String> = v.iter().map(|v| v.device.display().to_string()).collect();
        assert_eq!(got, ["/dev/sdc1", "/dev/nvme0n2p1"]);
        assert!(s[0].why.contains("not mounted") && s[0].name == "sdd1", "{s:?}");
        assert!(s[1].why.contains("/dev/disk/azure") && s[1].name == "sde1", "{s:?}");
    }

    use super::*;

    fn item(name: &str, kind: &str, fstype: &str, uuid: &str, size: u64, mp: &str) -> BlkItem {
        BlkItem {
            name: name.into(),
            kind: kind.into(),
            fstype: fstype.into(),
            uuid: uuid.into(),
            size,
            mountpoint: mp.into(),
            majmin: (8, 33),
            ..Default::default()
        }
    }

    const G: u64 = 1 << 30;

    fn machine(items: Vec<BlkItem>) -> Machine {
        let lines_below = items.iter().map(|i| (i.name.clone(), 1)).collect();
        Machine { items, lines_below, ..Default::default() }
    }

    fn reason(it: BlkItem, m: &Machine) -> Option<String> {
        skip_reason(&it, m, VolumeType::Data, Some(1))
    }

    #[test]
    fn each_rule_of_ade_skips_with_its_reason() {
        let mut m = machine(vec![]);
        m.device_ids.insert("sda1".into(), "00000000-0000-8899-0000-000000000000".into());
        m.device_ids.insert("sdb1".into(), "00000000-0001-8899-0000-000000000000".into());
        m.special.insert("sde1".into());
        let ok = |n: &str| item(n, "part", "ext4", "u", 10 * G, "/data");
        assert_eq!(reason(ok("sdc1"), &m), None);
        assert!(reason(ok("sda1"), &m).unwrap().contains("root disk"));
        assert!(reason(ok("sdb1"), &m).unwrap().contains("resource disk"));
        assert!(reason(ok("sde1"), &m).unwrap().contains("special Azure device"));
        let mut bek = item("sdf1", "part", "vfat", "u", 10 * G, "");
        bek.label = "BEK VOLUME".into();
        assert_eq!(reason(bek.clone(), &m), None, "only the label BEK (any case) is the BEK volume");
        bek.label = "bek".into();
        assert!(reason(bek, &m).unwrap().contains("BEK"));
        assert!(reason(item("sdc1", "part", "", "u", 10 * G, ""), &m).unwrap().contains("no filesystem"));
        assert!(reason(item("sdc1", "part", "ext4", "u", MIN_SIZE - 1, ""), &m).unwrap().contains("150 MiB"));
        assert_eq!(reason(item("sdc1", "part", "ext4", "u", MIN_SIZE, ""), &m), None, "150 MiB itself is enough");
        assert!(reason(item("loop0", "loop", "ext4", "u", G, ""), &m).unwrap().contains("type loop"));
        assert!(reason(item("sdc1", "part", "ext4", "", G, ""), &m).unwrap().contains("UUID"));
        assert!(reason(item("sdc1", "part", "crypto_LUKS", "u", G, ""), &m).unwrap().contains("LUKS"));
        assert!(reason(item("sdc1", "part", "ext4", "u", G, "/"), &m).unwrap().contains("mounted on /"));
        let m2 = machine(vec![]);
        let disk = item("sdc", "disk", "LVM2_member", "u", G, "");
        assert!(skip_reason(&disk, &m2, VolumeType::Data, Some(2)).unwrap().contains("below it"));
        assert_eq!(skip_reason(&disk, &m2, VolumeType::Data, Some(1)), None);
    }

    #[test]
    fn volume_type_all_keeps_device_ids_but_not_the_special_devices() {
        let mut m = machine(vec![]);
        m.device_ids.insert("sdb1".into(), "00000000-0001-8899-0000-000000000000".into());
        m.special.insert("sde1".into());
        let it = item("sdb1", "part", "ext4", "u", G, "/mnt");
        assert_eq!(skip_reason(&it, &m, VolumeType::All, Some(1)), None);
        let it = item("sde1", "part", "ext4", "u", G, "/x");
        assert!(skip_reason(&it, &m, VolumeType::All, Some(1)).is_some());
    }

    #[test]
    fn selection_takes_mount_from_mountinfo_and_names_once() {
        let (mounts, _) = crate::mountinfo::parse(
            "30 1 8:33 /sub /bind rw - ext4 /dev/sdc1 rw\n31 1 8:33 / /data rw - ext4 /dev/sdc1 rw\n",
        );
        let mut lv = item("datavg-lv", "lvm", "xfs", "v", G, "");
        lv.majmin = (253, 2);
        let mut m =
            machine(vec![item("sdc1", "part", "ext4", "u", G, "/stale"), item("sdc1", "part", "ext4", "u", G, ""), lv]);
        m.mounts = mounts;
        let (v, s) = select(&m, VolumeType::Data);
        assert!(s.is_empty());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].device, PathBuf::from("/dev/sdc1"));
        assert_eq!(v[0].mount, Some(PathBuf::from("/data")));
        assert_eq!(v[1].device, PathBuf::from("/dev/mapper/datavg-lv"));
        assert_eq!(v[1].mount, None);
    }
}
