//! The journal's record: what the window changed (entries with their status, the ADE run followed, the phase) as
//! the file holds it, schema version [`VERSION`], and the error of a journal that cannot be trusted. Plain data:
//! it must not read or write the file (the store does) nor enforce the write-ahead rules (the journal does).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::phase::Phase;
use crate::selinux;
use crate::systemd::ActiveState;

/// The newest schema version this build reads and writes: 2 adds [`Record::volumes`] (the data volumes of the
/// window), 3 adds [`Record::ground`] (the filesystems the workloads stand on). A journal is written with the oldest
/// version that holds it: 1 with neither (so that an older ade-prep still reads and restores it), 2 with data volumes
/// only, 3 with ground (an older ade-prep then refuses it as "from a newer ade-prep" instead of restoring a window
/// whose volumes it does not know of, or starting workloads on a filesystem not mounted again).
pub const VERSION: u32 = 3;

/// The version with data volumes and no ground.
pub const VERSION_V2: u32 = 2;

/// The version without data volumes, which this build reads and writes too.
pub const VERSION_V1: u32 = 1;

/// The ADE run the window follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdeRef {
    /// The handler folder (`/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-<version>`).
    pub handler_dir: PathBuf,
    /// The sequence number of the settings that started it.
    pub seq: u64,
}

/// One change to the machine, with what is needed to undo it.
// Field names are the journal's schema (tests/fixtures/state/v1.json); only those that need a word have one.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// SELinux set to permissive; undo sets `previous` back.
    SelinuxPermissive {
        /// The mode before.
        previous: selinux::Mode,
    },
    /// The serialisation lock is held by the window (the journal itself holds it across processes).
    /// (An empty struct variant, not a unit variant: serde checks unknown fields only on struct variants.)
    LockHeld {},
    /// A runtime mask of a unit; undo unmasks it.
    MaskUnit { unit: String },
    /// A unit stopped; undo starts it when it was active before.
    StopUnit {
        unit: String,
        /// Its ActiveState before the stop (`unknown` when it could not be read), as systemd's word.
        active_state_before: ActiveState,
    },
    /// A workload's pre-stop command ran (nothing to undo: starting the units brings the workload back).
    PreStop {
        workload: String,
        /// The command, the values of secret-looking flags redacted ([`crate::bundle::redact_argv`]): the journal
        /// never holds a secret.
        argv: Vec<String>,
        /// The user it ran as.
        user: String,
    },
    /// Docker containers stopped (live-restore); undo starts them.
    StopContainers { ids: Vec<String> },
    /// A containerd task (not Docker's: a namespace other than `moby`) stopped and deleted; undo starts it again
    /// (`ctr -n NAMESPACE task start -d`), running, also when it was paused.
    StopTask {
        namespace: String,
        /// The container id (the task's name).
        id: String,
        /// Its state before: `running` or `paused`.
        state: String,
    },
    /// A stray process terminated (cannot be undone; recorded for the operator).
    TerminateProcess {
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its unit, if any.
        unit: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SelinuxPermissive { previous } => write!(f, "SELinux permissive (was {previous})"),
            Change::LockHeld {} => f.write_str("lock held"),
            Change::MaskUnit { unit } => write!(f, "mask {unit}"),
            Change::StopUnit { unit, active_state_before } => write!(f, "stop {unit} (was {active_state_before})"),
            Change::PreStop { workload, argv, user } => write!(f, "pre-stop {workload}: {argv:?} as {user}"),
            Change::StopContainers { ids } => write!(f, "stop {} container(s): {}", ids.len(), ids.join(" ")),
            Change::StopTask { namespace, id, state } => {
                write!(f, "stop containerd task {id} in namespace {namespace} (was {state})")
            }
            Change::TerminateProcess { pid, comm, unit } => {
                write!(f, "terminate pid {pid} ({comm}")?;
                if let Some(u) = unit {
                    write!(f, ", {u}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Where one change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// About to be made: it may or may not have happened (check the machine).
    Intended,
    /// Made.
    Done,
    /// Making it failed: it may have partly happened (check the machine).
    Failed,
    /// Undone.
    Undone,
    /// Undoing it failed: a later restore tries again.
    UndoFailed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Intended => "intended",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Undone => "undone",
            Status::UndoFailed => "undo failed",
        })
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1-based, in the order the changes were intended.
    pub seq: u32,
    /// What.
    pub change: Change,
    /// Where it stands.
    pub status: Status,
    /// When the status was last set (unix seconds).
    pub at: u64,
    /// Why it failed, or any other remark.
    #[serde(default)]
    pub note: Option<String>,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`VERSION_V1`], [`VERSION_V2`] when [`Record::volumes`] is set, [`VERSION`] when [`Record::ground`] is.
    pub version: u32,
    /// Where the window stands.
    pub phase: Phase,
    /// When prepare opened it (unix seconds).
    pub opened_at: u64,
    /// Last write (unix seconds).
    pub updated_at: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was opened: tells whether the machine rebooted since.
    pub boot_id: String,
    /// The process that drives the window (prepare, then the daemon that waits).
    pub owner_pid: u32,
    /// The filesystem being freed.
    pub mount: PathBuf,
    /// The ADE run followed, once known.
    pub ade: Option<AdeRef>,
    /// When the window is restored even without word from ADE (unix seconds): `window.timeout_hours` after it was
    /// opened, fixed when it opens, so that whoever ends it later needs no configuration (a journal written before
    /// this field existed has none: `opened_at` + the configured or built-in timeout then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The data volumes the window frees besides (or instead of) `mount` (VolumeType Data or All; version 2
    /// only), verified once ADE reports success: ADE skips a busy one silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<crate::datavol::VolumeRef>>,
    /// The block-device filesystems mounted when the window opened (version 3 only): restore starts no workload
    /// before each is mounted again ([`super::ground`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground: Option<Vec<super::ground::Ground>>,
    /// The changes, oldest first.
    pub entries: Vec<Entry>,
}

