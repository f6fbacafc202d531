//! Whether ADE encrypted a selected volume, decided over facts already read: what ADE leaves behind after its
//! in-place data path (ADE 1.4.0.12): a LUKS header on the device (`encrypt_inplace_without_separate_header_file`,
//! `handle.py:1335-1553`) opened as a crypt mapping, an `/etc/crypttab` line `<mapper> <device> <key> luks,nofail`
//! (`CryptMountConfigUtil.py:506-523`), or a line in the legacy `azure_crypt_mount` file when ADE still uses it
//! (`CryptMountConfigUtil.py:483-504`, `99-112`), and fstab's line for the mount point rewritten to the mapper
//! (`CryptMountConfigUtil.py:702-747`). It must not read anything.

use std::path::{Path, PathBuf};

use super::lsblk::BlkItem;
use super::{DataVolume, Verdict};

/// LUKS1 and LUKS2 both start with this magic (cryptsetup's `LUKS_MAGIC`).
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// One `/etc/crypttab` (or `azure_crypt_mount`) entry, with whether its device field names the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptEntry {
    /// The mapper name.
    pub name: String,
    /// The device field as written.
    pub dev: String,
    /// True when the device field resolves to the volume (a path that leads to it, or `UUID=` its LUKS UUID).
    pub is_volume: bool,
    /// The mount point (azure_crypt_mount only).
    pub mount_point: Option<String>,
}

/// What was read about one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The first bytes of the device are LUKS's magic (Err: the device could not be read).
    pub luks_magic: Result<bool, String>,
    /// `lsblk <device>`: the device itself first, then what is below it.
    pub lsblk: Result<Vec<BlkItem>, String>,
    /// Entries of `/etc/crypttab` (Ok(empty) when there is none).
    pub crypttab: Result<Vec<CryptEntry>, String>,
    /// Entries of ADE's `azure_crypt_mount` (empty when absent).
    pub azure_crypt_mount: Vec<CryptEntry>,
    /// `/etc/fstab`'s text.
    pub fstab: Result<String, String>,
}

/// A crypttab line split like ADE does (`CryptMountConfigUtil.py:70-77`): at least 3 fields, not a comment.
pub fn parse_crypttab(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && !f[0].starts_with('#')).then(|| (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

/// An fstab line: (device, mount point, fstype, options), like ADE's `parse_fstab_line`
/// (`CryptMountConfigUtil.py:675-689`: at least 4 fields, not a comment).
pub fn parse_fstab(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && !f[0].starts_with('#'))
                .then(|| (f[0].into(), crate::mountinfo::unescape(f[1]), f[2].into(), f[3].into()))
        })
        .collect()
}

