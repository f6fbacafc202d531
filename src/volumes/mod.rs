//! The data volumes ADE's EnableEncryption (VolumeType Data or All) will select on this machine, and whether each
//! one was really encrypted afterwards. Owns ADE's selection rule (read from ADE's own source) and the
//! verification; it reads `lsblk` through the [`Runner`] and files through [`Paths`], and must not change anything
//! (no mount, no umount, no write).

// Used by check (here) and by the window (branch volwin); until both are merged some items are unused.
#![allow(dead_code)]

use std::path::PathBuf;

use crate::paths::Paths;
use crate::runner::Runner;

/// A data volume as ADE's EnableEncryption (VolumeType Data/All) selects it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataVolume {
    /// The block device, `/dev/sdc1`.
    pub device: PathBuf,
    /// The filesystem UUID.
    pub uuid: String,
    /// The filesystem type (`ext4`, `xfs`, ...).
    pub fstype: String,
    /// Where it is mounted now (mountinfo), None if not mounted.
    pub mount: Option<PathBuf>,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Whether ADE encrypted a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// Encrypted, opened as `mapper`.
    Encrypted {
        /// `/dev/mapper/<name>`.
        mapper: PathBuf,
    },
    /// Not (or not completely) encrypted, with the reason.
    NotEncrypted {
        /// What is missing.
        why: String,
    },
}

/// The volumes ADE will select on this machine (lsblk through the runner + the mount table under `paths`).
pub fn ade_selection(paths: &Paths, runner: &dyn Runner) -> anyhow::Result<Vec<DataVolume>> {
    let _ = (paths, runner);
    todo!("volumes::ade_selection")
}

/// Whether ADE encrypted `v`: a LUKS header on the device or a crypt mapping over it, a crypttab entry, fstab's
/// line for its mount point pointing to the mapper.
pub fn verify(paths: &Paths, runner: &dyn Runner, v: &DataVolume) -> Verdict {
    let _ = (paths, runner, v);
    todo!("volumes::verify")
}
