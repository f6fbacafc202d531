//! `prepare`: check, snapshot, plan and (unless a dry run) take the lock, open the window and carry the plan out.
//! It owns the order lock → journal → execute → hold list → phase open; it must not plan or execute itself. Its
//! outcome is one [`Prepared`]: not needed (and why), a dry run, or a window open with the lock guard.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{existing, need_root, out, RealEdges};
use crate::checks::{self, Flow};
use crate::clock;
use crate::config::Settings;
use crate::datavol::{self, AdeVolumes, DataVolumes, VolumeRef, VolumeType};
use crate::events::{self, Event};
use crate::exit;
use crate::lock::{Lock, LockGuard};
use crate::paths::Paths;
use crate::runner::RealRunner;
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
    /// `run`'s bound on the wait for another holder of the lock (what is left of ADE's head start, in seconds):
    /// past it, prepare goes on without the lock and names the holder it overrode; the time waited is taken from
    /// the wait for other extensions. None: `lock_wait` applies.
    pub lock_override_after: Option<u64>,
    /// Which volumes ADE will encrypt: `/` (os), the data volumes (data), or both (all).
    pub volume_type: VolumeType,
    /// Data volumes named by hand (`--data-mount`) instead of ADE's selection.
    pub data_mounts: Vec<PathBuf>,
}

/// What `prepare` came to. The lock guard, where one was taken, is the caller's to keep as long as it drives the
/// window (dropping it lets the lock go).
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to free, and why; with the lock when it was taken before the decision.
    NotNeeded { why: String, guard: Option<LockGuard> },
    /// A dry run: the plan, nothing changed, no lock taken.
    DryRun(Report),
    /// The window is open: the plan carried out and the journal, with the lock.
    Opened(Report, LockGuard),
}

/// What `prepare` did, for `--json` and for the daemon.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The plan carried out (or printed).
    pub plan: Plan,
    /// The data volumes freed (each verified after ADE's success).
    pub volumes: Vec<VolumeRef>,
    /// False for a dry run.
    pub executed: bool,
    /// The journal after execution.
    pub journal: Option<Record>,
}

/// What prepare found to do: a plan over these volumes, or why nothing is needed.
enum Planned {
    Plan(Box<RealEdges>, Plan, Vec<VolumeRef>),
    NotNeeded(String),
}

/// The data volumes of the window: those named by hand, else ADE's selection (none for VolumeType OS).
fn data_volumes(paths: &Paths, vols: &dyn DataVolumes, opts: &PrepareOpts) -> anyhow::Result<Vec<VolumeRef>> {
    if !opts.volume_type.includes_data() {
        if !opts.data_mounts.is_empty() {
            let e = anyhow::anyhow!("--data-mount needs --volume-type data or all (got {})", opts.volume_type);
            return Err(exit::with_code(exit::USAGE, e));
        }
        return Ok(vec![]);
    }
    if !opts.data_mounts.is_empty() {
        return datavol::by_mount_points(paths, &opts.data_mounts).map_err(|e| exit::with_code(exit::USAGE, e));
    }
    vols.select(opts.volume_type)
}

/// Selects the data volumes, checks (refusing on a failed check not forced: exit 3, before anything else is
/// touched, the system bus included), then connects to the real edges and plans.
fn checked_plan(paths: &Paths, settings: &Settings, mount: &Path, opts: &PrepareOpts) -> anyhow::Result<Planned> {
    // First: a `--data-mount` that is not a mount point is bad input (exit 2) whatever the checks say.
    let volumes = match data_volumes(paths, &AdeVolumes { paths, runner: &RealRunner }, opts) {
        Ok(v) => v,
        // ADE's selection could not be read (lsblk): with the OS volume asked for, `/` is still freed.
        Err(e) if opts.volume_type.includes_os() && opts.data_mounts.is_empty() => {
            log::error!("{e:#}: freeing / only; a busy data volume would be skipped by ADE");
            vec![]
        }
        Err(e) => return Err(e),
    };
    let report = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths));
    checks::refuse(&report, &opts.force).map_err(|e| exit::with_code(exit::PRECONDITION, e))?;
    let mut os = opts.volume_type.includes_os();
    if os && report.flow == Flow::Online && !opts.force.iter().any(|f| f.split(',').any(|id| id == "distro")) {
        log::warn!("this distribution encrypts the OS disk online and never unmounts /: / needs no preparation");
        os = false;
        if !opts.volume_type.includes_data() {
            return Ok(Planned::NotNeeded("ADE encrypts this distribution's OS disk online".into()));
        }
    }
    if !os && volumes.is_empty() {
        return Ok(Planned::NotNeeded("no mounted data volume that ADE would encrypt: nothing to free".into()));
    }
    // ADE encrypts the data volumes first, then the OS volume (`handle.py:2168-2209`).
    let mut mounts: Vec<PathBuf> = volumes.iter().map(|v| v.mount_point.clone()).collect();
    if os {
        mounts.push(mount.to_path_buf());
    }
    let edges = RealEdges::new(paths)?;
    let snap = snapshot::snapshot(&edges.machine(settings), &mounts)?;
    let plan = plan::plan(&snap, settings)?;
    Ok(Planned::Plan(Box::new(edges), plan, volumes))
}

