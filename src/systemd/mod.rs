//! The service manager edge: what the planner reads about units and what the executor asks of systemd (runtime
//! masks, stop and start jobs followed to their result, KillUnit), behind [`ServiceManager`], and the one unit
//! vocabulary ([`ActiveState`], [`LoadState`], [`UnitKind`]: typed here, written and read as systemd's words, so a
//! journal keeps the strings it always had). It must not decide what to stop; test-only calls are inherent methods.
//!
//! One real implementation, [`Systemd`], over the system bus with zbus' blocking API; `crate::testing::systemd`
//! fakes it for other modules' unit tests. Only D-Bus API present in systemd 219 (RHEL/CentOS 7) is used.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod jobs;
mod proxy;
mod real;

pub use real::{Systemd, DEFAULT_SYSTEM_BUS};

/// What the planner and the executor need from the service manager.
pub trait ServiceManager {
    /// A unit's properties, loading it if needed; a unit that does not exist has LoadState `not-found`.
    fn unit(&self, name: &str) -> Result<UnitInfo, SystemdError>;
    /// Masks the units in /run (MaskUnitFiles runtime=true force=true). With [`Reload::Now`] it then reloads so that
    /// the masks take effect and checks that they did; with [`Reload::Later`] the caller stops the units first and
    /// reloads after (see [`Reload`]: a mask in effect strips a running unit of its ExecStop, KillMode, Restart).
    /// Refuses (changing nothing) a unit whose unit file is in /run/systemd/system (the mask would replace it) or
    /// in a folder that outranks it, such as /etc/systemd/system (the mask would have no effect).
    fn mask_runtime(&self, units: &[String], reload: Reload) -> Result<Vec<FileChange>, SystemdError>;
    /// Removes the runtime masks (UnmaskUnitFiles runtime=true), then reloads. Masks in /etc are left alone.
    fn unmask_runtime(&self, units: &[String]) -> Result<Vec<FileChange>, SystemdError>;
    /// Reloads unit files (daemon-reload).
    fn reload(&self) -> Result<(), SystemdError>;
    /// Stops the units concurrently (StopUnit mode `replace`, each followed to its JobRemoved), each within its
    /// timeout; one result per unit, in the order given.
    fn stop_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)>;
    /// Starts the units concurrently, as [`ServiceManager::stop_units`] stops them.
    fn start_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)>;
    /// Sends `signal` to every process left in the unit's cgroup (KillUnit who=all), e.g. what a KillMode=process
    /// unit leaves behind once stopped.
    fn kill_unit(&self, unit: &str, signal: i32) -> Result<(), SystemdError>;
}

/// Serialises a unit state as systemd's word and reads it back through `parse`, so that a journal or a JSON
/// document holds the same strings as before the states were typed.
macro_rules! state_words {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($t::parse(&String::deserialize(d)?))
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                $t::parse(s)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        /// Systemd's own empty word: what a unit built by hand (`..Default::default()`) has.
        impl Default for $t {
            fn default() -> Self {
                $t::Other(String::new())
            }
        }
    };
}

/// The one vocabulary for a unit's ActiveState, read by the plan, the executor, the restore and the hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveState {
    /// active
    Active,
    /// reloading
    Reloading,
    /// inactive
    Inactive,
    /// failed
    Failed,
    /// activating
    Activating,
    /// deactivating
    Deactivating,
    /// Any other word (newer systemd's refreshing or maintenance; the journal's `unknown` when the unit could not
    /// be read): taken as running, so that what may be up is stopped and started again.
    Other(String),
}

impl ActiveState {
    /// Reads systemd's word.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            o => ActiveState::Other(o.to_string()),
        }
    }
    /// Systemd's word.
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Other(o) => o,
        }
    }
    /// Up or changing state: anything but inactive or failed (a stop job is needed; a start job brings it back).
    pub fn is_running(&self) -> bool {
        !matches!(self, ActiveState::Inactive | ActiveState::Failed)
    }
    /// Up: what a start job aims for.
    pub fn is_up(&self) -> bool {
        matches!(self, ActiveState::Active | ActiveState::Reloading)
    }
}

state_words!(ActiveState);

/// A unit's LoadState: whether systemd has its configuration. The plan acts only on a loaded unit; restore takes a
/// not-found one as gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// loaded
    Loaded,
    /// not-found: no unit file.
    NotFound,
    /// masked: its unit file is /dev/null (after a reload).
    Masked,
    /// error
    Error,
    /// bad-setting (systemd 233 and later)
    BadSetting,
    /// Any other word (stub, merged; empty for a unit built by hand).
    Other(String),
}

