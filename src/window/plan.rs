//! Plan: a pure function from a snapshot of the machine and the settings to the ordered steps of `prepare`.
//! `--dry-run` prints exactly this plan; execution carries out the very same one. It must not do any I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::classify::Class;
use crate::config::{PreStop, Settings, StrayPolicy, WritersPolicy};
use crate::glob;
use crate::scan::Holder;
use crate::systemd::{LoadState, UnitKind};

pub(crate) use super::snapshot::Snapshot;

/// One step of prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Wait for other extension handlers still running to end.
    WaitForExtensions {
        /// Bound.
        timeout_secs: u64,
    },
    /// Take the serialisation lock for the window.
    TakeLock,
    /// Run a workload's pre-stop command.
    PreStop {
        workload: String,
        /// The command, placeholders replaced.
        command: PreStop,
    },
    /// `docker stop` the running containers before dockerd goes (live-restore keeps them otherwise).
    StopContainers {
        ids: Vec<String>,
        /// Grace period for each.
        grace_secs: u64,
    },
    /// Stop containerd's own tasks (namespaces other than Docker's) before containerd goes: SIGTERM (a paused one
    /// resumed after it), the grace, SIGKILL, `ctr task delete`; their shims exit with them.
    StopTasks {
        tasks: Vec<super::ctr::Task>,
        /// Grace period for each.
        grace_secs: u64,
    },
    /// Write runtime masks for the units; they take effect at [`Step::ActivateMasks`], after the stops (a mask
    /// loaded before the stop would drop the unit's own ExecStop, KillMode and Restart settings).
    MaskUnits {
        /// Units.
        units: Vec<String>,
    },
    /// Write the hold list ([`crate::window::hold`]): at the reload that follows, ade-prep-generator masks these
    /// units in `generator.early`, which outranks `/etc`, for the window and through the reboot. After the stops,
    /// like the runtime masks: a mask loaded before a stop would drop the unit's ExecStop.
    HoldUnits {
        /// Units.
        units: Vec<String>,
    },
    /// Reload systemd: the masks take effect, so nothing starts the units during the window.
    ActivateMasks,
    /// Stop units concurrently, each with its timeout (systemd keeps their mutual ordering).
    StopUnits {
        /// `triggers` or `services`.
        wave: String,
        /// Unit and timeout in seconds.
        units: Vec<(String, u64)>,
    },
    /// Re-scan; leftovers of stopped units are killed (KillUnit), strays follow the policy.
    ClearHolders {
        /// Stray policy.
        policy: StrayPolicy,
        /// SIGTERM → SIGKILL grace.
        grace_secs: u64,
        /// Workload units stopped before prepare whose leftovers (KillMode=process) are ended like those of the
        /// units the window stops (stray policy `terminate` only; under `report` they are plan blockers).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stopped_earlier: Vec<String>,
    },
    /// Switch SELinux to permissive.
    SelinuxPermissive,
}

/// One filesystem the window frees, and what holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Its mount point (or the path asked for).
    pub mount: PathBuf,
    /// Its holders, one line each: pid, command, unit, class.
    pub holders: Vec<String>,
    /// Mount points below it and swap files on it.
    pub kernel: Vec<PathBuf>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The filesystems being freed, in ADE's order (data volumes, then `/`), with what holds each.
    pub mounts: Vec<Target>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Holders left alone (protected or other), for the operator.
    pub left_alone: Vec<String>,
    /// What the plan cannot guarantee, for the operator.
    pub warnings: Vec<String>,
    /// Why prepare must not start, with what to do: prepare refuses before changing anything.
    pub blockers: Vec<String>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A pre-stop command needs an SAP system id and number that could not be found.
    #[error("workload {workload}: pre_stop uses {{sid}}/{{nr}} but no SAP<SID>_<NR> unit or sapstartsrv pf= profile was found")]
    NoSapInstance { workload: String },
}

/// SAP system id and instance number from a unit `SAP<SID>_<NR>.service` or a profile path
/// `pf=/usr/sap/<SID>/SYS/profile/<SID>_<INSTANCE><NR>_<host>`.
pub fn sap_instance(unit: Option<&str>, cmdline: &[String]) -> Option<(String, String)> {
    if let Some(u) = unit.and_then(|u| u.strip_suffix(".service")).and_then(|u| u.strip_prefix("SAP")) {
        if let Some((sid, nr)) = u.split_once('_') {
            if sid.len() == 3 && nr.len() == 2 && nr.bytes().all(|b| b.is_ascii_digit()) {
                return Some((sid.to_string(), nr.to_string()));
            }
        }
    }
    for a in cmdline {
        if let Some(pf) = a.strip_prefix("pf=") {
            let name = pf.rsplit('/').next()?;
            let mut parts = name.split('_');
            let (sid, inst) = (parts.next()?, parts.next()?);
            let nr: String = inst.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
            if sid.len() == 3 && nr.len() == 2 && nr.bytes().all(|b| b.is_ascii_digit()) {
                return Some((sid.to_string(), nr));
            }
        }
    }
    None
}

fn substitute(p: &PreStop, sid: &str, nr: &str) -> PreStop {
    let sub = |s: &str| s.replace("{sidlower}", &sid.to_lowercase()).replace("{sid}", sid).replace("{nr}", nr);
    PreStop { argv: p.argv.iter().map(|a| sub(a)).collect(), user: sub(&p.user), ..p.clone() }
}

fn uses_placeholders(p: &PreStop) -> bool {
    p.argv.iter().chain(std::iter::once(&p.user)).any(|a| a.contains("{sid") || a.contains("{nr}"))
}

/// The name the plan gives the other writers' units where a workload's name goes (`[policy] writers = "stop"`): no
/// workload of the catalogue can have it (a TOML key with parentheses must be quoted).
pub const WRITERS: &str = "(other writers)";

/// The catalogue's kubelet entry: its units are stopped in a wave of their own before the containers and containerd's
/// tasks (and so before containerd): a running kubelet sees its pods' containers end and starts them again through
/// the CRI while prepare stops them (docs/workloads.md).
pub const KUBELET: &str = "kubelet";

/// How long prepare waits for a writer's unit to stop: its own TimeoutStopSec (systemd's default 90 s) then decides;
/// this bound only keeps a stop that systemd never ends from holding prepare for ever.
pub const WRITER_STOP_TIMEOUT_SECS: u64 = 300;

/// The other writers' units prepare stops under `[policy] writers = "stop"` (none under "report"), and what it says
/// of every other writer: each named, with why it is left running when it is. Pure: [`crate::classify::writer`]
/// decided who writes and which system service runs it; here only what prepare may do with that service.
pub fn writer_units(snap: &Snapshot, settings: &Settings) -> (BTreeSet<String>, Vec<String>) {
    let writers = crate::classify::writers(snap.holders.iter().map(|(h, c)| (h, c)));
    let (mut units, mut notes) = (BTreeSet::new(), vec![]);
    for w in writers {
        let who = crate::report::describe_writer(&w);
        let Some(u) = w.unit.as_deref() else {
            notes.push(format!("other writer {who}: never stopped by ade-prep, left to ADE"));
            continue;
        };
        if settings.policy.writers == WritersPolicy::Report {
            notes.push(format!(
                "other writer {who}: left to ADE ([policy] writers = \"report\"; \"stop\" would stop and hold {u})"
            ));
        } else if snap.own_units.contains(u) {
            notes.push(format!("other writer {who}: {u} runs ade-prep, left running"));
        } else if snap.units.get(u).is_some_and(|f| f.transient) {
            // A `systemd-run` service: stopped, it is gone.
            notes.push(format!("other writer {who}: {u} is transient (nothing could start it again), left running"));
        } else if snap.units.get(u).is_some_and(|f| f.refuse_manual_stop) {
            // auditd on RHEL 7: its stop would be refused and prepare roll back at every try.
            notes.push(format!("other writer {who}: {u} refuses a manual stop (RefuseManualStop=yes), left running"));
        } else {
            units.insert(u.to_string());
        }
    }
    (units, notes)
}

