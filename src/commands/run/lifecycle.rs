//! ADE's request lifecycle as `run` follows it: a [`RunState`] with checked transitions and the pure
//! [`next`]`(state, look) -> action`, fed by one [`Look`] at ADE (settings and their rewrite, `mrseq`, status,
//! queue files, the daemon, the root's real encryption state, the boot) and acted on by `run` through the window's
//! existing edges (prepare, restore). Every rule names the ADE or agent source it follows (tests/ade/FINDINGS.md for
//! the line convention: a bare `file:line` is sp `VMEncryption/main/`).
//!
//! The rule of the window: it opens whenever ADE shows it will act on a volume `run` frees (an enable or a disable
//! ADE will run again, a queue file, a live daemon); it closes only at ADE's end of the request it was opened for
//! (taken up and finished, or a failure ADE treats as final before take-up, or nothing taken up within the agent's
//! bound on the enable), or at the deadline, which a daemon at work with its queue extends. Lifecycle statuses
//! (Install, Update, Uninstall, UpdateEncryptionSettings) never close it. It must not read or change anything.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checks::Flow;
use crate::datavol::VolumeType;
use crate::extension::ade::machine::OLDROOT;
use crate::extension::ade::verdict::{RESTARTED_FROM_STRIPPED_OS, UNMOUNT_RETRY_CODE};
use crate::extension::ade::{AdeStatus, Facts, OpStatus, OsState, Outcome, PublicSettings, StatusRead};

/// A settings file's identity at one moment: WALA rewrites `<seq>.settings` in place at every agent start
/// (`WALA/azurelinuxagent/ga/update.py:613-643`, `exthandlers.py:846`) and at every new extensions goal state
/// (`update.py:635-643`, `exthandlers.py:533-583`), before it runs enable again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
}

/// One look at ADE and the machine, everything [`next`] decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Look {
    /// Seconds since the epoch.
    pub now: u64,
    /// The kernel's boot id.
    pub boot_id: String,
    /// Seconds since this boot (None: unknown).
    pub uptime: Option<u64>,
    /// Why ADE is in its RAM root (`/` a tmpfs, `/oldroot` mounted, the mount table unreadable): change nothing
    /// (FINDINGS 23).
    pub frozen: Option<String>,
    /// The newest ADE handler folder.
    pub handler: Option<PathBuf>,
    /// The handler is the dual pass (0.1.0.999xxx).
    pub dual_pass: bool,
    /// The current request's seq (FINDINGS 1).
    pub seq: Option<u64>,
    /// The current settings file's stamp.
    pub stamp: Option<Stamp>,
    /// The current request's public settings (None: not readable now).
    pub public: Option<PublicSettings>,
    /// The handler folder's `mrseq`: the seq ADE last saved (`HandlerUtil.py:129-133`, `:408-413`).
    pub mrseq: Option<u64>,
    /// What the status file says.
    pub status: Option<AdeStatus>,
    /// When the status file was last written, nanoseconds since the epoch (compared with the settings' stamp: a
    /// rewrite and a status in the same second are told apart).
    pub status_mtime: Option<u128>,
    /// When ADE last showed progress: its status file, queue or ongoing item written, nanoseconds since the epoch.
    pub progress_at: Option<u128>,
    /// `azure_crypt_request_queue.ini` exists (FINDINGS 11, `EncryptionEnvironment.py:37`).
    pub queue: bool,
    /// `azure_decrypt_request_queue.ini` exists (`EncryptionEnvironment.py:38`, written by disable `handle.py:156-158`).
    pub decrypt_queue: bool,
    /// ADE's daemon, recognised as ADE starts it, is alive.
    pub daemon: bool,
    /// The volume type ADE recorded for its request (`azure_crypt_config.ini`, else the queue's): what its daemon
    /// works on (`handle.py:2157`), whatever the current settings' operation.
    pub recorded: Option<VolumeType>,
    /// The OS volume is encrypted as ADE itself tells (`DiskUtil.py:654-659`, `:674-677`): for an LVM root, a PV
    /// on `/dev/mapper/osencrypt`; otherwise `/` on `/dev/mapper/*` or `/dev/dm*`.
    pub os_encrypted: bool,
    /// How ADE encrypts this distribution's OS disk.
    pub flow: Option<Flow>,
    /// The window's length for a new prepare, seconds.
    pub window_secs: u64,
}

impl Look {
    /// The look from ADE's facts ([`crate::extension::ade::Facts`]) at `now`, in boot `boot_id`, on a
    /// distribution of `flow`, for windows of `window_secs`.
    pub fn from_facts(f: &Facts, now: u64, boot_id: &str, flow: Flow, window_secs: u64) -> Look {
        let frozen = match &f.root {
            None => Some("the mount table cannot be read: cannot tell ADE's RAM root from the disk".into()),
            Some(r) if r.tmpfs => Some("/ is a tmpfs (ADE's RAM root)".into()),
            Some(r) if r.oldroot => Some(format!("{OLDROOT} is mounted (ADE is unmounting the disk)")),
            Some(_) => None,
        };
        let status = match &f.status {
            StatusRead::Ok { status } => Some(status.clone()),
            _ => None,
        };
        // ADE's substatus is ADE's own test of the OS volume (`DiskUtil.py:654-677`), the LVM rule included.
        let substatus_encrypted = status.as_ref().is_some_and(|s| s.os == Some(OsState::Encrypted));
        Look {
            now,
            boot_id: boot_id.into(),
            uptime: None,
            frozen,
            handler: f.handler.as_ref().map(|h| h.dir.clone()),
            dual_pass: f.dual_pass(),
            seq: f.seq,
            stamp: f.settings_stamp.map(|(len, mtime_ns)| Stamp { len, mtime_ns }),
            public: f.public.clone(),
            mrseq: f.mrseq,
            status,
            status_mtime: f.status_mtime,
            progress_at: f.status_mtime.max(f.work_files_mtime),
            queue: f.queue,
            decrypt_queue: f.decrypt_queue,
            daemon: f.daemon.is_some(),
            recorded: f.recorded_volume_type.as_deref().and_then(VolumeType::parse),
            os_encrypted: f.os_encrypted || substatus_encrypted,
            flow: Some(flow),
            window_secs,
        }
    }
}

/// The volumes an open window found in the journal frees, from ADE's request: what it asked for, less `/` on a
/// distribution that does not unmount it (the journal keeps the units, not the volume type).
pub fn window_volumes(look: &Look) -> VolumeType {
    let asked = look.public.as_ref().and_then(PublicSettings::volume_kind).unwrap_or(VolumeType::All);
    match (asked, look.flow) {
        (VolumeType::All, Some(Flow::Online)) => VolumeType::Data,
        (v, _) => v,
    }
}

/// The request a window or a "handled" mark is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Req {
    /// The handler folder.
    pub handler_dir: PathBuf,
    /// Its seq.
    pub seq: u64,
    /// The settings file's stamp when it was looked at.
    pub stamp: Option<Stamp>,
    /// The boot in which ADE ended this request with a final status before taking it up (a fatal precheck, an
    /// "already encrypted" answer): its enable, re-run by the agent at every goal state and agent start, repeats
    /// that within the boot, so the window reopens for it only when ADE takes it up (queue, daemon) or after a
    /// reboot.
    pub ended_in_boot: Option<String>,
    /// ADE's progress mark (status, queue, ongoing item) when the window was restored past its deadline with the
    /// daemon alive and showing no progress: the daemon reopens it only once it moves again.
    pub stalled_at: Option<u128>,
}

impl Req {
    fn same_request(&self, other: &Req) -> bool {
        self.handler_dir == other.handler_dir && self.seq == other.seq
    }
}

/// Where `run` is in ADE's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RunState {
    /// No window: watching ADE. `handled`: the request last dealt with, as its settings were then.
    Watching { handled: Option<Req> },
    /// The window is open for `req`.
    Open {
        req: Req,
        /// The volumes it frees.
        volumes: VolumeType,
        /// ADE took the request up (its queue file or its daemon seen since the window opened).
        taken_up: bool,
        /// When it opened, seconds since the epoch.
        opened_at: u64,
        /// When it closes without word from ADE, seconds since the epoch.
        deadline: u64,
    },
    /// `run` ends.
    Ended,
}

/// What `run` does after a look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Nothing changes; look again.
    Wait(String),
    /// ADE is in its RAM root: change nothing at all (FINDINGS 23).
    Hold(String),
    /// Open the window for `req`.
    Prepare { req: Req, volumes: VolumeType, at: u64, deadline: u64, why: String },
    /// ADE took the window's request up (queue or daemon seen).
    TakenUp(String),
    /// The deadline moves to `until`: ADE's daemon is at work with its queue.
    Extend { until: u64, why: String },
    /// Close the window: ADE ended its request (`outcome`), or the deadline passed (`outcome` None). `handled`:
    /// ADE's current request then, marked dealt with (None: the window's own).
    Restore { why: String, outcome: Option<Outcome>, handled: Option<Req> },
    /// Mark `req` dealt with, no window: ADE will not act on a volume `run` frees.
    Handled { req: Req, why: String },
    /// End `run`.
    Exit(String),
}

