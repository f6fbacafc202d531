//! `ade-prep run`: the entry of the Type=notify unit that the path unit starts when ADE's settings appear.
//! Decide whether this ADE run needs the window (an enable that includes the OS volume, on a distribution that
//! unmounts, not yet encrypted), prepare, say READY=1, follow ADE's status through the reboot, restore when it is
//! done or the window times out. After a reboot the unit starts again, finds the open window and goes on waiting.
//! Then it stays up for ADE's next request (a retry after an error, a new sequence number), unless none can need the
//! window any more (the OS volume encrypted, a distribution that does not unmount).
//! SIGTERM keeps the window (the journal holds it) and exits cleanly; `restore` stays available by hand.
//!
//! This module owns the decision and the window's lifetime across requests; the waiting is in [`wait`], the
//! plumbing with systemd and signals in [`plumbing`]. It must not carry out the window itself (prepare and restore
//! do).

#[allow(dead_code)] // `run` drives it from the next commit on
pub mod lifecycle;
pub mod plumbing;
pub mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use self::plumbing::{notify, start_watchdog, status, StopToken};
use self::wait::{age, observe_settings, os_work_started, read_settings_patiently, wait_for_next_request};
pub use self::wait::{SETTINGS_READ_WAIT, SETTINGS_WAIT};
use super::prepare::{self, PrepareOpts};
use super::restore;
use crate::checks::{self, Flow};
use crate::clock;
use crate::config::{ConfigError, Settings};
use crate::datavol::{DataVolumes, VolumeCheck, VolumeType};
use crate::exit;
use crate::extension::ade::{
    self, Observation, OsState, Outcome, PublicSettings, RootState, StatusRead, Verdict, WaitEnd, Watcher,
};
use crate::paths::Paths;
use crate::selinux::SelinuxFs;
use crate::window::hold;
use crate::window::journal::{self, AdeRef, Journal};
use crate::window::phase::Phase;
use crate::window::store::{FileStore, Store};

/// What `run` decides about ADE's current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Prepare for this run.
    Prepare {
        /// The handler folder.
        handler_dir: PathBuf,
        /// The settings' sequence number.
        seq: u64,
        /// The volumes to free: ADE's VolumeType, less the OS volume when ADE will not unmount `/` (already
        /// encrypted, or encrypted online).
        volume_type: VolumeType,
    },
    /// Nothing to do for this request, and why. `watch`: a later request on this machine may need the window
    /// (false when none ever will: no ADE, a distribution that does not unmount, the OS volume already encrypted).
    Skip {
        why: String,
        /// Stay up for ADE's next request.
        watch: bool,
    },
}

fn skip(why: impl Into<String>, watch: bool) -> Decision {
    Decision::Skip { why: why.into(), watch }
}

/// Pure: whether ADE's request needs the window.
pub fn decide(obs: &Observation, public: Option<&PublicSettings>, flow: Flow) -> Decision {
    let (Some(h), Some(seq)) = (&obs.handler, obs.seq) else {
        return skip(format!("no ADE request: {}", verdict_text(&obs.verdict)), false);
    };
    let Some(p) = public else {
        return skip(format!("ADE settings seq {seq} have no readable public settings"), true);
    };
    let op = p.encryption_operation.as_deref().unwrap_or("none");
    let vt = p.volume_type.as_deref().unwrap_or("none");
    if !p.is_enable() {
        return skip(format!("ADE operation {op} is not an enable: nothing to prepare"), true);
    }
    let Some(asked) = p.volume_kind() else {
        return skip(format!("ADE volume type {vt} is not OS, Data or All: nothing to prepare"), true);
    };
    let os_encrypted = matches!(&obs.status, StatusRead::Ok { status } if status.os == Some(OsState::Encrypted));
    // Data volumes are unmounted with a plain `umount` and skipped when busy (`DiskUtil.py:597-599`,
    // `handle.py:1989-1993`), on every distribution and also once the OS volume is encrypted (VolumeType All
    // encrypts the data volumes first, `handle.py:2168-2209`).
    // ADE will not unmount `/` (online OS flow, OS already encrypted): only the data volumes are freed.
    let data_only = || Decision::Prepare { handler_dir: h.dir.clone(), seq, volume_type: VolumeType::Data };
    match flow {
        Flow::Unmount => {}
        Flow::Online if asked.includes_data() => return data_only(),
        Flow::Online => return skip("this distribution encrypts the OS disk online: no preparation needed", false),
        Flow::Unsupported | Flow::Unknown => {
            return skip("ADE does not unmount / on this distribution (see `ade-prep check`)", false)
        }
    }
    if os_encrypted {
        if asked.includes_data() {
            return data_only();
        }
        return skip("the OS volume is already encrypted", false);
    }
    Decision::Prepare { handler_dir: h.dir.clone(), seq, volume_type: asked }
}

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

