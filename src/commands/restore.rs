//! `restore`: under the lock, clear the hold list and undo what the journal records. It owns the order of those
//! two; the undo itself is the window's ([`crate::window::restore`]).

use std::time::Duration;

use anyhow::anyhow;

use super::{need_root, out, RealEdges};
use crate::config::Settings;
use crate::exit;
use crate::lock::Lock;
use crate::paths::Paths;
use crate::window::hold;
use crate::window::journal::Journal;
use crate::window::restore::{self, Restored};
use crate::window::store::FileStore;

/// `restore`: undo what the journal records. `Ok(None)` when there is nothing to do.
pub fn restore(paths: &Paths, settings: &Settings, lock_wait: Option<u64>) -> anyhow::Result<Option<Restored>> {
    restore_with(paths, settings, &RestoreOpts { lock_wait, ..RestoreOpts::default() })
}

/// Options of `restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    /// Seconds to wait for the lock (None: as long as it takes).
    pub lock_wait: Option<u64>,
    /// From the previous version of the journal (`state.json.prev`), for a journal that cannot be read (the
    /// current one is kept as `state.json.corrupt`).
    pub from_prev: bool,
    /// Only when the window is past its deadline.
    pub past_deadline: bool,
    /// Entries whose undo failed and cannot succeed, closed before the restore (`--abandon`).
    pub abandon: Option<Abandon>,
    /// The ground is dropped from the journal (recorded) and not checked (`--without-ground`).
    pub without_ground: bool,
}

/// What `restore --abandon` closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abandon {
    /// These entries (by their number in `status`).
    Entries(Vec<u32>),
    /// Every entry whose undo failed.
    AllFailed,
}