impl Action {
    /// The action's name and reason, for the status line and the tests.
    pub fn text(&self) -> String {
        match self {
            Action::Wait(w) => format!("wait: {w}"),
            Action::Hold(w) => format!("hold: {w}"),
            Action::Prepare { req, volumes, why, .. } => format!("prepare {volumes} for seq {}: {why}", req.seq),
            Action::TakenUp(w) => format!("taken up: {w}"),
            Action::Extend { why, .. } => format!("extend: {why}"),
            Action::Restore { why, .. } => format!("restore: {why}"),
            Action::Handled { req, why } => format!("handled seq {}: {why}", req.seq),
            Action::Exit(w) => format!("exit: {w}"),
        }
    }
}

/// An action that the state cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run state {state}: {action} is not a transition from it")]
pub struct BadTransition {
    state: String,
    action: String,
}

impl RunState {
    fn name(&self) -> &'static str {
        match self {
            RunState::Watching { .. } => "watching",
            RunState::Open { .. } => "open",
            RunState::Ended => "ended",
        }
    }

    /// The state after `action`, checked: prepare and exit only from watching, taken-up, extend and restore only
    /// from open (extend only forward), nothing from ended.
    pub fn after(&self, action: &Action) -> Result<RunState, BadTransition> {
        let bad = || BadTransition { state: self.name().into(), action: action.text() };
        match (self, action) {
            (RunState::Ended, _) => Err(bad()),
            (s, Action::Wait(_) | Action::Hold(_)) => Ok(s.clone()),
            (RunState::Watching { .. }, Action::Prepare { req, volumes, at, deadline, .. }) => {
                Ok(RunState::open(req.clone(), *volumes, *at, *deadline))
            }
            (RunState::Watching { .. }, Action::Handled { req, .. }) => {
                Ok(RunState::Watching { handled: Some(req.clone()) })
            }
            (RunState::Watching { .. }, Action::Exit(_)) => Ok(RunState::Ended),
            (RunState::Open { taken_up: false, req, volumes, opened_at, deadline }, Action::TakenUp(_)) => {
                Ok(RunState::Open {
                    req: req.clone(),
                    volumes: *volumes,
                    taken_up: true,
                    opened_at: *opened_at,
                    deadline: *deadline,
                })
            }
            (RunState::Open { req, volumes, taken_up, opened_at, deadline }, Action::Extend { until, .. })
                if until > deadline =>
            {
                Ok(RunState::Open {
                    req: req.clone(),
                    volumes: *volumes,
                    taken_up: *taken_up,
                    opened_at: *opened_at,
                    deadline: *until,
                })
            }
            (RunState::Open { req, .. }, Action::Restore { handled, .. }) => {
                Ok(RunState::Watching { handled: Some(handled.clone().unwrap_or_else(|| req.clone())) })
            }
            _ => Err(bad()),
        }
    }

    /// The state of a window the journal holds open (opened at `opened_at`, closing at `deadline`).
    pub fn open(req: Req, volumes: VolumeType, opened_at: u64, deadline: u64) -> RunState {
        RunState::Open { req, volumes, taken_up: false, opened_at, deadline }
    }
}

/// How far the deadline moves at a time while ADE's daemon lives with its queue.
pub const EXTEND_SECS: u64 = 3600;

/// How long ADE's daemon may show no progress (status file, queue, ongoing item: the in-place copy commits every 50
/// MiB slice, `TransactionalCopyTask.py:182-188`) and still have the deadline extended: a wedged daemon, or a second
/// one blocked on the first's flock (`ProcessLock.py:30-37`), does not hold the workloads for ever.
pub const PROGRESS_BOUND_SECS: u64 = 2 * EXTEND_SECS;

/// How long after a request's settings ADE's enable can still take it up: the agent runs install (timeout 900 s,
/// `WALA/azurelinuxagent/ga/exthandlers.py:1736`) then enable (300 s, `:1673`), killing each at its timeout
/// (`WALA/azurelinuxagent/ga/extensionprocessutil.py:48-50`); enable writes the queue before it starts the daemon
/// (`handle.py:1143-1147`). Plus a margin.
pub const TAKE_UP_BOUND_SECS: u64 = 900 + 300 + 120;

/// How long a queue ADE kept after its final status, with no daemon, holds the window: ADE does nothing more until
/// its next enable (`handle.py:2148-2153`, `:2290-2297`, `:2555-2564` exit without clearing the queue; `:2488-2493`
/// keeps the decrypt queue; dp `handle.py:1742-1747`, `:1762-1769`, `:1872-1881`), which `run` sees coming (the
/// agent's settings rewrite, the daemon's start). Longer than a daemon's head start before it writes anything (60 s,
/// dp 120 s, FINDINGS 26), with a margin.
pub const KEPT_QUEUE_BOUND_SECS: u64 = 600;

/// How long after its "Encryption settings updated" an enable that goes on to encrypt (`handle.py:430-434`, then
/// `enable_encryption`, `:949-951`) has written its queue: the agent kills enable at 300 s
/// (`WALA/azurelinuxagent/ga/exthandlers.py:1673`, `extensionprocessutil.py:48-50`), plus a margin.
pub const UPDATE_SETTLE_SECS: u64 = 300 + 60;

/// The statuses of ADE's lifecycle commands: never the end of a request (`handle.py:60-62` Install, the agent's
/// Update/Uninstall, `handle.py:430-434` UpdateEncryptionSettings, chained before enable marks the queue), nor the
/// stamp before the pivot (`handle.py:223-229` StartEncryption, FINDINGS 24).
pub const LIFECYCLE_OPERATIONS: &[&str] =
    &["Install", "Update", "Uninstall", "UpdateEncryptionSettings", "StartEncryption"];

/// Whether a status is the end of an enable or disable: not a lifecycle status, not a normal step of the OS pass
/// (FINDINGS 7, 8), not the OS volume in progress or awaiting the reboot (FINDINGS 6, 9), not transitioning.
fn terminal(s: &AdeStatus) -> bool {
    if LIFECYCLE_OPERATIONS.contains(&s.operation.as_str()) {
        return false;
    }
    if matches!(s.os, Some(OsState::EncryptionInProgress | OsState::VMRestartPending | OsState::DecryptionInProgress)) {
        return false;
    }
    match s.status {
        OpStatus::Error => s.message != RESTARTED_FROM_STRIPPED_OS && s.code != UNMOUNT_RETRY_CODE,
        OpStatus::Success | OpStatus::Warning => true,
        OpStatus::Transitioning | OpStatus::Other(_) => false,
    }
}

fn outcome_of(s: &AdeStatus, os_encrypted: bool, includes_os: bool) -> Outcome {
    match s.status {
        OpStatus::Error => {
            Outcome::Failed { operation: s.operation.clone(), code: s.code.clone(), message: s.message.clone() }
        }
        _ if os_encrypted && includes_os => Outcome::Encrypted,
        _ => Outcome::Succeeded { operation: s.operation.clone(), message: s.message.clone() },
    }
}

/// What ADE's current request will touch that the window frees, or why nothing.
fn volumes_for(look: &Look, p: &PublicSettings) -> Result<VolumeType, String> {
    let op = p.encryption_operation.as_deref().unwrap_or("none");
    let Some(asked) = p.volume_kind() else {
        return Err(format!("ADE volume type {} is not OS, Data or All", p.volume_type.as_deref().unwrap_or("none")));
    };
    let flow = look.flow.unwrap_or(Flow::Unknown);
    if matches!(flow, Flow::Unsupported | Flow::Unknown) {
        return Err("ADE does not unmount / on this distribution (see `ade-prep check`)".into());
    }
    if op == "DisableEncryption" {
        // Disable decrypts the data volumes in place after a plain `umount` (`handle.py:2460-2467`, `:1709-1760`);
        // it refuses while the OS volume is encrypted (`handle.py:115-116`).
        if look.os_encrypted {
            return Err("ADE refuses DisableEncryption while the OS volume is encrypted (handle.py:115-116)".into());
        }
        return Ok(VolumeType::Data);
    }
    if !p.is_enable() {
        return Err(format!("ADE operation {op} neither encrypts nor decrypts"));
    }
    touched(look, asked)
}

/// What an encryption of `asked` touches that the window frees: with `/` already encrypted ADE touches the data
/// volumes only, and the online flow never unmounts `/`.
fn touched(look: &Look, asked: VolumeType) -> Result<VolumeType, String> {
    let flow = look.flow.unwrap_or(Flow::Unknown);
    if matches!(flow, Flow::Unsupported | Flow::Unknown) {
        return Err("ADE does not unmount / on this distribution (see `ade-prep check`)".into());
    }
    // With `/` already encrypted ADE touches the data volumes only (`Ubuntu2004EncryptionStateMachine.py:140-146`,
    // `handle.py:908-921`); the online flow never unmounts `/`.
    let os = asked.includes_os() && flow == Flow::Unmount && !look.os_encrypted;
    match (os, asked.includes_data()) {
        (true, true) => Ok(VolumeType::All),
        (true, false) => Ok(VolumeType::Os),
        (false, true) => Ok(VolumeType::Data),
        (false, false) if look.os_encrypted => Err("the OS volume is already encrypted".into()),
        (false, false) => Err("this distribution encrypts the OS disk online".into()),
    }
}