/// What `run` does once a request is dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// End `run` with this exit code.
    Exit(u8),
    /// Stay up until ADE's request changes from this one (another sequence number, or another handler folder).
    Watch {
        /// The handler folder of the request dealt with.
        handler_dir: Option<PathBuf>,
        /// Its sequence number.
        seq: Option<u64>,
    },
}

/// `ade-prep run`: deals with ADE's current request, then, unless no later request can need the window (the OS
/// volume encrypted, a distribution that does not unmount, no ADE at all), stays up for the next one: while the
/// service is active the path unit cannot start it again, so a retry after ADE's error would otherwise go
/// unprepared.
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
    loop {
        match one_request(paths, config, opts, &stop)? {
            Next::Exit(code) => return Ok(code),
            Next::Watch { handler_dir, seq } => {
                if !wait_for_next_request(paths, handler_dir.as_deref(), seq, &stop) {
                    return Ok(exit::OK);
                }
            }
        }
    }
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

fn one_request(paths: &Paths, config: Config, opts: &RunOpts, stop: &StopToken) -> anyhow::Result<Next> {
    // In ADE's RAM root nothing is read for a decision and nothing is changed (FINDINGS 23).
    if let Some(why) = frozen_now(paths) {
        if idle_while_frozen(paths, stop, &why) {
            return Ok(Next::Exit(exit::OK));
        }
    }
    // The journal is read once and decided on; again only after this process changed it (a restore, a prepare).
    let store = FileStore::new(paths);
    let mut record = store.load()?;
    if record.as_ref().is_some_and(|r| r.is_window_open() && r.phase != Phase::Open) {
        // Decided with the lock held: a manual prepare (or restore) still running holds it; once it is ours, the
        // journal says what that process left, an open window to adopt or one cut short (crash) to restore.
        drop(crate::lock::Lock::new(paths).acquire("run", None)?);
        record = store.load()?;
    }
    if let Some(r) = record.as_ref().filter(|r| r.is_window_open() && r.phase != Phase::Open) {
        // A prepare or a restore was cut short (crash, reboot): finish the restore, then decide anew.
        status(&format!("found a window in phase {}: restoring it first", r.phase));
        restore::restore(paths, config.for_ending(), None)?;
        record = store.load()?;
    }
    let record = match record {
        Some(open) if open.is_window_open() => match (open.ade.is_none(), config.for_starting()) {
            (true, Ok(settings)) => adopt_manual_window(paths, settings, opts, stop, open)?,
            _ => open,
        },
        last => match prepare_for_request(paths, config.for_starting()?, opts, stop, last.as_ref())? {
            Ok(open) => open,
            Err(next) => return Ok(next),
        },
    };
    wait_and_restore(paths, config.for_ending(), stop, record)
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

/// A window a manual prepare opened records no ADE request: when ADE's current request needs the window, the
/// window is adopted for it (its seq recorded, with the lock held), never restored and prepared again (workloads
/// are not bounced, pre-stop commands do not run twice). Otherwise the window is left as it is.
fn adopt_manual_window(
    paths: &Paths,
    settings: &Settings,
    opts: &RunOpts,
    stop: &StopToken,
    open: journal::Record,
) -> anyhow::Result<journal::Record> {
    let obs = ade::observe(paths);
    let public = match (&obs.handler, obs.seq) {
        (Some(h), Some(seq)) => read_settings_patiently(&h.dir, seq, SETTINGS_READ_WAIT, stop).ok(),
        _ => None,
    };
    let Decision::Prepare { handler_dir, seq, .. } = decide(&obs, public.as_ref(), flow_for(paths, settings, opts))
    else {
        return Ok(open);
    };
    let _lock = crate::lock::Lock::new(paths).acquire("run", None)?;
    let mut j = Journal::resume(FileStore::new(paths))?.context("the journal vanished")?;
    if !j.is_window_open() || j.record().ade.is_some() {
        return Ok(j.record().clone());
    }
    status(&format!("a window opened by another prepare is adopted for ADE request seq {seq}"));
    j.set_ade(AdeRef { handler_dir, seq })?;
    Ok(j.record().clone())
}

/// Decides on ADE's current request and prepares for it: the open window's record, or what `run` does instead.
fn prepare_for_request(
    paths: &Paths,
    settings: &Settings,
    opts: &RunOpts,
    stop: &StopToken,
    last: Option<&journal::Record>,
) -> anyhow::Result<Result<journal::Record, Next>> {
    {
        let obs = observe_settings(paths, SETTINGS_WAIT, Duration::from_secs(1), stop);
        let public = match (&obs.handler, obs.seq) {
            (Some(h), Some(seq)) => match read_settings_patiently(&h.dir, seq, SETTINGS_READ_WAIT, stop) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            },
            _ => None,
        };
        let flow = flow_for(paths, settings, opts);
        let this = Next::Watch { handler_dir: obs.handler.as_ref().map(|h| h.dir.clone()), seq: obs.seq };
        let (handler_dir, seq, volume_type) = match decide(&obs, public.as_ref(), flow) {
            Decision::Skip { why, watch } => {
                status(&format!("nothing to do: {why}"));
                notify(&[sd_notify::NotifyState::Ready]);
                return Ok(Err(if watch { this } else { Next::Exit(exit::OK) }));
            }
            Decision::Prepare { handler_dir, seq, volume_type } => (handler_dir, seq, volume_type),
        };
        // The path unit starts `run` at every boot while ADE's settings exist: a request already handled (the
        // window closed after ADE's success or error) is not prepared for again.
        if let Some(done) = last.and_then(|r| r.ade.as_ref()).filter(|a| a.handler_dir == handler_dir && a.seq == seq) {
            status(&format!("nothing to do: ADE request seq {} was already handled", done.seq));
            notify(&[sd_notify::NotifyState::Ready]);
            return Ok(Err(this));
        }
        let settings_file = ade::settings_path(&handler_dir, seq);
        let decision = match volume_type {
            VolumeType::Os => "includes the OS volume: preparing",
            VolumeType::Data => "includes data volumes: preparing to free them",
            VolumeType::All => "includes the OS and data volumes: preparing",
        };
        status(&format!("ADE request seq {seq} {decision}"));
        crate::events::emit(crate::events::Event::AdeDecision { seq, decision });
        let popts = PrepareOpts {
            dry_run: false,
            force: opts.force.clone(),
            lock_wait: None,
            volume_type,
            data_mounts: vec![],
        };
        // Other extensions' handler operations are waited for only within ADE's head start (FINDINGS 26, 31).
        let mut settings = settings.clone();
        let age_secs = age(&settings_file).map_or(0, |a| a.as_secs());
        let bound = ade::verdict::extension_wait_bound(obs.dual_pass(), age_secs);
        settings.window.extension_wait_secs = settings.window.extension_wait_secs.min(bound);
        let (prepared, guard) = match prepare::prepare(paths, &settings, Path::new("/"), &popts) {
            // A prepare by hand opened a window since the journal was read (prepare decided so with the lock
            // held): adopt it for this request rather than restoring it and preparing again.
            Err(e) if FileStore::new(paths).load().ok().flatten().is_some_and(|r| r.phase == Phase::Open) => {
                status(&format!("a window opened by another prepare is adopted for ADE request seq {seq} ({e:#})"));
                let mut j = Journal::resume(FileStore::new(paths))?.context("the journal vanished")?;
                j.set_ade(AdeRef { handler_dir, seq })?;
                return Ok(Ok(j.record().clone()));
            }
            r => r?,
        };
        drop(guard); // the journal holds the window from now on
        if let Err(why) = prepared {
            status(&format!("nothing to do: {why}"));
            notify(&[sd_notify::NotifyState::Ready]);
            // A later request may find data volumes to free; an online OS flow never needs the window.
            return Ok(Err(if volume_type.includes_data() { this } else { Next::Exit(exit::OK) }));
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
        Ok(Ok(j.record().clone()))
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

fn wait_and_restore(
    paths: &Paths,
    settings: &Settings,
    stop: &StopToken,
    record: journal::Record,
) -> anyhow::Result<Next> {
    resume_after_reboot(paths, &record)?;
    let summary = record.summary();
    let deadline = record.deadline_or(settings.window.timeout_hours);
    let remaining = Duration::from_secs(deadline.saturating_sub(clock::now()));
    notify(&[sd_notify::NotifyState::Ready]);
    status(&format!("{summary}, waiting for ADE"));
    let end = Watcher::new(paths).stop_when(stop.flag()).wait_until_done(remaining, |obs| {
        status(&format!("{summary}, waiting for ADE: {}", verdict_text(&obs.verdict)));
    });
    match end {
        WaitEnd::Stopped { .. } => {
            status("stopping: the window stays open (the journal holds it); `ade-prep restore` closes it");
            notify(&[sd_notify::NotifyState::Stopping]);
            Ok(Next::Exit(exit::OK))
        }
        WaitEnd::Done { .. } | WaitEnd::TimedOut { .. } if frozen_now(paths).is_some() => {
            // ADE pivoted between the look and now: the RAM root is no place to restore (FINDINGS 17, 23).
            let why = frozen_now(paths).unwrap_or_default();
            idle_while_frozen(paths, stop, &why);
            Ok(Next::Exit(exit::OK))
        }
        WaitEnd::Done { outcome, .. } => {
            status(&format!("ADE done: {outcome}; restoring"));
            restore_now(paths, settings)?;
            if !matches!(outcome, Outcome::Failed { .. }) {
                let vols = crate::datavol::AdeVolumes { paths, runner: &crate::runner::RealRunner };
                if let Some(line) = verify_data_volumes(&vols, &record) {
                    status(&line);
                }
            }
            // After the OS volume is encrypted no later request unmounts / again; after an error, ADE is retried.
            Ok(match outcome {
                Outcome::Encrypted => Next::Exit(exit::OK),
                _ => Next::Watch {
                    handler_dir: record.ade.as_ref().map(|a| a.handler_dir.clone()),
                    seq: record.ade.as_ref().map(|a| a.seq),
                },
            })
        }
        WaitEnd::TimedOut { last } => {
            log::error!(
                "no completion from ADE by the window's deadline {} ({}): restoring",
                clock::format_utc(deadline),
                verdict_text(&last.verdict)
            );
            restore_now(paths, settings)?;
            Ok(Next::Exit(exit::FAILED))
        }
    }
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
    use crate::extension::ade::AdeHandler;

    fn obs(os: Option<&str>) -> Observation {
        let status = match os {
            None => StatusRead::Missing,
            Some(os) => {
                let text = format!(
                    r#"[{{"status":{{"operation":"EnableEncryption","status":"transitioning","code":0,
                    "formattedMessage":{{"message":"x"}},"substatus":[{{"formattedMessage":{{"message":
                    "{{\"os\": \"{os}\", \"data\": \"NotEncrypted\"}}"}}}}]}}}}]"#
                );
                StatusRead::Ok { status: ade::parse_status(&text).unwrap() }
            }
        };
        Observation {
            facts: ade::Facts {
                handler: Some(AdeHandler { dir: "/var/lib/waagent/ADE-2.4".into(), version: "2.4".into() }),
                seq: Some(0),
                status,
                ..Default::default()
            },
            verdict: Verdict::Wait("x".into()),
        }
    }

    fn public(op: &str, vt: &str) -> PublicSettings {
        PublicSettings { encryption_operation: Some(op.into()), volume_type: Some(vt.into()) }
    }

    #[test]
    fn prepares_for_an_enable_of_the_os_or_data_volumes_with_the_volumes_ade_will_unmount() {
        let o = obs(None);
        let vt = |d: Decision| match d {
            Decision::Prepare { volume_type, .. } => volume_type,
            d => panic!("{d:?}"),
        };
        assert_eq!(vt(decide(&o, Some(&public("EnableEncryption", "All")), Flow::Unmount)), VolumeType::All);
        assert_eq!(vt(decide(&o, Some(&public("EnableEncryptionFormatAll", "OS")), Flow::Unmount)), VolumeType::Os);
        // Data volumes are unmounted with a plain umount and skipped when busy (DiskUtil.py:597-599,
        // handle.py:1989-1993): any case (handle.py:906 lowercases it).
        for data in ["Data", "data", "DATA"] {
            assert_eq!(vt(decide(&o, Some(&public("EnableEncryption", data)), Flow::Unmount)), VolumeType::Data);
        }
        // ADE will not unmount /: the online OS flow, an OS volume already encrypted; the data volumes still are.
        assert_eq!(vt(decide(&o, Some(&public("EnableEncryption", "All")), Flow::Online)), VolumeType::Data);
        let encrypted = obs(Some("Encrypted"));
        assert_eq!(vt(decide(&encrypted, Some(&public("EnableEncryption", "all")), Flow::Unmount)), VolumeType::Data);
        // (why, whether a later request may still need the window)
        let skip = |d: Decision| match d {
            Decision::Skip { why, watch } => (why, watch),
            d => panic!("{d:?}"),
        };
        let (why, watch) = skip(decide(&o, Some(&public("EnableEncryption", "Everything")), Flow::Unmount));
        assert!(why.contains("is not OS, Data or All") && watch, "{why}");
        let (why, watch) = skip(decide(&o, Some(&public("DisableEncryption", "All")), Flow::Unmount));
        assert!(why.contains("not an enable") && watch, "{why}");
        let (why, watch) = skip(decide(&o, Some(&public("EnableEncryption", "OS")), Flow::Online));
        assert!(why.contains("online") && !watch, "{why}");
        let (why, watch) = skip(decide(&o, Some(&public("EnableEncryption", "OS")), Flow::Unsupported));
        assert!(why.contains("does not unmount") && !watch, "{why}");
        let (why, watch) = skip(decide(&o, Some(&public("EnableEncryption", "Data")), Flow::Unsupported));
        assert!(why.contains("does not unmount") && !watch, "{why}");
        let (why, watch) = skip(decide(&encrypted, Some(&public("EnableEncryption", "OS")), Flow::Unmount));
        assert!(why.contains("already encrypted") && !watch, "{why}");
        let (why, watch) = skip(decide(&o, None, Flow::Unmount));
        assert!(why.contains("no readable public settings") && watch, "{why}");
        let mut none = obs(None);
        (none.facts.handler, none.facts.seq) = (None, None);
        let (why, watch) = skip(decide(&none, None, Flow::Unmount));
        assert!(why.starts_with("no ADE request") && !watch, "{why}");
    }

    #[test]
    fn after_ades_success_each_data_volume_is_verified_and_one_ade_skipped_is_named() {
        use crate::testing::volumes::{volume, FakeVolumes};
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
