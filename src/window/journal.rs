//! The journal in use ([`Journal`]): the write-ahead rules of the window, so that `restore` can undo everything
//! from the file alone, in a new process, after a crash or a reboot: every change is recorded as intended before
//! it is made and done (or failed) after, every mutation persisted through the [`Store`] before it returns, and the
//! phase moved only along [`Phase::can_become`]. It owns those rules; the record's shape is [`super::record`]'s and
//! the file's format [`super::store`]'s; it must not touch the machine.

use std::path::Path;

use super::phase::Phase;
pub use super::record::{AdeRef, Change, Entry, Record, StateError, Status, VERSION, VERSION_V1, VERSION_V2};
use super::store::Store;
use crate::clock::{format_utc, now};

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
            version: VERSION_V1,
            phase: Phase::Preparing,
            opened_at: t,
            updated_at: t,
            boot_id: boot_id.to_string(),
            owner_pid: std::process::id(),
            mount: mount.to_path_buf(),
            ade: None,
            deadline: None,
            volumes: None,
            ground: None,
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

    /// Closes change `seq`, whose undo failed and cannot succeed, at the operator's word (`restore --abandon`):
    /// recorded as undone with a note saying it was abandoned, when, and the failure it had. Only an entry whose
    /// undo failed can be abandoned (one never tried is for `restore`); Err names it otherwise.
    pub fn abandon(&mut self, seq: u32) -> Result<(), String> {
        let e = self.record.entries.iter().find(|e| e.seq == seq).ok_or_else(|| format!("no entry {seq}"))?;
        if e.status != Status::UndoFailed {
            return Err(format!(
                "entry {seq} ({}) is {}, not undo failed: only an undo that failed can be abandoned",
                e.change, e.status
            ));
        }
        let note = format!(
            "abandoned by the operator (restore --abandon) at {}; its undo had failed: {}",
            crate::clock::format_utc(crate::clock::now()),
            e.note.as_deref().unwrap_or("no reason recorded")
        );
        self.set_status(seq, Status::Undone, Some(note)).map_err(|e| e.to_string())
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

    /// Records when the window is restored without word from ADE (unix seconds).
    pub fn set_deadline(&mut self, deadline: u64) -> Result<(), StateError> {
        self.commit(|r, _| {
            r.deadline = Some(deadline);
            Ok(())
        })
    }

    /// Records the data volumes the window frees (before anything is changed: restore and `status` verify them
    /// after ADE's success). The journal becomes version [`VERSION_V2`] at least: an older ade-prep refuses it
    /// rather than restore a window without knowing its volumes.
    pub fn set_volumes(&mut self, volumes: Vec<crate::datavol::VolumeRef>) -> Result<(), StateError> {
        self.commit(|r, _| {
            r.volumes = Some(volumes);
            r.version = r.version.max(VERSION_V2);
            Ok(())
        })
    }

    /// Records the ground the workloads stand on (before anything is changed: restore mounts it again before any
    /// start). Nothing when it is empty; otherwise the journal becomes version [`VERSION`].
    pub fn set_ground(&mut self, ground: Vec<super::ground::Ground>) -> Result<(), StateError> {
        if ground.is_empty() {
            return Ok(());
        }
        self.commit(|r, _| {
            r.ground = Some(ground);
            r.version = VERSION;
            Ok(())
        })
    }

    /// Drops the ground (`restore --without-ground`): restore no longer checks it. The version stays.
    pub fn clear_ground(&mut self) -> Result<(), StateError> {
        self.commit(|r, _| {
            r.ground = None;
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
    use crate::selinux;
    use crate::testing::store::MemStore;
    use crate::window::store::FileStore;
    use std::path::PathBuf;

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