/// The plan for a snapshot.
pub fn plan(snap: &Snapshot, settings: &Settings) -> Result<Plan, PlanError> {
    // Workloads present, and the units their holders run in.
    let mut workloads: BTreeMap<&str, Vec<&Holder>> = BTreeMap::new();
    let mut left_alone = vec![];
    // The other writers' services, under `[policy] writers = "stop"`: stopped, masked and held as a workload's units
    // (with what triggers them and what systemd stops with them), started again by restore when they were active.
    let (writer_units, writer_notes) = writer_units(snap, settings);
    for (h, c) in &snap.holders {
        match (c.class, c.workload.as_deref()) {
            (Class::Workload, Some(w)) => workloads.entry(w).or_default().push(h),
            (Class::Other, _) if h.unit.as_ref().is_some_and(|u| writer_units.contains(u)) => {}
            _ => left_alone.push(format!("{} ({}, pid {}): {}", h.comm, class_word(c.class), h.pid, c.reason)),
        }
    }
    // The units to stop: holders' units that their workload's globs name, their workloads' companions, everything
    // that can trigger them, and what systemd stops along with them. Never a protected unit, nor one that runs
    // ade-prep: a holder there is a blocker, with what to do.
    let mut blockers = vec![];
    let mut warnings = vec![];
    let own = |u: &str| snap.own_units.contains(u);
    let mut unit_workload: BTreeMap<String, &str> = BTreeMap::new();
    let mut stopped_earlier: BTreeSet<String> = BTreeSet::new();
    for (w, hs) in &workloads {
        let globs = &settings.workloads[*w].units;
        for h in hs {
            let Some(u) = h.unit.as_ref() else { continue };
            let who = format!("pid {} {} (workload {w})", h.pid, h.comm);
            let named = glob::any(globs, u);
            if own(u) && (named || UnitKind::of(u) != UnitKind::Scope) {
                blockers.push(format!(
                    "{who} runs in {u}, the unit that runs ade-prep: run ade-prep from its own unit \
                     (ade-prep.service) or move the workload out of {u}"
                ));
            } else if named && snap.units.get(u).is_some_and(|f| f.load_state == LoadState::Loaded && !f.is_running()) {
                // A leftover of a unit stopped before prepare (KillMode=process): no stop ends it (issue 24). Under
                // the `terminate` policy (the operator's consent to end workload processes no stop ends) it is ended
                // in the window like the leftovers of the units prepare stops, its unit masked (inactive, so not
                // started again by restore). Under `report`, refused here, before any change.
                if settings.stray.policy == StrayPolicy::Terminate {
                    stopped_earlier.insert(u.clone());
                    unit_workload.entry(u.clone()).or_insert(w);
                    warnings.push(format!(
                        "{who} runs in {u}, which is not running (a leftover of an earlier stop, KillMode=process): \
                         ended in the window (stray policy terminate)"
                    ));
                } else {
                    blockers.push(format!(
                        "{who} runs in {u}, which is not running (a leftover of an earlier stop, KillMode=process): \
                         end it (`systemctl kill {u}`) or start {u} again, then prepare; or set [stray] policy = \
                         \"terminate\" in /etc/ade-prep/config.toml to have prepare end it"
                    ));
                }
            } else if named {
                unit_workload.entry(u.clone()).or_insert(w);
            } else if UnitKind::of(u) != UnitKind::Scope {
                blockers.push(format!(
                    "{who} runs in {u}, which the workload's units ({}) do not name: add {u} to \
                     [workloads.{w}] units in /etc/ade-prep/config.toml, or stop it yourself",
                    globs.join(" ")
                ));
            }
            // A scope the workload's units do not name (a login session, the caller's own scope) is not the
            // workload's: stopping it would end everything in it. Its workload processes are strays (ClearHolders).
        }
        for u in &settings.workloads[*w].companion_units {
            if snap.units.get(u).is_some_and(|f| f.load_state == LoadState::Loaded) {
                unit_workload.entry(u.clone()).or_insert(w);
            }
        }
    }
    // Strays: workload processes in no unit, or in a scope the workload's units do not name (a shell's, a login
    // session's). No stop ends them; under the `report` policy clearing the holders would refuse them after every
    // stop and roll back, at every try (issue 24): refused here, before any change. A container task's process
    // (under a containerd shim) and the shim of a running task are not strays: docker or ctr stops them.
    if settings.stray.policy == StrayPolicy::Report {
        let shims: BTreeSet<i32> = snap.holders.iter().filter_map(|(h, _)| h.shim).collect();
        for (w, hs) in &workloads {
            for h in hs {
                let stray = match h.unit.as_deref() {
                    None => true,
                    Some(u) => UnitKind::of(u) == UnitKind::Scope && !unit_workload.contains_key(u),
                };
                if stray && h.shim.is_none() && !shims.contains(&h.pid) {
                    blockers.push(format!(
                        "pid {} {} (workload {w}) runs in {}, which no stop ends (a stray; stray policy report): end \
                         it yourself, add its unit to [workloads.{w}] units, or set [stray] policy = \"terminate\" \
                         in /etc/ade-prep/config.toml",
                        h.pid,
                        h.comm,
                        h.unit.as_deref().unwrap_or("no unit")
                    ));
                }
            }
        }
    }
    // Workload processes in a unit that is never stopped (a container, a user's manager, a session).
    for (h, c) in &snap.holders {
        if c.class != Class::Protected {
            continue;
        }
        let (Some(u), Some(w)) = (h.unit.as_deref(), crate::classify::workload_of(h, settings)) else { continue };
        if crate::classify::protected_unit_reason(u, settings).is_some() {
            blockers.push(format!(
                "pid {} {} (workload {w}) runs in {u}, which ade-prep never stops ({}): stop the workload \
                 there yourself (inside the container or the user's session) before the encryption",
                h.pid, h.comm, c.reason
            ));
        }
    }
    warnings.extend(writer_notes);
    for u in writer_units {
        unit_workload.entry(u).or_insert(WRITERS);
    }
    let mut frontier: Vec<String> = unit_workload.keys().cloned().collect();
    let mut also: Vec<String> = vec![];
    let mut unmasked: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    while let Some(u) = frontier.pop() {
        let w = unit_workload[&u];
        let f = snap.units.get(&u);
        let triggers = f.map(|f| f.triggered_by.clone()).unwrap_or_default();
        let dependents = f.map(|f| f.stopped_with.clone()).unwrap_or_default();
        for t in triggers {
            if !unit_workload.contains_key(&t) && snap.units.get(&t).is_some_and(|f| f.load_state == LoadState::Loaded)
            {
                unit_workload.insert(t.clone(), w);
                frontier.push(t);
            }
        }
        // systemd stops these with `u` (Requires=, BindsTo=, PartOf=), whatever their type, and starts none again
        // with it (measured on 219 and 252, docs/decisions.md): recorded as stops, so restore starts them. Only a
        // service or socket stays down under a mask (it runs code that may start the workload again or hold the
        // disk); a target, mount, path or timer is stopped by systemd with the workload and is not masked.
        for d in dependents {
            if snap.units.get(&d).is_some_and(|f| f.refuse_manual_stop && f.is_running()) {
                // systemd refuses a stop of its own (sbd.service: PartOf=corosync.service, RefuseManualStop=yes): it
                // goes with `u`, and comes back only through a dependency of `u` (sbd: corosync.service Requires= it).
                if !refused.contains(&d) {
                    warnings.push(format!(
                        "{d} refuses a stop of its own (RefuseManualStop=yes): systemd stops it with {u}; ade-prep \
                         neither stops nor starts it (it comes back when {u} starts only if {u} requires or wants it)"
                    ));
                    refused.insert(d);
                }
                continue;
            }
            if !unit_workload.contains_key(&d) && snap.units.get(&d).is_some_and(|f| f.is_running()) {
                also.push(format!("{d} (systemd stops it with {u})"));
                if !(d.ends_with(".service") || d.ends_with(".socket")) {
                    unmasked.insert(d.clone());
                }
                unit_workload.insert(d.clone(), w);
                frontier.push(d);
            }
        }
    }
    // No protected unit and none of ade-prep's own, whatever brought it in (companion, trigger, dependent).
    unit_workload.retain(|u, w| {
        let why = crate::classify::protected_unit_reason(u, settings)
            .or_else(|| own(u).then(|| format!("{u} runs ade-prep")));
        let Some(why) = why else { return true };
        let running = snap.units.get(u).is_some_and(|f| f.is_running());
        if running && !settings.workloads.get(*w).is_some_and(|c| c.companion_units.contains(u)) {
            // A trigger or a dependent: stopping the workload would stop it (or it would start the workload again).
            blockers.push(format!(
                "{u} is tied to workload {w}'s units but is never stopped ({why}): remove the dependency, \
                 or stop workload {w} yourself"
            ));
        } else {
            warnings.push(format!("{u} ({why}) is left running: a protected unit is never stopped"));
        }
        false
    });
    // A cluster node: its leave must not take the cluster below quorum (refused here, before the standby).
    let corosync = super::quorum::COROSYNC_UNIT;
    if let (Some(w), Some(q)) = (unit_workload.get(corosync), &snap.quorum) {
        if snap.units.get(corosync).is_some_and(|f| f.is_running()) {
            let why = match q {
                Ok(q) => super::quorum::leave_loses_quorum(q),
                Err(e) => Some(format!("its quorum cannot be read: {e}")),
            };
            if let Some(why) = why {
                blockers.push(format!(
                    "workload {w}: this node's cluster would lose quorum: {why} (corosync-quorumtool -s): bring the \
                     other members back, or encrypt this node when the cluster can spare it"
                ));
            }
        }
    }
    also.retain(|a| unit_workload.contains_key(a.split(' ').next().unwrap_or_default()));
    for a in also {
        warnings.push(format!("also stopped and restored: {a}"));
    }
    let facts = |u: &str| snap.units.get(u);
    let timeout =
        |u: &str| settings.workloads.get(unit_workload[u]).map_or(WRITER_STOP_TIMEOUT_SECS, |w| w.stop_timeout_secs);

    let mut steps = vec![Step::WaitForExtensions { timeout_secs: settings.window.extension_wait_secs }, Step::TakeLock];
    // Pre-stop commands of the workloads that are running.
    for (w, hs) in &workloads {
        let cfg = &settings.workloads[*w];
        if cfg.pre_stop.is_empty() {
            continue;
        }
        if cfg.pre_stop.iter().any(uses_placeholders) {
            let instances: BTreeSet<(String, String)> =
                hs.iter().filter_map(|h| sap_instance(h.unit.as_deref(), &h.cmdline)).collect();
            if instances.is_empty() {
                return Err(PlanError::NoSapInstance { workload: w.to_string() });
            }
            for (sid, nr) in &instances {
                for p in &cfg.pre_stop {
                    steps.push(Step::PreStop { workload: w.to_string(), command: substitute(p, sid, nr) });
                }
            }
        } else {
            for p in &cfg.pre_stop {
                steps.push(Step::PreStop { workload: w.to_string(), command: p.clone() });
            }
        }
    }
    let running = |u: &&String| facts(u).is_none_or(|f| f.is_running());
    let first: Vec<&String> =
        unit_workload.iter().filter(|(_, w)| **w == KUBELET).map(|(u, _)| u).filter(running).collect();
    if !first.is_empty() {
        steps.push(Step::StopUnits {
            wave: "kubelet (before the containers)".into(),
            units: first.iter().map(|u| (u.to_string(), timeout(u))).collect(),
        });
    }
    if workloads.contains_key("docker") && !snap.docker_containers.is_empty() {
        steps.push(Step::StopContainers {
            ids: snap.docker_containers.clone(),
            grace_secs: settings.docker.stop_grace_secs,
        });
    }
    if workloads.contains_key("docker") && !snap.containerd_tasks.is_empty() {
        steps.push(Step::StopTasks {
            tasks: snap.containerd_tasks.clone(),
            grace_secs: settings.docker.stop_grace_secs,
        });
    }
    let mut mask = vec![];
    for u in unit_workload.keys() {
        match facts(u) {
            _ if unmasked.contains(u) => {}
            Some(f) if f.is_transient() => {}
            Some(f) if !f.maskable() => warnings.push(format!(
                "{u}: unit file {} outranks a runtime mask: held by ade-prep-generator's mask alone (the package \
                 installs it)",
                f.fragment_path
            )),
            _ => mask.push(u.clone()),
        }
    }
    let masking = !mask.is_empty();
    if masking {
        steps.push(Step::MaskUnits { units: mask });
    }
    let (triggers, services): (Vec<&String>, Vec<&String>) = unit_workload
        .keys()
        .filter(running)
        .filter(|u| !first.contains(u))
        .partition(|u| facts(u).is_some_and(|f| f.is_trigger()));
    for (wave, units) in [("triggers", triggers), ("services", services)] {
        if !units.is_empty() {
            steps.push(Step::StopUnits {
                wave: wave.into(),
                units: units.into_iter().map(|u| (u.clone(), timeout(u))).collect(),
            });
        }
    }
    let hold: Vec<String> =
        unit_workload.keys().filter(|u| super::hold::holdable(u) && !unmasked.contains(*u)).cloned().collect();
    let holding = !hold.is_empty();
    if holding {
        steps.push(Step::HoldUnits { units: hold });
    }
    if masking || holding {
        steps.push(Step::ActivateMasks);
    }
    steps.push(Step::ClearHolders {
        policy: settings.stray.policy,
        grace_secs: settings.stray.grace_secs,
        stopped_earlier: stopped_earlier.into_iter().filter(|u| unit_workload.contains_key(u)).collect(),
    });
    let frees_root = snap.mounts.iter().any(|m| m.mount == std::path::Path::new("/"));
    if super::steps::selinux::needed(snap.selinux_enforcing, frees_root) {
        steps.push(Step::SelinuxPermissive);
    }
    let mut targets = vec![];
    for held in &snap.mounts {
        let mut pids = held.pids.clone();
        pids.sort_unstable();
        let holders = pids
            .iter()
            .filter_map(|pid| snap.holders.iter().find(|(h, _)| h.pid == *pid))
            .map(|(h, c)| {
                let what = c.workload.as_deref().map_or(class_word(c.class).to_string(), |w| format!("workload {w}"));
                format!("pid {} {} ({}, {what})", h.pid, h.comm, h.unit.as_deref().unwrap_or("no unit"))
            })
            .collect();
        if held.mount != std::path::Path::new("/") && !held.kernel.is_empty() {
            let list: Vec<String> = held.kernel.iter().map(|k| k.display().to_string()).collect();
            warnings.push(format!(
                "{}: {} keep(s) a plain umount from succeeding, and ade-prep does not unmount or swapoff them: ADE \
                 would skip this data volume (DiskUtil.py:597-599, handle.py:1991-1993)",
                held.mount.display(),
                list.join(" ")
            ));
        }
        targets.push(Target { mount: held.mount.clone(), holders, kernel: held.kernel.clone() });
    }
    Ok(Plan { mounts: targets, steps, left_alone, warnings, blockers })
}