/// Why ADE will act on the current request (`Ok`), or why it will not.
fn ade_will_act(look: &Look, p: &PublicSettings, seq: u64) -> Result<String, String> {
    let disable = p.encryption_operation.as_deref() == Some("DisableEncryption");
    if disable && look.decrypt_queue && !look.dual_pass && look.mrseq == Some(seq) {
        // Single pass runs disable once per seq: a re-run of the same seq exits in exit_if_same_seq with "Decryption
        // completed" before it starts any daemon (handle.py:97-104); only a later daemon works the decrypt queue
        // (handle.py:2529-2533).
        return Err(format!(
            "ADE's decrypt queue is stranded: seq {seq} is in mrseq and single pass's disable exits for it (handle.py:104)"
        ));
    }
    if disable && look.decrypt_queue {
        return Ok("ADE's decrypt queue is there: disable starts the daemon (handle.py:167-169)".into());
    }
    if !disable && look.queue {
        // Enable resumes whenever the queue exists, before exit_if_same_seq (handle.py:958-960, :1057-1069; dp
        // handle.py:751-755).
        return Ok("ADE's request queue is there: its next enable starts the daemon (handle.py:1057-1069)".into());
    }
    if look.mrseq == Some(seq) {
        return Err(format!(
            "already handled: ADE saved seq {seq} in mrseq, its enable exits in exit_if_same_seq (HandlerUtil.py:154-160)"
        ));
    }
    // A final status written after the settings: ADE's enable for this seq already ran and ended before saving it
    // (fatal precheck, handle.py:804-818; BekMissingException, :884-889); it runs again only when the agent
    // rewrites the settings (a new stamp).
    if let (Some(s), Some(at), Some(set)) = (&look.status, look.status_mtime, look.stamp.map(|s| s.mtime_ns)) {
        if terminal(s) && at > set {
            return Err(format!(
                "ADE's enable for seq {seq} already ended ({} {} code {}) after these settings were written",
                s.operation, s.status, s.code
            ));
        }
    }
    Ok(format!("ADE's enable will run for seq {seq} (no mrseq for it: handle.py:1072, :1150)"))
}

/// Why ADE's own record will be worked on now, whatever the current request asks: a live daemon, or the request
/// queue with an enable (which resumes it, `handle.py:958-960`) or a dual-pass Query (which finds the last
/// non-query operation and resumes it, dp `handle.py:659-669`, `:751-755`) as the current request.
fn ade_own_work(look: &Look, p: &PublicSettings) -> Option<String> {
    if look.daemon {
        return Some("ADE's daemon is at work".into());
    }
    let query = p.encryption_operation.as_deref() == Some("QueryEncryptionStatus");
    (look.queue && look.dual_pass && query).then(|| {
        "ADE's request queue is there and dual pass's Query resumes it (dp handle.py:659-669, :751-755)".into()
    })
}

/// The volumes ADE's own record makes it touch: decryption works on data volumes (`handle.py:2444-2467`); the
/// request queue's work on the volume type ADE recorded (`handle.py:2157`), or with no record readable, the
/// current settings' if they encrypt, else all.
fn ade_volumes(look: &Look) -> Result<VolumeType, String> {
    if look.decrypt_queue && !look.queue {
        return touched(look, VolumeType::Data);
    }
    let current = look.public.as_ref().filter(|p| p.is_enable()).and_then(PublicSettings::volume_kind);
    touched(look, look.recorded.or(current).unwrap_or(VolumeType::All))
}

/// Why a past deadline must not restore yet: a young boot with ADE's queue on the disk and no daemon yet, whose
/// first enable resumes it (`handle.py:957-960`, `:2596-2602`; for All the daemon runs the data pass again,
/// `:2168-2210`) within the agent's bound after its start. None otherwise.
pub fn young_boot_resumes(look: &Look) -> Option<String> {
    let up = look.uptime.filter(|u| *u < TAKE_UP_BOUND_SECS)?;
    (look.queue && !look.daemon).then(|| {
        format!("booted {up} s ago with ADE's queue on the disk: its first enable resumes it; waiting up to {TAKE_UP_BOUND_SECS} s after the boot")
    })
}

/// The wait with no ADE handler on the machine.
pub const NO_HANDLER: &str = "no ADE handler on this machine: watching for ADE";

/// The one decision: what `run` does in `state` after `look`.
pub fn next(state: &RunState, look: &Look) -> Action {
    if let Some(why) = &look.frozen {
        return Action::Hold(why.clone());
    }
    match state {
        RunState::Ended => Action::Wait("ended".into()),
        RunState::Watching { handled } => next_watching(handled.as_ref(), look),
        RunState::Open { req, volumes, taken_up, opened_at, deadline } => {
            let mut action = next_open(req, *volumes, *taken_up, *opened_at, *deadline, look);
            if let Action::Restore { handled, outcome, .. } = &mut action {
                *handled = current_req(look);
                if let Some(h) = handled.as_mut().filter(|h| !*taken_up && outcome.is_some() && h.same_request(req)) {
                    h.ended_in_boot = Some(look.boot_id.clone());
                }
                if let Some(h) = handled.as_mut().filter(|_| outcome.is_none() && look.daemon) {
                    h.stalled_at = look.progress_at;
                }
            }
            action
        }
    }
}

/// ADE's current request as the look shows it.
fn current_req(look: &Look) -> Option<Req> {
    Some(Req {
        handler_dir: look.handler.clone()?,
        seq: look.seq?,
        stamp: look.stamp,
        ended_in_boot: None,
        stalled_at: None,
    })
}

fn next_watching(handled: Option<&Req>, look: &Look) -> Action {
    let Some(dir) = &look.handler else {
        // Removing the extension runs disable and uninstall, neither of which stops the daemon (handle.py:65-87),
        // then deletes the folder (WALA exthandlers.py:1759-1782); the queue outlives it and a re-added ADE resumes it.
        if look.daemon || look.queue || look.decrypt_queue {
            return Action::Wait("ADE's handler folder is gone but its daemon or queue is still there".into());
        }
        // No ADE (not yet, or removed): watch for it rather than end. An ended `run` leaves the unit active
        // (exited) for the rest of the boot (RemainAfterExit=yes), and ade-prep.path cannot start it again when
        // ADE is added (third reading, finding 1).
        return Action::Wait(NO_HANDLER.into());
    };
    let Some(seq) = look.seq else {
        return Action::Wait(format!("no settings in {}", dir.join("config").display()));
    };
    // A distribution ADE does not unmount / on (or one not recognised): ade-prep does not model ADE's data-volume
    // support there, so no request can need the window and `run` ends, as it did before the lifecycle (the path unit
    // starts it again at the next boot; tests/packaging deb_nspawn asserts the unit's end state).
    if matches!(look.flow, Some(Flow::Unsupported | Flow::Unknown)) {
        return Action::Exit("ADE does not unmount / on this distribution (see `ade-prep check`)".into());
    }
    let req = Req { handler_dir: dir.clone(), seq, stamp: look.stamp, ended_in_boot: None, stalled_at: None };
    let Some(p) = &look.public else {
        return Action::Wait(format!("ADE settings seq {seq} not readable yet"));
    };
    // Dealt with and unchanged since: ADE has not run again (no agent start rewrote the settings) and no daemon.
    // A request ADE had ended before take-up counts again once its queue shows.
    let queued = look.queue || look.decrypt_queue;
    let stalled = |h: &Req| h.stalled_at.is_some_and(|t| look.progress_at.is_none_or(|p| p <= t));
    if handled.is_some_and(|h| {
        h.same_request(&req)
            && h.stamp == req.stamp
            && !(h.ended_in_boot.is_some() && queued)
            && (!look.daemon || stalled(h))
    }) {
        return Action::Wait(format!("seq {seq} was dealt with; watching for ADE's next request"));
    }
    // ADE's own work: its daemon, or a queue the current request's enable resumes, works on the volume type ADE
    // recorded (`handle.py:2157`), whatever the current operation (a Query or Disable seq while the daemon works).
    if let Some(why) = ade_own_work(look, p) {
        return match ade_volumes(look) {
            Ok(volumes) => Action::Prepare { req, volumes, at: look.now, deadline: look.now + look.window_secs, why },
            Err(why) => Action::Handled { req, why },
        };
    }
    // ADE ended this seq before taking it up, in this boot: the same enable re-run by the agent ends the same way
    // (fatal prechecks on facts fixed within a boot: handle.py:804-818, check_util.py:59-66, :256-345; the
    // "already encrypted" answer, handle.py:964-970, saves no mrseq); wait for its queue or daemon instead.
    if let Some(h) = handled.filter(|h| h.same_request(&req) && h.ended_in_boot.as_deref() == Some(&look.boot_id)) {
        if !queued {
            let why = format!("ADE ended seq {seq} before taking it up in this boot: waiting for its queue or daemon");
            return Action::Handled { req: Req { ended_in_boot: h.ended_in_boot.clone(), ..req }, why };
        }
    }
    // An enable with ADE's queue there resumes it (handle.py:1057-1069; dp :751-755): its daemon works on the volume
    // type ADE recorded (handle.py:2157), which a resume never rewrites, whatever this request asks (third
    // reading, finding 2).
    let resumes = look.queue && p.is_enable();
    let volumes = match if resumes { ade_volumes(look) } else { volumes_for(look, p) } {
        Ok(v) => v,
        Err(why) => return Action::Handled { req, why },
    };
    match ade_will_act(look, p, seq) {
        Ok(why) => Action::Prepare { req, volumes, at: look.now, deadline: look.now + look.window_secs, why },
        Err(why) => Action::Handled { req, why },
    }
}

