//! The verbs that act on the window: `prepare`, `restore`, `status`. Each wires the real edges together and
//! calls the library (snapshot → plan → execute; journal → restore).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::checks::{self, Flow};
use crate::clock;
use crate::config::Settings;
use crate::exit;
use crate::lock::{Lock, LockGuard, LockState};
use crate::paths::Paths;
use crate::runner::RealRunner;
use crate::scan::ProcFs;
use crate::selinux::SelinuxFs;
use crate::systemd::Systemd;
use crate::window::hold;
use crate::window::journal::{Journal, Record};
use crate::window::phase::Phase;
use crate::window::plan::{self, Plan};
use crate::window::restore::{self, Restored};
use crate::window::store::{FileStore, Store};
use crate::window::{execute, snapshot, Machine};

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

fn need_root(what: &str) -> anyhow::Result<()> {
    if crate::cli::is_root() {
        Ok(())
    } else {
        Err(exit::with_code(exit::NOT_ROOT, anyhow!("{what} changes the machine: run it as root")))
    }
}

/// The real edges of this machine.
pub struct RealEdges {
    procs: ProcFs,
    systemd: Systemd,
    selinux: SelinuxFs,
    runner: RealRunner,
}

impl RealEdges {
    /// Connects to the system bus.
    pub fn new(paths: &Paths) -> anyhow::Result<Self> {
        Ok(RealEdges {
            procs: ProcFs::new(paths.proc()),
            systemd: Systemd::system()?,
            selinux: SelinuxFs::new(paths),
            runner: RealRunner,
        })
    }

    /// The machine view execution works through.
    pub fn machine<'a>(&'a self, settings: &'a Settings) -> Machine<'a> {
        Machine { procs: &self.procs, systemd: &self.systemd, selinux: &self.selinux, runner: &self.runner, settings }
    }
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
    // The lock first, then the journal: the lock is what makes the check for an open window race-free.
    let lock = Lock::new(paths);
    let guard = lock.acquire_when_closed("prepare", &store, opts.lock_wait.map(Duration::from_secs))?;
    let Some((edges, plan)) = checked_plan(paths, settings, mount, &opts.force)? else {
        return Ok((None, Some(guard)));
    };
    let m = edges.machine(settings);
    let boot = clock::boot_id(paths)?;
    let mut journal = Journal::open(store, mount, &boot)?;
    log::info!("window opened: {} step(s) to free {}", plan.steps.len(), mount.display());
    execute::execute(&m, &plan, &mut journal)?;
    // The hold list before the phase: a crash in between leaves it to the restore that follows (which removes it).
    // Without it the window still works; only a reboot would let the workloads start early.
    if let Err(e) = hold::write_list(paths, &hold::units_to_hold(journal.record())) {
        log::warn!("the workloads will not be held down through a reboot: {e:#}");
    }
    journal.set_phase(Phase::Open)?;
    log::info!("window open: {}", summary(journal.record()));
    Ok((Some(Prepared { plan, executed: true, journal: Some(journal.record().clone()) }), Some(guard)))
}

/// A one-line summary of the changes in effect ("stopped 3 units, SELinux permissive").
pub fn summary(r: &Record) -> String {
    use crate::window::journal::{Change, Status};
    let done = r.entries.iter().filter(|e| e.status == Status::Done);
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

/// `restore`: undo what the journal records. `Ok(None)` when there is nothing to do.
pub fn restore(paths: &Paths, settings: &Settings, lock_wait: Option<u64>) -> anyhow::Result<Option<Restored>> {
    need_root("restore")?;
    let store = FileStore::new(paths);
    let lock = Lock::new(paths);
    let _guard = lock.acquire("restore", lock_wait.map(Duration::from_secs))?;
    // The hold list first: restore's Reload runs ade-prep-generator, which must no longer mask anything.
    hold::clear_list(paths)?;
    let Some(mut journal) = Journal::resume(store)? else { return Ok(None) };
    if !journal.is_window_open() {
        return Ok(None);
    }
    journal.adopt()?;
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

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The window is open (prepare started and restore has not finished).
    pub window_open: bool,
    /// The journal, when there is one.
    pub journal: Option<Record>,
    /// Who holds the lock: `free`, `held` or `stale`.
    pub lock: String,
    /// The holder, when known.
    pub lock_holder: Option<String>,
}

/// `status`: the window and the lock.
pub fn status(paths: &Paths) -> anyhow::Result<StatusReport> {
    let store = FileStore::new(paths);
    let journal = store.load().with_context(|| "reading the journal".to_string())?;
    let (lock, lock_holder) = match Lock::new(paths).state()? {
        LockState::Free => ("free", None),
        LockState::Held(h) => ("held", h.map(|h| h.to_string())),
        LockState::Stale(h) => ("stale", Some(h.to_string())),
    };
    Ok(StatusReport {
        window_open: journal.as_ref().is_some_and(|r| r.is_window_open()),
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
                r.mount.display(),
                r.owner_pid
            );
            if let Some(a) = &r.ade {
                let _ = writeln!(o, "ADE: {} seq {}", a.handler_dir.display(), a.seq);
            }
            let _ = writeln!(o, "in effect: {}", summary(r));
            for e in &r.entries {
                let _ = writeln!(o, "  {:>3} {:<12} {}", e.seq, e.status.to_string(), e.change);
            }
        }
    }
    let _ = writeln!(o, "lock: {}{}", s.lock, s.lock_holder.as_deref().map(|h| format!(", {h}")).unwrap_or_default());
    o
}
