//! The journal of the encryption window ([`paths::STATE_FILE`]): the truth about what ade-prep changed, written
//! ahead of every change and after it, so that `restore` can undo everything from the file alone, in a new process,
//! after a crash or a reboot.
//!
//! The file is versioned (`"version": 1`), unknown fields are rejected everywhere, and every write is atomic (temp
//! file in the same folder, fsync, rename, fsync of the folder) with the previous version kept as `state.json.prev`.
//! A corrupt journal or one of another version is refused with an error naming the file: never guessed at.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::selinux;

/// The schema version this build reads and writes.
pub const VERSION: u32 = 1;

/// Where the window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// prepare is changing the machine (or died doing so: restore must look at every entry).
    Preparing,
    /// Everything is in place; waiting for ADE.
    Open,
    /// restore (or a rollback) is undoing the entries.
    Restoring,
    /// Nothing is left changed.
    Closed,
}

impl Phase {
    /// The transitions docs/design.md draws: closed → preparing → open → restoring → closed, the rollback
    /// (preparing → restoring) and a restore retried after a failed undo (restoring → restoring). A new window
    /// starts in preparing through [`Journal::open`], never through a transition.
    pub fn can_become(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Preparing, Open)
                | (Preparing, Restoring)
                | (Open, Restoring)
                | (Restoring, Restoring)
                | (Restoring, Closed)
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Preparing => "preparing",
            Phase::Open => "open",
            Phase::Restoring => "restoring",
            Phase::Closed => "closed",
        })
    }
}

/// The ADE run the window follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdeRef {
    /// The handler folder (`/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-<version>`).
    pub handler_dir: PathBuf,
    /// The sequence number of the settings that started it.
    pub seq: u64,
}

/// One change to the machine, with what is needed to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// SELinux set to permissive; undo sets `previous` back.
    SelinuxPermissive {
        /// The mode before.
        previous: selinux::Mode,
    },
    /// The serialisation lock is held by the window (the journal itself holds it across processes).
    /// (An empty struct variant, not a unit variant: serde checks unknown fields only on struct variants.)
    LockHeld {},
    /// A runtime mask of a unit; undo unmasks it.
    MaskUnit {
        /// The unit.
        unit: String,
    },
    /// A unit stopped; undo starts it when it was active before.
    StopUnit {
        /// The unit.
        unit: String,
        /// Its ActiveState before the stop.
        active_state_before: String,
    },
    /// A workload's pre-stop command ran (nothing to undo: starting the units brings the workload back).
    PreStop {
        /// The workload.
        workload: String,
        /// The command.
        argv: Vec<String>,
        /// The user it ran as.
        user: String,
    },
    /// Docker containers stopped (live-restore); undo starts them.
    StopContainers {
        /// Container ids.
        ids: Vec<String>,
    },
    /// A stray process terminated (cannot be undone; recorded for the operator).
    TerminateProcess {
        /// Process id.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its unit, if any.
        unit: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SelinuxPermissive { previous } => write!(f, "SELinux permissive (was {previous})"),
            Change::LockHeld {} => f.write_str("lock held"),
            Change::MaskUnit { unit } => write!(f, "mask {unit}"),
            Change::StopUnit { unit, active_state_before } => write!(f, "stop {unit} (was {active_state_before})"),
            Change::PreStop { workload, argv, user } => write!(f, "pre-stop {workload}: {argv:?} as {user}"),
            Change::StopContainers { ids } => write!(f, "stop {} container(s): {}", ids.len(), ids.join(" ")),
            Change::TerminateProcess { pid, comm, unit } => {
                write!(f, "terminate pid {pid} ({comm}")?;
                if let Some(u) = unit {
                    write!(f, ", {u}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Where one change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// About to be made: it may or may not have happened (check the machine).
    Intended,
    /// Made.
    Done,
    /// Making it failed: it may have partly happened (check the machine).
    Failed,
    /// Undone.
    Undone,
    /// Undoing it failed: a later restore tries again.
    UndoFailed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Intended => "intended",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Undone => "undone",
            Status::UndoFailed => "undo failed",
        })
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1-based, in the order the changes were intended.
    pub seq: u32,
    /// What.
    pub change: Change,
    /// Where it stands.
    pub status: Status,
    /// When the status was last set (unix seconds).
    pub at: u64,
    /// Why it failed, or any other remark.
    #[serde(default)]
    pub note: Option<String>,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Always [`VERSION`].
    pub version: u32,
    /// Where the window stands.
    pub phase: Phase,
    /// When prepare opened it (unix seconds).
    pub opened_at: u64,
    /// Last write (unix seconds).
    pub updated_at: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was opened: tells whether the machine rebooted since.
    pub boot_id: String,
    /// The process that drives the window (prepare, then the daemon that waits).
    pub owner_pid: u32,
    /// The filesystem being freed.
    pub mount: PathBuf,
    /// The ADE run followed, once known.
    pub ade: Option<AdeRef>,
    /// The changes, oldest first.
    pub entries: Vec<Entry>,
}

impl Record {
    /// True until restore has closed the window (a crashed prepare leaves it open: something may be changed).
    pub fn is_window_open(&self) -> bool {
        self.phase != Phase::Closed
    }

    /// The entries restore must look at, newest first: all but the undone ones.
    pub fn to_undo(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev().filter(|e| e.status != Status::Undone)
    }

    /// The entry with sequence number `seq`.
    pub fn entry(&self, seq: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.seq == seq)
    }
}