impl Plan {
    /// The filesystems being freed.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.mounts.iter().map(|t| t.mount.clone()).collect()
    }
}

fn class_word(c: Class) -> &'static str {
    match c {
        Class::Workload => "workload without a catalogue entry",
        Class::Protected => "protected",
        Class::Other => "other",
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::WaitForExtensions { timeout_secs } => {
                write!(f, "wait for other extension handlers to finish (at most {timeout_secs} s)")
            }
            Step::TakeLock => write!(f, "take the serialisation lock for the window"),
            Step::PreStop { workload, command } => write!(
                f,
                "run pre-stop of {workload} as {}: {} (timeout {} s, success on exit {:?})",
                command.user,
                command.argv.join(" "),
                command.timeout_secs,
                command.ok_exit_codes
            )
            .and_then(|()| match &command.only_if {
                Some(c) => {
                    write!(f, ", only if {} exits 0 and answers other than {:?}", c.argv.join(" "), c.unless_stdout)
                }
                None => Ok(()),
            }),
            Step::StopContainers { ids, grace_secs } => {
                write!(f, "docker stop -t {grace_secs} {} ({} containers)", ids.join(" "), ids.len())
            }
            Step::StopTasks { tasks, grace_secs } => {
                let list: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
                write!(
                    f,
                    "stop containerd's own tasks (SIGTERM, grace {grace_secs} s, SIGKILL, ctr task delete): {}",
                    list.join(", ")
                )
            }
            Step::MaskUnits { units } => {
                write!(f, "write runtime masks (effective at the reload): {}", units.join(" "))
            }
            Step::HoldUnits { units } => write!(
                f,
                "write the hold list {} (ade-prep-generator masks these at the reload, units in /etc included, \
                 until restore): {}",
                crate::paths::HOLD_FILE,
                units.join(" ")
            ),
            Step::ActivateMasks => write!(f, "reload systemd: the masks take effect for the window"),
            Step::StopUnits { wave, units } => {
                let list: Vec<String> = units.iter().map(|(u, t)| format!("{u} ({t} s)")).collect();
                write!(f, "stop {wave} concurrently: {}", list.join(" "))
            }
            Step::ClearHolders { policy, grace_secs, stopped_earlier } => {
                write!(
                    f,
                    "re-scan; kill leftovers of stopped units; processes in no unit: {policy} (grace {grace_secs} s)"
                )?;
                if !stopped_earlier.is_empty() {
                    write!(f, "; also the leftovers of {} (stopped before prepare)", stopped_earlier.join(" "))?;
                }
                Ok(())
            }
            Step::SelinuxPermissive => write!(f, "set SELinux permissive (enforcing now)"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.mounts.iter().map(|t| t.mount.display().to_string()).collect();
        writeln!(f, "plan to free {}:", names.join(", "))?;
        if self.mounts.len() > 1 || self.mounts.iter().any(|t| t.mount != std::path::Path::new("/")) {
            for t in &self.mounts {
                let mut by: Vec<String> = t.holders.clone();
                by.extend(t.kernel.iter().map(|k| format!("{} (kernel: mount below or swap)", k.display())));
                let by = if by.is_empty() { "nothing".to_string() } else { by.join("; ") };
                let mount = t.mount.display().to_string();
                writeln!(
                    f,
                    "  {} held by: {}",
                    crate::text::escape_controls(&mount),
                    crate::text::escape_controls(&by)
                )?;
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>3}. {s}", i + 1)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for b in &self.blockers {
            writeln!(f, "blocker: {b}")?;
        }
        if !self.left_alone.is_empty() {
            writeln!(f, "left alone ({}):", self.left_alone.len())?;
            for l in &self.left_alone {
                writeln!(f, "     {l}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::testing::procs::holder;
    use crate::window::snapshot::{Held, UnitFacts};

    fn unit(id: &str, active: &str, triggered_by: &[&str]) -> (String, UnitFacts) {
        (
            id.into(),
            UnitFacts {
                id: id.into(),
                load_state: "loaded".into(),
                active_state: crate::systemd::ActiveState::parse(active),
                triggered_by: triggered_by.iter().map(|s| s.to_string()).collect(),
                fragment_path: format!("/lib/systemd/system/{id}"),
                stopped_with: vec![],
                refuse_manual_stop: false,
                transient: false,
            },
        )
    }

    fn snap(holders: Vec<Holder>, units: Vec<(String, UnitFacts)>, s: &Settings) -> Snapshot {
        let pids = holders.iter().map(|h| h.pid).collect();
        Snapshot {
            mounts: vec![Held { mount: "/".into(), pids, kernel: vec![] }],
            holders: holders.into_iter().map(|h| (h.clone(), classify(&h, s))).collect(),
            units: units.into_iter().collect(),
            selinux_enforcing: false,
            docker_containers: vec![],
            containerd_tasks: vec![],
            own_units: Default::default(),
            quorum: None,
        }
    }

    /// A Pacemaker node: pacemakerd and corosync hold `/` (their logs), corosync's quorum as given.
    fn cluster_node(q: Option<Result<crate::window::quorum::Quorum, String>>, s: &Settings) -> Snapshot {
        let mut sn = snap(
            vec![holder(50, "pacemakerd", Some("pacemaker.service")), holder(41, "corosync", Some("corosync.service"))],
            vec![unit("pacemaker.service", "active", &[]), unit("corosync.service", "active", &[])],
            s,
        );
        sn.quorum = q;
        sn
    }

    #[test]
    fn a_unit_that_refuses_a_manual_stop_is_left_to_the_unit_it_goes_with() {
        // sbd.service: PartOf=corosync.service (corosync's ConsistsOf), RefuseManualStop=yes.
        let s = Settings::default();
        let mut sn = cluster_node(None, &s);
        sn.units.get_mut("corosync.service").unwrap().stopped_with = vec!["sbd.service".into()];
        let (id, mut sbd) = unit("sbd.service", "active", &[]);
        sbd.refuse_manual_stop = true;
        sn.units.insert(id, sbd);
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let text = format!("{:?}", p.steps);
        assert!(!text.contains("sbd.service"), "sbd stopped, masked or held by ade-prep: {text}");
        assert!(
            p.warnings.iter().any(|w| w.starts_with(
                "sbd.service refuses a stop of its own (RefuseManualStop=yes): systemd stops it with corosync.service"
            )),
            "{:?}",
            p.warnings
        );
        // Without RefuseManualStop it is stopped and restored like any unit systemd stops with a workload's.
        sn.units.get_mut("sbd.service").unwrap().refuse_manual_stop = false;
        let p = plan(&sn, &s).unwrap();
        assert!(format!("{:?}", p.steps).contains("(\"sbd.service\", 1800)"), "{:?}", p.steps);
    }

    #[test]
    fn a_cluster_node_is_put_in_standby_then_stopped_unless_its_leave_would_lose_the_quorum() {
        let s = Settings::default();
        let q = |total, quorum| crate::window::quorum::Quorum {
            quorate: true,
            expected_votes: 3,
            total_votes: total,
            quorum,
            own_votes: 1,
            flags: vec!["Quorate".into()],
        };
        // Three members up: the leave keeps the quorum. Standby and its wait, then both units stopped.
        let p = plan(&cluster_node(Some(Ok(q(3, 2))), &s), &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let pre: Vec<String> = p
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::PreStop { workload, command } if workload == "pacemaker" => Some(command.argv.join(" ")),
                _ => None,
            })
            .collect();
        assert_eq!(
            pre,
            ["crm_attribute --type nodes --name standby --update on", "crm_resource --wait --timeout=900s"]
        );
        let stops = p.steps.iter().find_map(|st| match st {
            Step::StopUnits { units, .. } => Some(units.clone()),
            _ => None,
        });
        assert_eq!(stops.unwrap(), [("corosync.service".to_string(), 1800), ("pacemaker.service".to_string(), 1800)]);
        // One member down already: this leave would take the other one below quorum. Refused, naming why.
        let p = plan(&cluster_node(Some(Ok(q(2, 2))), &s), &s).unwrap();
        assert_eq!(p.blockers.len(), 1, "{:?}", p.blockers);
        assert!(
            p.blockers[0].starts_with(
                "workload pacemaker: this node's cluster would lose quorum: stopping it would leave the cluster 1 of \
                 3 expected votes, below its quorum of 2"
            ),
            "{}",
            p.blockers[0]
        );
        // Unreadable: refused too.
        let p = plan(&cluster_node(Some(Err("corosync-quorumtool -s: exited Some(1)".into())), &s), &s).unwrap();
        assert!(p.blockers[0].contains("its quorum cannot be read: corosync-quorumtool -s: exited Some(1)"), "{p:?}");
        // Corosync companion: stopped with pacemaker even when only pacemaker holds `/`.
        let mut sn = cluster_node(Some(Ok(q(3, 2))), &s);
        sn.holders.retain(|(h, _)| h.comm == "pacemakerd");
        let p = plan(&sn, &s).unwrap();
        assert!(format!("{p:?}").contains("(\"corosync.service\", 1800)"), "{p:?}");
    }

    #[test]
    fn a_leftover_of_a_workload_unit_stopped_before_is_refused_under_report_and_ended_under_terminate() {
        let mut s = Settings::default();
        let sn = snap(
            vec![holder(10, "mongod", Some("mongod.service")), holder(11, "dockerd", Some("docker.service"))],
            vec![unit("mongod.service", "inactive", &[]), unit("docker.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(
            p.blockers
                .iter()
                .any(|b| b.contains("pid 10 mongod") && b.contains("mongod.service, which is not running")),
            "{:?}",
            p.blockers
        );
        assert!(p.blockers.iter().any(|b| b.contains("or set [stray] policy = \"terminate\"")), "{:?}", p.blockers);
        // Under terminate: no blocker; the unit is masked (not stopped: it is inactive) and its leftovers are
        // ended when the holders are cleared.
        s.stray.policy = StrayPolicy::Terminate;
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert!(p.steps.contains(&Step::MaskUnits { units: vec!["docker.service".into(), "mongod.service".into()] }));
        assert!(p
            .steps
            .contains(&Step::StopUnits { wave: "services".into(), units: vec![("docker.service".into(), 90)] }));
        assert!(p.steps.contains(&Step::ClearHolders {
            policy: StrayPolicy::Terminate,
            grace_secs: s.stray.grace_secs,
            stopped_earlier: vec!["mongod.service".into()]
        }));
        assert!(p.to_string().contains("also the leftovers of mongod.service (stopped before prepare)"), "{p}");
    }

    #[test]
    fn other_writers_are_named_under_report_and_stopped_held_and_restored_like_workloads_under_stop() {
        let mut s = Settings::default();
        let writing = |pid, comm: &str, unit: Option<&str>| {
            let mut x = holder(pid, comm, unit);
            x.writable_fds = 1;
            x
        };
        let mut user = writing(21, "nginx", Some("session-3.scope"));
        user.uids = Some([1000, 1000]);
        user.cgroup = Some("/user.slice/user-1000.slice/session-3.scope".into());
        let mut transient = unit("run-r9.service", "active", &[]);
        transient.1.transient = true;
        let mut auditd = unit("auditd.service", "active", &[]);
        auditd.1.refuse_manual_stop = true;
        let holders = || {
            vec![
                holder(10, "mongod", Some("mongod.service")),
                writing(20, "logger", Some("ade-writer.service")),
                user.clone(),
                writing(22, "cfg", Some("cloud-final.service")),
                writing(23, "job", Some("run-r9.service")),
                holder(24, "reader", Some("reader.service")),
                writing(25, "auditd", Some("auditd.service")),
            ]
        };
        let units = || {
            vec![
                unit("mongod.service", "active", &[]),
                unit("ade-writer.service", "active", &["ade-writer.timer"]),
                unit("ade-writer.timer", "active", &[]),
                unit("cloud-final.service", "active", &[]),
                transient.clone(),
                auditd.clone(),
            ]
        };
        let mut sn = snap(holders(), units(), &s);
        sn.own_units.insert("cloud-final.service".into());
        // report (the default): each named, nothing but the workload stopped.
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let stops: Vec<&Step> = p.steps.iter().filter(|s| matches!(s, Step::StopUnits { .. })).collect();
        assert_eq!(stops, [&Step::StopUnits { wave: "services".into(), units: vec![("mongod.service".into(), 90)] }]);
        let named = |p: &Plan, what: &str| p.warnings.iter().any(|w| w.contains(what));
        assert!(named(&p, "other writer ade-writer.service (pid 20): left to ADE ([policy] writers = \"report\""));
        assert!(named(&p, "other writer pid 21 nginx (a user's process"), "{:?}", p.warnings);
        // stop: the writer's service and its timer stopped, masked and held like a workload's; the user's process,
        // ade-prep's own unit and a transient service left running, each named; a reader is no writer.
        s.policy.writers = WritersPolicy::Stop;
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert!(p.steps.contains(&Step::MaskUnits {
            units: vec!["ade-writer.service".into(), "ade-writer.timer".into(), "mongod.service".into()]
        }));
        assert!(p.steps.contains(&Step::StopUnits {
            wave: "triggers".into(),
            units: vec![("ade-writer.timer".into(), WRITER_STOP_TIMEOUT_SECS)]
        }));
        assert!(p.steps.contains(&Step::StopUnits {
            wave: "services".into(),
            units: vec![("ade-writer.service".into(), WRITER_STOP_TIMEOUT_SECS), ("mongod.service".into(), 90)]
        }));
        assert!(p.steps.contains(&Step::HoldUnits {
            units: vec!["ade-writer.service".into(), "ade-writer.timer".into(), "mongod.service".into()]
        }));
        assert!(named(&p, "other writer pid 21 nginx (a user's process"), "{:?}", p.warnings);
        assert!(named(&p, "cloud-final.service runs ade-prep, left running"), "{:?}", p.warnings);
        assert!(named(&p, "run-r9.service is transient"), "{:?}", p.warnings);
        assert!(named(&p, "auditd.service refuses a manual stop"), "{:?}", p.warnings);
        let text = p.to_string();
        assert!(!text.contains("other writer pid 24"), "a reader is no writer: {text}");
        assert!(!text.contains("logger (other"), "stopped, so not left alone: {text}");
        assert!(text.contains("reader (other, pid 24)"), "a reader is left alone: {text}");
    }

    #[test]
    fn kubelet_is_stopped_first_before_the_pods_tasks_and_containerd() {
        let s = Settings::default();
        let mut sn = snap(
            vec![holder(10, "kubelet", Some("kubelet.service")), holder(11, "containerd", Some("containerd.service"))],
            vec![unit("kubelet.service", "active", &[]), unit("containerd.service", "active", &[])],
            &s,
        );
        let pod = crate::window::ctr::Task { namespace: "k8s.io".into(), id: "pod-a".into(), state: "running".into() };
        sn.containerd_tasks = vec![pod.clone()];
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let at = |want: &Step| p.steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want:?} not in {p}"));
        let kubelet = at(&Step::StopUnits {
            wave: "kubelet (before the containers)".into(),
            units: vec![("kubelet.service".into(), 90)],
        });
        let tasks = at(&Step::StopTasks { tasks: vec![pod], grace_secs: s.docker.stop_grace_secs });
        let containerd =
            at(&Step::StopUnits { wave: "services".into(), units: vec![("containerd.service".into(), 90)] });
        assert!(kubelet < tasks && tasks < containerd, "{p}");
        assert!(p
            .steps
            .contains(&Step::HoldUnits { units: vec!["containerd.service".into(), "kubelet.service".into()] }));
        // Without kubelet running: no such wave.
        let sn = snap(
            vec![holder(11, "containerd", Some("containerd.service"))],
            vec![unit("containerd.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(!p.to_string().contains("kubelet"), "{p}");
    }

    #[test]
    fn docker_with_socket_and_containerd_masks_all_and_stops_triggers_first() {
        let s = Settings::default();
        let mut sn = snap(
            vec![
                holder(10, "dockerd", Some("docker.service")),
                holder(11, "containerd", Some("containerd.service")),
                holder(12, "sshd", Some("ssh.service")),
            ],
            vec![
                unit("docker.service", "active", &["docker.socket"]),
                unit("docker.socket", "active", &[]),
                unit("containerd.service", "active", &[]),
                unit("docker-abc.scope", "active", &[]),
            ],
            &s,
        );
        sn.holders.push({
            let h = holder(13, "nginx", Some("docker-abc.scope"));
            (h.clone(), classify(&h, &s))
        });
        sn.docker_containers = vec!["abc".into()];
        let p = plan(&sn, &s).unwrap();
        let kinds: Vec<&str> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::WaitForExtensions { .. } => "wait",
                Step::TakeLock => "lock",
                Step::StopContainers { .. } => "containers",
                Step::StopTasks { .. } => "tasks",
                Step::MaskUnits { .. } => "mask",
                Step::ActivateMasks => "reload",
                Step::HoldUnits { .. } => "hold",
                Step::StopUnits { wave, .. } if wave == "triggers" => "stop-triggers",
                Step::StopUnits { .. } => "stop-services",
                Step::ClearHolders { .. } => "clear",
                Step::PreStop { .. } => "prestop",
                Step::SelinuxPermissive => "selinux",
            })
            .collect();
        assert_eq!(
            kinds,
            ["wait", "lock", "containers", "mask", "stop-triggers", "stop-services", "hold", "reload", "clear"]
        );
        assert_eq!(
            p.steps[6],
            Step::HoldUnits {
                units: vec!["containerd.service".into(), "docker.service".into(), "docker.socket".into()]
            },
            "scopes are not held"
        );
        assert_eq!(
            p.steps[3],
            Step::MaskUnits {
                units: vec!["containerd.service".into(), "docker.service".into(), "docker.socket".into()]
            }
        );
        assert_eq!(p.steps[4], Step::StopUnits { wave: "triggers".into(), units: vec![("docker.socket".into(), 90)] });
        let Step::StopUnits { units, .. } = &p.steps[5] else { panic!() };
        let names: Vec<&str> = units.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(names, ["containerd.service", "docker-abc.scope", "docker.service"]);
        assert_eq!(p.left_alone.len(), 1, "sshd is left alone");
    }

    #[test]
    fn containerds_own_tasks_are_stopped_after_the_containers_and_before_any_unit_is_touched() {
        let s = Settings::default();
        let task = |ns: &str, id: &str, state: &str| crate::window::ctr::Task {
            namespace: ns.into(),
            id: id.into(),
            state: state.into(),
        };
        let mut sn = snap(
            vec![holder(11, "containerd", Some("containerd.service"))],
            vec![unit("containerd.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(!p.steps.iter().any(|st| matches!(st, Step::StopTasks { .. })), "no task, no step");
        sn.docker_containers = vec!["abc".into()];
        sn.containerd_tasks = vec![task("demo", "web", "running"), task("k8s.io", "pause", "paused")];
        let p = plan(&sn, &s).unwrap();
        let at = |f: fn(&Step) -> bool| p.steps.iter().position(f).unwrap();
        let tasks = at(|st| matches!(st, Step::StopTasks { .. }));
        assert!(at(|st| matches!(st, Step::StopContainers { .. })) < tasks);
        assert!(tasks < at(|st| matches!(st, Step::MaskUnits { .. })), "{:?}", p.steps);
        assert_eq!(p.steps[tasks], Step::StopTasks { tasks: sn.containerd_tasks.clone(), grace_secs: 30 });
        assert!(
            p.to_string().contains(
                "stop containerd's own tasks (SIGTERM, grace 30 s, SIGKILL, ctr task delete): task web in namespace \
                 demo, task pause in namespace k8s.io (paused)"
            ),
            "{p}"
        );
    }

    #[test]
    fn a_unit_file_in_etc_is_held_by_the_generator_after_the_stop_not_runtime_masked() {
        let s = Settings::default();
        let (id, mut f) = unit("mongod.service", "active", &[]);
        f.fragment_path = "/etc/systemd/system/mongod.service".into();
        let sn = snap(vec![holder(20, "mongod", Some("mongod.service"))], vec![(id, f)], &s);
        let p = plan(&sn, &s).unwrap();
        assert!(!p.steps.iter().any(|st| matches!(st, Step::MaskUnits { .. })));
        let at = |want: &Step| p.steps.iter().position(|st| st == want).unwrap_or_else(|| panic!("{want:?}"));
        let stop = at(&Step::StopUnits { wave: "services".into(), units: vec![("mongod.service".into(), 90)] });
        let hold = at(&Step::HoldUnits { units: vec!["mongod.service".into()] });
        let reload = at(&Step::ActivateMasks);
        assert!(stop < hold && hold < reload, "the generator's mask is loaded only after the stop: {:?}", p.steps);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("/etc/systemd/system/mongod.service outranks a runtime mask"));
    }

    #[test]
    fn units_systemd_stops_with_a_workload_unit_are_stopped_and_held_too_and_shown() {
        let s = Settings::default();
        let (id, mut f) = unit("mongod.service", "active", &[]);
        f.stopped_with = vec!["backup-agent.service".into(), "mongod-exporter.service".into()];
        let sn = snap(
            vec![holder(20, "mongod", Some("mongod.service"))],
            vec![
                (id, f),
                unit("backup-agent.service", "active", &[]),
                unit("mongod-exporter.service", "inactive", &[]),
            ],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert!(p.steps.contains(&Step::StopUnits {
            wave: "services".into(),
            units: vec![("backup-agent.service".into(), 90), ("mongod.service".into(), 90)]
        }));
        assert!(p
            .steps
            .contains(&Step::HoldUnits { units: vec!["backup-agent.service".into(), "mongod.service".into()] }));
        assert!(p
            .to_string()
            .contains("also stopped and restored: backup-agent.service (systemd stops it with mongod.service)"));
        assert!(!p.to_string().contains("mongod-exporter"), "an inactive dependent is not stopped");
    }

    #[test]
    fn a_stray_under_report_is_refused_before_any_change_and_a_container_task_never_is() {
        let mut s = Settings::default();
        let mut in_task = holder(32, "mongod", None);
        in_task.shim = Some(40);
        let sn = snap(
            vec![
                holder(20, "mongod", Some("mongod.service")),
                holder(30, "mongod", None),
                holder(31, "mongod", Some("run-r1.scope")),
                in_task,
                holder(40, "mongod", None), // the shim of pid 32's task
            ],
            vec![unit("mongod.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        let b = p.blockers.join("\n");
        assert!(b.contains("pid 30 mongod (workload mongodb) runs in no unit, which no stop ends (a stray"), "{b}");
        assert!(b.contains("pid 31 mongod (workload mongodb) runs in run-r1.scope, which no stop ends"), "{b}");
        assert!(b.contains("or set [stray] policy = \"terminate\" in /etc/ade-prep/config.toml"), "{b}");
        assert!(!b.contains("pid 32") && !b.contains("pid 40") && !b.contains("pid 20"), "{b}");
        s.stray.policy = StrayPolicy::Terminate;
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "terminate ends strays in the window: {:?}", p.blockers);
    }

    #[test]
    fn a_target_mount_or_timer_systemd_stops_with_a_workload_unit_is_stopped_and_restored_never_masked_nor_held() {
        let s = Settings::default();
        let (id, mut f) = unit("mongod.service", "active", &[]);
        f.stopped_with =
            vec!["mongo.target".into(), "mnt-data.mount".into(), "backup.timer".into(), "exporter.service".into()];
        let sn = snap(
            vec![holder(20, "mongod", Some("mongod.service"))],
            vec![
                (id, f),
                unit("mongo.target", "active", &[]),
                unit("mnt-data.mount", "active", &[]),
                unit("backup.timer", "active", &[]),
                unit("exporter.service", "active", &[]),
            ],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        assert!(p.steps.contains(&Step::MaskUnits { units: vec!["exporter.service".into(), "mongod.service".into()] }));
        assert!(p.steps.contains(&Step::HoldUnits { units: vec!["exporter.service".into(), "mongod.service".into()] }));
        assert!(p
            .steps
            .contains(&Step::StopUnits { wave: "triggers".into(), units: vec![("backup.timer".into(), 90)] }));
        assert!(p.steps.contains(&Step::StopUnits {
            wave: "services".into(),
            units: vec![
                ("exporter.service".into(), 90),
                ("mnt-data.mount".into(), 90),
                ("mongo.target".into(), 90),
                ("mongod.service".into(), 90)
            ]
        }));
        for d in ["mongo.target", "mnt-data.mount", "backup.timer"] {
            assert!(p.to_string().contains(&format!("also stopped and restored: {d} (systemd stops it with")), "{p}");
        }
    }

    #[test]
    fn a_protected_unit_systemd_would_stop_with_the_workload_blocks_prepare() {
        let s = Settings::default();
        let (id, mut f) = unit("mongod.service", "active", &[]);
        f.stopped_with = vec!["cron.service".into()];
        let sn = snap(
            vec![holder(20, "mongod", Some("mongod.service"))],
            vec![(id, f), unit("cron.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert_eq!(p.blockers.len(), 1, "{:?}", p.blockers);
        assert!(p.blockers[0].contains("cron.service is tied to workload mongodb"), "{}", p.blockers[0]);
        assert!(p.to_string().contains("blocker: cron.service"));
    }

    #[test]
    fn only_units_the_workloads_globs_name_are_stopped_other_holders_are_blockers_with_what_to_do() {
        let mut s = Settings::default();
        s.workloads.get_mut("docker").unwrap().companion_units.push("sshd.service".into());
        let mut sn = snap(
            vec![
                holder(10, "dockerd", Some("user@1000.service")), // rootless docker
                holder(11, "mongod", Some("systemd-nspawn@c1.service")),
                holder(12, "mongod", Some("cron.service")),
                holder(13, "mongod", Some("mongod-custom.service")),
                holder(14, "mongod", Some("cloud-final.service")), // runs ade-prep
                holder(15, "dockerd", Some("docker.service")),
                holder(16, "mongod", Some("nspawn-run-job.scope")), // ade-prep's scope, unnamed: a stray
            ],
            vec![
                unit("docker.service", "active", &[]),
                unit("sshd.service", "active", &[]),
                unit("mongod-custom.service", "active", &[]),
                unit("cloud-final.service", "active", &[]),
            ],
            &s,
        );
        sn.own_units = ["cloud-final.service".to_string(), "nspawn-run-job.scope".to_string()].into();
        let p = plan(&sn, &s).unwrap();
        let stops: Vec<&str> = p
            .steps
            .iter()
            .flat_map(|st| match st {
                Step::StopUnits { units, .. } => units.iter().map(|(u, _)| u.as_str()).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(stops, ["docker.service"], "{:?}", p.steps);
        let b = p.blockers.join("\n");
        for want in [
            "pid 10 dockerd (workload docker) runs in user@1000.service, which ade-prep never stops",
            "pid 11 mongod (workload mongodb) runs in systemd-nspawn@c1.service, which ade-prep never stops",
            "pid 12 mongod (workload mongodb) runs in cron.service, which ade-prep never stops",
            "runs in mongod-custom.service, which the workload's units (mongod.service mongodb.service) do not name: \
             add mongod-custom.service to [workloads.mongodb] units",
            "pid 14 mongod (workload mongodb) runs in cloud-final.service, the unit that runs ade-prep",
        ] {
            assert!(b.contains(want), "{want}\n---\n{b}");
        }
        assert!(
            b.contains("pid 16 mongod (workload mongodb) runs in nspawn-run-job.scope, which no stop ends (a stray"),
            "a stray in ade-prep's own scope is the stray policy's (report: refused before any change): {b}"
        );
        assert!(!b.contains("nspawn-run-job.scope, the unit that runs ade-prep"), "{b}");
        assert!(
            p.warnings.iter().any(|w| w.contains("sshd.service") && w.contains("left running")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn a_workload_process_in_a_scope_its_units_do_not_name_is_a_stray_not_a_unit_to_stop() {
        let mut s = Settings::default();
        s.workloads.get_mut("mongodb").unwrap().units.push("mongo-*.scope".into());
        let sn = snap(
            vec![
                holder(20, "mongod", Some("session-3.scope")),
                holder(21, "mongod", Some("mongo-1.scope")),
                holder(22, "dockerd", Some("docker-abc.scope")),
            ],
            vec![unit("mongo-1.scope", "active", &[]), unit("docker-abc.scope", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        let stops: Vec<&Step> = p.steps.iter().filter(|st| matches!(st, Step::StopUnits { .. })).collect();
        assert_eq!(
            stops,
            [&Step::StopUnits {
                wave: "services".into(),
                units: vec![("docker-abc.scope".into(), 90), ("mongo-1.scope".into(), 90)]
            }],
            "session-3.scope is left to the stray policy"
        );
    }

    #[test]
    fn nothing_to_stop_still_locks_and_switches_selinux() {
        let s = Settings::default();
        let mut sn = snap(vec![holder(12, "vim", Some("session-1.scope"))], vec![], &s);
        sn.selinux_enforcing = true;
        let p = plan(&sn, &s).unwrap();
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.steps[1], Step::TakeLock);
        assert_eq!(p.steps[3], Step::SelinuxPermissive);
    }

    #[test]
    fn inactive_units_are_masked_not_stopped_and_timeouts_come_from_the_workload() {
        let mut s = Settings::default();
        s.workloads.get_mut("mongodb").unwrap().stop_timeout_secs = 7;
        let sn = snap(
            vec![holder(20, "mongod", Some("mongod.service"))],
            vec![unit("mongod.service", "active", &["mongod.timer"]), unit("mongod.timer", "inactive", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        assert!(p.steps.contains(&Step::MaskUnits { units: vec!["mongod.service".into(), "mongod.timer".into()] }));
        assert!(p
            .steps
            .contains(&Step::StopUnits { wave: "services".into(), units: vec![("mongod.service".into(), 7)] }));
        assert!(!p.steps.iter().any(|st| matches!(st, Step::StopUnits { wave, .. } if wave == "triggers")));
    }

    #[test]
    fn cassandra_drains_first_and_sap_pre_stops_are_per_instance() {
        let s = Settings::default();
        let mut j = holder(30, "java", Some("cassandra.service"));
        j.cmdline = vec!["java".into(), "org.apache.cassandra.service.CassandraDaemon".into()];
        let sap = holder(31, "sapstartsrv", Some("SAPHN1_00.service"));
        let sn = snap(
            vec![j, sap],
            vec![unit("cassandra.service", "active", &[]), unit("SAPHN1_00.service", "active", &[])],
            &s,
        );
        let p = plan(&sn, &s).unwrap();
        let pre: Vec<String> = p
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::PreStop { command, .. } => Some(format!("{}: {}", command.user, command.argv.join(" "))),
                _ => None,
            })
            .collect();
        assert_eq!(
            pre,
            [
                "root: nodetool drain",
                "hn1adm: sapcontrol -nr 00 -function StopSystem ALL",
                "hn1adm: sapcontrol -nr 00 -function WaitforStopped 600 10"
            ]
        );
    }

    #[test]
    fn sap_without_an_instance_is_an_error_naming_the_workload() {
        let s = Settings::default();
        let sn = snap(vec![holder(40, "hdbindexserver", None)], vec![], &s);
        assert_eq!(plan(&sn, &s).unwrap_err(), PlanError::NoSapInstance { workload: "sap".into() });
    }

    #[test]
    fn sap_instance_from_unit_or_profile() {
        assert_eq!(sap_instance(Some("SAPABC_02.service"), &[]), Some(("ABC".into(), "02".into())));
        let cmd = vec!["sapstartsrv".into(), "pf=/usr/sap/HN1/SYS/profile/HN1_HDB00_vm1".into(), "-D".into()];
        assert_eq!(sap_instance(None, &cmd), Some(("HN1".into(), "00".into())));
        assert_eq!(sap_instance(Some("sapinit.service"), &["x".into()]), None);
    }

    #[test]
    fn several_mounts_are_freed_as_one_window_with_what_holds_each_shown() {
        let s = Settings::default();
        let mut h_data = holder(20, "mongod", Some("mongod.service"));
        h_data.cmdline = vec!["mongod".into(), "--dbpath".into(), "/data".into()];
        let holders =
            vec![h_data, holder(10, "dockerd", Some("docker.service")), holder(30, "vim", Some("session-2.scope"))];
        let mut sn =
            snap(holders, vec![unit("mongod.service", "active", &[]), unit("docker.service", "active", &[])], &s);
        // ADE's order: the data volumes first, then / (handle.py:2168-2209); mongod holds /data and / (its exe).
        sn.mounts = vec![
            Held { mount: "/data".into(), pids: vec![20, 30], kernel: vec!["/data/snapshots".into()] },
            Held { mount: "/logs".into(), pids: vec![], kernel: vec![] },
            Held { mount: "/".into(), pids: vec![10, 20], kernel: vec![] },
        ];
        let p = plan(&sn, &s).unwrap();
        assert_eq!(p.mount_points(), [PathBuf::from("/data"), "/logs".into(), "/".into()]);
        let stops: Vec<&Step> = p.steps.iter().filter(|st| matches!(st, Step::StopUnits { .. })).collect();
        assert_eq!(
            stops,
            [&Step::StopUnits {
                wave: "services".into(),
                units: vec![("docker.service".into(), 90), ("mongod.service".into(), 90)]
            }],
            "one stop per unit, whichever mounts it holds"
        );
        assert_eq!(
            p.mounts[0].holders,
            ["pid 20 mongod (mongod.service, workload mongodb)", "pid 30 vim (session-2.scope, other)"]
        );
        assert!(p.mounts[1].holders.is_empty());
        let text = p.to_string();
        assert!(text.starts_with("plan to free /data, /logs, /:\n"), "{text}");
        for want in [
            "  /data held by: pid 20 mongod (mongod.service, workload mongodb); pid 30 vim (session-2.scope, other); \
             /data/snapshots (kernel: mount below or swap)\n",
            "  /logs held by: nothing\n",
            "  / held by: pid 10 dockerd (docker.service, workload docker); pid 20 mongod (mongod.service, workload \
             mongodb)\n",
        ] {
            assert!(text.contains(want), "{want}---\n{text}");
        }
        assert!(
            p.warnings.iter().any(|w| w.starts_with("/data: /data/snapshots keep(s) a plain umount from succeeding")),
            "{:?}",
            p.warnings
        );
        assert_eq!(p.left_alone.len(), 1, "vim is left alone: {:?}", p.left_alone);
    }

    #[test]
    fn a_window_of_data_volumes_only_leaves_selinux_alone_one_with_root_sets_it_permissive() {
        let s = Settings::default();
        let mut sn =
            snap(vec![holder(20, "mongod", Some("mongod.service"))], vec![unit("mongod.service", "active", &[])], &s);
        sn.selinux_enforcing = true;
        assert_eq!(plan(&sn, &s).unwrap().steps.last(), Some(&Step::SelinuxPermissive));
        sn.mounts[0].mount = "/data".into();
        let p = plan(&sn, &s).unwrap();
        assert!(!p.steps.contains(&Step::SelinuxPermissive), "{:?}", p.steps);
        assert!(p.steps.iter().any(|st| matches!(st, Step::StopUnits { .. })), "the holder of /data is still stopped");
    }

    #[test]
    fn an_os_only_plan_prints_as_before_without_a_per_mount_list() {
        let s = Settings::default();
        let sn =
            snap(vec![holder(20, "mongod", Some("mongod.service"))], vec![unit("mongod.service", "active", &[])], &s);
        let text = plan(&sn, &s).unwrap().to_string();
        assert!(text.starts_with("plan to free /:\n  1. wait for other extension handlers"), "{text}");
        assert!(!text.contains("held by"), "{text}");
    }
}
