//! `ade-prep run`: the entry of the Type=notify unit that the path unit starts when ADE's handler appears. It
//! follows ADE's request lifecycle ([`lifecycle`]: a state machine with checked transitions and a pure `next`) for
//! as long as ADE is installed: it opens the window whenever ADE will act on a volume it frees (prepare, READY=1),
//! follows ADE through its reboots (the unit starts again and finds the open window), and closes it only at ADE's
//! end of the request or at the deadline, which a daemon at work with its queue extends. SIGTERM keeps the window
//! (the journal holds it) and exits cleanly; `restore` stays available by hand.
//!
//! This module carries out the lifecycle's actions and owns the window's lifetime across requests; the rule is in
//! [`lifecycle`], the settings helpers in [`wait`], the plumbing with systemd and signals in [`plumbing`]. It must
//! not carry out the window itself (prepare and restore do).

pub mod lifecycle;
pub mod plumbing;
pub mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use self::lifecycle::{Action, Look, Req, RunState};
use self::plumbing::{notify, start_watchdog, status, StopToken};
use self::wait::{age, os_work_started};
use super::prepare::{self, PrepareOpts, Prepared};
use super::restore;
use crate::checks::{self, Flow};
use crate::clock;
use crate::config::{ConfigError, Settings};
use crate::datavol::{DataVolumes, VolumeCheck, VolumeType};
use crate::exit;
use crate::extension::ade::{self, Observation, Outcome, RootState, Verdict};
use crate::paths::Paths;
use crate::selinux::SelinuxFs;
use crate::window::hold;
use crate::window::journal::{self, AdeRef, Journal};
use crate::window::phase::Phase;
use crate::window::store::{FileStore, Store};

pub(crate) fn verdict_text(v: &Verdict) -> String {
    v.text()
}

/// Why ADE is in its RAM root now (`/` a tmpfs, `/oldroot` mounted, or the mount table unreadable), or None when
/// `/` is the disk (FINDINGS 23).
fn frozen_now(paths: &Paths) -> Option<String> {
    match RootState::read(paths) {
        Ok(r) if !r.frozen() => None,
        Ok(r) if r.tmpfs => Some("/ is a tmpfs (ADE's RAM root)".into()),
        Ok(_) => Some(format!("{} is mounted (ADE is unmounting the disk)", ade::machine::OLDROOT)),
        Err(e) => Some(format!("cannot tell ADE's RAM root from the disk: {e}")),
    }
}

/// ADE is in its RAM root: everything written now would land in the RAM copy and vanish at ADE's reboot, and any
/// unit started would hold the old root. Change nothing (no restore, no unmask or start, no journal, hold-list or
/// SELinux write); say READY so that a restart into the RAM root (RHEL) is not a failed start; wait until stopped
/// (Ubuntu's `systemctl rescue`, ADE's reboot). True when stopped; false if `/` became the disk again.
fn idle_while_frozen(paths: &Paths, stop: &StopToken, why: &str) -> bool {
    status(&format!("frozen: {why}: changing nothing; the journal on the disk keeps the window for after the reboot"));
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        if stop.is_raised() {
            status("stopping while frozen: the window stays open (the journal on the disk holds it)");
            return true;
        }
        if frozen_now(paths).is_none() {
            status("/ is the disk again: deciding anew");
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Options of `run`.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Check ids whose failure not to refuse on.
    pub force: Vec<String>,
}

/// The configuration `run` works with: what loaded, or the built-in defaults and why the files did not load.
#[derive(Clone, Copy)]
struct Config<'a> {
    settings: &'a Settings,
    /// Why the configuration files did not load (then `settings` are the built-in defaults).
    bad: Option<&'a str>,
}

