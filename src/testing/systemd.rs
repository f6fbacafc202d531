//! An in-memory [`ServiceManager`] for other modules' unit tests, with failure injection. Not used by the agent.
//!
//! It behaves as systemd does where the executor can tell: a mask takes effect at the next reload, a masked unit
//! refuses to start (UnitMasked), a unit that is not loaded refuses jobs (NoSuchUnit), a stop leaves the unit
//! inactive, every job counts in `installed_jobs`. Every call is recorded in order ([`FakeSystemd::calls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::systemd::{
    DbusError, FileChange, JobCounters, JobError, JobOp, Reload, ServiceManager, SystemdError, UnitInfo,
};

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// mask_runtime with these units.
    Mask(Vec<String>, Reload),
    /// unmask_runtime with these units.
    Unmask(Vec<String>),
    /// reload (also recorded after each mask and unmask, as the real one does).
    Reload,
    /// kill_unit with this unit and signal.
    Kill(String, i32),
    /// stop_units with this batch.
    Stop(Vec<String>),
    /// start_units with this batch.
    Start(Vec<String>),
}

/// How an injected job failure shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeFailure {
    /// The job ends with this result (failed, timeout, dependency, canceled, ...).
    Result(String),
    /// StartUnit/StopUnit is refused with this D-Bus error name.
    Refused(String),
    /// No result within the timeout (the job is canceled).
    Timeout,
}

#[derive(Debug, Default)]
struct State {
    units: BTreeMap<String, UnitInfo>,
    /// Units with a runtime mask file.
    mask_files: BTreeSet<String>,
    /// Units whose mask is in effect (the files as of the last reload).
    masked: BTreeSet<String>,
    pids: BTreeMap<u32, String>,
    /// Running units stopped while their mask was in effect (their ExecStop and KillMode were lost).
    stopped_masked: Vec<String>,
    calls: Vec<FakeCall>,
    fail_stop: BTreeMap<String, FakeFailure>,
    fail_start: BTreeMap<String, FakeFailure>,
    fail_mask: BTreeSet<String>,
    fail_unmask: BTreeSet<String>,
    next_job: u32,
    /// Units whose start fails while processes of an old instance remain in their cgroup (a leftover holding
    /// the unit's listening socket).
    leftovers_block_start: BTreeSet<String>,
    /// The hold list ade-prep-generator reads at each reload (None: the generator is not installed).
    generator_list: Option<std::path::PathBuf>,
    installed_jobs: u32,
}

/// The fake service manager.
#[derive(Debug, Default)]
pub struct FakeSystemd {
    state: Mutex<State>,
}

/// A loaded service in `active_state` (active: running, with a main pid and a cgroup).
pub fn service(name: &str, active_state: &str) -> UnitInfo {
    let running = active_state == "active";
    UnitInfo {
        id: name.to_string(),
        load_state: "loaded".into(),
        active_state: active_state.into(),
        sub_state: if running { "running" } else { "dead" }.into(),
        unit_file_state: "enabled".into(),
        fragment_path: format!("/lib/systemd/system/{name}"),
        control_group: running.then(|| format!("/system.slice/{name}")),
        main_pid: running.then_some(1000),
        kill_mode: Some("control-group".into()),
        restart: Some("no".into()),
        ..UnitInfo::default()
    }
}

