//! `prepare`: check, snapshot, plan and (unless a dry run) take the lock, open the window and carry the plan out.
//! It owns the order lock → journal → execute → hold list → phase open; it must not plan or execute itself.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{existing, need_root, out, RealEdges};
use crate::checks::{self, Flow};
use crate::clock;
use crate::config::Settings;
use crate::events::{self, Event};
use crate::exit;
use crate::lock::{Lock, LockGuard};
use crate::paths::Paths;
use crate::window::journal::{Journal, Record};
use crate::window::phase::Phase;
use crate::window::plan::{self, Plan};
use crate::window::record;
use crate::window::store::FileStore;
use crate::window::{execute, snapshot};

/// Options of `prepare`.
#[derive(Debug, Clone, Default)]
pub struct PrepareOpts {
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Check ids whose failure is overridden.
    pub force: Vec<String>,
    /// Seconds to wait for the lock (None: as long as it takes).
    pub lock_wait: Option<u64>,
}

/// What `prepare` did, for `--json` and for the daemon.
#[derive(Debug, Serialize)]
pub struct Prepared {
    /// The plan carried out (or printed).
    pub plan: Plan,
    /// False for a dry run.
    pub executed: bool,
    /// The journal after execution.
    pub journal: Option<Record>,
}

/// Checks (refusing on a failed check not forced: exit 3, before anything else is touched, the system bus
/// included), then connects to the real edges and plans. `Ok(None)` when no preparation is needed.
fn checked_plan(
    paths: &Paths,
    settings: &Settings,
    mount: &Path,
    force: &[String],
) -> anyhow::Result<Option<(RealEdges, Plan)>> {
    let report = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths));
    checks::refuse(&report, force).map_err(|e| exit::with_code(exit::PRECONDITION, e))?;
    if report.flow == Flow::Online && !force.iter().any(|f| f.split(',').any(|id| id == "distro")) {
        log::warn!("this distribution encrypts the OS disk online and never unmounts /: no preparation needed");
        return Ok(None);
    }
    let edges = RealEdges::new(paths)?;
    let snap = snapshot::snapshot(&edges.machine(settings), mount)?;
    let plan = plan::plan(&snap, settings)?;
    Ok(Some((edges, plan)))
}

/// `prepare`: check, plan, and (unless a dry run) take the lock, open the window and carry the plan out.
/// Returns the lock guard with the result: the caller keeps it as long as it drives the window.
pub fn prepare(
    paths: &Paths,
    settings: &Settings,
    mount: &Path,
    opts: &PrepareOpts,
) -> anyhow::Result<(Option<Prepared>, Option<LockGuard>)> {
    if !opts.dry_run {
        need_root("prepare")?;
    }
    let store = FileStore::new(paths);
    if opts.dry_run {
        let Some((_, plan)) = checked_plan(paths, settings, mount, &opts.force)? else { return Ok((None, None)) };
        return Ok((Some(Prepared { plan, executed: false, journal: None }), None));
    }
    // From here a stop signal rolls back instead of killing (src/signals.rs).
    crate::signals::install()?;
    // The lock first, then the journal: the lock is what makes the check for an open window race-free.
    let lock = Lock::new(paths);
    let guard = lock.acquire_for_prepare("prepare", &store, opts.lock_wait.map(Duration::from_secs))?;
    let Some((edges, plan)) = checked_plan(paths, settings, mount, &opts.force)? else {
        return Ok((None, Some(guard)));
    };
    if !plan.blockers.is_empty() {
        let e = anyhow::anyhow!("prepare refused, nothing was changed: {}", plan.blockers.join("; "));
        return Err(exit::with_code(exit::PRECONDITION, e));
    }
    // No journal, no undo: a window is opened only where every change can be recorded.
    store.check_writable().map_err(|e| {
        let e = anyhow::anyhow!("{e}: prepare refused, nothing was changed (every change is journaled first)");
        exit::with_code(exit::PRECONDITION, e)
    })?;
    let m = edges.machine(settings);
    let boot = clock::boot_id(paths)?;
    let mut journal = Journal::open(store, mount, &boot)?;
    journal.set_deadline(record::deadline_after(journal.record().opened_at, settings.window.timeout_hours))?;
    events::emit(Event::WindowOpened { mount, steps: plan.steps.len() });
    // The hold list is a step of the plan (after the stops, before the reload that activates the masks).
    execute::execute(&m, &plan, &mut journal).map_err(|e| match crate::signals::received() {
        // A pre-stop command ended by the stop request fails as such: say what stopped it.
        Some(sig) if !e.chain().any(|c| c.is::<crate::signals::Stopped>()) => e.context(format!("stopped by {sig}")),
        _ => e,
    })?;
    if let Err(stopped) = crate::signals::check(|| "after the last step".into()) {
        return Err(execute::roll_back(&m, &mut journal, stopped.into()));
    }
    journal.set_phase(Phase::Open)?;
    log::info!("window open: {}", journal.record().summary());
    Ok((Some(Prepared { plan, executed: true, journal: Some(journal.record().clone()) }), Some(guard)))
}

/// `prepare` from the command line: prints the plan (and the window's summary), as text or JSON.
pub fn run(paths: &Paths, settings: &Settings, mount: &Path, opts: &PrepareOpts, json: bool) -> anyhow::Result<u8> {
    existing(mount)?;
    let (prepared, _guard) = prepare(paths, settings, mount, opts)?;
    match prepared {
        None => out("no preparation needed: ADE encrypts this distribution's OS disk online\n")?,
        Some(p) if json => out(&(serde_json::to_string_pretty(&p)? + "\n"))?,
        Some(p) if !p.executed => out(&format!("{}(dry run: nothing was changed)\n", p.plan))?,
        Some(p) => {
            out(&format!("{}window open: {}\n", p.plan, p.journal.as_ref().map(Record::summary).unwrap_or_default()))?
        }
    }
    Ok(exit::OK)
}
