//! `status`: the window (from the journal) and the lock, as text or JSON. Reads only; it must not take the lock.

use anyhow::Context;
use serde::Serialize;

use super::out;
use crate::clock;
use crate::exit;
use crate::lock::{Lock, LockError, LockState};
use crate::paths::Paths;
use crate::text::escape_controls as esc;
use crate::window::journal::Record;
use crate::window::store::{FileStore, Store};

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The window is open (prepare started and restore has not finished).
    pub window_open: bool,
    /// The journal, when there is one.
    pub journal: Option<Record>,
    /// Who holds the lock: `free`, `held`, `stale`, or `unknown` (not readable by this user).
    pub lock: String,
    /// The holder, when known.
    pub lock_holder: Option<String>,
    /// A hold list on disk while no window is open: the generator masks its units at the next boot or reload
    /// until `ade-prep restore` removes it.
    pub stale_hold_list: Option<std::path::PathBuf>,
}

/// `status`: the window and the lock.
pub fn status(paths: &Paths) -> anyhow::Result<StatusReport> {
    let store = FileStore::new(paths);
    let journal = store.load().with_context(|| "reading the journal".to_string())?;
    let (lock, lock_holder) = match Lock::new(paths).state() {
        Ok(LockState::Free) => ("free", None),
        Ok(LockState::Held(h)) => ("held", h.map(|h| h.to_string())),
        Ok(LockState::Stale(h)) => ("stale", Some(h.to_string())),
        // The lock file is root's, mode 0600: a user other than root cannot look (status reads only).
        Err(LockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            ("unknown", Some("the lock file is readable by root only".to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let window_open = journal.as_ref().is_some_and(|r| r.is_window_open());
    Ok(StatusReport {
        window_open,
        stale_hold_list: crate::window::hold::stale_list(paths, window_open),
        journal,
        lock: lock.into(),
        lock_holder,
    })
}

/// The human form of `status`.
pub fn status_text(s: &StatusReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    match &s.journal {
        None => o.push_str("window: closed (no journal)\n"),
        Some(r) => {
            let _ = writeln!(
                o,
                "window: {} (phase {}, opened {}, mount {}, driven by pid {})",
                if s.window_open { "open" } else { "closed" },
                r.phase,
                clock::format_utc(r.opened_at),
                esc(&r.mount.display().to_string()),
                r.owner_pid
            );
            if let (true, Some(d)) = (s.window_open, r.deadline) {
                let _ = writeln!(o, "deadline: {} (restored then without word from ADE)", clock::format_utc(d));
            }
            if let Some(a) = &r.ade {
                let _ = writeln!(o, "ADE: {} seq {}", esc(&a.handler_dir.display().to_string()), a.seq);
            }
            let _ = writeln!(o, "in effect: {}", r.summary());
            for e in &r.entries {
                let _ = writeln!(o, "  {:>3} {:<12} {}", e.seq, e.status.to_string(), esc(&e.change.to_string()));
            }
        }
    }
    if let Some(p) = &s.stale_hold_list {
        let _ = writeln!(
            o,
            "stale hold list: {} with no window open: its units are masked at the next boot or reload; \
             run `ade-prep restore` to remove it",
            p.display()
        );
    }
    let holder = s.lock_holder.as_deref().map(|h| format!(", {}", esc(h))).unwrap_or_default();
    let _ = writeln!(o, "lock: {}{holder}", s.lock);
    o
}

/// `status` from the command line.
pub fn run(paths: &Paths, json: bool) -> anyhow::Result<u8> {
    let s = status(paths)?;
    if json {
        out(&(serde_json::to_string_pretty(&s)? + "\n"))?;
    } else {
        out(&status_text(&s))?;
    }
    Ok(exit::OK)
}