impl FakeSystemd {
    /// The unit whose cgroup holds `pid` (GetUnitByPID); None when systemd knows no unit for it. For the tests
    /// that cross-check the unit read from /proc.
    pub fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        Ok(self.st().pids.get(&pid).cloned())
    }

    /// The manager's job counters, for the tests that prove a dry run queued no job.
    pub fn job_counters(&self) -> Result<JobCounters, SystemdError> {
        Ok(JobCounters { jobs: 0, installed_jobs: self.st().installed_jobs })
    }

    /// No units.
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a unit.
    pub fn with_unit(self, unit: UnitInfo) -> Self {
        self.st().units.insert(unit.id.clone(), unit);
        self
    }
    /// Says `pid` belongs to `unit` (for unit_by_pid).
    pub fn with_pid(self, pid: u32, unit: &str) -> Self {
        self.st().pids.insert(pid, unit.to_string());
        self
    }
    /// Installs the generator: each reload masks the units the hold list at `hold_file` names.
    pub fn with_generator(self, hold_file: &std::path::Path) -> Self {
        self.st().generator_list = Some(hold_file.to_path_buf());
        self
    }
    /// Makes a start of `unit` fail while a process is still counted in its cgroup ([`Self::with_pid`]).
    pub fn leftovers_block_start(self, unit: &str) -> Self {
        self.st().leftovers_block_start.insert(unit.to_string());
        self
    }
    /// Makes every stop of `unit` fail this way.
    pub fn fail_stop(self, unit: &str, how: FakeFailure) -> Self {
        self.st().fail_stop.insert(unit.to_string(), how);
        self
    }
    /// Makes every start of `unit` fail this way.
    pub fn fail_start(self, unit: &str, how: FakeFailure) -> Self {
        self.st().fail_start.insert(unit.to_string(), how);
        self
    }
    /// Makes every mask naming `unit` fail (nothing is masked).
    pub fn fail_mask(self, unit: &str) -> Self {
        self.st().fail_mask.insert(unit.to_string());
        self
    }
    /// Makes every unmask naming `unit` fail (nothing is unmasked).
    pub fn fail_unmask(self, unit: &str) -> Self {
        self.st().fail_unmask.insert(unit.to_string());
        self
    }
    /// The unit file is removed (a package upgrade, a transient unit collected): systemd no longer knows it.
    pub fn forget(&self, unit: &str) {
        self.st().units.remove(unit);
    }
    /// Stops injecting failures for `unit`.
    pub fn heal(&self, unit: &str) {
        let mut st = self.st();
        st.fail_stop.remove(unit);
        st.fail_start.remove(unit);
        st.fail_mask.remove(unit);
        st.fail_unmask.remove(unit);
    }
    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.st().calls.clone()
    }
    /// The units whose runtime mask is in effect (reloaded).
    pub fn masked(&self) -> Vec<String> {
        self.st().masked.iter().cloned().collect()
    }
    /// Running units that were stopped while their mask was in effect: systemd would have skipped their ExecStop
    /// and KillMode (see [`Reload`]); a correct plan leaves this empty.
    pub fn stopped_with_mask_in_effect(&self) -> Vec<String> {
        self.st().stopped_masked.clone()
    }
    /// The units with a runtime mask file, in effect or not.
    pub fn mask_files(&self) -> Vec<String> {
        self.st().mask_files.iter().cloned().collect()
    }

    fn run_jobs(&self, op: JobOp, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        let mut st = self.st();
        let names = batch.iter().map(|(u, _)| u.clone()).collect();
        st.calls.push(if op == JobOp::Stop { FakeCall::Stop(names) } else { FakeCall::Start(names) });
        let mut out = Vec::new();
        for (unit, timeout) in batch {
            out.push((unit.clone(), st.job(op, unit, *timeout)));
        }
        out
    }
}

impl State {
    fn reload(&mut self) {
        self.calls.push(FakeCall::Reload);
        self.masked = self.mask_files.clone();
        // As ade-prep-generator does at each daemon-reload: mask what the hold list names (the real script is
        // tested on its own in src/window/hold.rs and under systemd in tests/nspawn/hold.rs).
        if let Some(text) = self.generator_list.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            self.masked.extend(text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string));
        }
    }

    fn job(&mut self, op: JobOp, unit: &str, timeout: Duration) -> Result<(), JobError> {
        let refused = |name: &str, message: String| {
            Err(JobError::Call { op, unit: unit.to_string(), error: DbusError::named(name, message) })
        };
        let load_state = self.units.get(unit).map_or("not-found", |u| u.load_state.as_str());
        if self.masked.contains(unit) && op == JobOp::Start {
            return refused("org.freedesktop.systemd1.UnitMasked", format!("Unit {unit} is masked."));
        }
        if load_state == "not-found" {
            // As Systemd::run_jobs: a stop of a unit that is not loaded is done (it is not running).
            if op == JobOp::Stop {
                return Ok(());
            }
            return refused("org.freedesktop.systemd1.NoSuchUnit", format!("Unit {unit} not found."));
        }
        let mut failure = if op == JobOp::Stop { self.fail_stop.get(unit) } else { self.fail_start.get(unit) }.cloned();
        if op == JobOp::Start && self.leftovers_block_start.contains(unit) && self.pids.values().any(|u| u == unit) {
            failure = Some(FakeFailure::Result("failed (Address already in use: a leftover holds it)".into()));
        }
        if let Some(FakeFailure::Refused(name)) = &failure {
            return refused(name, format!("injected failure for {unit}"));
        }
        self.next_job += 1;
        self.installed_jobs += 1;
        let running = self.units.get(unit).is_some_and(UnitInfo::is_running);
        if op == JobOp::Stop && running && self.masked.contains(unit) {
            self.stopped_masked.push(unit.to_string());
        }
        let job = format!("/org/freedesktop/systemd1/job/{}", self.next_job);
        let u = self.units.get_mut(unit).expect("checked above");
        match failure {
            Some(FakeFailure::Result(result)) => {
                if op == JobOp::Start {
                    u.active_state = "failed".into();
                    u.sub_state = "failed".into();
                    u.main_pid = None;
                }
                Err(JobError::Result { op, unit: unit.to_string(), job, result })
            }
            Some(FakeFailure::Timeout) => {
                Err(JobError::Timeout { op, unit: unit.to_string(), job, timeout, cancel_error: None })
            }
            Some(FakeFailure::Refused(_)) => unreachable!("handled above"),
            None => {
                let (active, sub) = if op == JobOp::Stop { ("inactive", "dead") } else { ("active", "running") };
                u.active_state = active.into();
                u.sub_state = sub.into();
                u.main_pid = (op == JobOp::Start).then_some(1000 + self.next_job);
                if op == JobOp::Stop {
                    // As systemd does: a stop propagates to the units that Require, BindsTo or are PartOf this one.
                    let consists_of = self.units[unit].consists_of.clone();
                    let hit = |o: &UnitInfo| {
                        o.requires.iter().chain(&o.binds_to).any(|r| r == unit) || consists_of.contains(&o.id)
                    };
                    for other in self.units.values_mut().filter(|o| hit(o)) {
                        other.active_state = "inactive".into();
                        other.sub_state = "dead".into();
                        other.main_pid = None;
                    }
                }
                Ok(())
            }
        }
    }
}