impl LoadState {
    /// Reads systemd's word.
    pub fn parse(s: &str) -> Self {
        match s {
            "loaded" => LoadState::Loaded,
            "not-found" => LoadState::NotFound,
            "masked" => LoadState::Masked,
            "error" => LoadState::Error,
            "bad-setting" => LoadState::BadSetting,
            o => LoadState::Other(o.to_string()),
        }
    }
    /// Systemd's word.
    pub fn as_str(&self) -> &str {
        match self {
            LoadState::Loaded => "loaded",
            LoadState::NotFound => "not-found",
            LoadState::Masked => "masked",
            LoadState::Error => "error",
            LoadState::BadSetting => "bad-setting",
            LoadState::Other(o) => o,
        }
    }
}

state_words!(LoadState);

/// What a unit's name says about how ade-prep treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// A socket, timer or path unit: it starts others, so it is stopped first and started last.
    Trigger,
    /// A scope (transient, made by a process for itself): stopped, never masked nor started again.
    Scope,
    /// Anything else (services, mostly).
    Other,
}

impl UnitKind {
    /// The kind of the unit called `name`.
    pub fn of(name: &str) -> Self {
        if [".socket", ".timer", ".path"].iter().any(|s| name.ends_with(s)) {
            UnitKind::Trigger
        } else if name.ends_with(".scope") {
            UnitKind::Scope
        } else {
            UnitKind::Other
        }
    }
}

/// When a runtime mask takes effect. A reload loads a masked unit from /dev/null: a unit still running then has
/// systemd's defaults (no ExecStop, KillMode=control-group, Restart=no, TimeoutStopSec=90s), so stopping it skips
/// its own stop logic (measured on systemd 252: a 2 s ExecStop skipped, a KillMode=process child killed). Hence
/// mask with `Later`, stop, then [`ServiceManager::reload`]: the mask files exist before the stop (a crash
/// leaves them to restore) and take effect once the units are down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reload {
    /// Reload now and check that every unit is masked.
    Now,
    /// Only write the masks; the caller reloads after stopping the units.
    Later,
}

/// A unit as the planner sees it. Type-specific fields are None when the unit's type does not have them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// The unit's primary name.
    pub id: String,
    /// loaded, not-found, masked, error, ...
    pub load_state: LoadState,
    /// active, inactive, failed, activating, deactivating, reloading.
    pub active_state: ActiveState,
    /// The type-specific state (running, dead, listening, exited, ...).
    pub sub_state: String,
    /// enabled, disabled, static, masked, masked-runtime, ... (empty when it has none).
    pub unit_file_state: String,
    /// The unit file it was loaded from (empty for masked or missing units).
    pub fragment_path: String,
    /// Units that can start this one (sockets, timers, paths).
    pub triggered_by: Vec<String>,
    /// Units this one starts (a socket's service).
    pub triggers: Vec<String>,
    /// Hard dependencies.
    pub requires: Vec<String>,
    /// Soft dependencies.
    pub wants: Vec<String>,
    /// Dependencies whose stop stops this unit.
    pub binds_to: Vec<String>,
    /// Units that `Requires=` this one: systemd stops them with it.
    #[serde(default)]
    pub required_by: Vec<String>,
    /// Units that `BindsTo=` this one: systemd stops them with it.
    #[serde(default)]
    pub bound_by: Vec<String>,
    /// Units that are `PartOf=` this one: systemd stops them with it.
    #[serde(default)]
    pub consists_of: Vec<String>,
    /// Units this one starts after (and stops before).
    pub after: Vec<String>,
    /// Units this one starts before (and stops after).
    pub before: Vec<String>,
    /// The unit's cgroup, for types that have one, when it has been created.
    pub control_group: Option<String>,
    /// The main process of a service, when running.
    pub main_pid: Option<u32>,
    /// control-group, process, mixed or none, for types that kill processes.
    pub kill_mode: Option<String>,
    /// A service's Restart= setting.
    pub restart: Option<String>,
    /// A service's start timeout (TimeoutStartUSec) in µs; None when it has none (infinity) or is no service.
    #[serde(default)]
    pub timeout_start_usec: Option<u64>,
    /// `RefuseManualStop=yes`: systemd refuses `systemctl stop` (auditd on RHEL 7).
    #[serde(default)]
    pub refuse_manual_stop: bool,
    /// Created at runtime (`systemd-run`, a scope): gone once stopped, nothing can start it again.
    #[serde(default)]
    pub transient: bool,
}

impl UnitInfo {
    /// True when the unit is masked (the mask is in effect, i.e. after a reload).
    pub fn is_masked(&self) -> bool {
        self.load_state == LoadState::Masked
    }
    /// True when the unit is active or changing state (anything but inactive or failed).
    pub fn is_running(&self) -> bool {
        self.active_state.is_running()
    }
}