/// A journal that cannot be read, written or trusted; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing failed (the previous journal is still in place).
    #[error("{path}: writing the journal: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON, truncated, or not the schema.
    #[error("{path}: corrupt journal, refusing to guess: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A version this build does not read.
    #[error("{path}: journal version {found} {why} (this ade-prep reads version {VERSION}); refusing to guess")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
        /// "written by a newer ade-prep" or "unknown".
        why: &'static str,
    },
    /// prepare found a window already open.
    #[error("{path}: a window is already {phase} (opened {opened}, by pid {owner_pid})")]
    WindowOpen {
        /// The file.
        path: PathBuf,
        /// Its phase.
        phase: Phase,
        /// When it was opened.
        opened: String,
        /// The process that drives it.
        owner_pid: u32,
    },
    /// A phase change the window's state machine does not have (a bug, never guessed past).
    #[error("{path}: the window cannot go from {from} to {to}")]
    Transition {
        /// The file.
        path: PathBuf,
        /// The recorded phase.
        from: Phase,
        /// The phase asked for.
        to: Phase,
    },
    /// No entry with that sequence number.
    #[error("{path}: no entry {seq}")]
    NoEntry {
        /// The file.
        path: PathBuf,
        /// The sequence number asked for.
        seq: u32,
    },
}

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
    let corrupt = |message: String| StateError::Corrupt { path: path.to_path_buf(), message };
    let probe: Probe = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    match probe.version {
        None => return Err(corrupt("no \"version\" field".into())),
        Some(v) if v.as_u64() == Some(VERSION.into()) => {}
        Some(v) => {
            let why = match v.as_u64() {
                Some(n) if n > VERSION.into() => "is from a newer ade-prep",
                _ => "is unknown",
            };
            return Err(StateError::Version { path: path.to_path_buf(), found: v.to_string(), why });
        }
    }
    serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))
}

impl Store for FileStore {
    fn load(&self) -> Result<Option<Record>, StateError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&self.path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path: self.path.clone(), source }),
        }
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

/// The current boot's id (`/proc/sys/kernel/random/boot_id`), to record at open and compare after a reboot.
pub fn boot_id(paths: &Paths) -> Result<String, StateError> {
    let path = paths.proc().join("sys/kernel/random/boot_id");
    std::fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|source| StateError::Read { path, source })
}

/// Now, in unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, for messages.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The journal in use: every mutating call persists through the [`Store`] before it returns, and the in-memory
/// record only changes once the write succeeded.
#[derive(Debug)]
pub struct Journal<S: Store> {
    record: Record,
    store: S,
}

impl<S: Store> Journal<S> {
    /// Opens a new window (phase [`Phase::Preparing`]) for `mount`; refuses when the stored journal's window is
    /// still open, and when it is corrupt (it is never overwritten blindly).
    pub fn open(store: S, mount: &Path, boot_id: &str) -> Result<Self, StateError> {
        if let Some(old) = store.load()? {
            if old.is_window_open() {
                return Err(StateError::WindowOpen {
                    path: store.location(),
                    phase: old.phase,
                    opened: format_utc(old.opened_at),
                    owner_pid: old.owner_pid,
                });
            }
        }
        let t = now();
        let record = Record {
            version: VERSION,
            phase: Phase::Preparing,
            opened_at: t,
            updated_at: t,
            boot_id: boot_id.to_string(),
            owner_pid: std::process::id(),
            mount: mount.to_path_buf(),
            ade: None,
            entries: vec![],
        };
        store.save(&record)?;
        Ok(Journal { record, store })
    }

    /// The stored journal, whatever its phase; `None` when there is none.
    pub fn resume(store: S) -> Result<Option<Self>, StateError> {
        Ok(store.load()?.map(|record| Journal { record, store }))
    }

    /// What is recorded.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// See [`Record::is_window_open`].
    pub fn is_window_open(&self) -> bool {
        self.record.is_window_open()
    }