impl Config<'_> {
    /// The settings for ending a window: a bad configuration is only a warning.
    fn for_ending(&self) -> &Settings {
        if let Some(why) = self.bad {
            log::warn!("{why}; ignored while the open window is waited on and restored (built-in defaults apply)");
        }
        self.settings
    }
    /// The settings for a new prepare: a bad configuration is an error (exit 2), before anything is changed.
    fn for_starting(&self) -> anyhow::Result<&Settings> {
        match self.bad {
            Some(why) => Err(exit::with_code(exit::USAGE, anyhow::anyhow!("{why}: refusing to prepare"))),
            None => Ok(self.settings),
        }
    }
}

/// How ADE encrypts this distribution's OS disk, `--force distro` taken as the unmount flow.
fn flow_for(paths: &Paths, settings: &Settings, opts: &RunOpts) -> Flow {
    let flow = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths)).flow;
    let forced_distro = opts.force.iter().flat_map(|f| f.split(',')).any(|id| id == "distro");
    if forced_distro && flow != Flow::Online {
        Flow::Unmount
    } else {
        flow
    }
}

/// `ade-prep run`: follows ADE's request lifecycle ([`lifecycle`]) for as long as ADE is on the machine: one look
/// at ADE, the pure [`lifecycle::next`], the action carried out through the window's edges (prepare, restore), the
/// state moved by its checked transition. The window opens whenever ADE will act on a volume it frees and closes
/// only at ADE's end of the request; while the service is active the path unit cannot start it again, so `run`
/// stays up between requests (a rerun of the same seq, a later request in the same boot).
///
/// A configuration that does not load is an error (exit 2) only when `run` would prepare: an open window is waited
/// on and restored all the same (its deadline is in the journal), with the built-in defaults for the rest.
pub fn run(paths: &Paths, loaded: Result<Settings, ConfigError>, opts: &RunOpts) -> anyhow::Result<u8> {
    let (settings, bad_config) = match loaded {
        Ok(s) => (s, None),
        Err(e) => (Settings::default(), Some(e.to_string())),
    };
    let config = Config { settings: &settings, bad: bad_config.as_deref() };
    let stop = StopToken::from_signals()?;
    start_watchdog();
    let mut driver = Driver {
        paths,
        config,
        opts,
        stop: &stop,
        flow: None,
        said: String::new(),
        ready: false,
        restore_retry_at: None,
    };
    let Some(mut state) = driver.initial_state()? else { return Ok(exit::OK) };
    loop {
        if stop.is_raised() {
            match state {
                RunState::Open { .. } => {
                    status("stopping: the window stays open (the journal holds it); `ade-prep restore` closes it");
                    notify(&[sd_notify::NotifyState::Stopping]);
                }
                _ => status("stopping: no window open"),
            }
            return Ok(exit::OK);
        }
        let (look, obs) = driver.look(&state);
        let action = lifecycle::next(&state, &look);
        if !matches!(action, Action::Wait(_)) {
            log::debug!("run state {state:?}, look {look:?}: {}", action.text());
        }
        let after = state.after(&action)?;
        match driver.act(&state, &action, &look, &obs)? {
            Acted::As => state = after,
            Acted::Instead(s) => state = s,
            Acted::End(code) => return Ok(code),
        }
    }
}

/// How an action went.
enum Acted {
    /// As the transition says.
    As,
    /// Another state (a prepare that found nothing to free, a window adopted).
    Instead(RunState),
    /// `run` ends with this code.
    End(u8),
}

/// `run`'s loop's side: looking at ADE and carrying out [`lifecycle::Action`]s.
struct Driver<'a> {
    paths: &'a Paths,
    config: Config<'a>,
    opts: &'a RunOpts,
    stop: &'a StopToken,
    /// The distribution's flow, once read.
    flow: Option<Flow>,
    /// The last status line said while waiting.
    said: String,
    /// READY=1 was sent.
    ready: bool,
    /// After an incomplete restore: not before this instant again.
    restore_retry_at: Option<std::time::Instant>,
}

/// How long `run` waits before it tries an incomplete restore again.
const RESTORE_RETRY_SECS: u64 = 60;