/// `prepare`: check, plan, and (unless a dry run) take the lock, open the window and carry the plan out.
/// Returns the lock guard in the outcome: the caller keeps it as long as it drives the window.
pub fn prepare(paths: &Paths, settings: &Settings, mount: &Path, opts: &PrepareOpts) -> anyhow::Result<Prepared> {
    if !opts.dry_run {
        need_root("prepare")?;
    }
    let store = FileStore::new(paths);
    if opts.dry_run {
        return Ok(match checked_plan(paths, settings, mount, opts)? {
            Planned::NotNeeded(why) => Prepared::NotNeeded { why, guard: None },
            Planned::Plan(_, plan, volumes) => {
                Prepared::DryRun(Report { plan, volumes, executed: false, journal: None })
            }
        });
    }
    // From here a stop signal rolls back instead of killing (src/signals.rs).
    crate::signals::install()?;
    // The lock first, then the journal: the lock is what makes the check for an open window race-free.
    let lock = Lock::new(paths);
    let began = std::time::Instant::now();
    let guard = match opts.lock_override_after {
        Some(bound) => lock.acquire_for_run("prepare", &store, Duration::from_secs(bound))?,
        None => lock.acquire_for_prepare("prepare", &store, opts.lock_wait.map(Duration::from_secs))?,
    };
    // The head start ADE gives is one budget: what the lock took is not there for the extensions' wait.
    let bounded;
    let settings = match opts.lock_override_after {
        Some(bound) => {
            let mut s = settings.clone();
            let left = bound.saturating_sub(began.elapsed().as_secs());
            s.window.extension_wait_secs = s.window.extension_wait_secs.min(left);
            bounded = s;
            &bounded
        }
        None => settings,
    };
    let (edges, plan, volumes) = match checked_plan(paths, settings, mount, opts)? {
        Planned::NotNeeded(why) => return Ok(Prepared::NotNeeded { why, guard: Some(guard) }),
        Planned::Plan(edges, plan, volumes) => (edges, plan, volumes),
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
    // The journal's `mount`: `/` when the OS volume is in the window (it comes last), else a data volume; the
    // others are in `volumes`.
    let main_mount = plan.mount_points().into_iter().next_back().unwrap_or_else(|| mount.to_path_buf());
    let mut journal = Journal::open(store, &main_mount, &boot)?;
    journal.set_deadline(record::deadline_after(journal.record().opened_at, settings.window.timeout_hours))?;
    // The volumes are recorded before anything changes: whoever ends the window verifies each one.
    if !volumes.is_empty() {
        journal.set_volumes(volumes.clone())?;
    }
    // So is the ground the workloads stand on: restore mounts it again before it starts any (issue 23 item 10).
    let fstab = std::fs::read_to_string(paths.resolve(crate::paths::FSTAB)).unwrap_or_default();
    match crate::mountinfo::read(paths) {
        Ok(mounts) => {
            let boot = crate::window::ground::boot_mounts(&fstab);
            journal.set_ground(crate::window::ground::to_record(&mounts, &boot))?
        }
        Err(e) => log::warn!("the ground is not recorded (restore will not check it): {e}"),
    }
    let names: Vec<String> = plan.mount_points().iter().map(|m| m.display().to_string()).collect();
    events::emit(Event::WindowOpened { mounts: &names.join(", "), steps: plan.steps.len() });
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
    let journal = Some(journal.record().clone());
    Ok(Prepared::Opened(Report { plan, volumes, executed: true, journal }, guard))
}

/// `prepare` from the command line: prints the plan (and the window's summary), as text or JSON.
pub fn run(paths: &Paths, settings: &Settings, mount: &Path, opts: &PrepareOpts, json: bool) -> anyhow::Result<u8> {
    existing(mount)?;
    if !opts.data_mounts.is_empty() && !opts.volume_type.includes_data() {
        let e = anyhow::anyhow!("--data-mount needs --volume-type data or all (got {})", opts.volume_type);
        return Err(exit::with_code(exit::USAGE, e));
    }
    for m in &opts.data_mounts {
        existing(m).map_err(|e| exit::with_code(exit::USAGE, e.context("--data-mount")))?;
    }
    // The outcome (and the lock guard in it) is kept until the output is written.
    let prepared = prepare(paths, settings, mount, opts)?;
    match &prepared {
        Prepared::NotNeeded { why, .. } => out(&format!("no preparation needed: {why}\n"))?,
        Prepared::DryRun(p) | Prepared::Opened(p, _) if json => out(&(serde_json::to_string_pretty(p)? + "\n"))?,
        Prepared::DryRun(p) => out(&format!("{}(dry run: nothing was changed)\n", p.plan))?,
        Prepared::Opened(p, _) => {
            out(&format!("{}window open: {}\n", p.plan, p.journal.as_ref().map(Record::summary).unwrap_or_default()))?
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::volumes::{volume, FakeVolumes};

    #[test]
    fn the_data_volumes_are_ades_selection_for_data_or_all_and_none_for_os() {
        let paths = Paths::under("/nonexistent");
        let vols = FakeVolumes { selected: vec![volume("/data", "/dev/sdc1")], ..Default::default() };
        let opts = |vt: VolumeType| PrepareOpts { volume_type: vt, ..Default::default() };
        assert!(data_volumes(&paths, &vols, &opts(VolumeType::Os)).unwrap().is_empty());
        for vt in [VolumeType::Data, VolumeType::All] {
            assert_eq!(data_volumes(&paths, &vols, &opts(vt)).unwrap(), [volume("/data", "/dev/sdc1")]);
        }
        let by_hand = PrepareOpts { data_mounts: vec!["/data".into()], ..Default::default() };
        let e = data_volumes(&paths, &vols, &by_hand).unwrap_err();
        assert_eq!(e.to_string(), "--data-mount needs --volume-type data or all (got os)");
        assert_eq!(exit::code_of(&e), exit::USAGE);
    }
}