/// One change to a unit file link, as systemd reports it for a mask or an unmask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// symlink or unlink.
    pub kind: String,
    /// The link created or removed.
    pub path: String,
    /// Where the link points (/dev/null for a mask); empty for an unlink.
    pub target: String,
}

/// The manager's job counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounters {
    /// Jobs queued now (NJobs).
    pub jobs: u32,
    /// Jobs installed since boot (NInstalledJobs): unchanged means nothing was queued in between.
    pub installed_jobs: u32,
}

/// Which job a batch queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOp {
    /// StartUnit.
    Start,
    /// StopUnit.
    Stop,
}

impl fmt::Display for JobOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobOp::Start => "start",
            JobOp::Stop => "stop",
        })
    }
}

/// A D-Bus error: its name when the peer sent one, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbusError {
    /// The error name (org.freedesktop.systemd1.NoSuchUnit, ...), None for local errors (I/O, bad reply).
    pub name: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl DbusError {
    /// An error with a D-Bus name, as a peer sends it.
    pub fn named(name: &str, message: impl Into<String>) -> Self {
        DbusError { name: Some(name.to_string()), message: message.into() }
    }
    /// True when the error name ends with `.{short}` (e.g. `NoSuchJob`).
    pub fn is(&self, short: &str) -> bool {
        self.name.as_deref().is_some_and(|n| n.rsplit('.').next() == Some(short))
    }
}

impl fmt::Display for DbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) if self.message.is_empty() => f.write_str(n),
            Some(n) => write!(f, "{n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<zbus::Error> for DbusError {
    fn from(e: zbus::Error) -> Self {
        use zbus::DBusError as _;
        match e {
            zbus::Error::MethodError(name, detail, _) => {
                DbusError { name: Some(name.to_string()), message: detail.unwrap_or_default() }
            }
            zbus::Error::FDO(e) => {
                DbusError { name: Some(e.name().to_string()), message: e.description().unwrap_or_default().to_string() }
            }
            e => DbusError { name: None, message: e.to_string() },
        }
    }
}

/// A failed query or change that is not a job.
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemdError {
    /// The bus cannot be reached.
    #[error("connecting to the system bus at {address}: {error}")]
    Connect {
        /// The bus address.
        address: String,
        error: DbusError,
    },
    /// A call failed; `what` names the call and its unit.
    #[error("{what}: {error}")]
    Call {
        /// The call and its arguments, e.g. "load unit docker.service".
        what: String,
        /// The D-Bus error.
        error: DbusError,
    },
    /// A property is missing or of an unexpected type.
    #[error("{unit}: property {property}: {detail}")]
    Property {
        unit: String,
        /// The property.
        property: String,
        /// What is wrong with it.
        detail: String,
    },
    /// ade-prep refuses the change.
    #[error("{what}: {reason}")]
    Refused {
        /// The change, with its unit.
        what: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Why a stop or start job did not end with result `done`.
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// StartUnit/StopUnit was refused (no such unit, masked, ...): no job was queued.
    #[error("{op} {unit}: {error}")]
    Call {
        op: JobOp,
        unit: String,
        /// The D-Bus error.
        error: DbusError,
    },
    /// The job ended with a result other than `done`.
    #[error("{op} {unit}: job result '{result}'")]
    Result {
        op: JobOp,
        unit: String,
        job: String,
        /// canceled, timeout, failed, dependency, skipped, ...
        result: String,
    },
    /// No result within the unit's timeout; the job was then canceled (or canceling it failed).
    #[error("{op} {unit}: no job result within {}; {}", secs(*.timeout), match .cancel_error {
        None => format!("job {job} canceled"),
        Some(e) => format!("canceling job {job} failed: {e}"),
    })]
    Timeout {
        op: JobOp,
        unit: String,
        job: String,
        /// The timeout that ran out.
        timeout: Duration,
        /// Why canceling the job failed, None when it was canceled.
        cancel_error: Option<DbusError>,
    },
    /// The job ended without its JobRemoved reaching us, and the unit is not in the state the job aimed for.
    #[error("{op} {unit}: job {job} ended unseen and the unit is {active_state}")]
    Vanished {
        op: JobOp,
        unit: String,
        job: String,
        /// The unit's ActiveState afterwards.
        active_state: ActiveState,
    },
    /// ade-prep was asked to stop while the job ran: it is no longer followed and is left to systemd (not canceled).
    #[error("{op} {unit}: job {job} no longer followed: ade-prep was asked to stop")]
    Interrupted { op: JobOp, unit: String, job: String },
    /// The job could not be followed (Subscribe, the signal stream or the bus failed).
    #[error("{op} {unit}: cannot follow the job: {error}")]
    Follow {
        op: JobOp,
        unit: String,
        /// The D-Bus error.
        error: DbusError,
    },
}