impl Record {
    /// A one-line summary of the changes in effect ("stopped 3 units, SELinux permissive").
    pub fn summary(&self) -> String {
        let done = self.entries.iter().filter(|e| e.status == Status::Done);
        let (mut stopped, mut masked, mut selinux, mut killed, mut containers, mut tasks) = (0, 0, false, 0, 0, 0);
        for e in done {
            match &e.change {
                Change::StopUnit { .. } => stopped += 1,
                Change::MaskUnit { .. } => masked += 1,
                Change::SelinuxPermissive { .. } => selinux = true,
                Change::TerminateProcess { .. } => killed += 1,
                Change::StopContainers { ids } => containers += ids.len(),
                Change::StopTask { .. } => tasks += 1,
                _ => {}
            }
        }
        let mut parts = vec![format!("stopped {stopped} unit(s)"), format!("masked {masked}")];
        if containers > 0 {
            parts.push(format!("stopped {containers} container(s)"));
        }
        if tasks > 0 {
            parts.push(format!("stopped {tasks} containerd task(s)"));
        }
        if killed > 0 {
            parts.push(format!("terminated {killed} process(es)"));
        }
        parts.push(if selinux { "SELinux permissive".into() } else { "SELinux unchanged".into() });
        parts.join(", ")
    }

    /// Every filesystem the window frees: the data volumes' mount points, then `mount` unless it is one of them.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let mut m: Vec<PathBuf> = self.data_volumes().iter().map(|v| v.mount_point.clone()).collect();
        if !m.contains(&self.mount) {
            m.push(self.mount.clone());
        }
        m
    }

    /// The data volumes recorded (none in a version 1 journal).
    pub fn data_volumes(&self) -> &[crate::datavol::VolumeRef] {
        self.volumes.as_deref().unwrap_or_default()
    }

    /// True until restore has closed the window (a crashed prepare leaves it open: something may be changed).
    pub fn is_window_open(&self) -> bool {
        self.phase != Phase::Closed
    }

    /// The entries restore must look at, newest first: all but the undone ones.
    pub fn to_undo(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev().filter(|e| e.status != Status::Undone)
    }

    /// The deadline recorded, else `opened_at` + `timeout_hours` (saturating: a deadline never wraps to the past).
    pub fn deadline_or(&self, timeout_hours: u64) -> u64 {
        self.deadline.unwrap_or_else(|| deadline_after(self.opened_at, timeout_hours))
    }

    /// The entry with sequence number `seq`.
    pub fn entry(&self, seq: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.seq == seq)
    }
}

/// When a window opened at `opened_at` is restored without word from ADE. The configuration bounds
/// `timeout_hours`; past any bound this saturates rather than wrap to a deadline in the past.
pub fn deadline_after(opened_at: u64, timeout_hours: u64) -> u64 {
    opened_at.saturating_add(timeout_hours.saturating_mul(3600))
}

/// A journal that cannot be read, written or trusted; always names the file.
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The journal could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Writing failed (the previous journal is still in place).
    #[error("{path}: writing the journal: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// Not JSON, truncated, or not the schema.
    #[error(
        "{path}: corrupt journal, refusing to guess: {message} (nothing was changed; `ade-prep restore --from-prev` \
         restores from the previous version, {path}.prev)"
    )]
    Corrupt {
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A version this build does not read.
    #[error(
        "{path}: journal version {found} {why} (this ade-prep reads versions {VERSION_V1} to {VERSION}); refusing to guess (nothing \
         was changed; restore with the ade-prep that wrote it)"
    )]
    Version {
        path: PathBuf,
        /// The version found.
        found: String,
        /// "written by a newer ade-prep" or "unknown".
        why: &'static str,
    },
    /// prepare found a window already open.
    #[error("{path}: a window is already {phase} (opened {opened}, by pid {owner_pid})")]
    WindowOpen {
        path: PathBuf,
        /// Its phase.
        phase: Phase,
        /// When it was opened.
        opened: String,
        /// The process that drives it.
        owner_pid: u32,
    },
    /// A phase change the window's state machine does not have (a bug, never guessed past).
    #[error("{path}: the window cannot go from {from} to {to}")]
    Transition {
        path: PathBuf,
        /// The recorded phase.
        from: Phase,
        /// The phase asked for.
        to: Phase,
    },
    /// No entry with that sequence number.
    #[error("{path}: no entry {seq}")]
    NoEntry {
        path: PathBuf,
        /// The sequence number asked for.
        seq: u32,
    },
}
