//! The ground the workloads stand on: the block-device filesystems mounted when the window opened. Restore starts
//! no workload until each of them is mounted again (issue 23 item 10): ADE's stripdown unmounts every idle
//! filesystem (`umount -a`, `oscrypto/ubuntu_2004/encryptstates/StripdownState.py:48`, `rhel_72/.../StripdownState.py:50`)
//! and a data volume whose encryption failed is left unmounted (azure-linux-extensions #658): a database started
//! then writes into the empty mount-point folder on `/`. A missing one is mounted as the boot would (its mount
//! unit, which systemd's fstab generator made from `/etc/fstab`); one that cannot be mounted keeps every workload
//! down and masked, named in restore's error. Pure decisions here; restore carries them out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mountinfo::Mount;

/// One filesystem of the ground, as it was mounted when the window opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ground {
    /// Where it was mounted.
    pub mount_point: PathBuf,
    /// Its source then (a block device: `/dev/sdc1`, `/dev/mapper/...`).
    pub source: String,
}

/// Mount points that are ADE's own to unmount, format and mount again, never a workload's ground: the resource
/// disk (`ResourceDiskUtil.py`: `/mnt/resource`, and `/mnt` where the agent mounts it) and the BEK volume
/// (`/mnt/azure_bek_disk`, `CommonVariables.py`).
pub const ADES_OWN: &[&str] = &["/mnt", "/mnt/resource", "/mnt/azure_bek_disk"];

/// The mount points the boot mounts from `/etc/fstab` (`fstab` its text): every line but `noauto` ones and swap.
pub fn boot_mounts(fstab: &str) -> Vec<PathBuf> {
    crate::volumes::verify::parse_fstab(fstab)
        .into_iter()
        .filter(|(_, mp, fstype, opts)| {
            fstype != "swap" && mp.starts_with('/') && !opts.split(',').any(|o| o == "noauto")
        })
        .map(|(_, mp, _, _)| PathBuf::from(mp))
        .collect()
}

/// The ground to record from the mount table: every block-device filesystem (source under `/dev/`) that the boot
/// mounts (its mount point in `boot`, from [`boot_mounts`]), but `/` (there whenever restore runs), ADE's own mounts
/// and anything under the API filesystems; one per mount point (the top one). What the workloads mount themselves
/// (a container engine's devicemapper or overlay, kubelet's volumes, a unit's `ExecStartPre=mount`) and snap's
/// loop mounts are not ground: they come back with their owner, or not at all (found by the third reading).
pub fn to_record(mounts: &[Mount], boot: &[PathBuf]) -> Vec<Ground> {
    let api = ["/proc", "/sys", "/dev", "/run"];
    let mut out: Vec<Ground> = vec![];
    for m in mounts {
        let mp = &m.mount_point;
        if !m.source.starts_with("/dev/")
            || !boot.contains(mp)
            || mp == Path::new("/")
            || ADES_OWN.iter().any(|o| mp == Path::new(o))
            || api.iter().any(|a| mp.starts_with(a))
        {
            continue;
        }
        out.retain(|g| &g.mount_point != mp);
        out.push(Ground { mount_point: mp.clone(), source: m.source.clone() });
    }
    out
}

/// The recorded ground not mounted now from a block device (by mount point: ADE mounts an encrypted data volume
/// again from its mapper, a new source at the same place), each with what is mounted there instead, if anything
/// (a bind of an empty folder, say: systemd creates a bind mount's missing source).
pub fn missing<'a>(recorded: &'a [Ground], now: &[Mount]) -> Vec<(&'a Ground, Option<String>)> {
    recorded
        .iter()
        .filter_map(|g| {
            let top = now.iter().rev().find(|m| m.mount_point == g.mount_point);
            match top {
                Some(m) if m.source.starts_with("/dev/") => None,
                Some(m) => Some((g, Some(m.source.clone()))),
                None => Some((g, None)),
            }
        })
        .collect()
}

/// The name of the mount unit systemd gives `path` (`systemd-escape --path --suffix=mount`, as systemd 219 escapes
/// it, `src/shared/unit-name.c` `unit_name_from_path`): `/` between components becomes `-`; any byte but ASCII
/// letters, digits, `:`, `_` and `.` (and a leading `.`) becomes `\xNN`.
pub fn mount_unit(path: &Path) -> String {
    let s = path.to_string_lossy();
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return "-.mount".into();
    }
    let mut out = String::new();
    for (i, b) in parts.join("/").bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push_str(".mount");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Vec<Mount> {
        crate::mountinfo::parse(text).0
    }

    const MOUNTS: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