impl ServiceManager for FakeSystemd {
    fn unit(&self, name: &str) -> Result<UnitInfo, SystemdError> {
        let st = self.st();
        let mut u = st.units.get(name).cloned().unwrap_or_else(|| UnitInfo {
            id: name.to_string(),
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            ..UnitInfo::default()
        });
        // The reverse dependencies, as systemd derives them from the other units' Requires= and BindsTo=.
        let by = |f: fn(&UnitInfo) -> &Vec<String>| -> Vec<String> {
            st.units.values().filter(|o| f(o).iter().any(|r| r == name)).map(|o| o.id.clone()).collect()
        };
        u.required_by = by(|o| &o.requires);
        u.bound_by = by(|o| &o.binds_to);
        if st.masked.contains(name) {
            u.load_state = "masked".into();
            u.unit_file_state = "masked-runtime".into();
            u.fragment_path.clear();
        }
        Ok(u)
    }

    fn mask_runtime(&self, units: &[String], reload: Reload) -> Result<Vec<FileChange>, SystemdError> {
        let mut st = self.st();
        st.calls.push(FakeCall::Mask(units.to_vec(), reload));
        if let Some(u) = units.iter().find(|u| st.fail_mask.contains(*u)) {
            return Err(SystemdError::Call {
                what: format!("mask (runtime) {}", units.join(" ")),
                error: DbusError::named("org.freedesktop.DBus.Error.AccessDenied", format!("injected failure for {u}")),
            });
        }
        let mut changes = Vec::new();
        for u in units {
            if st.mask_files.insert(u.clone()) {
                changes.push(FileChange {
                    kind: "symlink".into(),
                    path: format!("/run/systemd/system/{u}"),
                    target: "/dev/null".into(),
                });
            }
        }
        if reload == Reload::Now {
            st.reload();
        }
        Ok(changes)
    }

    fn unmask_runtime(&self, units: &[String]) -> Result<Vec<FileChange>, SystemdError> {
        let mut st = self.st();
        st.calls.push(FakeCall::Unmask(units.to_vec()));
        if let Some(u) = units.iter().find(|u| st.fail_unmask.contains(*u)) {
            return Err(SystemdError::Call {
                what: format!("unmask (runtime) {}", units.join(" ")),
                error: DbusError::named("org.freedesktop.DBus.Error.AccessDenied", format!("injected failure for {u}")),
            });
        }
        let mut changes = Vec::new();
        for u in units {
            if st.mask_files.remove(u) {
                changes.push(FileChange {
                    kind: "unlink".into(),
                    path: format!("/run/systemd/system/{u}"),
                    target: String::new(),
                });
            }
        }
        st.reload();
        Ok(changes)
    }

    fn reload(&self) -> Result<(), SystemdError> {
        self.st().reload();
        Ok(())
    }

