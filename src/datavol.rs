//! The data volumes of a window (issue 17): the edge through which the window learns which data volumes ADE will
//! encrypt (`DataVolumes::select`) and, once ADE reports success, whether each one was (`DataVolumes::verify`),
//! and what the journal records of each ([`VolumeRef`]). It owns that narrow interface and the mount points an
//! operator names by hand (`prepare --data-mount`); ADE's selection rule and the verification themselves are
//! `crate::volumes`'s. It must not unmount, stop or change anything.
//!
//! ADE unmounts each selected data volume with a plain `umount <mount point>` and, when that fails (busy), logs
//! "error occured when do the umount" and skips the volume, still reporting "Encryption succeeded for data volumes"
//! (ADE 1.4.0.12: `DiskUtil.py:597-599`, `handle.py:1991-1996` in `enable_encryption_all_in_place`,
//! `handle.py:2168-2209`). So the window frees every selected data volume like `/`, and a volume ADE skipped is
//! found afterwards by verifying each one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::mountinfo;
use crate::paths::Paths;

/// Which volumes an enable encrypts, ADE's `VolumeType` (and `prepare --volume-type`): the OS volume, the data
/// volumes, or both (with All, ADE encrypts the data volumes first, `handle.py:2168-2209`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum VolumeType {
    /// The OS volume (`/`) only.
    #[default]
    Os,
    /// The data volumes only: `/` is not unmounted and not part of the window.
    Data,
    /// Both: the data volumes, then the OS volume.
    All,
}

impl VolumeType {
    /// ADE's spelling in any case (`handle.py:906` compares it lowercased).
    pub fn parse(s: &str) -> Option<VolumeType> {
        match s.to_ascii_lowercase().as_str() {
            "os" => Some(VolumeType::Os),
            "data" => Some(VolumeType::Data),
            "all" => Some(VolumeType::All),
            _ => None,
        }
    }
    /// OS or All.
    pub fn includes_os(self) -> bool {
        self != VolumeType::Data
    }
    /// Data or All.
    pub fn includes_data(self) -> bool {
        self != VolumeType::Os
    }
}

impl std::fmt::Display for VolumeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeType::Os => "os",
            VolumeType::Data => "data",
            VolumeType::All => "all",
        })
    }
}

/// A data volume the window frees, as the journal records it (journal version 2, `Record::volumes`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRef {
    /// Where it is mounted (what ADE unmounts).
    pub mount_point: PathBuf,
    /// The block device (the mount's source, e.g. `/dev/sdc1`).
    pub device: String,
    /// The filesystem UUID, when known (ADE selects only filesystems with one).
    #[serde(default)]
    pub uuid: Option<String>,
    /// The filesystem type (ADE's in-place path encrypts ext2/3/4 only).
    #[serde(default)]
    pub fstype: Option<String>,
}

impl std::fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.mount_point.display(), self.device)
    }
}

/// Whether a data volume is encrypted now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum VolumeCheck {
    /// Encrypted: mounted through this device-mapper name.
    Encrypted {
        /// The mapping (e.g. `/dev/mapper/<uuid>`).
        mapper: String,
    },
    /// Not encrypted (ADE skipped it, or its step failed), and why.
    NotEncrypted {
        /// What was found.
        why: String,
    },
}

/// The data volumes ADE will encrypt, and whether one was: one real implementation ([`AdeVolumes`]), a fake in
/// `crate::testing`.
pub trait DataVolumes {
    /// The mounted data volumes ADE's selection picks now for a request of this type (Data and All differ: All
    /// skips the `is_data_disk` rule, `DiskUtil.py:1191-1213`).
    fn select(&self, vt: VolumeType) -> anyhow::Result<Vec<VolumeRef>>;
    /// Whether `v` is encrypted now.
    fn verify(&self, v: &VolumeRef) -> VolumeCheck;
}

