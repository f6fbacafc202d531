//! Data volumes in memory: a selection given by the test, and the volumes it says are encrypted (by mount point,
//! with their mapper). Test code only: it reads no device.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::datavol::{DataVolumes, VolumeCheck, VolumeRef, VolumeType};

/// ADE's selection and the encrypted volumes, as the test says.
#[derive(Default)]
pub(crate) struct FakeVolumes {
    pub(crate) selected: Vec<VolumeRef>,
    /// Mount point → mapper.
    pub(crate) encrypted: BTreeMap<PathBuf, String>,
}

impl DataVolumes for FakeVolumes {
    fn select(&self, _vt: VolumeType) -> anyhow::Result<Vec<VolumeRef>> {
        Ok(self.selected.clone())
    }
    fn verify(&self, v: &VolumeRef) -> VolumeCheck {
        match self.encrypted.get(&v.mount_point) {
            Some(mapper) => VolumeCheck::Encrypted { mapper: mapper.clone() },
            None => VolumeCheck::NotEncrypted { why: format!("no LUKS header on {}", v.device) },
        }
    }
}

/// A data volume on `device`, mounted at `mount`, ext4.
pub(crate) fn volume(mount: &str, device: &str) -> VolumeRef {
    VolumeRef {
        mount_point: mount.into(),
        device: device.into(),
        uuid: Some(format!("uuid-of-{}", device.trim_start_matches("/dev/"))),
        fstype: Some("ext4".into()),
    }
}