impl JobError {
    /// The unit the job was for.
    pub fn unit(&self) -> &str {
        match self {
            JobError::Call { unit, .. }
            | JobError::Result { unit, .. }
            | JobError::Timeout { unit, .. }
            | JobError::Vanished { unit, .. }
            | JobError::Interrupted { unit, .. }
            | JobError::Follow { unit, .. } => unit,
        }
    }
}

/// "90s", "1.5s": a duration as an operator reads it.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The id in a job's object path (`/org/freedesktop/systemd1/job/1234` → 1234).
pub fn job_id(path: &str) -> Option<u32> {
    path.strip_prefix("/org/freedesktop/systemd1/job/")?.parse().ok()
}

/// Whether a unit whose job ended unseen reached what the job aimed for: stopped for a stop, up for a start.
/// (A oneshot service without RemainAfterExit is inactive after a good start: reported as vanished.)
pub fn reached(op: JobOp, state: &ActiveState) -> bool {
    match op {
        JobOp::Stop => !state.is_running(),
        JobOp::Start => state.is_up(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_running_test_for_every_reader() {
        for (word, running, up) in [
            ("active", true, true),
            ("reloading", true, true),
            ("activating", true, false),
            ("deactivating", true, false),
            ("refreshing", true, false),
            ("unknown", true, false),
            ("inactive", false, false),
            ("failed", false, false),
        ] {
            let s = ActiveState::parse(word);
            assert_eq!((s.is_running(), s.is_up(), s.to_string().as_str()), (running, up, word), "{word}");
        }
        assert!(
            reached(JobOp::Stop, &ActiveState::parse("failed"))
                && !reached(JobOp::Stop, &ActiveState::parse("deactivating"))
        );
        assert!(
            reached(JobOp::Start, &ActiveState::parse("reloading"))
                && !reached(JobOp::Start, &ActiveState::parse("activating"))
        );
    }

    #[test]
    fn unit_kinds_come_from_the_name() {
        assert_eq!(UnitKind::of("docker.socket"), UnitKind::Trigger);
        assert_eq!(UnitKind::of("logrotate.timer"), UnitKind::Trigger);
        assert_eq!(UnitKind::of("ade-prep.path"), UnitKind::Trigger);
        assert_eq!(UnitKind::of("docker-abc.scope"), UnitKind::Scope);
        assert_eq!(UnitKind::of("docker.service"), UnitKind::Other);
    }

    #[test]
    fn job_id_reads_the_last_path_segment() {
        assert_eq!(job_id("/org/freedesktop/systemd1/job/4711"), Some(4711));
        assert_eq!(job_id("/org/freedesktop/systemd1/unit/x"), None);
        assert_eq!(job_id("/org/freedesktop/systemd1/job/x"), None);
    }

    #[test]
    fn errors_name_the_unit_and_the_cause() {
        let e = JobError::Result {
            op: JobOp::Stop,
            unit: "docker.service".into(),
            job: "/org/freedesktop/systemd1/job/7".into(),
            result: "timeout".into(),
        };
        assert_eq!(e.to_string(), "stop docker.service: job result 'timeout'");
        let e = JobError::Timeout {
            op: JobOp::Start,
            unit: "db.service".into(),
            job: "/org/freedesktop/systemd1/job/8".into(),
            timeout: Duration::from_millis(1500),
            cancel_error: Some(DbusError::named("org.freedesktop.systemd1.NoSuchJob", "Job 8 does not exist.")),
        };
        assert_eq!(
            e.to_string(),
            "start db.service: no job result within 1.5s; canceling job /org/freedesktop/systemd1/job/8 failed: \
             org.freedesktop.systemd1.NoSuchJob: Job 8 does not exist."
        );
        assert_eq!(e.unit(), "db.service");
        let e = JobError::Call {
            op: JobOp::Start,
            unit: "x.service".into(),
            error: DbusError::named("org.freedesktop.systemd1.UnitMasked", "Unit x.service is masked."),
        };
        assert_eq!(e.to_string(), "start x.service: org.freedesktop.systemd1.UnitMasked: Unit x.service is masked.");
        assert!(DbusError::named("org.freedesktop.systemd1.UnitMasked", "").is("UnitMasked"));
        assert!(!DbusError { name: None, message: "UnitMasked".into() }.is("UnitMasked"));
    }

    #[test]
    fn reached_depends_on_the_job() {
        assert!(reached(JobOp::Stop, &ActiveState::parse("inactive")));
        assert!(reached(JobOp::Stop, &ActiveState::parse("failed")));
        assert!(!reached(JobOp::Stop, &ActiveState::parse("deactivating")));
        assert!(reached(JobOp::Start, &ActiveState::parse("active")));
        assert!(!reached(JobOp::Start, &ActiveState::parse("activating")));
        assert!(!reached(JobOp::Start, &ActiveState::parse("failed")));
    }
}