/// The data volumes mounted at `mounts`, named by hand (`prepare --data-mount`): each must be a mount point, not
/// `/`. Errors name the flag and the path.
pub fn by_mount_points(paths: &Paths, mounts: &[PathBuf]) -> anyhow::Result<Vec<VolumeRef>> {
    let table = mountinfo::read(paths).context("--data-mount")?;
    let mut out: Vec<VolumeRef> = vec![];
    for given in mounts {
        // On this machine the path as the kernel spells it (`/data/`, a symlink); under a fixture root, as given.
        let m = &if paths.is_system() {
            std::fs::canonicalize(given).unwrap_or_else(|_| given.clone())
        } else {
            given.clone()
        };
        let Some(found) = table.iter().rev().find(|x| x.mount_point == *m) else {
            bail!("--data-mount {}: not a mount point (see /proc/self/mountinfo)", given.display());
        };
        if found.mount_point == Path::new("/") {
            bail!("--data-mount /: / is the OS volume, not a data volume (use --volume-type os or all)");
        }
        let v = VolumeRef {
            mount_point: found.mount_point.clone(),
            device: found.source.clone(),
            uuid: None,
            fstype: Some(found.fstype.clone()),
        };
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The real data volumes: ADE's selection and verification ([`crate::volumes`]), through the runner (`lsblk`...).
pub(crate) struct AdeVolumes<'a> {
    /// Where the system's files are.
    pub(crate) paths: &'a Paths,
    /// Runs `lsblk` and the like.
    pub(crate) runner: &'a dyn crate::runner::Runner,
}

impl DataVolumes for AdeVolumes<'_> {
    fn select(&self, vt: VolumeType) -> anyhow::Result<Vec<VolumeRef>> {
        let rule =
            if vt == VolumeType::All { crate::volumes::VolumeType::All } else { crate::volumes::VolumeType::Data };
        let all =
            crate::volumes::ade_selection_for(self.paths, self.runner, rule).context("selecting ADE's data volumes")?;
        // A volume that is not mounted needs no freeing: ADE unmounts only a volume with a mount point
        // (`handle.py:1990-1991`).
        Ok(all
            .into_iter()
            .filter_map(|v| {
                Some(VolumeRef {
                    mount_point: v.mount?,
                    device: v.device.display().to_string(),
                    uuid: Some(v.uuid),
                    fstype: Some(v.fstype),
                })
            })
            .collect())
    }
    fn verify(&self, v: &VolumeRef) -> VolumeCheck {
        let dv = crate::volumes::DataVolume {
            device: PathBuf::from(&v.device),
            uuid: v.uuid.clone().unwrap_or_default(),
            fstype: v.fstype.clone().unwrap_or_default(),
            mount: Some(v.mount_point.clone()),
            size_bytes: 0,
        };
        match crate::volumes::verify(self.paths, self.runner, &dv) {
            crate::volumes::Verdict::Encrypted { mapper } => {
                VolumeCheck::Encrypted { mapper: mapper.display().to_string() }
            }
            crate::volumes::Verdict::NotEncrypted { why } => VolumeCheck::NotEncrypted { why },
        }
    }
}

/// The verdict on each volume; the error lines of those not encrypted (each naming the volume).
pub fn verify_all(vols: &dyn DataVolumes, recorded: &[VolumeRef]) -> (Vec<(VolumeRef, VolumeCheck)>, Vec<String>) {
    let verdicts: Vec<(VolumeRef, VolumeCheck)> = recorded.iter().map(|v| (v.clone(), vols.verify(v))).collect();
    let errors = errors(&verdicts);
    (verdicts, errors)
}

/// One error line per volume not encrypted, naming it and why.
pub fn errors(verdicts: &[(VolumeRef, VolumeCheck)]) -> Vec<String> {
    verdicts
        .iter()
        .filter_map(|(v, c)| match c {
            VolumeCheck::NotEncrypted { why } => Some(format!(
                "data volume {v} is not encrypted: {why} (ADE skips a data volume it cannot unmount, or its data step \
                 failed)"
            )),
            VolumeCheck::Encrypted { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 8:33 / /data rw,relatime shared:20 - ext4 /dev/sdc1 rw
41 22 8:49 / /mnt/logs\\040a rw,relatime shared:21 - xfs /dev/sdd1 rw
";

    fn fixture() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
        std::fs::write(d.path().join("proc/self/mountinfo"), MOUNTINFO).unwrap();
        let p = Paths::under(d.path());
        (d, p)
    }

    #[test]
    fn data_mounts_named_by_hand_come_from_the_mount_table_each_once() {
        let (_d, paths) = fixture();
        let v = by_mount_points(&paths, &["/data".into(), "/mnt/logs a".into(), "/data/".into()]).unwrap();
        assert_eq!(
            v,
            [
                VolumeRef {
                    mount_point: "/data".into(),
                    device: "/dev/sdc1".into(),
                    uuid: None,
                    fstype: Some("ext4".into())
                },
                VolumeRef {
                    mount_point: "/mnt/logs a".into(),
                    device: "/dev/sdd1".into(),
                    uuid: None,
                    fstype: Some("xfs".into())
                },
            ]
        );
    }

    #[test]
    fn a_data_mount_that_is_not_a_mount_point_or_is_root_is_an_error_naming_the_flag() {
        let (_d, paths) = fixture();
        let e = by_mount_points(&paths, &["/data/sub".into()]).unwrap_err().to_string();
        assert_eq!(e, "--data-mount /data/sub: not a mount point (see /proc/self/mountinfo)");
        let e = by_mount_points(&paths, &["/".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--data-mount /: / is the OS volume, not a data volume"), "{e}");
    }

    #[test]
    fn volume_types_are_ades_three_words_in_any_case() {
        assert_eq!(VolumeType::parse("DATA"), Some(VolumeType::Data));
        assert_eq!(VolumeType::parse("All"), Some(VolumeType::All));
        assert_eq!(VolumeType::parse("os"), Some(VolumeType::Os));
        assert_eq!(VolumeType::parse("data,os"), None);
        assert!(VolumeType::All.includes_os() && VolumeType::All.includes_data());
        assert!(!VolumeType::Data.includes_os() && !VolumeType::Os.includes_data());
    }
}