    fn stop_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        self.run_jobs(JobOp::Stop, batch)
    }

    fn start_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        self.run_jobs(JobOp::Start, batch)
    }

    fn kill_unit(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        let mut st = self.st();
        st.calls.push(FakeCall::Kill(unit.to_string(), signal));
        if !st.units.contains_key(unit) {
            return Err(SystemdError::Call {
                what: format!("kill {unit} (signal {signal})"),
                error: DbusError::named("org.freedesktop.systemd1.NoSuchUnit", format!("Unit {unit} not loaded.")),
            });
        }
        st.pids.retain(|_, u| u != unit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(units: &[&str]) -> Vec<(String, Duration)> {
        units.iter().map(|u| (u.to_string(), Duration::from_secs(90))).collect()
    }

    #[test]
    fn mask_stop_start_unmask_round_trip() {
        let f = FakeSystemd::new().with_unit(service("db.service", "active"));
        let before = f.job_counters().unwrap();
        let ch = f.mask_runtime(&["db.service".into()], Reload::Later).unwrap();
        assert_eq!(ch[0].path, "/run/systemd/system/db.service");
        assert!(!f.unit("db.service").unwrap().is_masked(), "not before the reload");
        assert_eq!(f.mask_files(), vec!["db.service".to_string()]);
        assert_eq!(f.stop_units(&batch(&["db.service"]))[0].1, Ok(()));
        f.reload().unwrap();
        assert!(f.unit("db.service").unwrap().is_masked());
        assert!(!f.unit("db.service").unwrap().is_running());
        let r = f.start_units(&batch(&["db.service"]));
        assert_eq!(
            r[0].1.as_ref().unwrap_err().to_string(),
            "start db.service: org.freedesktop.systemd1.UnitMasked: Unit db.service is masked."
        );
        f.unmask_runtime(&["db.service".into()]).unwrap();
        assert_eq!(f.start_units(&batch(&["db.service"]))[0].1, Ok(()));
        let u = f.unit("db.service").unwrap();
        assert!(u.is_running() && !u.is_masked() && u.main_pid.is_some());
        assert_eq!(f.job_counters().unwrap().installed_jobs, before.installed_jobs + 2);
        assert_eq!(
            f.calls(),
            vec![
                FakeCall::Mask(vec!["db.service".into()], Reload::Later),
                FakeCall::Stop(vec!["db.service".into()]),
                FakeCall::Reload,
                FakeCall::Start(vec!["db.service".into()]),
                FakeCall::Unmask(vec!["db.service".into()]),
                FakeCall::Reload,
                FakeCall::Start(vec!["db.service".into()]),
            ]
        );
    }

    #[test]
    fn injected_failures_name_the_unit() {
        let f = FakeSystemd::new()
            .with_unit(service("a.service", "active"))
            .with_unit(service("b.service", "active"))
            .with_unit(service("c.service", "inactive"))
            .fail_stop("a.service", FakeFailure::Result("timeout".into()))
            .fail_stop("b.service", FakeFailure::Timeout)
            .fail_start("c.service", FakeFailure::Result("failed".into()))
            .fail_mask("b.service");
        let r = f.stop_units(&batch(&["a.service", "b.service", "missing.service"]));
        assert_eq!(r[0].1.as_ref().unwrap_err().to_string(), "stop a.service: job result 'timeout'");
        assert!(matches!(&r[1].1, Err(JobError::Timeout { unit, .. }) if unit == "b.service"));
        // As real systemd's NoSuchUnit for a unit not loaded: a stop of it is done, a start is refused.
        assert_eq!(r[2].1, Ok(()));
        let e = f.start_units(&batch(&["missing.service"]))[0].1.clone().unwrap_err();
        assert!(e.to_string().starts_with("start missing.service: "), "{e}");
        assert!(f.start_units(&batch(&["c.service"]))[0].1.is_err());
        assert_eq!(f.unit("c.service").unwrap().active_state, "failed");
        let e = f.mask_runtime(&["a.service".into(), "b.service".into()], Reload::Now).unwrap_err();
        assert!(e.to_string().contains("b.service"), "{e}");
        assert!(f.mask_files().is_empty());
        f.heal("b.service");
        assert!(f.mask_runtime(&["b.service".into()], Reload::Now).is_ok());
        assert_eq!(f.masked(), vec!["b.service".to_string()]);
        f.stop_units(&batch(&["b.service"]));
        assert_eq!(f.stopped_with_mask_in_effect(), vec!["b.service".to_string()]);
        assert!(f.unit("missing.service").unwrap().load_state == "not-found");
        assert!(f.kill_unit("missing.service", 9).unwrap_err().to_string().starts_with("kill missing.service"));
    }

    #[test]
    fn kill_unit_clears_its_processes() {
        let f = FakeSystemd::new().with_unit(service("a.service", "inactive")).with_pid(77, "a.service");
        assert_eq!(f.unit_by_pid(77).unwrap().as_deref(), Some("a.service"));
        f.kill_unit("a.service", 9).unwrap();
        assert_eq!(f.unit_by_pid(77).unwrap(), None);
        assert_eq!(f.calls(), vec![FakeCall::Kill("a.service".into(), 9)]);
    }
}
