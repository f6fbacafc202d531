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
    need_root("restore")?;
    let store = FileStore::new(paths);
    let lock = Lock::new(paths);
    let _guard = lock.acquire("restore", lock_wait.map(Duration::from_secs))?;
    // The hold list first: restore's Reload runs ade-prep-generator, which must no longer mask anything (the
    // window's restore removes it too, as its rollback does).
    let had_list = hold::clear_list(paths)?;
    let journal = Journal::resume(store)?;
    if !journal.as_ref().is_some_and(|j| j.is_window_open()) {
        // No window, but a list was there (stale) or the generator still masks units of the last window (a boot
        // with the list, a crash before the reload): reload, so that they can start again.
        let last = journal.as_ref().map(|j| hold::units_ever_held(j.record())).unwrap_or_default();
        let masked = hold::generator_masks(paths, last);
        if had_list || !masked.is_empty() {
            RealEdges::new(paths)?.machine(settings).systemd.reload()?;
            log::warn!("no window open: removed a stale hold list and reloaded ({})", masked.join(" "));
        }
        return Ok(None);
    }
    let Some(mut journal) = journal else { return Ok(None) };
    // A journal that cannot be written does not stop the undo (window::restore names what it could not record).
    if let Err(e) = journal.adopt() {
        log::error!("the journal could not record this restore as its owner: {e}; restoring all the same");
    }
    let edges = RealEdges::new(paths)?;
    let r = restore::restore(&edges.machine(settings), &mut journal)?;
    if !r.failed.is_empty() {
        return Err(exit::with_code(
            exit::FAILED,
            anyhow!("restore incomplete ({}); run `ade-prep restore` again once fixed", r.failed.join("; ")),
        ));
    }
    Ok(Some(r))
}

/// `restore` from the command line.
pub fn run(paths: &Paths, settings: &Settings, wait: Option<u64>) -> anyhow::Result<u8> {
    match restore(paths, settings, wait)? {
        None => out("nothing to restore: no window is open\n")?,
        Some(r) => out(&format!("restored: {}\n", r.summary()))?,
    }
    Ok(exit::OK)
}