    /// See [`Record::to_undo`].
    pub fn to_undo(&self) -> impl Iterator<Item = &Entry> {
        self.record.to_undo()
    }

    fn commit(&mut self, f: impl FnOnce(&mut Record, u64) -> Result<(), StateError>) -> Result<(), StateError> {
        let mut next = self.record.clone();
        let t = now();
        f(&mut next, t)?;
        next.updated_at = t;
        self.store.save(&next)?;
        self.record = next;
        Ok(())
    }

    fn set_status(&mut self, seq: u32, status: Status, note: Option<String>) -> Result<(), StateError> {
        let path = self.store.location();
        self.commit(|r, t| {
            let e = r.entries.iter_mut().find(|e| e.seq == seq).ok_or(StateError::NoEntry { path, seq })?;
            e.status = status;
            e.at = t;
            if note.is_some() {
                e.note = note;
            }
            Ok(())
        })
    }

    /// Records the intent to make `change` (before making it); returns its sequence number.
    pub fn intend(&mut self, change: Change) -> Result<u32, StateError> {
        let seq = self.record.entries.last().map_or(1, |e| e.seq + 1);
        self.commit(|r, t| {
            r.entries.push(Entry { seq, change, status: Status::Intended, at: t, note: None });
            Ok(())
        })?;
        Ok(seq)
    }

    /// Records that change `seq` was made.
    pub fn done(&mut self, seq: u32) -> Result<(), StateError> {
        self.set_status(seq, Status::Done, None)
    }

    /// Records that making change `seq` failed, and why.
    pub fn failed(&mut self, seq: u32, note: impl Into<String>) -> Result<(), StateError> {
        self.set_status(seq, Status::Failed, Some(note.into()))
    }

    /// Records that change `seq` was undone.
    pub fn undone(&mut self, seq: u32) -> Result<(), StateError> {
        self.set_status(seq, Status::Undone, None)
    }

    /// Records that undoing change `seq` failed, and why.
    pub fn undo_failed(&mut self, seq: u32, note: impl Into<String>) -> Result<(), StateError> {
        self.set_status(seq, Status::UndoFailed, Some(note.into()))
    }

    /// Moves the window to `phase`; a transition the design does not draw is an error and changes nothing.
    pub fn set_phase(&mut self, phase: Phase) -> Result<(), StateError> {
        if !self.record.phase.can_become(phase) {
            return Err(StateError::Transition { path: self.store.location(), from: self.record.phase, to: phase });
        }
        self.commit(|r, _| {
            r.phase = phase;
            Ok(())
        })
    }

    /// Records the ADE run the window follows.
    pub fn set_ade(&mut self, ade: AdeRef) -> Result<(), StateError> {
        self.commit(|r, _| {
            r.ade = Some(ade);
            Ok(())
        })
    }