impl Driver<'_> {
    fn flow(&mut self) -> Flow {
        let (paths, settings, opts) = (self.paths, self.config.settings, self.opts);
        *self.flow.get_or_insert_with(|| flow_for(paths, settings, opts))
    }

    fn ready(&mut self) {
        if !self.ready {
            notify(&[sd_notify::NotifyState::Ready]);
            self.ready = true;
        }
    }

    /// One look: the lifecycle's and the verdict's (for the status line's detail).
    fn look(&mut self, state: &RunState) -> (Look, Observation) {
        let obs = ade::observe(self.paths);
        let boot = clock::boot_id(self.paths).unwrap_or_default();
        // The distribution is read only once a request may need it.
        let flow =
            if obs.seq.is_some() || matches!(state, RunState::Open { .. }) { self.flow() } else { Flow::Unknown };
        let hours = self.config.settings.window.timeout_hours;
        let mut look = Look::from_facts(&obs.facts, clock::now(), &boot, flow, hours.saturating_mul(3600));
        look.uptime = clock::uptime_secs(self.paths);
        (look, obs)
    }

    /// The state `run` starts in: a window cut short is restored first, an open one (by `run` before a reboot, or
    /// by hand and adopted for ADE's request) is followed, else the last request the journal dealt with is
    /// remembered. None: ADE is in its RAM root and `run` was stopped there.
    fn initial_state(&mut self) -> anyhow::Result<Option<RunState>> {
        let paths = self.paths;
        // In ADE's RAM root nothing is read for a decision and nothing is changed (FINDINGS 23).
        if let Some(why) = frozen_now(paths) {
            if idle_while_frozen(paths, self.stop, &why) {
                return Ok(None);
            }
        }
        let store = FileStore::new(paths);
        let mut record = store.load()?;
        if record.as_ref().is_some_and(|r| r.is_window_open() && r.phase != Phase::Open) {
            // Decided with the lock held: a manual prepare (or restore) still running holds it; once it is ours, the
            // journal says what that process left, an open window to adopt or one cut short (crash) to restore.
            drop(crate::lock::Lock::new(paths).acquire("run", None)?);
            record = store.load()?;
        }
        if let Some(r) = record.as_ref().filter(|r| r.is_window_open() && r.phase != Phase::Open) {
            status(&format!("found a window in phase {}: restoring it first", r.phase));
            restore::restore(paths, self.config.for_ending(), None)?;
            record = store.load()?;
        }
        let Some(mut record) = record else { return Ok(Some(RunState::Watching { handled: None })) };
        if !record.is_window_open() {
            let handled = record.ade.map(|a| Req {
                handler_dir: a.handler_dir,
                seq: a.seq,
                stamp: None,
                ended_in_boot: None,
                stalled_at: None,
            });
            return Ok(Some(RunState::Watching { handled }));
        }
        if record.ade.is_none() {
            if let Ok(settings) = self.config.for_starting() {
                record = self.adopt_manual_window(settings.clone(), record)?;
            }
        }
        let Some(ade_ref) = record.ade.clone() else {
            // A window opened by hand that ADE's request does not need: left to its owner (`restore`), followed to
            // its deadline as before.
            // Taken as taken up: closed by ADE's end or the deadline, never by the take-up bound.
            self.config.for_ending();
            let req =
                Req { handler_dir: PathBuf::new(), seq: u64::MAX, stamp: None, ended_in_boot: None, stalled_at: None };
            let deadline = record.deadline_or(self.config.settings.window.timeout_hours);
            return Ok(Some(RunState::Open {
                req,
                volumes: VolumeType::All,
                taken_up: true,
                opened_at: record.opened_at,
                deadline,
            }));
        };
        self.config.for_ending();
        resume_after_reboot(paths, &record)?;
        let (look, _) = self.look(&RunState::Watching { handled: None });
        let req = Req {
            handler_dir: ade_ref.handler_dir,
            seq: ade_ref.seq,
            stamp: None,
            ended_in_boot: None,
            stalled_at: None,
        };
        let deadline = record.deadline_or(self.config.settings.window.timeout_hours);
        Ok(Some(RunState::open(req, lifecycle::window_volumes(&look), record.opened_at, deadline)))
    }

    /// A window a manual prepare opened records no ADE request: when ADE's current request needs the window, the
    /// window is adopted for it (its seq recorded, with the lock held), never restored and prepared again
    /// (workloads are not bounced, pre-stop commands do not run twice). Otherwise it is left as it is.
    fn adopt_manual_window(&mut self, _settings: Settings, open: journal::Record) -> anyhow::Result<journal::Record> {
        let (look, _) = self.look(&RunState::Watching { handled: None });
        let Action::Prepare { req, .. } = lifecycle::next(&RunState::Watching { handled: None }, &look) else {
            return Ok(open);
        };
        let _lock = crate::lock::Lock::new(self.paths).acquire("run", None)?;
        let mut j = Journal::resume(FileStore::new(self.paths))?.context("the journal vanished")?;
        if !j.is_window_open() || j.record().ade.is_some() {
            return Ok(j.record().clone());
        }
        status(&format!("a window opened by another prepare is adopted for ADE request seq {}", req.seq));
        j.set_ade(AdeRef { handler_dir: req.handler_dir, seq: req.seq })?;
        Ok(j.record().clone())
    }

    fn act(&mut self, state: &RunState, action: &Action, look: &Look, obs: &Observation) -> anyhow::Result<Acted> {
        match action {
            Action::Wait(why) => {
                let line = match state {
                    RunState::Open { .. } => {
                        let detail = match &obs.verdict {
                            Verdict::Wait(w) => w.clone(),
                            _ => why.clone(),
                        };
                        let summary =
                            FileStore::new(self.paths).load().ok().flatten().map(|r| r.summary()).unwrap_or_default();
                        format!("{summary}, waiting for ADE: {detail}")
                    }
                    RunState::Watching { handled: Some(h) } if why.contains("was dealt with") => {
                        format!("idle: watching for ADE's next request (seq {} was dealt with)", h.seq)
                    }
                    _ => format!("waiting: {why}"),
                };
                if line != self.said {
                    status(&line);
                    self.said = line;
                }
                // READY=1 says the window is open, or that run has dealt with ADE's request and watches for the
                // next one: never while a request is still to be decided (a pre-hook's `systemctl start` returns
                // on READY, and ADE must not start before the window is open).
                if !matches!(state, RunState::Watching { handled: None }) || look.handler.is_none() {
                    self.ready();
                }
                self.nap();
                Ok(Acted::As)
            }
            Action::Hold(why) => {
                if idle_while_frozen(self.paths, self.stop, why) {
                    return Ok(Acted::End(exit::OK));
                }
                Ok(Acted::As)
            }
            Action::Exit(why) => {
                if look.handler.is_some() {
                    status(&format!("nothing to do: {why}"));
                } else {
                    status(&format!("nothing to do: no ADE request: {}", verdict_text(&obs.verdict)));
                }
                self.ready();
                Ok(Acted::End(exit::OK))
            }
            Action::Handled { req, why } => {
                status(&format!("nothing to do: ADE request seq {}: {why}", req.seq));
                self.ready();
                // A fleet slot taken for this VM's rollout is given back: ADE's request opens no window.
                if matches!(state, RunState::Watching { .. }) {
                    crate::fleet::release_without_window(self.paths, why);
                }
                self.said.clear();
                Ok(Acted::As)
            }
            Action::TakenUp(why) => {
                log::info!("{why}");
                Ok(Acted::As)
            }
            Action::Extend { until, why } => {
                let _lock = crate::lock::Lock::new(self.paths).acquire("run", None)?;
                let mut j = Journal::resume(FileStore::new(self.paths))?.context("the journal vanished")?;
                j.set_deadline(*until)?;
                let line = format!("{why}: the window's deadline is now {}", clock::format_utc(*until));
                log::warn!("{line}");
                crate::events::emit(crate::events::Event::AdeDecision {
                    seq: look.seq.unwrap_or_default(),
                    decision: &line,
                });
                status(&line);
                Ok(Acted::As)
            }
            Action::Restore { why, outcome, .. } => {
                // ADE pivoted between the look and now: the RAM root is no place to restore (FINDINGS 17, 23).
                if let Some(why) = frozen_now(self.paths) {
                    return Ok(if idle_while_frozen(self.paths, self.stop, &why) {
                        Acted::End(exit::OK)
                    } else {
                        Acted::Instead(state.clone())
                    });
                }
                let record = FileStore::new(self.paths).load()?;
                match outcome {
                    None => {
                        let deadline = match state {
                            RunState::Open { deadline, .. } => *deadline,
                            _ => 0,
                        };
                        log::error!(
                            "no completion from ADE by the window's deadline {} ({}): restoring",
                            clock::format_utc(deadline),
                            verdict_text(&obs.verdict)
                        );
                    }
                    Some(o) => status(&format!("ADE done: {o} ({why}); restoring")),
                }
                if self.restore_retry_at.is_some_and(|at| std::time::Instant::now() < at) {
                    self.nap();
                    return Ok(Acted::Instead(state.clone()));
                }
                if let Err(e) = restore_now(self.paths, self.config.for_ending()) {
                    // Incomplete (a unit that does not start, the ground not mounted): the window stays, `run`
                    // with it, and tries again; an ended `run` would leave it to the deadline timer alone.
                    let line = format!("restore incomplete: {e:#}; trying again in {RESTORE_RETRY_SECS} s");
                    log::error!("{line}");
                    status(&line);
                    self.restore_retry_at = Some(std::time::Instant::now() + Duration::from_secs(RESTORE_RETRY_SECS));
                    return Ok(Acted::Instead(state.clone()));
                }
                self.restore_retry_at = None;
                if let (Some(o), Some(record)) = (outcome, record) {
                    if !matches!(o, Outcome::Failed { .. }) {
                        let vols = crate::datavol::AdeVolumes { paths: self.paths, runner: &crate::runner::RealRunner };
                        if let Some(line) = verify_data_volumes(&vols, &record) {
                            status(&line);
                        }
                    }
                }
                self.said.clear();
                Ok(Acted::As)
            }
            Action::Prepare { req, volumes, why, .. } => match self.prepare(req, *volumes, why, look) {
                // Stopped during prepare (rolled back): run ends, as asked.
                Err(e) if self.stop.is_raised() => Err(e),
                Err(e) => self.prepare_failed(req, e),
                acted => acted,
            },
        }
    }

    /// A prepare for `req` that failed (refused, or rolled back): `run` does not end with it (it would leave the
    /// unit active (exited), and ADE's retry with no window, for the rest of the boot). With no window left open
    /// the request counts as dealt with: ADE's next request, or this one run again by the agent, is looked at
    /// afresh. A window the failure left open (its rollback incomplete) ends `run` as before: its next start
    /// restores it.
    fn prepare_failed(&mut self, req: &Req, e: anyhow::Error) -> anyhow::Result<Acted> {
        match FileStore::new(self.paths).load() {
            Ok(None) => {}
            Ok(Some(r)) if !r.is_window_open() => {}
            _ => return Err(e),
        }
        let line = format!(
            "prepare for ADE request seq {} failed, nothing left changed ({}): {e:#}; watching for ADE's next request",
            req.seq,
            exit::code_of(&e)
        );
        log::error!("{line}");
        status(&line);
        self.ready();
        crate::fleet::release_without_window(self.paths, "prepare failed");
        self.said.clear();
        Ok(Acted::Instead(RunState::Watching { handled: Some(req.clone()) }))
    }

    /// Sleeps a second, or less when stopped.
    fn nap(&self) {
        for _ in 0..5 {
            if self.stop.is_raised() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Opens the window for `req` through prepare; the state after it.
    fn prepare(&mut self, req: &Req, volume_type: VolumeType, why: &str, look: &Look) -> anyhow::Result<Acted> {
        let paths = self.paths;
        let settings = self.config.for_starting()?;
        // A fleet member that holds no slot: said loudly, never waited for (ADE will not wait).
        crate::fleet::warn_if_unheld(paths, settings);
        let seq = req.seq;
        let handler_dir = req.handler_dir.clone();
        let decision = match volume_type {
            VolumeType::Os => "includes the OS volume: preparing",
            VolumeType::Data => "includes data volumes: preparing to free them",
            VolumeType::All => "includes the OS and data volumes: preparing",
        };
        status(&format!("ADE request seq {seq} {decision} ({why})"));
        crate::events::emit(crate::events::Event::AdeDecision { seq, decision });
        // Other extensions' handler operations and the lock are waited for only within ADE's head start
        // (FINDINGS 26, 31; issue 24).
        let settings_file = ade::settings_path(&handler_dir, seq);
        let age_secs = age(&settings_file).map_or(0, |a| a.as_secs());
        let bound = ade::verdict::extension_wait_bound(look.dual_pass, age_secs);
        let popts = PrepareOpts {
            dry_run: false,
            force: self.opts.force.clone(),
            lock_wait: None,
            // The wait for another holder of the lock ends within ADE's head start (issue 24).
            lock_override_after: Some(bound),
            volume_type,
            data_mounts: vec![],
        };
        let mut settings = settings.clone();
        settings.window.extension_wait_secs = settings.window.extension_wait_secs.min(bound);
        let handled = RunState::Watching { handled: Some(req.clone()) };
        let prepared = match prepare::prepare(paths, &settings, Path::new("/"), &popts) {
            // A prepare by hand opened a window since the journal was read (prepare decided so with the lock
            // held): adopt it for this request rather than restoring it and preparing again.
            Err(e) if FileStore::new(paths).load().ok().flatten().is_some_and(|r| r.phase == Phase::Open) => {
                status(&format!("a window opened by another prepare is adopted for ADE request seq {seq} ({e:#})"));
                let mut j = Journal::resume(FileStore::new(paths))?.context("the journal vanished")?;
                j.set_ade(AdeRef { handler_dir, seq })?;
                let r = j.record();
                let deadline = r.deadline_or(settings.window.timeout_hours);
                return Ok(Acted::Instead(RunState::open(req.clone(), volume_type, r.opened_at, deadline)));
            }
            r => r?,
        };
        // The lock is let go first, whatever prepare came to: the journal holds the window from now on.
        if let Prepared::NotNeeded { why, guard } = prepared {
            drop(guard);
            status(&format!("nothing to do: {why}"));
            self.ready();
            crate::fleet::release_without_window(paths, &why); // ADE's request opens no window here
            return Ok(Acted::Instead(handled));
        }
        if let Prepared::Opened(_, guard) = prepared {
            drop(guard);
        }
        if let Some(a) = age(&settings_file) {
            log::info!(
                "prepare finished {:.0} s after ADE's settings appeared (ADE waits about 60 s)",
                a.as_secs_f64()
            );
        }
        if let Some(markers) = os_work_started(paths) {
            log::error!(
                "ADE's OS-disk work began before prepare finished (markers: {}): the unmount may already have failed",
                markers.join(", ")
            );
        }
        let mut j = Journal::resume(FileStore::new(paths))?.context("the journal vanished after prepare")?;
        j.set_ade(AdeRef { handler_dir, seq })?;
        let r = j.record();
        let deadline = r.deadline_or(settings.window.timeout_hours);
        self.said.clear();
        self.ready = false;
        self.ready();
        Ok(Acted::Instead(RunState::open(req.clone(), volume_type, r.opened_at, deadline)))
    }
}

/// A window opened in an earlier boot: the generator held its units masked through this boot (src/window/hold.rs);
/// SELinux came back in its configured mode, so it is set permissive again when the window had set it so.
fn resume_after_reboot(paths: &Paths, record: &journal::Record) -> anyhow::Result<()> {
    let boot = clock::boot_id(paths)?;
    if record.boot_id == boot {
        return Ok(());
    }
    let (held, loose) = hold::split_held(paths, hold::units_to_hold(record));
    if !held.is_empty() {
        log::info!("window opened before a reboot: {} unit(s) held masked since boot: {}", held.len(), held.join(" "));
    }
    if !loose.is_empty() {
        log::error!(
            "window opened before a reboot, but {} unit(s) were not held down through the boot (no mask from \
             ade-prep-generator in {}: see `journalctl -b | grep ade-prep`): {}",
            loose.len(),
            hold::GENERATOR_EARLY_DIR,
            loose.join(" ")
        );
    }
    match hold::reapply_selinux(record, &boot, &SelinuxFs::new(paths)) {
        Ok(true) => {
            log::info!("SELinux: enforcing -> permissive again for the rest of the window (the boot brought it back)")
        }
        Ok(false) => {}
        // Still wait and restore: giving up here would leave the window open with nobody to close it.
        Err(e) => log::error!("SELinux could not be set permissive again after the reboot: {e}"),
    }
    Ok(())
}

/// After ADE's success: whether each data volume of the window was encrypted, one event each (an error naming a
/// volume ADE skipped: it reports success all the same, `handle.py:1989-1993`, `handle.py:2190-2197`); the status
/// line to show, None when the window had no data volume.
fn verify_data_volumes(vols: &dyn DataVolumes, record: &journal::Record) -> Option<String> {
    if record.data_volumes().is_empty() {
        return None;
    }
    let (verdicts, errors) = crate::datavol::verify_all(vols, record.data_volumes());
    for (v, c) in &verdicts {
        let volume = v.to_string();
        let (encrypted, detail) = match c {
            VolumeCheck::Encrypted { mapper } => (true, mapper.as_str()),
            VolumeCheck::NotEncrypted { why } => (false, why.as_str()),
        };
        crate::events::emit(crate::events::Event::DataVolume { volume: &volume, encrypted, detail });
    }
    Some(if errors.is_empty() {
        format!("ADE encrypted every data volume of the window ({})", verdicts.len())
    } else {
        format!("ADE left {} data volume(s) unencrypted: {}", errors.len(), errors.join("; "))
    })
}

fn restore_now(paths: &Paths, settings: &Settings) -> anyhow::Result<()> {
    // No STOPPING=1 here: systemd would take it as the service stopping (deactivating, stop-sigterm, bounded by
    // TimeoutStopSec, inactive afterwards instead of RemainAfterExit's active (exited)), and ade-prep.path, seeing
    // ADE's settings still there, would start `run` again at once.
    let r = restore::restore(paths, settings, None)?;
    status(&format!("restored: {}", r.map(|r| r.summary()).unwrap_or_else(|| "nothing to undo".into())));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::volumes::{volume, FakeVolumes};

    #[test]
    fn after_ades_success_each_data_volume_is_verified_and_one_ade_skipped_is_named() {
        let store = crate::testing::store::MemStore::default();
        let mut j = Journal::open(store, Path::new("/"), "boot").unwrap();
        assert_eq!(verify_data_volumes(&FakeVolumes::default(), j.record()), None, "no data volume, no line");
        j.set_volumes(vec![volume("/data", "/dev/sdc1"), volume("/logs", "/dev/sdd1")]).unwrap();
        let mut vols = FakeVolumes::default();
        vols.encrypted.insert("/data".into(), "/dev/mapper/uuid-of-sdc1".into());
        let line = verify_data_volumes(&vols, j.record()).unwrap();
        assert_eq!(
            line,
            "ADE left 1 data volume(s) unencrypted: data volume /logs (/dev/sdd1) is not encrypted: no LUKS header \
             on /dev/sdd1 (ADE skips a data volume it cannot unmount, or its data step failed)"
        );
        vols.encrypted.insert("/logs".into(), "/dev/mapper/uuid-of-sdd1".into());
        assert_eq!(
            verify_data_volumes(&vols, j.record()).unwrap(),
            "ADE encrypted every data volume of the window (2)"
        );
    }
}
