//! The OS disk's layout and the data disks' mount points, from mountinfo and `/sys/block/dm-*`.
//! Pure over the inputs; it must not read files itself.

use std::path::Path;

use crate::mountinfo::Mount;

use super::{Check, DmDevice, Input, Status, DATA_MOUNTS, OS_LVM, ROOT_FILESYSTEM};

/// The volume group of the supported LVM OS disk layout.
pub const ROOTVG: &str = "rootvg";
/// The logical volumes of the supported layout (`rootvg-rootlv` holds `/`).
pub const ROOTVG_LVS: &[&str] = &["rootlv", "usrlv", "varlv", "homelv", "tmplv"];

const LVM_TITLE: &str = "OS disk LVM layout";
const LVM_FIX: &str = "ADE supports an LVM OS disk only in the rootvg layout of the RHEL LVM gallery images \
    (rootvg-rootlv, -usrlv, -varlv, -homelv, -tmplv); rebuild the VM from a supported gallery image and move the \
    data over.";

const FS_TITLE: &str = "root filesystem of a supported image";
const FS_FIX: &str = "ADE encrypts the OS disk of stock gallery images (ext4 or xfs root); an image customised away \
    from the supported filesystem or partitioning is not supported: rebuild from a gallery image.";

const MOUNTS_TITLE: &str = "data disks mounted side by side";
const MOUNTS_FIX: &str =
    "Mount each data disk on its own top-level folder (for example /data1, /data2), neither under \
    /mnt nor one inside another: change /etc/fstab, remount, then enable encryption.";

/// Mount points of the OS disk, the resource disk and ADE's key volume: never data disks.
const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/efi", "/mnt", "/mnt/resource", "/mnt/azure_bek_disk"];

/// The mount of `/` (the last one mounted there).
fn root_mount(mounts: &[Mount]) -> Option<&Mount> {
    mounts.iter().rev().find(|m| m.mount_point == Path::new("/"))
}

/// The device-mapper device under a mount: by device number, else by the source's name.
pub(super) fn dm_of<'a>(m: &Mount, dm: &'a [DmDevice]) -> Option<&'a DmDevice> {
    dm.iter().find(|d| d.dev == Some(m.dev)).or_else(|| {
        let src = m.source.as_str();
        dm.iter().find(|d| {
            src.strip_prefix("/dev/mapper/") == Some(d.name.as_str())
                || src.strip_prefix("/dev/") == Some(d.node.as_str())
        })
    })
}

/// The volume group of an LVM mapper name (`vg-lv`, a `-` inside a name doubled).
pub fn vg_of(name: &str) -> Option<String> {
    let mut vg = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                vg.push('-');
            } else {
                return (!vg.is_empty()).then_some(vg);
            }
        } else {
            vg.push(c);
        }
    }
    None
}

fn looks_dm(source: &str) -> bool {
    source.starts_with("/dev/mapper/") || source.starts_with("/dev/dm-")
}

/// `/` on LVM fails unless it is the supported rootvg layout.
pub fn os_lvm(mounts: &Input<Vec<Mount>>, dm: &Input<Vec<DmDevice>>) -> Check {
    let mk = |r, e: String| Check::new(OS_LVM, LVM_TITLE, LVM_FIX, r, e);
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    let Some(root) = root_mount(mounts) else { return mk(Status::Unknown, "mountinfo has no / entry".into()) };
    let dm = match dm {
        Ok(d) => d,
        Err(e) if looks_dm(&root.source) => return mk(Status::Unknown, format!("/ is on {}; {e}", root.source)),
        Err(_) => return mk(Status::Pass, format!("/ is on {}, not LVM", root.source)),
    };
    let Some(d) = dm_of(root, dm) else { return mk(Status::Pass, format!("/ is on {}, not LVM", root.source)) };
    if d.uuid.is_none() {
        return mk(Status::Unknown, format!("/ is on {} ({}) whose dm/uuid is unreadable", d.name, d.node));
    }
    if !d.is_lvm() {
        return mk(Status::Pass, format!("/ is on device-mapper {} ({}), not LVM", d.name, d.node));
    }
    let vg = vg_of(&d.name).unwrap_or_default();
    let want_root = format!("{ROOTVG}-rootlv");
    if d.name != want_root {
        return mk(
            Status::Fail,
            format!("/ is on logical volume {} of volume group {vg}, not the supported {want_root}", d.name),
        );
    }
    let missing: Vec<String> = ROOTVG_LVS
        .iter()
        .map(|lv| format!("{ROOTVG}-{lv}"))
        .filter(|n| !dm.iter().any(|d| d.is_lvm() && &d.name == n))
        .collect();
    if missing.is_empty() {
        mk(Status::Pass, format!("/ is on {want_root}: the supported rootvg layout ({})", ROOTVG_LVS.join(", ")))
    } else {
        mk(Status::Fail, format!("/ is on {want_root} but the rootvg layout lacks {}", missing.join(", ")))
    }
}

