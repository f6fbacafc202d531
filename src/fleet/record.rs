//! The slot this VM holds, recorded on the VM ([`crate::paths::FLEET_SLOT_FILE`]) so that it survives ADE's reboot
//! and `restore` can give it back: written atomically (temp file in the same folder, fsync, rename, fsync the
//! folder), mode 0600 (it names the TLS files), unknown fields refused. It carries its own connection settings so
//! that a configuration changed or broken since the acquire cannot strand the slot.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Fleet;
use crate::paths::Paths;

/// The record's schema version.
pub const VERSION: u32 = 1;

/// A held slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    /// Schema version ([`VERSION`]).
    pub version: u32,
    /// The id that holds the slot.
    pub id: String,
    /// When it was taken (UTC seconds).
    pub acquired_at: u64,
    /// Where (backend, endpoints, group, TLS files).
    pub fleet: Fleet,
    /// ade-prep is done with this VM (restored, or no window was needed) but the release failed: the next restore
    /// (the deadline timer's included), `run` or `fleet release` tries again, and `fleet status` says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release_pending: bool,
}

/// The record, if any.
pub fn read(paths: &Paths) -> anyhow::Result<Option<SlotRecord>> {
    let p = paths.fleet_slot_file();
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
    };
    let r: SlotRecord = serde_json::from_str(&text).with_context(|| format!("{}: not a slot record", p.display()))?;
    if r.version != VERSION {
        anyhow::bail!("{}: version {} (this ade-prep reads {VERSION})", p.display(), r.version);
    }
    Ok(Some(r))
}

/// Writes the record atomically.
pub fn write(paths: &Paths, r: &SlotRecord) -> anyhow::Result<()> {
    let p = paths.fleet_slot_file();
    let dir = p.parent().context("the slot record has a folder")?;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).with_context(|| dir.display().to_string())?;
    let tmp = p.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(r).context("serialising the slot record")?;
    text.push('\n');
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| tmp.display().to_string())?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).with_context(|| tmp.display().to_string())?;
    drop(f);
    std::fs::rename(&tmp, &p).with_context(|| p.display().to_string())?;
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| dir.display().to_string())?;
    Ok(())
}

/// Removes the record (none is fine).
pub fn remove(paths: &Paths) -> anyhow::Result<()> {
    let p = paths.fleet_slot_file();
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
    }
    if let Some(dir) = p.parent() {
        File::open(dir).and_then(|d| d.sync_all()).with_context(|| dir.display().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::FleetBackend;

    fn rec() -> SlotRecord {
        SlotRecord {
            version: VERSION,
            id: "vm-1".into(),
            acquired_at: 5,
            fleet: Fleet {
                backend: FleetBackend::Etcd,
                endpoints: vec!["http://127.0.0.1:2379".into()],
                group: "g".into(),
                slots: 2,
                id: None,
                ca_file: None,
                cert_file: None,
                key_file: None,
                timeout_secs: 5,
            },
            release_pending: false,
        }
    }

    #[test]
    fn written_0600_read_back_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::under(t.path());
        assert_eq!(read(&paths).unwrap(), None);
        write(&paths, &rec()).unwrap();
        let p = paths.fleet_slot_file();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!p.with_extension("json.tmp").exists());
        assert_eq!(read(&paths).unwrap(), Some(rec()));
        remove(&paths).unwrap();
        remove(&paths).unwrap();
        assert_eq!(read(&paths).unwrap(), None);
    }

    #[test]
    fn a_record_of_another_version_or_shape_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::under(t.path());
        let p = paths.fleet_slot_file();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut v = serde_json::to_value(rec()).unwrap();
        v["version"] = 9.into();
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(read(&paths).unwrap_err().to_string().contains("fleet-slot.json: version 9"));
        v["version"] = 1.into();
        v["extra"] = 1.into();
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(format!("{:#}", read(&paths).unwrap_err()).contains("unknown field"));
    }
}