/// The decision: encrypted when there is a LUKS header or a crypt mapping, a crypttab (or azure_crypt_mount)
/// entry for the volume, and fstab's line for its mount point, if there is one, names the mapper.
pub fn decide(v: &DataVolume, f: &Facts) -> Verdict {
    let dev = v.device.display();
    let no = |why: String| Verdict::NotEncrypted { why };
    let below = f.lsblk.as_ref().map(|items| items.iter().skip(1).filter(|i| i.kind == "crypt").collect::<Vec<_>>());
    let lsblk_luks = f.lsblk.as_ref().ok().and_then(|i| i.first()).is_some_and(|i| i.fstype == "crypto_LUKS");
    let header = matches!(f.luks_magic, Ok(true)) || lsblk_luks;
    let mapping = below.as_ref().ok().and_then(|b| b.first().map(|i| i.name.clone()));
    if !header && mapping.is_none() {
        let mut unread = vec![];
        if let Err(e) = &f.luks_magic {
            unread.push(e.as_str());
        }
        if let Err(e) = &f.lsblk {
            unread.push(e.as_str());
        }
        let tail = if unread.is_empty() { String::new() } else { format!(" ({})", unread.join("; ")) };
        return no(format!("{dev} has no LUKS header and no crypt mapping over it{tail}"));
    }
    let crypttab = match &f.crypttab {
        Ok(c) => c,
        Err(e) => return no(format!("{dev}: {e}")),
    };
    let entry = crypttab
        .iter()
        .chain(&f.azure_crypt_mount)
        .find(|e| e.is_volume || mapping.as_deref() == Some(e.name.as_str()));
    let Some(entry) = entry else {
        return no(format!("{dev} is LUKS but /etc/crypttab has no entry for it: it will not be opened at boot"));
    };
    let mapper = PathBuf::from(format!("/dev/mapper/{}", entry.name));
    if let Some(mp) = &v.mount {
        let fstab = match &f.fstab {
            Ok(t) => parse_fstab(t),
            Err(e) => return no(format!("{dev}: {e}")),
        };
        let line = fstab.iter().find(|(_, m, _, _)| Path::new(m) == mp);
        match line {
            Some((d, _, _, _)) if Path::new(d) != mapper => {
                return no(format!("/etc/fstab still mounts {} on {} (not {})", d, mp.display(), mapper.display()))
            }
            // No fstab line: ADE rewrites only an existing one (CryptMountConfigUtil.py:715-741); the legacy
            // azure_crypt_mount removes it and mounts from its own file.
            _ => {}
        }
    }
    Verdict::Encrypted { mapper }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(mount: Option<&str>) -> DataVolume {
        DataVolume {
            device: "/dev/sdc1".into(),
            uuid: "fs-uuid".into(),
            fstype: "ext4".into(),
            mount: mount.map(PathBuf::from),
            size_bytes: 1 << 30,
        }
    }

    fn blk(name: &str, kind: &str, fstype: &str) -> BlkItem {
        BlkItem { name: name.into(), kind: kind.into(), fstype: fstype.into(), ..Default::default() }
    }

    fn encrypted() -> Facts {
        Facts {
            luks_magic: Ok(true),
            lsblk: Ok(vec![blk("sdc1", "part", "crypto_LUKS"), blk("c0ffee", "crypt", "ext4")]),
            crypttab: Ok(vec![CryptEntry {
                name: "c0ffee".into(),
                dev: "/dev/disk/azure/scsi1/lun0-part1".into(),
                is_volume: true,
                mount_point: None,
            }]),
            azure_crypt_mount: vec![],
            fstab: Ok("UUID=r / xfs defaults 0 0\n/dev/mapper/c0ffee /data ext4 nofail,defaults 0 0\n".into()),
        }
    }

    fn why(v: Verdict) -> String {
        match v {
            Verdict::NotEncrypted { why } => why,
            e => panic!("expected not encrypted, got {e:?}"),
        }
    }

    #[test]
    fn what_ade_leaves_behind_is_encrypted() {
        assert_eq!(
            decide(&vol(Some("/data")), &encrypted()),
            Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() }
        );
        // closed (no mapping) but with its header and crypttab entry: still encrypted
        let mut f = encrypted();
        f.lsblk = Ok(vec![blk("sdc1", "part", "crypto_LUKS")]);
        assert!(matches!(decide(&vol(Some("/data")), &f), Verdict::Encrypted { .. }));
        // the header unreadable but a mapping shown: the crypttab entry found by mapper name
        let mut f = encrypted();
        f.luks_magic = Err("/dev/sdc1: permission denied".into());
        f.crypttab.as_mut().unwrap()[0].is_volume = false;
        assert!(matches!(decide(&vol(Some("/data")), &f), Verdict::Encrypted { .. }));
    }

    #[test]
    fn a_skipped_volume_is_named_with_what_is_missing() {
        let mut f = encrypted();
        f.luks_magic = Ok(false);
        f.lsblk = Ok(vec![blk("sdc1", "part", "ext4")]);
        assert_eq!(why(decide(&vol(Some("/data")), &f)), "/dev/sdc1 has no LUKS header and no crypt mapping over it");
        let mut f = encrypted();
        f.crypttab = Ok(vec![]);
        assert!(why(decide(&vol(Some("/data")), &f)).contains("/etc/crypttab has no entry"));
        let mut f = encrypted();
        f.fstab = Ok("UUID=fs-uuid /data ext4 defaults 0 2\n".into());
        assert_eq!(
            why(decide(&vol(Some("/data")), &f)),
            "/etc/fstab still mounts UUID=fs-uuid on /data (not /dev/mapper/c0ffee)"
        );
        let mut f = encrypted();
        f.fstab = Err("/etc/fstab: permission denied".into());
        assert!(why(decide(&vol(Some("/data")), &f)).contains("/etc/fstab: permission denied"));
        // an unmounted volume needs no fstab line
        assert!(matches!(decide(&vol(None), &f), Verdict::Encrypted { .. }));
    }

    #[test]
    fn legacy_azure_crypt_mount_counts_as_the_entry() {
        let mut f = encrypted();
        f.crypttab = Ok(vec![]);
        f.azure_crypt_mount = vec![CryptEntry {
            name: "c0ffee".into(),
            dev: "/dev/sdc1".into(),
            is_volume: true,
            mount_point: Some("/data".into()),
        }];
        f.fstab = Ok("UUID=r / xfs defaults 0 0\n".into());
        assert!(matches!(decide(&vol(Some("/data")), &f), Verdict::Encrypted { .. }));
    }

    #[test]
    fn crypttab_and_fstab_are_split_like_ade() {
        assert_eq!(
            parse_crypttab("# c\nname /dev/sdc1 /mnt/azure_bek_disk/LinuxPassPhraseFileName luks,nofail\nshort x\n"),
            vec![("name".to_string(), "/dev/sdc1".to_string())]
        );
        let f = parse_fstab("#x y z w\n/dev/sdc1 /my\\040data ext4 defaults 0 0\nbad line\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1, "/my data");
    }
}