/// `/` should be ext4 or xfs (ext2/3 pass too), as on gallery images.
pub fn root_filesystem(mounts: &Input<Vec<Mount>>) -> Check {
    let mk = |r, e: String| Check::new(ROOT_FILESYSTEM, FS_TITLE, FS_FIX, r, e);
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    let Some(root) = root_mount(mounts) else { return mk(Status::Unknown, "mountinfo has no / entry".into()) };
    match root.fstype.as_str() {
        "ext4" | "xfs" | "ext3" | "ext2" => mk(Status::Pass, format!("/ is {} on {}", root.fstype, root.source)),
        "tmpfs" | "ramfs" => mk(
            Status::Warn,
            format!("/ is {} on {}: a RAM root (ADE's own, while it encrypts?)", root.fstype, root.source),
        ),
        other => mk(Status::Warn, format!("/ is {other} on {}: not a filesystem of the supported images", root.source)),
    }
}

/// The whole disk of a partition path (`/dev/sda2` → `/dev/sda`, `/dev/nvme0n1p2` → `/dev/nvme0n1`).
fn disk_of(source: &str) -> &str {
    let t = source.trim_end_matches(|c: char| c.is_ascii_digit());
    match t.strip_suffix('p') {
        Some(n) if n.ends_with(|c: char| c.is_ascii_digit()) => n,
        _ => t,
    }
}

/// The data disks' mounts: block devices other than the OS disk (its partitions, its volume group), the resource
/// disk, ADE's key volume, loop devices and optical media; bind mounts and second mounts of a device left out.
pub fn data_mount_points<'a>(mounts: &'a [Mount], dm: &[DmDevice]) -> Vec<&'a Mount> {
    let root = root_mount(mounts);
    let root_dm = root.and_then(|r| dm_of(r, dm));
    let os_vg = root_dm.filter(|d| d.is_lvm()).and_then(|d| vg_of(&d.name));
    let os_disk = root.filter(|_| root_dm.is_none()).map(|r| disk_of(&r.source));
    let mut seen = vec![];
    let mut out = vec![];
    for m in mounts {
        let src = m.source.as_str();
        let is_data = src.starts_with("/dev/")
            && !src.starts_with("/dev/loop")
            && !matches!(m.fstype.as_str(), "iso9660" | "udf" | "squashfs" | "swap")
            && m.root == "/"
            && !SYSTEM_MOUNTS.iter().any(|s| m.mount_point == Path::new(s))
            && os_disk != Some(disk_of(src))
            && !(os_vg.is_some() && dm_of(m, dm).filter(|d| d.is_lvm()).and_then(|d| vg_of(&d.name)) == os_vg);
        if is_data && !seen.contains(&m.dev) {
            seen.push(m.dev);
            out.push(m);
        }
    }
    out
}