23 22 0:5 / /dev rw - devtmpfs udev rw
24 22 0:21 / /proc rw - proc proc rw
25 22 8:2 / /boot rw - ext4 /dev/sda2 rw
26 22 8:33 / /data rw - xfs /dev/sdc1 rw
27 22 8:17 / /mnt rw - ext4 /dev/sdb1 rw
28 22 0:40 / /run rw - tmpfs tmpfs rw
29 28 7:0 / /run/snap rw - squashfs /dev/loop0 ro
30 22 0:41 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
31 22 8:49 / /var/lib/pg\\040data rw - ext4 /dev/sdd1 rw
";

    const FSTAB: &str = "\
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=4a1e / ext4 defaults 0 1
UUID=77b2 /boot ext4 defaults 0 2
UUID=d474 /data xfs defaults,nofail 0 2
/dev/sdb1 /mnt auto defaults,nofail,x-systemd.requires=cloud-init.service 0 2
/dev/sdd1 /var/lib/pg\\040data ext4 defaults 0 2
/dev/sde1 /backup ext4 noauto 0 0
/swapfile none swap sw 0 0
";

    fn record(mounts: &str) -> Vec<Ground> {
        to_record(&table(mounts), &boot_mounts(FSTAB))
    }

    #[test]
    fn the_ground_is_every_block_filesystem_the_boot_mounts_but_the_root_ades_own_and_the_api_mounts() {
        assert_eq!(
            boot_mounts(FSTAB),
            ["/", "/boot", "/data", "/mnt", "/var/lib/pg data"].map(PathBuf::from),
            "noauto and swap are not the boot's"
        );
        let g = record(MOUNTS);
        let mps: Vec<&str> = g.iter().map(|g| g.mount_point.to_str().unwrap()).collect();
        assert_eq!(mps, ["/boot", "/data", "/var/lib/pg data"]);
        assert_eq!(g[1].source, "/dev/sdc1");
        // A block filesystem a workload mounts itself (no fstab line: docker's devicemapper, kubelet's volumes), a
        // snap's loop mount: not ground.
        let more = format!(
            "{MOUNTS}40 22 253:5 / /var/lib/docker/devicemapper/mnt/ab12 rw - xfs /dev/mapper/docker-8:1-ab12 rw\n\
             41 22 7:1 / /snap/core/1 ro - squashfs /dev/loop1 ro\n"
        );
        assert_eq!(record(&more), g);
    }

    #[test]
    fn a_mount_point_mounted_again_from_another_source_is_there() {
        let g = record(MOUNTS);
        // ADE encrypted /data: mounted again from its mapper. /var/lib/pg data left unmounted (#658).
        let now = table(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n25 22 8:2 / /boot rw - ext4 /dev/sda2 rw\n\
             26 22 253:1 / /data rw - xfs /dev/mapper/8c1d-uuid rw\n",
        );
        let gone: Vec<&str> = missing(&g, &now).iter().map(|(g, _)| g.mount_point.to_str().unwrap()).collect();
        assert_eq!(gone, ["/var/lib/pg data"]);
        assert!(missing(&g, &table(MOUNTS)).is_empty());
        // Something else mounted there (a bind of an empty folder): not the ground.
        let bind = format!("{MOUNTS}50 22 0:60 /data-src-gone /data rw - overlay overlay rw\n");
        assert_eq!(missing(&g, &table(&bind)), [(&g[1], Some("overlay".to_string()))]);
    }

    #[test]
    fn mount_units_are_named_as_systemd_escapes_paths() {
        // systemd-escape --path --suffix=mount (as `systemd-escape --path --suffix=mount` prints them).
        assert_eq!(mount_unit(Path::new("/data")), "data.mount");
        assert_eq!(mount_unit(Path::new("/var/lib/pg data")), "var-lib-pg\\x20data.mount");
        assert_eq!(mount_unit(Path::new("/srv/my-db/")), "srv-my\\x2ddb.mount");
        assert_eq!(mount_unit(Path::new("/.hidden/a.b")), "\\x2ehidden-a.b.mount");
        assert_eq!(mount_unit(Path::new("/")), "-.mount");
    }
}