fn next_open(req: &Req, volumes: VolumeType, taken_up: bool, opened_at: u64, deadline: u64, look: &Look) -> Action {
    let busy = look.queue || look.decrypt_queue || look.daemon;
    if busy && !taken_up {
        let what = if look.daemon { "daemon" } else { "request queue" };
        return Action::TakenUp(format!("ADE's {what} seen for seq {}", req.seq));
    }
    if look.now >= deadline {
        if let Some(why) = young_boot_resumes(look) {
            return Action::Extend { until: look.now + (TAKE_UP_BOUND_SECS - look.uptime.unwrap_or_default()), why };
        }
        let quiet = look.progress_at.map(|t| u128::from(look.now).saturating_sub(t / 1_000_000_000));
        if look.daemon
            && (look.queue || look.decrypt_queue)
            && quiet.is_some_and(|q| q < u128::from(PROGRESS_BOUND_SECS))
        {
            return Action::Extend {
                until: look.now + EXTEND_SECS,
                why: format!("deadline passed while ADE's daemon works through its queue: extended by {EXTEND_SECS} s"),
            };
        }
        let why = match quiet {
            Some(q) if look.daemon => format!(
                "the window's deadline passed; ADE's daemon lives but has shown no progress (status, queue, ongoing item) for {q} s"
            ),
            _ => "the window's deadline passed without ADE's end".into(),
        };
        return Action::Restore { handled: None, why, outcome: None };
    }
    let current_op = look.public.as_ref().and_then(|p| p.encryption_operation.clone()).unwrap_or_default();
    let newer = look.seq.is_some_and(|s| s != req.seq) || look.handler.as_ref() != Some(&req.handler_dir);
    // A Disable or Query request mid-flow: no enable will resume the queue, whose OS pass is done
    // (`handle.py:103-105`, `:115-118`, `:876-882`).
    let dp_query = look.dual_pass && current_op == "QueryEncryptionStatus";
    if look.os_encrypted
        && look.queue
        && !look.daemon
        && newer
        && !current_op.starts_with("EnableEncryption")
        && !dp_query
    {
        return Action::Restore {
            handled: None,
            why: format!(
                "ADE's queue is stranded: the OS volume is encrypted and seq {} is {current_op}, not an enable",
                look.seq.unwrap_or_default()
            ),
            outcome: Some(Outcome::Encrypted),
        };
    }
    let since_status = look
        .status_mtime
        .map(|at| u128::from(look.now).saturating_mul(1_000_000_000).saturating_sub(at) / 1_000_000_000);
    // Written since the window's request: after its settings (nanoseconds), or, with no stamp (a window from the
    // journal), in or after the second it opened.
    let written_since = look.status_mtime.is_some_and(|at| match req.stamp {
        Some(st) => at > st.mtime_ns,
        None => at >= u128::from(opened_at) * 1_000_000_000,
    });
    let fresh = |s: &AdeStatus| terminal(s) && written_since;
    // A queue ADE kept after its final status, no daemon: idle until ADE's next enable, which reopens the window.
    if let (Some(s), Some(since)) = (&look.status, since_status) {
        // An error ends the daemon whatever the OS substatus says (dp's OS failure reports it in progress), except
        // the RAM root's restart and unmount retries (FINDINGS 7, 8).
        let ended = terminal(s)
            || s.status == OpStatus::Error && s.message != RESTARTED_FROM_STRIPPED_OS && s.code != UNMOUNT_RETRY_CODE;
        if taken_up && !look.daemon && (look.queue || look.decrypt_queue) && ended && written_since {
            // A young boot: the status may be the last slice's before the reboot, and ADE's first enable resumes
            // the queue within the agent's bound (handle.py:957-960, :2596-2602; third reading, finding 4).
            if let Some(why) = young_boot_resumes(look) {
                return Action::Wait(why);
            }
            if since < u128::from(KEPT_QUEUE_BOUND_SECS) {
                return Action::Wait(format!(
                    "{} {} code {}: ADE kept its queue; no daemon yet",
                    s.operation, s.status, s.code
                ));
            }
            return Action::Restore {
                handled: None,
                why: format!("ADE kept its queue after its final status with no daemon for {since} s: idle until its next enable"),
                outcome: Some(Outcome::Failed {
                    operation: s.operation.clone(),
                    code: s.code.clone(),
                    message: format!("{} (queue kept, no daemon)", s.message),
                }),
            };
        }
    }
    if busy {
        return Action::Wait(match (look.daemon, look.queue || look.decrypt_queue) {
            (true, _) => "ADE's daemon is at work".into(),
            _ => "ADE's request queue is there: more to do".into(),
        });
    }
    if look.os_encrypted && volumes.includes_os() {
        return Action::Restore {
            handled: None,
            why: "nothing queued or running".into(),
            outcome: Some(Outcome::Encrypted),
        };
    }
    // A key rotation with every requested volume already encrypted: "Encryption settings updated" is ADE's exit
    // (`handle.py:435-440`, mrseq saved at `:425`); no queue or daemon follows. When the same report precedes an
    // encryption (`:430-434`), the same enable writes the queue before the agent's timeout.
    if let Some(s) = &look.status {
        if s.operation == "UpdateEncryptionSettings"
            && s.status == OpStatus::Success
            && written_since
            && look.mrseq == Some(req.seq)
            && since_status.is_some_and(|t| t >= u128::from(UPDATE_SETTLE_SECS))
        {
            let o = Outcome::Succeeded { operation: s.operation.clone(), message: s.message.clone() };
            return Action::Restore {
                handled: None,
                why: format!("ADE updated the encryption settings with nothing to encrypt: {o}"),
                outcome: Some(o),
            };
        }
    }
    match &look.status {
        Some(s) if taken_up && terminal(s) || fresh(s) => {
            if s.status != OpStatus::Error && volumes.includes_os() && !look.os_encrypted {
                return Action::Wait(format!("{} {}: the OS volume is not encrypted yet", s.operation, s.status));
            }
            let o = outcome_of(s, look.os_encrypted, volumes.includes_os());
            let when = if taken_up { "ADE finished" } else { "ADE ended before taking the request up" };
            Action::Restore { handled: None, why: format!("{when}: {o}"), outcome: Some(o) }
        }
        _ if !taken_up && look.now.saturating_sub(opened_at) > TAKE_UP_BOUND_SECS => Action::Restore {
            handled: None,
            why: format!("ADE took seq {} up neither by queue nor by daemon within {TAKE_UP_BOUND_SECS} s", req.seq),
            outcome: None,
        },
        Some(s) => Action::Wait(format!("{} {} code {}: not ADE's end", s.operation, s.status, s.code)),
        None => Action::Wait("no status yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: &str = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12";
    const DAY: u64 = 86_400;

    /// A fake ADE world and `run`'s state in it: each event changes the look as ADE or the agent would, each
    /// `expect` runs `next` until it waits and compares the actions taken.
    struct Sim {
        row: &'static str,
        state: RunState,
        look: Look,
    }

    impl Sim {
        fn new(row: &'static str) -> Sim {
            Sim {
                row,
                state: RunState::Watching { handled: None },
                look: Look {
                    now: 1_000_000,
                    boot_id: "boot-1".into(),
                    handler: Some(SP.into()),
                    flow: Some(Flow::Unmount),
                    window_secs: DAY,
                    ..Look::default()
                },
            }
        }
        fn tick(&mut self, secs: u64) -> &mut Self {
            self.look.now += secs;
            self.look.uptime = self.look.uptime.map(|u| u + secs);
            self
        }
        /// The agent writes `config/<seq>.settings` (a new request).
        fn settings(&mut self, seq: u64, op: &str, vt: &str) -> &mut Self {
            self.look.seq = Some(seq);
            self.look.public =
                Some(PublicSettings { encryption_operation: Some(op.into()), volume_type: Some(vt.into()) });
            self.rewrite()
        }
        /// An agent start rewrites the current settings in place (WALA `update.py:613-643`, `exthandlers.py:846`).
        fn rewrite(&mut self) -> &mut Self {
            self.look.stamp = Some(Stamp { len: 400, mtime_ns: u128::from(self.look.now) * 1_000_000_000 });
            self
        }
        fn status(&mut self, op: &str, st: &str, code: &str, msg: &str, os: &str) -> &mut Self {
            let status = match st {
                "success" => OpStatus::Success,
                "error" => OpStatus::Error,
                "transitioning" => OpStatus::Transitioning,
                other => OpStatus::Other(other.into()),
            };
            self.look.status = Some(AdeStatus {
                status,
                operation: op.into(),
                code: code.into(),
                message: msg.into(),
                os: Some(match os {
                    "NotEncrypted" => OsState::NotEncrypted,
                    "EncryptionInProgress" => OsState::EncryptionInProgress,
                    "VMRestartPending" => OsState::VMRestartPending,
                    "Encrypted" => OsState::Encrypted,
                    other => OsState::Other(other.into()),
                }),
                data: None,
                timestamp: None,
            });
            // Just after the second's settings rewrite, as ADE writes after the agent.
            self.look.status_mtime = Some(u128::from(self.look.now) * 1_000_000_000 + 1);
            self.progress()
        }
        fn queue(&mut self, on: bool) -> &mut Self {
            self.look.queue = on;
            self.progress()
        }
        /// ADE's daemon commits a slice of its copy (the ongoing item, `TransactionalCopyTask.py:187-188`).
        fn progress(&mut self) -> &mut Self {
            self.look.progress_at = Some(u128::from(self.look.now) * 1_000_000_000);
            self
        }
        fn decrypt_queue(&mut self, on: bool) -> &mut Self {
            self.look.decrypt_queue = on;
            self
        }
        fn daemon(&mut self, on: bool) -> &mut Self {
            self.look.daemon = on;
            self
        }
        fn mrseq(&mut self, seq: Option<u64>) -> &mut Self {
            self.look.mrseq = seq;
            self
        }
        /// ADE records the volume type of its request (`azure_crypt_config.ini`, the queue).
        fn recorded(&mut self, vt: VolumeType) -> &mut Self {
            self.look.recorded = Some(vt);
            self
        }
        fn encrypted(&mut self, on: bool) -> &mut Self {
            self.look.os_encrypted = on;
            self
        }
        /// ADE pivots into its RAM root (FINDINGS 21-23).
        fn ram_root(&mut self) -> &mut Self {
            self.look.frozen = Some("/ is a tmpfs (ADE's RAM root)".into());
            self
        }
        /// A reboot: a new boot id, no daemon, `/` the disk again; then the agent starts and rewrites the
        /// settings.
        fn reboot(&mut self) -> &mut Self {
            self.look.boot_id = format!("{}+", self.look.boot_id);
            self.look.uptime = Some(0);
            self.look.frozen = None;
            self.look.daemon = false;
            self.tick(120).rewrite()
        }
        /// `run` restarted (a new process): the state from the journal's last record.
        fn restart_run(&mut self, state: RunState) -> &mut Self {
            self.state = state;
            self
        }
        /// Runs `next` until it waits, holds or exits; the actions' short names (a lone "wait" when nothing else).
        fn step(&mut self) -> Vec<String> {
            let mut done = vec![];
            for _ in 0..6 {
                let a = next(&self.state, &self.look);
                self.state = self.state.after(&a).unwrap_or_else(|e| panic!("{}: {e}", self.row));
                let (name, last) = match &a {
                    Action::Wait(_) => ("wait".to_string(), true),
                    Action::Hold(_) => ("hold".to_string(), true),
                    Action::Exit(_) => ("exit".to_string(), true),
                    Action::Prepare { volumes, .. } => (format!("prepare {volumes}"), false),
                    Action::TakenUp(_) => ("taken-up".to_string(), false),
                    Action::Extend { .. } => ("extend".to_string(), true),
                    Action::Handled { .. } => ("handled".to_string(), false),
                    Action::Restore { outcome, .. } => (
                        match outcome {
                            None => "restore timeout".to_string(),
                            Some(Outcome::Encrypted) => "restore encrypted".to_string(),
                            Some(Outcome::Failed { .. }) => "restore failed".to_string(),
                            Some(Outcome::Succeeded { .. }) => "restore succeeded".to_string(),
                        },
                        false,
                    ),
                };
                eprintln!("{}: {}", self.row, a.text());
                done.push(name);
                if last {
                    break;
                }
            }
            if done.len() > 1 && done.last().is_some_and(|l| l == "wait") {
                done.pop();
            }
            done
        }
        fn expect(&mut self, want: &[&str]) -> &mut Self {
            let got = self.step();
            assert_eq!(got, want, "{}", self.row);
            self
        }
        fn open(&self) -> bool {
            matches!(self.state, RunState::Open { .. })
        }
    }

    /// One ADE history: the item, the ADE (or agent) source it replays, and the history.
    type History = (&'static str, &'static str, fn(&mut Sim));

    /// A fatal precheck's message: the traceback (handle.py:813), code 53 (configuration_error, handle.py:814-818,
    /// Common.py:249), e.g. "Not enough memory" (check_util.py:59-66).
    const PRECHECK_TRACEBACK: &str =
        "Traceback (most recent call last): ... Exception: Not enough memory for enabling encryption";

    const INSTALL: (&str, &str, &str, &str) = ("Install", "success", "0", "Install Succeeded");

    fn install(s: &mut Sim) -> &mut Sim {
        let (op, st, code, msg) = INSTALL;
        s.status(op, st, code, msg, "NotEncrypted")
    }

    /// The OS pass of a single-pass All/OS request from take-up to the encrypted reboot.
    fn os_pass(s: &mut Sim) -> &mut Sim {
        s.tick(5).queue(true).expect(&["taken-up"]);
        s.daemon(true).status("EnableEncryption", "transitioning", "0", "Encryption started", "EncryptionInProgress");
        s.expect(&["wait"]);
        s.tick(60).ram_root().expect(&["hold"]);
        s.status(
            "EnableEncryptionOSVolume",
            "error",
            "19",
            "Restarted extension from stripped down OS",
            "EncryptionInProgress",
        );
        s.expect(&["hold"]);
        // After the reboot the disk still has the queue; the first enable runs the daemon once more (FINDINGS 11, 14).
        s.reboot().encrypted(true).status(
            "StartEncryption",
            "success",
            "0",
            "Encryption settings stamped",
            "NotEncrypted",
        );
        s.expect(&["wait"]);
        s.daemon(true).expect(&["wait"]);
        s.tick(30).daemon(false).queue(false).mrseq(Some(0));
        s.status("EnableEncryptionOSVolume", "success", "0", "Encryption succeeded for all volumes", "Encrypted")
    }

    const HISTORIES: &[History] = &[
        (
            "1: the same seq run again after a failure before mrseq (fatal precheck; agent restart; reboot)",
            "handle.py:804-818 (fatal precheck do_exit before save_seq), :1072/:1150 (save_seq only in enable_encryption), \
             WALA update.py:613-643 + exthandlers.py:846 (each agent start rewrites <seq>.settings and runs enable), \
             check_util.py:59-66 (MemTotal, fixed within a boot), second reading finding 4",
            |s| {
                s.settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(20).status("Enable", "error", "53", PRECHECK_TRACEBACK, "NotEncrypted").expect(&["restore failed"]);
                s.tick(600).expect(&["wait"]);
                // The reboot after the resize: the agent rewrites seq 0 and runs enable again; no mrseq.
                s.reboot().expect(&["prepare all"]);
                s.tick(10).status("Enable", "error", "53", PRECHECK_TRACEBACK, "NotEncrypted").expect(&["restore failed"]);
                // systemctl restart walinuxagent or a new goal state in the same boot: the same enable, the same end:
                // no window until ADE takes the request up (queue, daemon: 60 s head start, FINDINGS 26).
                s.tick(300).rewrite().expect(&["handled"]);
                s.tick(3600).rewrite().expect(&["handled"]);
                s.tick(5).queue(true).expect(&["prepare all", "taken-up"]);
                assert!(s.open());
                // Removed and added again: a new folder of the same name, seq 0, no mrseq; run restarted from the
                // journal that handled seq 0.
                let handled = Req { handler_dir: SP.into(), seq: 0, stamp: s.look.stamp, ended_in_boot: None, stalled_at: None };
                s.restart_run(RunState::Watching { handled: Some(handled) }).queue(false).mrseq(None);
                s.tick(100).rewrite().expect(&["prepare all"]);
            },
        ),
        (
            "1b: the request queue at enable resumes ADE whatever mrseq says",
            "handle.py:958-960 and :1057-1069 (queue present: start_daemon before exit_if_same_seq); dp handle.py:751-755",
            |s| {
                s.settings(0, "EnableEncryption", "OS").mrseq(Some(0)).queue(true);
                s.expect(&["prepare os", "taken-up"]);
            },
        ),
        (
            "2: an LVM root on /dev/mapper/rootvg-rootlv is not encrypted until a PV is /dev/mapper/osencrypt",
            "DiskUtil.py:654-659 (LVM OS disk: pvdisplay | grep /dev/mapper/osencrypt), :674-677, :1109-1133 (is_os_disk_lvm)",
            |s| {
                s.encrypted(false).settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(3).expect(&["wait"]);
                os_pass(s).expect(&["restore encrypted"]);
                assert!(!s.open());
            },
        ),
        (
            "3: dual pass: an OS failure keeps the queue: restored within a bound; the next enable restarts the daemon",
            "dp handle.py:1872-1881 (queue kept after an OS failure; :1742-1747 passphrase, :1762-1769 data), \
             dp handle.py:751-755 (any later enable with the queue restarts the daemon)",
            |s| {
                s.look.dual_pass = true;
                s.look.handler = Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-0.1.0.999345".into());
                s.settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(5).queue(true).status("EnableEncryption", "success", "0", "<KEK secret id>", "EncryptionInProgress");
                s.expect(&["taken-up"]);
                // Pass 2 (a new seq) starts the daemon (dp handle.py:752-755), which fails.
                s.tick(30).settings(1, "EnableEncryption", "All").daemon(true).expect(&["wait"]);
                s.tick(130).daemon(false);
                s.status("EnableEncryptionOSVolume", "error", "19", "Failed to encrypt OS volume", "EncryptionInProgress");
                s.tick(200).expect(&["wait"]);
                // Queue kept, no daemon: ADE is idle until its next enable; the window does not wait for the day.
                s.tick(KEPT_QUEUE_BOUND_SECS).expect(&["restore failed"]);
                s.tick(DAY).expect(&["wait"]);
                // The next agent start re-runs enable: the queue makes it resume: the window opens again.
                s.rewrite().expect(&["prepare all", "taken-up"]);
                s.daemon(true).expect(&["wait"]);
            },
        ),
        (
            "4: lifecycle statuses (Install, UpdateEncryptionSettings, Update, Uninstall) never close a Data window",
            "handle.py:60-62 (install writes 'Install Succeeded' before enable), :430-434 (UpdateEncryptionSettings \
             success reported before enable_encryption marks the queue, :949-951)",
            |s| {
                s.mrseq(Some(0)).settings(1, "EnableEncryption", "Data");
                install(s).expect(&["prepare data"]);
                s.tick(3).status("UpdateEncryptionSettings", "success", "0", "Encryption settings updated", "NotEncrypted");
                s.expect(&["wait"]);
                s.status("Update", "success", "0", "Update Succeeded", "NotEncrypted").expect(&["wait"]);
                s.status("Uninstall", "success", "0", "Uninstall Succeeded", "NotEncrypted").expect(&["wait"]);
                s.tick(2).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(600).queue(false).daemon(false);
                // The daemon's report (handle.py:2201-2204), redone at its end (redo_current_status, :2571).
                s.status("EnableEncryptionDataVolumes", "success", "0", "Encryption succeeded for data volumes", "NotEncrypted");
                s.expect(&["restore succeeded"]);
            },
        ),
        (
            "5: the deadline extends while ADE's daemon works through its queue; nothing acts from the RAM root",
            "TransactionalCopyTask.py (in-place data copy in 50 MiB slices, DataCopy statuses), handle.py:2168-2209 \
             (All: data volumes first, then the OS), OSEncryptionState.py:186-188, handle.py:957-960 + :2596-2602 (after the reboot the first enable resumes the queue)",
            |s| {
                s.settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(DAY).progress().expect(&["extend"]);
                s.tick(EXTEND_SECS / 2).progress().expect(&["wait"]);
                s.tick(EXTEND_SECS).expect(&["extend"]);
                // The OS pass starts after the deadline: in the RAM root nothing acts, deadline or not.
                s.tick(2 * EXTEND_SECS).ram_root().expect(&["hold"]);
                // Back on the disk, the queue left past the deadline, no daemon yet: ADE's first enable resumes it
                // (handle.py:957-960; for All the data pass again, :2168-2210): no restore racing it.
                s.reboot().expect(&["extend"]);
                s.tick(60).daemon(true).expect(&["wait"]);
                s.tick(30).daemon(false).queue(false).encrypted(true);
                s.status("EnableEncryptionOSVolume", "success", "0", "Encryption succeeded for all volumes", "Encrypted");
                s.expect(&["restore encrypted"]);
                // The same boot with no enable ever coming: restored once the boot is past the agent's bound.
                let mut b = Sim::new("5 (no resume)");
                b.settings(0, "EnableEncryption", "All");
                install(&mut b).expect(&["prepare all"]);
                b.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                b.tick(DAY).daemon(false).ram_root().expect(&["hold"]);
                b.reboot().expect(&["extend"]);
                b.tick(TAKE_UP_BOUND_SECS).expect(&["restore timeout"]);
            },
        ),
        (
            "6: a later request in the same boot; All on an encrypted OS frees the data volumes only",
            "Ubuntu2004EncryptionStateMachine.py:140-146 (OS on /dev/mapper/osencrypt: no OS step), handle.py:908-921 \
             (are_required_devices_encrypted: data items only)",
            |s| {
                s.settings(0, "EnableEncryption", "OS");
                install(s).expect(&["prepare os"]);
                os_pass(s).expect(&["restore encrypted"]);
                s.tick(600).expect(&["wait"]);
                // Add a data disk, VolumeType All, same boot.
                s.settings(1, "EnableEncryption", "All").expect(&["prepare data"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(900).queue(false).daemon(false).mrseq(Some(1));
                s.status("EnableEncryption", "success", "0", "Encryption succeeded for all volumes", "Encrypted");
                s.expect(&["restore succeeded"]);
                s.tick(60).expect(&["wait"]);
            },
        ),
        (
            "7: DisableEncryption of data volumes opens a window (and none with the OS encrypted)",
            "handle.py:90-169 (disable marks azure_decrypt_request_queue.ini, starts the daemon), :2444-2467 \
             (daemon_decrypt: unchecked umount /dev/mapper/<name>), :1709-1760 (copy back in place), :2499-2503 (the daemon's \
             end), :115-116",
            |s| {
                s.mrseq(Some(0)).settings(1, "DisableEncryption", "Data").expect(&["prepare data"]);
                s.tick(5).decrypt_queue(true).status("DisableEncryption", "success", "0", "Encryption settings cleared", "NotEncrypted");
                s.expect(&["taken-up"]);
                s.daemon(true).expect(&["wait"]);
                s.tick(3600).decrypt_queue(false).daemon(false).mrseq(Some(1));
                s.status("Disable", "success", "0", "Decryption succeeded", "NotEncrypted");
                s.expect(&["restore succeeded"]);
                s.encrypted(true).settings(2, "DisableEncryption", "All").expect(&["handled"]);
            },
        ),
        (
            "8: an ADE upgrade after a final failure: mrseq copied into the new folder: nothing to do",
            "WALA exthandlers.py:1389-1408 (mrseq and status copied to the new version's folder), HandlerUtil.py:154-160 \
             (exit_if_same_seq), handle.py:963",
            |s| {
                let handled = Req { handler_dir: SP.into(), seq: 3, stamp: None, ended_in_boot: None, stalled_at: None };
                s.restart_run(RunState::Watching { handled: Some(handled) });
                s.look.handler =
                    Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.13".into());
                s.mrseq(Some(3)).settings(3, "EnableEncryption", "All");
                s.status("EnableEncryptionOSVolume", "error", "19", "Failed to encrypt OS volume", "NotEncrypted");
                s.status("Update", "success", "0", "Update Succeeded", "NotEncrypted");
                install(s).expect(&["handled"]);
                s.tick(3600).expect(&["wait"]);
                // The next reboot rewrites seq 3 in the new folder: ADE still exits on mrseq.
                s.reboot().expect(&["handled"]);
            },
        ),
        (
            "9: a Disable or Query request mid-flow strands the queue after the OS reboot",
            "handle.py:103-105 (disable saves the seq), :115-118 (refuses with the OS encrypted), :876-882 (other \
             operations: error, no resume); the queue resumes only in enable_encryption (:1057-1069)",
            |s| {
                s.settings(0, "EnableEncryption", "OS");
                install(s).expect(&["prepare os"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(30).settings(1, "QueryEncryptionStatus", "OS").expect(&["wait"]);
                s.ram_root().expect(&["hold"]);
                s.reboot().encrypted(true);
                s.status("Enable", "error", "53", "Encryption operation QueryEncryptionStatus is not supported", "Encrypted");
                s.expect(&["restore encrypted"]);
                s.tick(3600).expect(&["wait"]);
            },
        ),
        (
            "10: a final failure after ADE's umount -a is restored (the ground is checked by the restore edge)",
            "ubuntu_2004 StripdownState.py:48 / rhel_72 :50 (umount -a), handle.py:2310-2320 (final failure, queue removed)",
            |s| {
                s.settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(90).daemon(false).queue(false);
                s.status("EnableEncryptionOSVolume", "error", "19", "Failed to encrypt OS volume with error: No space left", "NotEncrypted");
                s.expect(&["restore failed"]);
            },
        ),
        (
            "11: a stale final status on the first run bounces nothing",
            "HandlerUtil.py:154-160 (mrseq == seq: enable exits), handle.py:2310-2320 / :891-898 (final statuses)",
            |s| {
                s.settings(0, "EnableEncryption", "All").tick(400).mrseq(Some(0));
                s.status("EnableEncryptionOSVolume", "error", "19", "Failed to encrypt OS volume", "NotEncrypted");
                s.expect(&["handled"]);
                // Without mrseq (failed before save_seq), a final status newer than the settings: also handled, until
                // the agent runs enable again.
                s.restart_run(RunState::Watching { handled: None }).mrseq(None);
                s.status("Enable", "error", "100", "Unexpected Error during enable: <traceback>", "NotEncrypted");
                s.expect(&["handled"]);
                s.tick(60).rewrite().expect(&["prepare all"]);
            },
        ),
        (
            "12: a Query or Disable seq current while ADE's daemon works its All queue: the window opens on ADE's record",
            "handle.py:2157 (the daemon reads the volume type from azure_crypt_config.ini, not the current settings), \
             HandlerUtil.py:265-308 (the last non-query settings), second reading finding 1",
            |s| {
                s.settings(0, "EnableEncryption", "All").recorded(VolumeType::All);
                install(s).expect(&["prepare all"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                // The deadline passes with the daemon gone a moment (between passes): restored, then a Query seq.
                s.tick(DAY).daemon(false).expect(&["restore timeout"]);
                s.tick(60).settings(1, "QueryEncryptionStatus", "All").expect(&["handled"]);
                // ADE's daemon works on (started by any later enable): the window opens on All, not on the Query.
                s.tick(30).daemon(true).expect(&["prepare all", "taken-up"]);
                // A Disable seq current while it works: still ADE's record.
                s.restart_run(RunState::Watching { handled: None });
                s.settings(2, "DisableEncryption", "Data").expect(&["prepare all", "taken-up"]);
            },
        ),
        (
            "13: dual pass: a Query seq with the queue and no daemon restarts the daemon on the recorded request",
            "dp handle.py:580-581 (enable loops), :659-669 (Query, no daemon, queue present: find the last non-query \
             operation), :751-755 (queue present: start_daemon); sp handle.py:876-882 (sp: Query is an error, no resume)",
            |s| {
                s.look.dual_pass = true;
                s.look.handler = Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-0.1.0.999345".into());
                s.mrseq(Some(1)).queue(true).recorded(VolumeType::Data);
                s.settings(2, "QueryEncryptionStatus", "Data").expect(&["prepare data", "taken-up"]);
                s.tick(5).daemon(true).expect(&["wait"]);
                // Single pass: the same Query is answered with an error and resumes nothing.
                let mut sp = Sim::new("13 (sp)");
                sp.mrseq(Some(1)).queue(true).recorded(VolumeType::Data);
                sp.settings(2, "QueryEncryptionStatus", "Data").expect(&["handled"]);
            },
        ),
        (
            "14: single pass: a daemon's final failure that keeps the queue does not hold the window for its deadline",
            "handle.py:2148-2153 ('Passphrase file not found': do_exit, queue kept), :2555-2564 ('Enable' 19, queue \
             kept; only the else at :2565-2571 clears it), :958-960 + :1057-1069 (the next enable restarts the daemon)",
            |s| {
                s.settings(0, "EnableEncryption", "Data").recorded(VolumeType::Data);
                install(s).expect(&["prepare data"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(70).daemon(false);
                s.status("EnableEncryption", "error", "2", "Passphrase file not found.", "NotEncrypted");
                s.tick(KEPT_QUEUE_BOUND_SECS - 10).expect(&["wait"]);
                s.tick(20).expect(&["restore failed"]);
                s.tick(3 * 3600).expect(&["wait"]);
                // ADE's next enable shows: the agent's rewrite (a goal state, an agent start) reopens the window.
                s.rewrite().expect(&["prepare data", "taken-up"]);
                s.tick(5).daemon(true).expect(&["wait"]);
                s.tick(70).daemon(false);
                s.status("EnableEncryption", "error", "2", "Passphrase file not found.", "NotEncrypted");
                s.tick(KEPT_QUEUE_BOUND_SECS + 1).expect(&["restore failed"]);
                // A daemon started by anything else reopens it too.
                s.tick(60).daemon(true).expect(&["prepare data", "taken-up"]);
            },
        ),
        (
            "15: single pass: a failed decryption keeps the decrypt queue; the re-run of the same Disable seq exits",
            "handle.py:2488-2493 ('Disable' error, decrypt queue kept), :97-104 (exit_if_same_seq: 'DisableEncryption' \
             success 'Decryption completed', no daemon), :2529-2533 (a later daemon works the decrypt queue first)",
            |s| {
                s.mrseq(Some(0)).settings(1, "DisableEncryption", "Data").expect(&["prepare data"]);
                s.tick(5).decrypt_queue(true).mrseq(Some(1)).daemon(true).expect(&["taken-up"]);
                s.tick(600).daemon(false).status("Disable", "error", "2", "Decryption failed for /dev/sdc1", "NotEncrypted");
                s.tick(KEPT_QUEUE_BOUND_SECS + 1).expect(&["restore failed"]);
                // The agent re-runs enable for seq 1: ADE exits at handle.py:104 with a success, starts nothing.
                s.tick(3600).rewrite().status("DisableEncryption", "success", "0", "Decryption completed", "NotEncrypted");
                s.expect(&["handled"]);
                s.tick(DAY).expect(&["wait"]);
                // A daemon (any later enable's) decrypts first: the window opens on the data volumes.
                s.daemon(true).expect(&["prepare data", "taken-up"]);
            },
        ),
        (
            "16: a key rotation with every requested volume encrypted ends at 'Encryption settings updated'",
            "handle.py:938-954 (config changed, are_required_devices_encrypted: update_encryption_settings() alone), \
             :425 (save_seq), :435-440 (do_exit UpdateEncryptionSettings success); :430-434 + :949-951 (the chained \
             report, then enable_encryption writes the queue), WALA exthandlers.py:1673 (enable killed at 300 s)",
            |s| {
                s.mrseq(Some(0)).settings(1, "EnableEncryption", "Data").expect(&["prepare data"]);
                s.tick(20).mrseq(Some(1));
                s.status("UpdateEncryptionSettings", "success", "0", "Encryption settings updated", "NotEncrypted");
                s.tick(UPDATE_SETTLE_SECS - 10).expect(&["wait"]);
                s.tick(20).expect(&["restore succeeded"]);
                s.tick(DAY).expect(&["wait"]);
            },
        ),
        (
            "17: the extension removed while its daemon or queue lives on: run stays, and opens when ADE is back",
            "handle.py:65-87 (disable and uninstall leave the daemon and the queue), WALA exthandlers.py:1759-1782 \
             (the handler folder deleted), handle.py:958-960 + :1057-1069 (a re-added ADE's enable resumes the queue)",
            |s| {
                s.look.handler = None;
                s.queue(true).daemon(true).expect(&["wait"]);
                s.tick(600).daemon(false).expect(&["wait"]);
                // Everything of ADE gone: run still watches (an ended run would keep ade-prep.path from starting
                // it again for the rest of the boot); ADE removed and added again in the same boot opens the window.
                s.queue(false).expect(&["wait"]);
                s.tick(3600);
                s.look.handler = Some(SP.into());
                s.settings(0, "EnableEncryption", "All").expect(&["prepare all"]);
                // Re-added before the queue went: the new folder's first enable resumes it.
                let mut b = Sim::new("17 (re-added)");
                b.look.handler = None;
                b.queue(true).expect(&["wait"]);
                b.look.handler = Some(SP.into());
                b.settings(0, "EnableEncryption", "All").recorded(VolumeType::All).expect(&["prepare all", "taken-up"]);
            },
        ),
        (
            "18: ADE's 'already encrypted' answer for a new seq, re-run at every goal state, bounces the data volumes once a boot",
            "handle.py:957-970 (no queue, every required device encrypted: do_exit EnableEncryption success, no \
             save_seq), WALA update.py:635-643 + exthandlers.py:533-583 (enable re-run at each new goal state)",
            |s| {
                s.encrypted(true).mrseq(Some(0)).settings(1, "EnableEncryption", "All").expect(&["prepare data"]);
                s.tick(15).status("EnableEncryption", "success", "0", "Encryption succeeded for all volumes", "Encrypted");
                s.expect(&["restore succeeded"]);
                s.tick(1800).rewrite().expect(&["handled"]);
                s.tick(1800).rewrite().expect(&["handled"]);
                s.reboot().expect(&["prepare data"]);
                s.tick(15).status("EnableEncryption", "success", "0", "Encryption succeeded for all volumes", "Encrypted");
                s.expect(&["restore succeeded"]);
                s.tick(1800).rewrite().expect(&["handled"]);
            },
        ),
        (
            "19: a daemon that shows no progress past the deadline (wedged, or a second one blocked on the flock) is not extended for ever",
            "ProcessLock.py:30-37 (a blocking flock: a second daemon waits), TransactionalCopyTask.py:182-188 (a \
             status and the ongoing item committed at every 50 MiB slice), second reading finding 7",
            |s| {
                s.settings(0, "EnableEncryption", "Data");
                install(s).expect(&["prepare data"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(DAY - 60).progress().tick(60).expect(&["extend"]);
                // Then nothing moves: one more hour, then restore, the daemon still alive.
                s.tick(EXTEND_SECS).expect(&["extend"]);
                s.tick(EXTEND_SECS).expect(&["restore timeout"]);
                assert!(!s.open());
                // The stalled daemon does not reopen it; once it moves again, it does.
                s.tick(600).expect(&["wait"]);
                s.progress().expect(&["prepare data", "taken-up"]);
            },
        ),
        (
            "20: a second daemon queued on the flock acts after the first one's final status: the window waits for it",
            "handle.py:1057-1069 (an enable while the queue exists starts another daemon), ProcessLock.py:30-37 (it \
             blocks on the flock), :2179-2187 (the first fails its data pass: queue removed, code 19), :2392-2394 and \
             :2201-2204 (the second finds no queue and reports success), second reading finding 8",
            |s| {
                s.settings(0, "EnableEncryption", "Data");
                install(s).expect(&["prepare data"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                // The agent re-runs enable (a new goal state): a second daemon waits on the first's flock. The first
                // fails its data pass and removes the queue; the second still lives: not ADE's end.
                s.tick(1800).queue(false);
                s.status("EnableEncryptionDataVolumes", "error", "19", "Failed to encrypt data volumes", "NotEncrypted");
                s.expect(&["wait"]);
                s.tick(60).expect(&["wait"]);
                assert!(s.open());
                // The second gets the lock, finds no queue, reports success and ends: now ADE is done.
                s.tick(60).status("EnableEncryptionDataVolumes", "success", "0", "Encryption succeeded for data volumes", "NotEncrypted");
                s.daemon(false).expect(&["restore succeeded"]);
                assert!(!s.open());
            },
        ),
        (
            "22: dual pass: a retry with another VolumeType resumes the kept queue, which works on the type ADE recorded",
            "dp handle.py:751-755 (an enable with the queue restarts the daemon before anything else), handle.py:2157 \
             (the daemon reads the volume type from azure_crypt_config.ini, which a resume never rewrites), dp \
             :1872-1881 (the queue kept after an OS failure), third reading finding 2",
            |s| {
                s.look.dual_pass = true;
                s.look.handler = Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-0.1.0.999345".into());
                s.settings(0, "EnableEncryption", "All");
                install(s).expect(&["prepare all"]);
                s.tick(5).queue(true).recorded(VolumeType::All).daemon(true).expect(&["taken-up"]);
                s.tick(600).daemon(false);
                s.status("EnableEncryptionOSVolume", "error", "19", "Failed to encrypt OS volume", "NotEncrypted");
                s.tick(KEPT_QUEUE_BOUND_SECS + 1).expect(&["restore failed"]);
                // The operator retries with VolumeType Data: the enable resumes the kept All queue, OS pass included.
                s.tick(60).settings(1, "EnableEncryption", "Data").expect(&["prepare all", "taken-up"]);
            },
        ),
        (
            "21: a reboot in the middle of a data copy: the last slice's status is not ADE's end while the boot is young",
            "TransactionalCopyTask.py:182-188 (a DataCopy status at each 50 MiB slice), handle.py:957-960 and \
             :2596-2602 (the first enable after the boot resumes the queue), third reading finding 4",
            |s| {
                s.settings(0, "EnableEncryption", "Data");
                install(s).expect(&["prepare data"]);
                s.tick(5).queue(true).daemon(true).expect(&["taken-up"]);
                s.tick(600).status("DataCopy", "success", "0", "Copied 12 slices", "NotEncrypted").expect(&["wait"]);
                // The VM reboots (a host event): no daemon, the queue on the disk, the last slice's status; the
                // boot and the agent's start take their time.
                s.tick(30).reboot().tick(500).expect(&["wait"]);
                assert!(s.open(), "restored before ADE's first enable resumed the copy");
                s.daemon(true).progress().expect(&["wait"]);
                s.tick(3600).queue(false).daemon(false);
                s.status("EnableEncryptionDataVolumes", "success", "0", "Encryption succeeded for data volumes", "NotEncrypted");
                s.expect(&["restore succeeded"]);
            },
        ),
    ];

    #[test]
    fn whole_ade_histories_follow_ades_source() {
        for (row, source, history) in HISTORIES {
            assert!(!source.is_empty() && source.contains(".py"), "{row}: no source line");
            let mut s = Sim::new(row);
            history(&mut s);
        }
    }

    #[test]
    fn transitions_are_checked() {
        let req = Req { handler_dir: SP.into(), seq: 0, stamp: None, ended_in_boot: None, stalled_at: None };
        let watching = RunState::Watching { handled: None };
        let open = RunState::open(req.clone(), VolumeType::All, 10, 100);
        let restore = Action::Restore { handled: None, why: "x".into(), outcome: None };
        let prepare =
            Action::Prepare { req: req.clone(), volumes: VolumeType::Os, at: 0, deadline: 9, why: "x".into() };
        assert!(watching.after(&restore).is_err(), "restore with no window");
        assert!(open.after(&prepare).is_err(), "prepare over an open window");
        assert!(open.after(&Action::Exit("x".into())).is_err(), "exit with the window open");
        assert!(open.after(&Action::Extend { until: 50, why: "x".into() }).is_err(), "extend backwards");
        let taken = open.after(&Action::TakenUp("x".into())).unwrap();
        assert!(taken.after(&Action::TakenUp("x".into())).is_err(), "taken up twice");
        assert_eq!(open.after(&restore).unwrap(), RunState::Watching { handled: Some(req) });
        assert!(RunState::Ended.after(&Action::Wait("x".into())).is_err());
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    fn look(op: &str, vt: &str, flow: Flow, os_encrypted: bool) -> Look {
        Look {
            handler: Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12".into()),
            seq: Some(0),
            public: Some(PublicSettings { encryption_operation: Some(op.into()), volume_type: Some(vt.into()) }),
            flow: Some(flow),
            os_encrypted,
            window_secs: 60,
            ..Look::default()
        }
    }

    fn act(l: &Look) -> String {
        match next(&RunState::Watching { handled: None }, l) {
            Action::Prepare { volumes, .. } => format!("prepare {volumes}"),
            Action::Handled { why, .. } => format!("handled: {why}"),
            a => a.text(),
        }
    }

    #[test]
    fn the_volumes_freed_are_those_ade_will_touch() {
        // Any case (handle.py:906 lowercases it); exact operation names (handle.py:832).
        assert_eq!(act(&look("EnableEncryption", "ALL", Flow::Unmount, false)), "prepare all");
        assert_eq!(act(&look("EnableEncryptionFormatAll", "os", Flow::Unmount, false)), "prepare os");
        assert_eq!(act(&look("EnableEncryption", "data", Flow::Unmount, false)), "prepare data");
        // The online flow never unmounts /: the data volumes only, an OS request nothing.
        assert_eq!(act(&look("EnableEncryption", "All", Flow::Online, false)), "prepare data");
        assert!(act(&look("EnableEncryption", "OS", Flow::Online, false)).contains("online"));
        // A distribution ADE does not unmount / on (or unknown): nothing, now or later: run ends.
        for f in [Flow::Unsupported, Flow::Unknown] {
            assert!(act(&look("EnableEncryption", "Data", f, false)).starts_with("exit: ADE does not unmount"));
        }
        // The OS encrypted: All frees the data volumes only, OS nothing; Disable refused (handle.py:115-116).
        assert_eq!(act(&look("EnableEncryption", "All", Flow::Unmount, true)), "prepare data");
        assert!(act(&look("EnableEncryption", "OS", Flow::Unmount, true)).contains("already encrypted"));
        assert!(act(&look("DisableEncryption", "Data", Flow::Unmount, true)).contains("refuses"));
        // Neither an enable nor a disable, or another volume type: nothing.
        assert!(act(&look("QueryEncryptionStatus", "OS", Flow::Unmount, false)).contains("neither encrypts"));
        assert!(act(&look("enableencryption", "OS", Flow::Unmount, false)).contains("neither encrypts"));
        assert!(act(&look("EnableEncryption", "Everything", Flow::Unmount, false)).contains("not OS, Data or All"));
        // In the RAM root nothing, whatever the request.
        let mut l = look("EnableEncryption", "All", Flow::Unmount, false);
        l.frozen = Some("/ is a tmpfs".into());
        assert!(act(&l).starts_with("hold"));
    }
}