/// Data disks under /mnt, or mounted below one another, fail.
pub fn data_mounts(mounts: &Input<Vec<Mount>>, dm: &Input<Vec<DmDevice>>) -> Check {
    let mk = |r, e: String| Check::new(DATA_MOUNTS, MOUNTS_TITLE, MOUNTS_FIX, r, e);
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    // Without dm information LVM data volumes still count; only the OS volume group cannot be told apart.
    let no_dm = vec![];
    let data = data_mount_points(mounts, dm.as_ref().unwrap_or(&no_dm));
    let mut bad = vec![];
    for m in &data {
        let p = m.mount_point.display();
        if m.mount_point.starts_with("/mnt") {
            bad.push(format!("{p} ({}) is under /mnt", m.source));
        }
        if let Some(top) =
            data.iter().find(|t| t.mount_point != m.mount_point && m.mount_point.starts_with(&t.mount_point))
        {
            bad.push(format!("{p} ({}) is mounted below {} ({})", m.source, top.mount_point.display(), top.source));
        }
    }
    let listed: Vec<String> = data.iter().map(|m| format!("{} ({})", m.mount_point.display(), m.source)).collect();
    if !bad.is_empty() {
        mk(Status::Fail, bad.join("; "))
    } else if listed.is_empty() {
        mk(Status::Pass, "no data disk mounted".into())
    } else {
        mk(Status::Pass, format!("data disks on their own folders: {}", listed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse;

    fn dmdev(node: &str, dev: (u32, u32), name: &str, uuid: &str) -> DmDevice {
        DmDevice { node: node.into(), dev: Some(dev), name: name.into(), uuid: Some(uuid.into()) }
    }

    fn rootvg() -> Vec<DmDevice> {
        ["rootlv", "usrlv", "varlv", "homelv", "tmplv"]
            .iter()
            .enumerate()
            .map(|(i, lv)| dmdev(&format!("dm-{i}"), (253, i as u32), &format!("rootvg-{lv}"), "LVM-abc"))
            .collect()
    }

    const RHEL_LVM: &str = "\
60 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/rootvg-rootlv rw,attr2\n\
61 60 253:1 / /usr rw,relatime shared:2 - xfs /dev/mapper/rootvg-usrlv rw\n\
62 60 253:2 / /var rw,relatime shared:3 - xfs /dev/mapper/rootvg-varlv rw\n\
63 60 253:3 / /home rw,relatime shared:4 - xfs /dev/mapper/rootvg-homelv rw\n\
64 60 253:4 / /tmp rw,relatime shared:5 - xfs /dev/mapper/rootvg-tmplv rw\n\
65 60 8:2 / /boot rw,relatime shared:6 - xfs /dev/sda2 rw\n\
66 65 8:1 / /boot/efi rw,relatime shared:7 - vfat /dev/sda1 rw\n\
67 60 8:17 / /mnt/resource rw,relatime shared:8 - ext4 /dev/sdb1 rw\n\
68 60 8:33 / /data1 rw,relatime shared:9 - xfs /dev/sdc1 rw\n";

    fn m(text: &str) -> Input<Vec<Mount>> {
        Ok(parse(text).0)
    }

    #[test]
    fn vg_names_unescape_dashes() {
        assert_eq!(vg_of("rootvg-rootlv").as_deref(), Some("rootvg"));
        assert_eq!(vg_of("my--vg-lv--1").as_deref(), Some("my-vg"));
        assert_eq!(vg_of("osencrypt"), None);
        assert_eq!(vg_of("-x"), None);
    }

    #[test]
    fn rootvg_layout_passes_other_lvm_fails() {
        assert_eq!(os_lvm(&m(RHEL_LVM), &Ok(rootvg())).result, Status::Pass);
        let mut partial = rootvg();
        partial.retain(|d| d.name != "rootvg-tmplv");
        let c = os_lvm(&m(RHEL_LVM), &Ok(partial));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.contains("lacks rootvg-tmplv"), "{}", c.evidence);
        let centos = "1 0 253:0 / / rw - xfs /dev/mapper/centos-root rw\n2 1 8:1 / /boot rw - xfs /dev/sda1 rw\n";
        let c = os_lvm(&m(centos), &Ok(vec![dmdev("dm-0", (253, 0), "centos-root", "LVM-x")]));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.contains("volume group centos"), "{}", c.evidence);
        let plain = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(os_lvm(&m(plain), &Ok(vec![])).result, Status::Pass);
        assert_eq!(os_lvm(&m(plain), &Err("no sys".into())).result, Status::Pass);
        // root on ADE's dm-crypt volume is not LVM
        let enc = "1 0 253:0 / / rw - ext4 /dev/mapper/osencrypt rw\n";
        let c = os_lvm(&m(enc), &Ok(vec![dmdev("dm-0", (253, 0), "osencrypt", "CRYPT-LUKS1-abc-osencrypt")]));
        assert_eq!(c.result, Status::Pass);
        // found by name when the device number does not match
        let c = os_lvm(&m(centos), &Ok(vec![dmdev("dm-7", (253, 9), "centos-root", "LVM-x")]));
        assert_eq!(c.result, Status::Fail);
    }

    #[test]
    fn lvm_unknowns() {
        let centos = "1 0 253:0 / / rw - xfs /dev/mapper/centos-root rw\n";
        assert_eq!(os_lvm(&m(centos), &Err("/s/sys/block: not found".into())).result, Status::Unknown);
        let no_uuid = DmDevice { node: "dm-0".into(), dev: Some((253, 0)), name: "centos-root".into(), uuid: None };
        assert_eq!(os_lvm(&m(centos), &Ok(vec![no_uuid])).result, Status::Unknown);
        assert_eq!(os_lvm(&m("1 0 0:5 / /proc rw - proc proc rw\n"), &Ok(vec![])).result, Status::Unknown);
        assert_eq!(os_lvm(&Err("gone".into()), &Ok(vec![])).result, Status::Unknown);
    }

    #[test]
    fn root_filesystem_types() {
        assert_eq!(root_filesystem(&m(RHEL_LVM)).result, Status::Pass);
        assert_eq!(root_filesystem(&m("1 0 0:30 / / rw - btrfs /dev/sda2 rw\n")).result, Status::Warn);
        assert_eq!(root_filesystem(&m("1 0 0:30 / / rw - tmpfs tmpfs rw\n")).result, Status::Warn);
        assert_eq!(root_filesystem(&Err("x".into())).result, Status::Unknown);
    }

    #[test]
    fn data_disks_under_mnt_or_nested_fail() {
        let c = data_mounts(&m(RHEL_LVM), &Ok(rootvg()));
        assert_eq!(c.result, Status::Pass, "{}", c.evidence);
        assert_eq!(c.evidence, "data disks on their own folders: /data1 (/dev/sdc1)");
        let ubuntu = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
26 25 8:15 / /boot/efi rw shared:2 - vfat /dev/sda15 rw\n\
27 25 7:0 / /snap/core18/2128 ro shared:3 - squashfs /dev/loop0 ro\n\
28 25 8:17 / /mnt rw shared:4 - ext4 /dev/sdb1 rw\n\
29 28 8:33 / /mnt/data1 rw shared:5 - ext4 /dev/sdc1 rw\n\
30 25 8:49 / /data3 rw shared:6 - xfs /dev/sdd1 rw\n\
31 30 8:65 / /data3/data4 rw shared:7 - xfs /dev/sde1 rw\n\
32 25 8:49 /sub /srv/bind rw shared:8 - xfs /dev/sdd1 rw\n\
33 25 8:81 / /mnt/azure_bek_disk rw shared:9 - vfat /dev/sdf1 rw\n\
34 25 8:2 / /var/log rw shared:10 - ext4 /dev/sda2 rw\n";
        let c = data_mounts(&m(ubuntu), &Ok(vec![]));
        assert_eq!(c.result, Status::Fail);
        assert_eq!(
            c.evidence,
            "/mnt/data1 (/dev/sdc1) is under /mnt; /data3/data4 (/dev/sde1) is mounted below /data3 (/dev/sdd1)"
        );
        let pts: Vec<String> =
            data_mount_points(&parse(ubuntu).0, &[]).iter().map(|m| m.mount_point.display().to_string()).collect();
        assert_eq!(pts, ["/mnt/data1", "/data3", "/data3/data4"]);
        assert_eq!(
            data_mounts(&m("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"), &Ok(vec![])).evidence,
            "no data disk mounted"
        );
        assert_eq!(data_mounts(&Err("x".into()), &Ok(vec![])).result, Status::Unknown);
        assert_eq!(disk_of("/dev/nvme0n1p2"), "/dev/nvme0n1");
        assert_eq!(disk_of("/dev/sda12"), "/dev/sda");
    }
}