/// `restore` with its options.
pub fn restore_with(paths: &Paths, settings: &Settings, opts: &RestoreOpts) -> anyhow::Result<Option<Restored>> {
    let (lock_wait, from_prev) = (opts.lock_wait, opts.from_prev);
    need_root("restore")?;
    // A stop signal no longer ends the process half way: restore finishes, the journal stays consistent.
    crate::signals::install()?;
    let store = FileStore::new(paths);
    let lock = Lock::new(paths);
    let _guard = lock.acquire("restore", lock_wait.map(Duration::from_secs))?;
    if from_prev {
        let r = store.recover_previous()?;
        log::warn!(
            "restoring from {} (phase {}, last written {}); the unreadable journal is kept beside it as .corrupt",
            store.previous_path().display(),
            r.phase,
            crate::clock::format_utc(r.updated_at)
        );
    }
    // The journal is read before anything changes: one that cannot be read leaves everything (the hold list too).
    let journal = Journal::resume(store)?;
    if opts.past_deadline {
        // Read before the hold list is touched: a window not yet due is left entirely alone.
        match journal.as_ref().map(|j| j.record()).filter(|r| r.is_window_open()) {
            None => {
                // No window: only a fleet release left pending is retried (the timer makes that automatic).
                crate::fleet::release_on_idle_restore(paths, true);
                return Ok(None);
            }
            Some(r) => {
                let deadline = r.deadline_or(settings.window.timeout_hours);
                if crate::clock::now() < deadline {
                    log::info!(
                        "the open window's deadline is {}: nothing to do yet",
                        crate::clock::format_utc(deadline)
                    );
                    return Ok(None);
                }
                // Nothing changes from ADE's RAM root (FINDINGS 23), and a daemon at work with its queue has its
                // deadline extended by `run` (FINDINGS 58): the timer's restore leaves both alone.
                use crate::extension::ade::machine;
                match machine::RootState::read(paths) {
                    Ok(root) if !root.frozen() => {}
                    Ok(_) => {
                        log::warn!(
                            "ADE is in its RAM root (/ a tmpfs or /oldroot mounted): nothing is restored from it"
                        );
                        return Ok(None);
                    }
                    Err(e) => {
                        log::warn!("cannot tell ADE's RAM root from the disk ({e}): nothing is restored");
                        return Ok(None);
                    }
                }
                // A young boot with the queue on the disk and no daemon yet: ADE's first enable resumes it
                // (`handle.py:957-960`, `:2596-2602`), `run` extends the deadline for it (FINDINGS 62).
                let young = crate::clock::uptime_secs(paths)
                    .filter(|u| *u < crate::commands::run::lifecycle::TAKE_UP_BOUND_SECS);
                if let (Some(up), true, None) = (young, machine::queue_present(paths), machine::ade_daemon(paths)) {
                    log::warn!(
                        "past the deadline {}, but booted {up} s ago with ADE's request queue on the disk: left to \
                         ADE's first enable and to `run`",
                        crate::clock::format_utc(deadline)
                    );
                    return Ok(None);
                }
                if let (Some(pid), true) = (machine::ade_daemon(paths), machine::queue_present(paths)) {
                    log::warn!(
                        "past the deadline {}, but ADE's daemon (pid {pid}) is at work with its request queue: left \
                         to `run`, which extends the deadline while it lives",
                        crate::clock::format_utc(deadline)
                    );
                    return Ok(None);
                }
                log::error!(
                    "the window opened {} is past its deadline {}: restoring",
                    crate::clock::format_utc(r.opened_at),
                    crate::clock::format_utc(deadline)
                );
            }
        }
    }
    // The ground before anything: a filesystem the workloads stood on that cannot be mounted again leaves the
    // window as it is, hold list included (through a reboot too), rather than start them in an empty folder.
    // `--without-ground`: the operator knows (a disk gone for good); the journal says so.
    let mut journal = journal;
    if let Some(j) = journal.as_mut().filter(|j| opts.without_ground && j.is_window_open()) {
        if let Some(g) = j.record().ground.clone() {
            let names: Vec<String> = g.iter().map(|g| g.mount_point.display().to_string()).collect();
            j.clear_ground().map_err(|e| anyhow!("restore --without-ground: {e}; nothing changed"))?;
            log::warn!("restore --without-ground: not checking that {} are mounted", names.join(", "));
        }
    }
    if let Some(ground) = journal.as_ref().filter(|j| j.is_window_open()).and_then(|j| j.record().ground.clone()) {
        let edges = RealEdges::new(paths)?;
        let lost = crate::window::restore::ground_back(&edges.machine(settings), &ground);
        if !lost.is_empty() {
            return Err(exit::with_code(
                exit::FAILED,
                anyhow!(
                    "restore refused, nothing was undone: {}; mount it (or fix /etc/fstab) and run `ade-prep restore` \
                     again",
                    lost.join("; ")
                ),
            ));
        }
    }
    // The hold list first: restore's Reload runs ade-prep-generator, which must no longer mask anything (the
    // window's restore removes it too, as its rollback does).
    let had_list = hold::clear_list(paths)?;
    if !journal.as_ref().is_some_and(|j| j.is_window_open()) {
        // No window, but a list was there (stale) or the generator still masks units of the last window (a boot
        // with the list, a crash before the reload): reload, so that they can start again.
        let last = journal.as_ref().map(|j| hold::units_ever_held(j.record())).unwrap_or_default();
        let masked = hold::generator_masks(paths, last);
        if had_list || !masked.is_empty() {
            RealEdges::new(paths)?.machine(settings).systemd.reload()?;
            log::warn!("no window open: removed a stale hold list and reloaded ({})", masked.join(" "));
        }
        crate::fleet::release_on_idle_restore(paths, opts.past_deadline);
        return Ok(None);
    }
    let Some(mut journal) = journal else { return Ok(None) };
    if let Some(a) = &opts.abandon {
        // All checked before any is recorded: a wrong entry number changes nothing.
        let failed: Vec<u32> = journal
            .record()
            .entries
            .iter()
            .filter(|e| e.status == crate::window::record::Status::UndoFailed)
            .map(|e| e.seq)
            .collect();
        let seqs = match a {
            Abandon::AllFailed => failed.clone(),
            Abandon::Entries(v) => v.clone(),
        };
        if let Some(bad) = seqs.iter().find(|s| !failed.contains(s)) {
            let why = journal.abandon(*bad).err().unwrap_or_default();
            return Err(exit::with_code(exit::USAGE, anyhow!("restore --abandon: {why}; nothing changed")));
        }
        for seq in seqs {
            journal.abandon(seq).map_err(|e| anyhow!("restore --abandon {seq}: {e}"))?;
            log::warn!("entry {seq} abandoned: its undo is no longer tried");
        }
    }
    // A journal that cannot be written does not stop the undo (window::restore names what it could not record).
    if let Err(e) = journal.adopt() {
        log::error!("the journal could not record this restore as its owner: {e}; restoring all the same");
    }
    let edges = RealEdges::new(paths)?;
    let r = restore::restore(&edges.machine(settings), &mut journal);
    if !r.failed.is_empty() {
        return Err(exit::with_code(
            exit::FAILED,
            anyhow!(
                "restore incomplete ({}); run `ade-prep restore` again once fixed, or `ade-prep restore --abandon \
                 ENTRY` for an undo that cannot succeed (entries in `ade-prep status`){}",
                r.failed.join("; "),
                if crate::fleet::record::read(paths).is_ok_and(|r| r.is_some()) {
                    " (the fleet slot stays held until then)"
                } else {
                    ""
                }
            ),
        ));
    }
    // Every workload is back: the fleet slot (if this VM holds one) goes back to the group (docs/fleet.md).
    crate::fleet::release_after_restore(paths);
    Ok(Some(r))
}

/// `restore` from the command line.
pub fn run(paths: &Paths, settings: &Settings, opts: &RestoreOpts) -> anyhow::Result<u8> {
    match restore_with(paths, settings, opts)? {
        None if opts.past_deadline => out("nothing to restore: no window is past its deadline\n")?,
        None => out("nothing to restore: no window is open\n")?,
        Some(r) => {
            out(&format!("restored: {}\n", r.summary()))?;
            // The window is closed, but a workload that does not serve is a failure for the operator to see.
            if !r.not_ready.is_empty() {
                return Ok(exit::FAILED);
            }
        }
    }
    Ok(exit::OK)
}
