//! Where the journal lives ([`crate::paths::STATE_FILE`]) and how it is written: versioned, unknown fields
//! rejected, every write atomic (temp file in the same folder, fsync, rename, fsync of the folder) with the previous
//! version kept as `state.json.prev`. It owns the file format; it must not decide anything about the window.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::record::{Record, StateError, VERSION, VERSION_V1, VERSION_V2};
use crate::paths::Paths;

/// The journal store: one real implementation ([`FileStore`]), fakes in tests.
pub trait Store {
    /// The journal, `None` when there is none.
    fn load(&self) -> Result<Option<Record>, StateError>;
    /// Replaces the journal, atomically; returns once it is durable.
    fn save(&self, record: &Record) -> Result<(), StateError>;
    /// The file, for messages.
    fn location(&self) -> PathBuf;
}

impl<T: Store + ?Sized> Store for &T {
    fn load(&self) -> Result<Option<Record>, StateError> {
        (**self).load()
    }
    fn save(&self, record: &Record) -> Result<(), StateError> {
        (**self).save(record)
    }
    fn location(&self) -> PathBuf {
        (**self).location()
    }
}

/// The journal file, replaced atomically, the previous version kept beside it as `<file>.prev`.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The journal of the system (or fixture tree) under `paths`.
    pub fn new(paths: &Paths) -> Self {
        FileStore { path: paths.state_file() }
    }

    /// A journal at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// Free space the journal's folder must have before a window opens: the journal of the largest window is tens
    /// of KiB, rewritten (with its previous version) at every step.
    pub const MIN_FREE_BYTES: u64 = 4 << 20;

    /// Whether the journal can be written, checked before prepare changes anything: the folder exists (or is
    /// created), has [`Self::MIN_FREE_BYTES`] free, and a test file can be written, synced and removed.
    pub fn check_writable(&self) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let err = |path: &Path, source| StateError::Write { path: path.to_path_buf(), source };
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&dir).map_err(|e| err(&dir, e))?;
        }
        let st = nix::sys::statvfs::statvfs(&dir).map_err(|e| err(&dir, e.into()))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < Self::MIN_FREE_BYTES {
            let msg = format!("{free} bytes free, the journal needs {}", Self::MIN_FREE_BYTES);
            return Err(err(&dir, std::io::Error::new(std::io::ErrorKind::StorageFull, msg)));
        }
        let probe = with_suffix(&self.path, ".write-test");
        let _ = std::fs::remove_file(&probe);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&probe)
            .and_then(|mut f| f.write_all(&[b'\n'; 4096]).and_then(|_| f.sync_all()));
        let removed = std::fs::remove_file(&probe);
        written.and(removed).map_err(|e| err(&probe, e))
    }

    /// Where the previous version is kept.
    pub fn previous_path(&self) -> PathBuf {
        with_suffix(&self.path, ".prev")
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parses a journal's text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<Record, StateError> {
    #[derive(Deserialize)]
    struct Probe {
        version: Option<serde_json::Value>,
    }
    // serde's message quotes the file's own text (an unknown field's name, decoded): control characters escaped,
    // so that a crafted journal cannot add lines to the error (found by bench/fuzz.sh, issue 24).
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        message: crate::text::escape_controls(&message).into_owned(),
    };
    let probe: Probe = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    match probe.version {
        None => return Err(corrupt("no \"version\" field".into())),
        Some(v) if v.as_u64().is_some_and(|n| (u64::from(VERSION_V1)..=u64::from(VERSION)).contains(&n)) => {}
        Some(v) => {
            let why = match v.as_u64() {
                Some(n) if n > VERSION.into() => "is from a newer ade-prep",
                _ => "is unknown",
            };
            return Err(StateError::Version { path: path.to_path_buf(), found: v.to_string(), why });
        }
    }
    let r: Record = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if r.version == VERSION_V1 && r.volumes.is_some() {
        return Err(corrupt(format!("\"volumes\" needs journal version {VERSION_V2}, the file says {VERSION_V1}")));
    }
    if r.version < VERSION && r.ground.is_some() {
        return Err(corrupt(format!("\"ground\" needs journal version {VERSION}, the file says {}", r.version)));
    }
    Ok(r)
}