    /// Makes this process the window's owner (the daemon after a reboot, a restore by hand).
    pub fn adopt(&mut self) -> Result<(), StateError> {
        self.commit(|r, _| {
            r.owner_pid = std::process::id();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A store in memory that can be told to fail.
    #[derive(Debug, Default)]
    struct MemStore {
        saved: RefCell<Option<Record>>,
        saves: Cell<u32>,
        fail: Cell<bool>,
    }

    impl Store for MemStore {
        fn load(&self) -> Result<Option<Record>, StateError> {
            Ok(self.saved.borrow().clone())
        }
        fn save(&self, record: &Record) -> Result<(), StateError> {
            if self.fail.get() {
                return Err(StateError::Write { path: self.location(), source: std::io::Error::other("disk full") });
            }
            self.saves.set(self.saves.get() + 1);
            *self.saved.borrow_mut() = Some(record.clone());
            Ok(())
        }
        fn location(&self) -> PathBuf {
            PathBuf::from("/mem/state.json")
        }
    }

    const FIXTURE: &str = include_str!("../tests/fixtures/state/v1.json");

    #[test]
    fn every_mutation_is_saved_before_it_returns() {
        let store = MemStore::default();
        let mut j = Journal::open(&store, Path::new("/"), "b00t").unwrap();
        assert_eq!(store.saves.get(), 1);
        let a = j.intend(Change::SelinuxPermissive { previous: selinux::Mode::Enforcing }).unwrap();
        assert_eq!(store.load().unwrap().unwrap().entries[0].status, Status::Intended);
        j.done(a).unwrap();
        let b = j.intend(Change::MaskUnit { unit: "docker.service".into() }).unwrap();
        j.failed(b, "access denied").unwrap();
        j.set_phase(Phase::Open).unwrap();
        assert_eq!(store.saves.get(), 6);
        let saved = store.load().unwrap().unwrap();
        assert_eq!(&saved, j.record());
        assert_eq!((a, b), (1, 2));
        assert_eq!(saved.entries[1].status, Status::Failed);
        assert_eq!(saved.entries[1].note.as_deref(), Some("access denied"));
        assert_eq!(saved.owner_pid, std::process::id());
    }

    #[test]
    fn a_failed_save_leaves_memory_as_the_store() {
        let store = MemStore::default();
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        store.fail.set(true);
        let e = j.intend(Change::LockHeld {}).unwrap_err().to_string();
        assert_eq!(e, "/mem/state.json: writing the journal: disk full");
        assert!(j.record().entries.is_empty());
        store.fail.set(false);
        assert_eq!(j.intend(Change::LockHeld {}).unwrap(), 1);
    }

    #[test]
    fn open_refuses_an_open_window_but_replaces_a_closed_one() {
        let store = MemStore::default();
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        let e = Journal::open(&store, Path::new("/"), "b").unwrap_err().to_string();
        assert!(e.starts_with("/mem/state.json: a window is already preparing (opened "), "{e}");
        j.set_phase(Phase::Restoring).unwrap();
        j.set_phase(Phase::Closed).unwrap();
        let j2 = Journal::open(&store, Path::new("/data"), "c").unwrap();
        assert_eq!(j2.record().mount, PathBuf::from("/data"));
        assert!(j2.is_window_open());
    }

    #[test]
    fn only_the_designed_phase_transitions_are_accepted() {
        use Phase::*;
        let all = [Preparing, Open, Restoring, Closed];
        let allowed =
            [(Preparing, Open), (Preparing, Restoring), (Open, Restoring), (Restoring, Restoring), (Restoring, Closed)];
        for from in all {
            for to in all {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
        let store = MemStore::default();
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        let e = j.set_phase(Closed).unwrap_err().to_string();
        assert_eq!(e, "/mem/state.json: the window cannot go from preparing to closed");
        assert_eq!(j.record().phase, Preparing, "nothing changed");
        assert_eq!(store.load().unwrap().unwrap().phase, Preparing, "nothing written");
        j.set_phase(Open).unwrap();
        assert!(j.set_phase(Preparing).is_err());
    }

    #[test]
    fn undo_order_is_newest_first_and_skips_undone() {
        let store = MemStore::default();
        let mut j = Journal::open(&store, Path::new("/"), "b").unwrap();
        for u in ["a", "b", "c"] {
            let s = j.intend(Change::MaskUnit { unit: u.into() }).unwrap();
            j.done(s).unwrap();
        }
        j.undone(3).unwrap();
        j.undo_failed(2, "unit not loaded").unwrap();
        let order: Vec<u32> = j.to_undo().map(|e| e.seq).collect();
        assert_eq!(order, vec![2, 1]);
        assert!(j.done(9).unwrap_err().to_string().ends_with("no entry 9"));
    }

    #[test]
    fn resume_sees_what_another_process_wrote() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let mut j = Journal::open(FileStore::new(&paths), Path::new("/"), "b").unwrap();
        let s =
            j.intend(Change::StopUnit { unit: "mongod.service".into(), active_state_before: "active".into() }).unwrap();
        j.done(s).unwrap();
        let again = Journal::resume(FileStore::new(&paths)).unwrap().unwrap();
        assert_eq!(again.record(), j.record());
        assert!(Journal::resume(FileStore::at(d.path().join("none.json"))).unwrap().is_none());
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
    fn an_unknown_version_is_refused_naming_the_file() {
        let (e, path) = load_err(&FIXTURE.replacen("\"version\": 1", "\"version\": 2", 1));
        assert_eq!(
            e,
            format!(
                "{}: journal version 2 is from a newer ade-prep (this ade-prep reads version 1); refusing to guess",
                path.display()
            )
        );
        let (e, _) = load_err(&FIXTURE.replacen("\"version\": 1", "\"version\": \"1\"", 1));
        assert!(e.contains("journal version \"1\" is unknown"), "{e}");
    }

    #[test]
    fn a_truncated_or_empty_file_is_refused_naming_the_file() {
        let (e, path) = load_err(&FIXTURE[..FIXTURE.len() / 2]);
        assert!(
            e.starts_with(&format!("{}: corrupt journal, refusing to guess: EOF while parsing", path.display())),
            "{e}"
        );
        assert!(load_err("").0.contains("corrupt journal"));
        assert!(load_err("{}").0.ends_with("no \"version\" field"));
    }

    #[test]
    fn format_utc_gives_civil_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_714_564_799), "2024-05-01T11:59:59Z");
    }
}
