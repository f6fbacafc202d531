//! The journal's record of the encryption window: the truth about what ade-prep changed, written
//! ahead of every change and after it, so that `restore` can undo everything from the file alone, in a new process,
//! after a crash or a reboot.
//!
//! The file is versioned (`"version": 1`), unknown fields are rejected everywhere, and every write is atomic (temp
//! file in the same folder, fsync, rename, fsync of the folder) with the previous version kept as `state.json.prev`.
//! A corrupt journal or one of another version is refused with an error naming the file: never guessed at.
//!
//! This module owns the record (entries, statuses, the ADE run followed) and the write-ahead rules of [`Journal`];
//! where and how the record is stored is [`super::store`]'s, and it must not touch the machine.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::phase::Phase;
use super::store::Store;
use crate::clock::{format_utc, now};
use crate::selinux;

/// The schema version this build reads and writes.
pub const VERSION: u32 = 1;

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
// Field names are the journal's schema (tests/fixtures/state/v1.json); only those that need a word have one.
#[allow(missing_docs)]
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
    MaskUnit { unit: String },
    /// A unit stopped; undo starts it when it was active before.
    StopUnit {
        unit: String,
        /// Its ActiveState before the stop.
        active_state_before: String,
    },
    /// A workload's pre-stop command ran (nothing to undo: starting the units brings the workload back).
    PreStop {
        workload: String,
        /// The command.
        argv: Vec<String>,
        /// The user it ran as.
        user: String,
    },
    /// Docker containers stopped (live-restore); undo starts them.
    StopContainers { ids: Vec<String> },
    /// A stray process terminated (cannot be undone; recorded for the operator).
    TerminateProcess {
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
    /// A one-line summary of the changes in effect ("stopped 3 units, SELinux permissive").
    pub fn summary(&self) -> String {
        let done = self.entries.iter().filter(|e| e.status == Status::Done);
        let (mut stopped, mut masked, mut selinux, mut killed, mut containers) = (0, 0, false, 0, 0);
        for e in done {
            match &e.change {
                Change::StopUnit { .. } => stopped += 1,
                Change::MaskUnit { .. } => masked += 1,
                Change::SelinuxPermissive { .. } => selinux = true,
                Change::TerminateProcess { .. } => killed += 1,
                Change::StopContainers { ids } => containers += ids.len(),
                _ => {}
            }
        }
        let mut parts = vec![format!("stopped {stopped} unit(s)"), format!("masked {masked}")];
        if containers > 0 {
            parts.push(format!("stopped {containers} container(s)"));
        }
        if killed > 0 {
            parts.push(format!("terminated {killed} process(es)"));
        }
        parts.push(if selinux { "SELinux permissive".into() } else { "SELinux unchanged".into() });
        parts.join(", ")
    }

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
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Writing failed (the previous journal is still in place).
    #[error("{path}: writing the journal: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// Not JSON, truncated, or not the schema.
    #[error("{path}: corrupt journal, refusing to guess: {message}")]
    Corrupt {
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A version this build does not read.
    #[error("{path}: journal version {found} {why} (this ade-prep reads version {VERSION}); refusing to guess")]
    Version {
        path: PathBuf,
        /// The version found.
        found: String,
        /// "written by a newer ade-prep" or "unknown".
        why: &'static str,
    },
    /// prepare found a window already open.
    #[error("{path}: a window is already {phase} (opened {opened}, by pid {owner_pid})")]
    WindowOpen {
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
        path: PathBuf,
        /// The recorded phase.
        from: Phase,
        /// The phase asked for.
        to: Phase,
    },
    /// No entry with that sequence number.
    #[error("{path}: no entry {seq}")]
    NoEntry {
        path: PathBuf,
        /// The sequence number asked for.
        seq: u32,
    },
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
    use crate::paths::Paths;
    use crate::testing::store::MemStore;
    use crate::window::store::FileStore;

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
}