/// Reads a journal file: `None` when there is none; text that is not UTF-8 is corrupt (bad input, like bad JSON).
fn load_file(path: &Path) -> Result<Option<Record>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse(path, &text).map(Some),
            Err(e) => Err(StateError::Corrupt { path: path.to_path_buf(), message: format!("not UTF-8: {e}") }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path: path.to_path_buf(), source }),
    }
}

impl FileStore {
    /// Puts the previous version (`<file>.prev`) back in place of a journal that cannot be read, which is kept as
    /// `<file>.corrupt` for the operator; returns the record put back. Refuses (changing nothing) when the
    /// previous version cannot be read either.
    pub fn recover_previous(&self) -> Result<Record, StateError> {
        let prev = self.previous_path();
        let record = load_file(&prev)?.ok_or_else(|| StateError::Read {
            path: prev.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no previous journal to recover from"),
        })?;
        let kept = with_suffix(&self.path, ".corrupt");
        match std::fs::rename(&self.path, &kept) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StateError::Write { path: kept, source: e });
            }
            _ => {}
        }
        // The previous version is written as the journal (which makes the journal's own .prev the same again).
        std::fs::copy(&prev, &self.path).map_err(|source| StateError::Write { path: self.path.clone(), source })?;
        Ok(record)
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<Option<Record>, StateError> {
        load_file(&self.path)
    }

    fn save(&self, record: &Record) -> Result<(), StateError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Write { path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(write_err(dir))?;
        }
        let mut text = serde_json::to_string_pretty(record).map_err(|e| write_err(&self.path)(e.into()))?;
        text.push('\n');
        let tmp = with_suffix(&self.path, ".tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(write_err(&tmp))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(write_err(&tmp))?;
        drop(f);
        // Keep the previous version without ever leaving the journal's name empty: link, then rename over.
        let prev = self.previous_path();
        match std::fs::remove_file(&prev) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_err(&prev)(e)),
            _ => {}
        }
        match std::fs::hard_link(&self.path, &prev) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A filesystem without hard links: a copy does as well.
            Err(_) => match std::fs::copy(&self.path, &prev) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_err(&prev)(e)),
                _ => {}
            },
        }
        std::fs::rename(&tmp, &self.path).map_err(write_err(&self.path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(write_err(dir))?;
        Ok(())
    }

    fn location(&self) -> PathBuf {
        self.path.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::journal::{Change, Journal};
    use crate::window::phase::Phase;

    const FIXTURE: &str = include_str!("../../tests/fixtures/state/v1.json");

    #[test]
    fn a_crafted_field_name_cannot_add_lines_to_the_error() {
        // Found by bench/fuzz.sh: serde quotes the decoded name of an unknown field.
        let e = parse(Path::new("/x/state.json"), "{\"version\": 1, \"ow\\ner_pid\": 1}").unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("ow\\ner_pid"), "{e}");
    }

    #[test]
    fn file_store_keeps_the_previous_version_and_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let store = FileStore::new(&paths);
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        assert!(!store.previous_path().exists());
        j.intend(Change::LockHeld {}).unwrap();
        let prev = parse(&store.previous_path(), &std::fs::read_to_string(store.previous_path()).unwrap()).unwrap();
        assert!(prev.entries.is_empty());
        assert_eq!(store.load().unwrap().unwrap().entries.len(), 1);
        let names: Vec<String> = std::fs::read_dir(d.path().join("var/lib/ade-prep"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["state.json", "state.json.prev"]);
    }

    #[test]
    fn the_v1_fixture_loads_and_round_trips() {
        let r = parse(Path::new("v1.json"), FIXTURE).unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(r.phase, Phase::Open);
        assert_eq!(r.entries.len(), 7);
        let back: serde_json::Value = serde_json::to_value(&r).unwrap();
        let orig: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(back, orig, "the fixture must show every field as this build writes it");
    }

    const FIXTURE_V2: &str = include_str!("../../tests/fixtures/state/v2.json");

    #[test]
    fn the_v2_fixture_with_data_volumes_loads_and_round_trips() {
        let r = parse(Path::new("v2.json"), FIXTURE_V2).unwrap();
        assert_eq!(r.version, 2);
        let mounts: Vec<&Path> = r.data_volumes().iter().map(|v| v.mount_point.as_path()).collect();
        assert_eq!(mounts, [Path::new("/data"), Path::new("/var/lib/mongodb")]);
        assert_eq!(r.mounts(), [PathBuf::from("/data"), "/var/lib/mongodb".into(), "/".into()]);
        let back: serde_json::Value = serde_json::to_value(&r).unwrap();
        let orig: serde_json::Value = serde_json::from_str(FIXTURE_V2).unwrap();
        assert_eq!(back, orig, "the fixture must show every field as this build writes it");
    }

    #[test]
    fn the_fixtures_stop_states_are_read_typed_and_written_back_as_systemds_words() {
        use crate::systemd::ActiveState;
        let before = |r: &Record| -> Vec<ActiveState> {
            r.entries
                .iter()
                .filter_map(|e| match &e.change {
                    Change::StopUnit { active_state_before, .. } => Some(active_state_before.clone()),
                    _ => None,
                })
                .collect()
        };
        for (name, text) in [("v1.json", FIXTURE), ("v2.json", FIXTURE_V2)] {
            let r = parse(Path::new(name), text).unwrap();
            assert_eq!(before(&r), [ActiveState::Active], "{name}");
            let back = serde_json::to_value(&r).unwrap();
            let stop = back["entries"].as_array().unwrap().iter().find(|e| e["change"]["kind"] == "stop_unit").unwrap();
            assert_eq!(stop["change"]["active_state_before"], "active", "{name}");
        }
        // What execute records when the unit cannot be read: kept as written, taken as running.
        let c: Change =
            serde_json::from_str(r#"{"kind": "stop_unit", "unit": "a.service", "active_state_before": "unknown"}"#)
                .unwrap();
        let Change::StopUnit { active_state_before, .. } = &c else { panic!("{c:?}") };
        assert!(active_state_before.is_running() && *active_state_before == ActiveState::Other("unknown".into()));
        assert_eq!(serde_json::to_value(&c).unwrap()["active_state_before"], "unknown");
    }

    #[test]
    fn a_window_with_data_volumes_is_written_as_version_2_and_one_without_as_version_1() {
        use crate::testing::volumes::volume;
        let d = tempfile::tempdir().unwrap();
        let store = FileStore::new(&Paths::under(d.path()));
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        assert_eq!(store.load().unwrap().unwrap().version, 1, "an OS-only window stays readable by older builds");
        let text = std::fs::read_to_string(store.location()).unwrap();
        assert!(!text.contains("volumes"), "{text}");
        j.set_volumes(vec![volume("/data", "/dev/sdc1")]).unwrap();
        j.intend(Change::LockHeld {}).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.version, 2);
        assert_eq!(back.data_volumes(), [volume("/data", "/dev/sdc1")]);
        assert_eq!(&back, j.record());
        assert_eq!(back.mounts(), [PathBuf::from("/data"), "/".into()]);
    }

    #[test]
    fn data_volumes_in_a_version_1_journal_are_refused_as_corrupt() {
        let text = FIXTURE_V2.replacen("\"version\": 2", "\"version\": 1", 1);
        let (e, path) = load_err(&text);
        assert!(
            e.starts_with(&format!(
                "{}: corrupt journal, refusing to guess: \"volumes\" needs journal version 2, the file says 1",
                path.display()
            )),
            "{e}"
        );
        let text = FIXTURE_V2.replacen("\"fstype\": \"ext4\"", "\"fstype\": \"ext4\", \"size\": 1", 1);
        assert!(load_err(&text).0.contains("unknown field `size`"));
    }

    fn load_err(text: &str) -> (String, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let store = FileStore::new(&Paths::under(d.path()));
        std::fs::create_dir_all(store.location().parent().unwrap()).unwrap();
        std::fs::write(store.location(), text).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        (e, store.location())
    }

    #[test]
    fn an_unknown_field_is_refused_naming_the_file() {
        let text = FIXTURE.replacen("\"seq\": 1,", "\"seq\": 1, \"colour\": \"red\",", 1);
        let (e, path) = load_err(&text);
        assert!(
            e.starts_with(&format!("{}: corrupt journal, refusing to guess: unknown field `colour`", path.display())),
            "{e}"
        );
        let text = FIXTURE.replacen("\"kind\": \"lock_held\"", "\"kind\": \"lock_held\", \"by\": 3", 1);
        assert!(load_err(&text).0.contains("unknown field `by`"));
        let text = FIXTURE.replacen("\"unit\": \"docker.socket\"", "\"unit\": \"docker.socket\", \"runtime\": true", 1);
        assert!(load_err(&text).0.contains("unknown field `runtime`"));
    }

    #[test]
    fn ground_needs_version_3() {
        let ground = "\"ground\": [{\"mount_point\": \"/data\", \"source\": \"/dev/sdc1\"}], \"entries\"";
        let (e, _) = load_err(&FIXTURE.replacen("\"entries\"", ground, 1));
        assert!(e.contains("\"ground\" needs journal version 3, the file says 1"), "{e}");
        let v3 = FIXTURE.replacen("\"version\": 1", "\"version\": 3", 1).replacen("\"entries\"", ground, 1);
        let d = tempfile::tempdir().unwrap();
        let store = FileStore::new(&Paths::under(d.path()));
        std::fs::create_dir_all(store.location().parent().unwrap()).unwrap();
        std::fs::write(store.location(), v3).unwrap();
        let r = store.load().unwrap().unwrap();
        assert_eq!(r.ground.unwrap()[0].mount_point, Path::new("/data"));
    }

    #[test]
    fn an_unknown_version_is_refused_naming_the_file() {
        let (e, path) = load_err(&FIXTURE.replacen("\"version\": 1", "\"version\": 4", 1));
        assert!(
            e.starts_with(&format!(
                "{}: journal version 4 is from a newer ade-prep (this ade-prep reads versions 1 to 3); refusing to \
                 guess",
                path.display()
            )),
            "{e}"
        );
        let (e, _) = load_err(&FIXTURE.replacen("\"version\": 1", "\"version\": \"1\"", 1));
        assert!(e.contains("journal version \"1\" is unknown"), "{e}");
    }

    #[test]
    fn the_journal_folder_is_checked_writable_before_a_window_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::at(dir.path().join("var/lib/ade-prep/state.json"));
        store.check_writable().unwrap();
        assert!(!dir.path().join("var/lib/ade-prep/state.json.write-test").exists(), "the probe is removed");
        // A folder that cannot be: its parent is a file.
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = FileStore::at(dir.path().join("file/ade-prep/state.json")).check_writable().unwrap_err();
        assert!(e.to_string().contains("file/ade-prep"), "{e}");
    }

    #[test]
    fn a_truncated_or_empty_file_is_refused_naming_the_file() {
        let (e, path) = load_err(&FIXTURE[..FIXTURE.len() / 2]);
        assert!(
            e.starts_with(&format!("{}: corrupt journal, refusing to guess: EOF while parsing", path.display())),
            "{e}"
        );
        assert!(load_err("").0.contains("corrupt journal"));
        assert!(load_err("{}").0.contains("no \"version\" field (nothing was changed"));
    }
}
