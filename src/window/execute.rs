//! Execute: walk the plan's steps through the edges, journal first (intent before each change, outcome after); on
//! failure, roll back with the same code as `restore`. It must not decide what to do (the plan does), and no panic
//! may sit between a change and its recording.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::Machine;
use crate::classify::{classify, Class};
use crate::config::StrayPolicy;
use crate::events::{self, Event};
use crate::extension::handler_operations;
use crate::failpoint;
use crate::scan::Holder;
use crate::systemd::{Reload, UnitKind};
use crate::window::ctr;
use crate::window::hold;
use crate::window::journal::{Change, Journal};
use crate::window::plan::{Plan, Step};
use crate::window::restore;
use crate::window::steps::leftovers::kill_leftovers;
use crate::window::steps::{self, docker::docker_timeout};
use crate::window::store::Store;

/// Waits until none of the agent's short-lived handler operations other than ADE's runs (FINDINGS 28-31), at most
/// `timeout`; then goes on with a warning: `run` bounds it by ADE's head start, after which stopping the workloads
/// late is still better than not at all (ADE kills what is left on `/oldroot`, FINDINGS 22).
fn wait_for_extensions(m: &Machine, mount: &Path, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut said = String::new();
    loop {
        // Handlers run from /var/lib/waagent, on `/`: they are among the holders of `/` (exe and cwd).
        let scan = m.procs.scan(mount)?;
        let running = handler_operations(&scan.holders);
        if running.is_empty() {
            events::emit(Event::WaitOver);
            return Ok(());
        }
        let names: Vec<String> = running.iter().map(|r| format!("{} (pid {}, {})", r.handler, r.pid, r.comm)).collect();
        let names = names.join(", ");
        if start.elapsed() >= timeout {
            log::warn!("extension handler operations still running after {} s, going on: {names}", timeout.as_secs());
            events::emit(Event::WaitOver);
            return Ok(());
        }
        events::emit(Event::Waiting { what: &names, left: Some(timeout.saturating_sub(start.elapsed())) });
        crate::signals::check(|| format!("while waiting for extension handlers: {names}"))?;
        if names != said {
            log::warn!("waiting for extension handlers to finish: {names}");
            said = names;
        }
        std::thread::sleep(
            Duration::from_secs(2).min(timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(100))),
        );
    }
}

fn record<S: Store>(j: &mut Journal<S>, change: Change) -> anyhow::Result<u32> {
    let seq = j.intend(change)?;
    failpoint::hit("prepare");
    Ok(seq)
}

fn finish<S: Store>(j: &mut Journal<S>, seq: u32) -> anyhow::Result<()> {
    j.done(seq)?;
    failpoint::hit("prepare");
    Ok(())
}

fn fail<S: Store>(j: &mut Journal<S>, seq: u32, e: anyhow::Error) -> anyhow::Error {
    if let Err(je) = j.failed(seq, format!("{e:#}")) {
        return e.context(format!("and the journal could not record it: {je}"));
    }
    e
}

/// Carries out the plan. The lock is already held and the journal open (phase Preparing). On failure everything
/// done is rolled back and the error says why (and what could not be rolled back).
pub fn execute<S: Store>(m: &Machine, plan: &Plan, j: &mut Journal<S>) -> anyhow::Result<()> {
    // A stop request ends a pre-stop command in flight, never the rollback's commands.
    crate::signals::stoppable(|| run_steps(m, plan, j)).map_err(|e| roll_back(m, j, e))
}

/// Rolls back everything the journal records after prepare failed (or was stopped) with `e`; the error says why,
/// and what could not be rolled back.
pub fn roll_back<S: Store>(m: &Machine, j: &mut Journal<S>, e: anyhow::Error) -> anyhow::Error {
    log::error!("prepare failed: {e:#}; rolling back");
    let r = restore::restore(m, j);
    if r.failed.is_empty() {
        log::warn!("rolled back: {}", r.summary());
        return e.context("prepare failed and was rolled back");
    }
    // The window stays open (phase Restoring) with what could not be undone.
    e.context(format!(
        "prepare failed; rollback incomplete ({}); run `ade-prep restore` again once fixed",
        r.failed.join("; ")
    ))
}

/// Whether a pre-stop command applies ([`crate::config::OnlyIf`]): its question asked as the same user, within the
/// same timeout. A question that fails or times out is an error naming it.
fn applies(m: &Machine, command: &crate::config::PreStop) -> anyhow::Result<bool> {
    let Some(c) = &command.only_if else { return Ok(true) };
    let o = m.runner.run(&c.argv, &command.user, Duration::from_secs(command.timeout_secs))?;
    let shown = crate::bundle::redact_argv(&c.argv).0;
    if o.timed_out {
        return Err(anyhow!("{shown:?} timed out after {} s", command.timeout_secs));
    }
    if o.code != Some(0) {
        let code = o.code.map_or("by a signal".into(), |c| c.to_string());
        return Err(anyhow!("{shown:?} exited {code}: {}{}", o.stdout.trim(), o.stderr_tail));
    }
    Ok(!c.unless_stdout.iter().any(|u| u == o.stdout.trim()))
}

fn run_steps<S: Store>(m: &Machine, plan: &Plan, j: &mut Journal<S>) -> anyhow::Result<()> {
    let mut stopped: BTreeSet<String> = BTreeSet::new();
    let mut stop_seqs: BTreeMap<String, u32> = BTreeMap::new();
    failpoint::hit("prepare");
    for (i, step) in plan.steps.iter().enumerate() {
        // A stop request (SIGINT, SIGTERM, SIGHUP) is honoured here: the step in flight has finished.
        crate::signals::check(|| format!("before step {} of {}", i + 1, plan.steps.len()))?;
        match step {
            Step::WaitForExtensions { timeout_secs } => {
                // Handlers run from /var/lib/waagent, on `/`, whichever filesystems the window frees.
                wait_for_extensions(m, Path::new("/"), Duration::from_secs(*timeout_secs))?;
            }
            Step::TakeLock => {
                let seq = record(j, Change::LockHeld {})?;
                log::info!("lock held for the window");
                finish(j, seq)?;
            }
            Step::PreStop { workload, command } => {
                // What is recorded, logged and shown: the command with the values of secret-looking flags redacted
                // (a password for sapcontrol or nodetool in a 0600 drop-in never reaches the journal or the logs).
                let shown = crate::bundle::redact_argv(&command.argv).0;
                let seq = record(
                    j,
                    Change::PreStop { workload: workload.clone(), argv: shown.clone(), user: command.user.clone() },
                )?;
                log::info!("pre-stop {workload}: running {shown:?} as {}", command.user);
                let what = format!("pre-stop of {workload}: {}", shown.join(" "));
                events::emit(Event::Waiting { what: &what, left: Some(Duration::from_secs(command.timeout_secs)) });
                let r = match applies(m, command) {
                    Ok(true) => m.runner.run(&command.argv, &command.user, Duration::from_secs(command.timeout_secs)),
                    Ok(false) => {
                        events::emit(Event::WaitOver);
                        log::info!("pre-stop {workload}: {shown:?} does not apply here: skipped");
                        finish(j, seq)?;
                        continue;
                    }
                    Err(e) => {
                        events::emit(Event::WaitOver);
                        return Err(fail(j, seq, anyhow!("pre-stop of {workload}: {e}")));
                    }
                };
                events::emit(Event::WaitOver);
                let err = match r {
                    Err(e) => Some(anyhow!("pre-stop of {workload}: {e}")),
                    Ok(o) if o.timed_out => {
                        Some(anyhow!("pre-stop of {workload}: {shown:?} timed out after {} s", command.timeout_secs))
                    }
                    Ok(o) if o.code.is_some_and(|c| command.ok_exit_codes.contains(&c)) => None,
                    Ok(o) => Some(anyhow!(
                        "pre-stop of {workload}: {shown:?} exited {} (expected {:?}): {}",
                        o.code.map_or("by a signal".into(), |c| c.to_string()),
                        command.ok_exit_codes,
                        o.stderr_tail
                    )),
                };
                match err {
                    Some(e) => return Err(fail(j, seq, e)),
                    None => finish(j, seq)?,
                }
            }
            Step::StopContainers { ids, grace_secs } => {
                let seq = record(j, Change::StopContainers { ids: ids.clone() })?;
                let mut argv: Vec<String> = vec!["docker".into(), "stop".into(), "-t".into(), grace_secs.to_string()];
                argv.extend(ids.iter().cloned());
                // The engine stops them concurrently but does part of the work one container at a time: the
                // margin grows with their number (20 containers took over 70 s under TCG: docs/docker.md, bug 4).
                let timeout = docker_timeout(*grace_secs, ids.len());
                events::emit(Event::Waiting { what: &argv.join(" "), left: Some(timeout) });
                let r = m.runner.run(&argv, "root", timeout);
                events::emit(Event::WaitOver);
                match r {
                    Ok(o) if o.code == Some(0) => {
                        log::info!("stopped {} docker container(s)", ids.len());
                        finish(j, seq)?
                    }
                    Ok(o) if o.timed_out => {
                        let why =
                            anyhow!("docker stop: timed out after {} s ({} containers)", timeout.as_secs(), ids.len());
                        return Err(fail(j, seq, why));
                    }
                    Ok(o) => return Err(fail(j, seq, anyhow!("docker stop: exit {:?}: {}", o.code, o.stderr_tail))),
                    Err(e) => return Err(fail(j, seq, anyhow!("docker stop: {e}"))),
                }
            }
            Step::StopTasks { tasks, grace_secs } => {
                // Every task in the journal before the first signal: a crash mid-step loses none.
                let mut seqs = vec![];
                for t in tasks {
                    let change =
                        Change::StopTask { namespace: t.namespace.clone(), id: t.id.clone(), state: t.state.clone() };
                    seqs.push(record(j, change)?);
                }
                let shown: Vec<String> = tasks.iter().map(|t| format!("{}/{}", t.namespace, t.id)).collect();
                let what = format!("stopping containerd tasks: {}", shown.join(" "));
                events::emit(Event::Waiting { what: &what, left: Some(Duration::from_secs(*grace_secs)) });
                let results = ctr::stop(m.runner, tasks, Duration::from_secs(*grace_secs));
                events::emit(Event::WaitOver);
                let mut errors = vec![];
                for ((t, r), seq) in tasks.iter().zip(results).zip(seqs) {
                    match r {
                        Ok(()) => {
                            log::info!("stopped containerd {t}");
                            finish(j, seq)?
                        }
                        Err(e) => {
                            let _ = j.failed(seq, e.clone());
                            errors.push(e);
                        }
                    }
                }
                if !errors.is_empty() {
                    bail!("{}", errors.join("; "));
                }
            }
            Step::MaskUnits { units } => {
                let mut seqs = vec![];
                for u in units {
                    seqs.push(record(j, Change::MaskUnit { unit: u.clone() })?);
                }
                match m.systemd.mask_runtime(units, Reload::Later) {
                    Ok(_) => {
                        for (u, seq) in units.iter().zip(seqs) {
                            log::info!("masked {u} (runtime, effective after the stops)");
                            finish(j, seq)?;
                        }
                    }
                    Err(e) => {
                        let e = anyhow!("masking {}: {e}", units.join(" "));
                        for seq in &seqs[1..] {
                            let _ = j.failed(*seq, format!("{e:#}"));
                        }
                        return Err(fail(j, seqs[0], e));
                    }
                }
            }
            Step::StopUnits { wave, units } => {
                if stop_seqs.is_empty() {
                    // Every stop intent, with every unit's state, before the first stop: stopping a trigger also
                    // stops the services that Require it (docker.service, docker.socket), before their own wave.
                    for (u, _) in plan.steps.iter().flat_map(|s| match s {
                        Step::StopUnits { units, .. } => units.as_slice(),
                        _ => &[],
                    }) {
                        if stop_seqs.contains_key(u) {
                            continue;
                        }
                        // `unknown` when it cannot be read: restore takes it as running and starts it again.
                        let before = m.systemd.unit(u).map(|i| i.active_state).unwrap_or_else(|_| "unknown".into());
                        let seq = record(j, Change::StopUnit { unit: u.clone(), active_state_before: before })?;
                        stop_seqs.insert(u.clone(), seq);
                    }
                }
                let batch: Vec<(String, Duration)> =
                    units.iter().map(|(u, t)| (u.clone(), Duration::from_secs(*t))).collect();
                log::info!("stopping {wave}: {}", units.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(" "));
                events::emit(Event::Stopping(&batch));
                let results = m.systemd.stop_units(&batch);
                let mut errors = vec![];
                for (u, r) in results {
                    // A unit systemd reports that the plan did not ask for cannot have a recorded intent: an error,
                    // never a panic between a stop and its recording.
                    let Some(&seq) = stop_seqs.get(&u) else {
                        errors.push(format!("systemd reported a stop of {u}, which the plan did not ask for"));
                        continue;
                    };
                    match r {
                        Ok(()) => {
                            events::emit(Event::Stopped(&u));
                            stopped.insert(u);
                            finish(j, seq)?;
                        }
                        Err(e) => {
                            events::emit(Event::StopFailed(&u, &e.to_string()));
                            let _ = j.failed(seq, e.to_string());
                            errors.push(e.to_string());
                        }
                    }
                }
                if !errors.is_empty() {
                    bail!("{}", errors.join("; "));
                }
            }
            Step::HoldUnits { units } => {
                // Without the list the window still works; units in /etc could be started again, and every unit
                // at a reboot. The restore (or rollback) removes it.
                match hold::write_list(m.paths, units) {
                    Ok(()) => {
                        log::info!("hold list written: the generator masks {} unit(s) at the reload", units.len())
                    }
                    Err(e) => log::warn!("the workloads are not held by the generator (units in /etc, reboot): {e:#}"),
                }
            }
            Step::ActivateMasks => {
                m.systemd.reload().context("reloading systemd to activate the masks")?;
                log::info!("masks in effect");
            }
            Step::ClearHolders { policy, grace_secs, stopped_earlier } => {
                // Leftovers of a unit stopped before prepare are ended as those of a unit stopped here (the plan
                // names them only under the terminate policy).
                let mut ended: BTreeSet<String> = stopped.clone();
                ended.extend(stopped_earlier.iter().cloned());
                clear_holders(m, &plan.mount_points(), &ended, *policy, Duration::from_secs(*grace_secs), j)?;
            }
            Step::SelinuxPermissive => {
                if let Some(change) = steps::selinux::intent(m)? {
                    let seq = record(j, change)?;
                    match steps::selinux::apply(m) {
                        Ok(()) => finish(j, seq)?,
                        Err(e) => return Err(fail(j, seq, e)),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Re-scan: workload processes still holding the filesystem. Leftovers of a unit we stopped (KillMode=process)
/// are terminated; processes in no unit follow the stray policy; anything else is an error naming them.
fn clear_holders<S: Store>(
    m: &Machine,
    mounts: &[PathBuf],
    stopped: &BTreeSet<String>,
    policy: StrayPolicy,
    grace: Duration,
    j: &mut Journal<S>,
) -> anyhow::Result<()> {
    let (holders, _) = super::snapshot::scan_mounts(m.procs, mounts)?;
    let left: Vec<Holder> = holders.into_iter().filter(|h| classify(h, m.settings).class == Class::Workload).collect();
    if left.is_empty() {
        return Ok(());
    }
    let describe = |h: &Holder| format!("pid {} {} ({})", h.pid, h.comm, h.unit.as_deref().unwrap_or("no unit"));
    // A container task still running is never ended from outside: killing its process, or its shim, would orphan
    // the task and lose it at restore (docs/docker.md, bug 2). Its task is stopped through docker or ctr, or not.
    let tasks: BTreeSet<i32> = left.iter().filter_map(|h| h.shim).collect();
    let (mut kill, mut refuse) = (vec![], vec![]);
    for h in left {
        if let Some(shim) = h.shim {
            refuse.push(format!(
                "{}, a container task's process under containerd-shim pid {shim}, still runs (stop its task: `ctr \
                 -n NAMESPACE task kill`, or `docker stop`)",
                describe(&h)
            ));
            continue;
        }
        if tasks.contains(&h.pid) {
            refuse.push(format!(
                "{}, a containerd shim whose task still runs (ending it would lose the task)",
                describe(&h)
            ));
            continue;
        }
        let leftover = h.unit.as_ref().is_some_and(|u| stopped.contains(u));
        let stray = h.unit.as_deref().is_none_or(|u| UnitKind::of(u) == UnitKind::Scope);
        if leftover || (stray && policy == StrayPolicy::Terminate) {
            kill.push(h);
        } else {
            refuse.push(describe(&h));
        }
    }
    if !refuse.is_empty() {
        bail!(
            "workload processes still hold {} after stopping their units (stray policy {policy}): {}",
            mounts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            refuse.join(", ")
        );
    }
    // Intent for every process first, then the kills: a unit's leftovers go together through KillUnit.
    let mut seqs = vec![];
    for h in &kill {
        seqs.push(record(j, Change::TerminateProcess { pid: h.pid, comm: h.comm.clone(), unit: h.unit.clone() })?);
    }
    let mut by_unit: BTreeMap<&str, Vec<(i32, u64)>> = BTreeMap::new();
    for h in &kill {
        match h.unit.as_deref().filter(|u| stopped.contains(*u)) {
            Some(u) => by_unit.entry(u).or_default().push((h.pid, h.start_time)),
            None => m.procs.terminate(h.pid, h.start_time, grace),
        }
    }
    for (unit, pids) in &by_unit {
        if let Err(e) = kill_leftovers(m, unit, pids, grace) {
            let e = anyhow!("terminating what {unit} left behind: {e}");
            for seq in &seqs[1..] {
                let _ = j.failed(*seq, format!("{e:#}"));
            }
            return Err(fail(j, seqs[0], e));
        }
    }
    for (h, seq) in kill.iter().zip(seqs) {
        log::info!("terminated {}", describe(h));
        finish(j, seq)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::selinux::Mode;
    use crate::systemd::ServiceManager;
    use crate::systemd::UnitInfo;
    use crate::testing::procs::{holder, FakeProcs};
    use crate::testing::runner::FakeRunner;
    use crate::testing::selinux::FakeSelinux;
    use crate::testing::systemd::{service, FakeCall, FakeFailure, FakeSystemd};
    use crate::window::ground;
    use crate::window::journal::Status;
    use crate::window::phase::Phase;
    use crate::window::plan::plan;
    use crate::window::snapshot::snapshot;
    use crate::window::store::FileStore;
    use std::cell::{Cell, RefCell};

    fn socket(name: &str, triggers: &str) -> UnitInfo {
        UnitInfo { triggers: vec![triggers.into()], ..service(name, "active") }
    }

    fn docker_systemd() -> FakeSystemd {
        FakeSystemd::new()
            .with_unit(UnitInfo { triggered_by: vec!["docker.socket".into()], ..service("docker.service", "active") })
            .with_unit(socket("docker.socket", "docker.service"))
            .with_unit(service("containerd.service", "active"))
            .with_unit(service("ssh.service", "active"))
    }

    fn docker_holders() -> Vec<Holder> {
        vec![
            holder(10, "dockerd", Some("docker.service")),
            holder(11, "containerd", Some("containerd.service")),
            holder(12, "sshd", Some("ssh.service")),
        ]
    }

    struct World {
        sd: FakeSystemd,
        se: FakeSelinux,
        runner: FakeRunner,
        settings: Settings,
        dir: tempfile::TempDir,
        terminated: RefCell<Vec<i32>>,
        /// The machine's root for the hold list (a folder of `dir`).
        paths: crate::paths::Paths,
    }

    impl World {
        fn new(sd: FakeSystemd) -> World {
            let dir = tempfile::tempdir().unwrap();
            World {
                sd,
                se: FakeSelinux(Cell::new(Mode::Enforcing)),
                runner: FakeRunner::default(),
                settings: Settings::default(),
                paths: crate::paths::Paths::under(dir.path().join("root")),
                dir,
                terminated: RefCell::default(),
            }
        }
        fn journal(&self) -> Journal<FileStore> {
            Journal::open(FileStore::at(self.dir.path().join("state.json")), Path::new("/"), "boot-1").unwrap()
        }
        fn machine<'a>(&'a self, procs: &'a FakeProcs<'a>) -> Machine<'a> {
            Machine {
                procs,
                systemd: &self.sd,
                selinux: &self.se,
                runner: &self.runner,
                settings: &self.settings,
                paths: &self.paths,
            }
        }
        fn prepare(&self, holders: Vec<Holder>) -> (anyhow::Result<()>, Journal<FileStore>) {
            let procs = FakeProcs { holders, systemd: &self.sd, terminated: &self.terminated, own_units: vec![] };
            let m = self.machine(&procs);
            let snap = snapshot(&m, &["/".into()]).unwrap();
            let p = plan(&snap, &self.settings).unwrap();
            let mut j = self.journal();
            let r = execute(&m, &p, &mut j);
            (r, j)
        }
        fn restore(&self, j: &mut Journal<FileStore>) -> restore::Restored {
            let procs =
                FakeProcs { holders: vec![], systemd: &self.sd, terminated: &self.terminated, own_units: vec![] };
            restore::restore(&self.machine(&procs), j)
        }
        fn active(&self, u: &str) -> String {
            self.sd.unit(u).unwrap().active_state.to_string()
        }
    }

    #[test]
    fn prepare_then_restore_round_trip() {
        let w = World::new(docker_systemd());
        let (r, j) = w.prepare(docker_holders());
        r.unwrap();
        // containers stopped before dockerd, triggers stopped before services, all masked, SELinux permissive
        assert!(w.runner.calls.borrow().contains(&vec![
            "docker".to_string(),
            "stop".into(),
            "-t".into(),
            "30".into(),
            "c1".into(),
            "c2".into()
        ]));
        let stops: Vec<FakeCall> = w.sd.calls().into_iter().filter(|c| matches!(c, FakeCall::Stop(_))).collect();
        assert_eq!(
            stops,
            [
                FakeCall::Stop(vec!["docker.socket".into()]),
                FakeCall::Stop(vec!["containerd.service".into(), "docker.service".into()])
            ]
        );
        assert_eq!(w.sd.masked(), ["containerd.service", "docker.service", "docker.socket"]);
        assert_eq!(w.sd.stopped_with_mask_in_effect(), Vec::<String>::new(), "stops ran with the units' own settings");
        assert_eq!(w.active("docker.service"), "inactive");
        assert_eq!(w.active("ssh.service"), "active", "protected units are left alone");
        assert_eq!(w.se.0.get(), Mode::Permissive);
        assert!(j.record().entries.iter().all(|e| e.status == Status::Done));

        // A new process restores from the journal file alone.
        let mut j2 = Journal::resume(FileStore::at(w.dir.path().join("state.json"))).unwrap().unwrap();
        let r = w.restore(&mut j2);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(w.sd.masked(), Vec::<String>::new());
        for u in ["docker.service", "docker.socket", "containerd.service"] {
            assert_eq!(w.active(u), "active", "{u}");
        }
        assert_eq!(w.se.0.get(), Mode::Enforcing);
        assert_eq!(w.runner.calls.borrow().last().unwrap(), &["docker", "start", "c1", "c2"]);
        assert_eq!(j2.record().phase, Phase::Closed);
        // sockets come back before their services, as at boot (a service started without its socket may bind the
        // address itself: mariadbd), and only after the unmask
        let calls = w.sd.calls();
        let unmask = calls.iter().position(|c| matches!(c, FakeCall::Unmask(_))).unwrap();
        let starts: Vec<&FakeCall> = calls[unmask..].iter().filter(|c| matches!(c, FakeCall::Start(_))).collect();
        assert_eq!(
            starts,
            [
                &FakeCall::Start(vec!["docker.socket".into()]),
                &FakeCall::Start(vec!["docker.service".into(), "containerd.service".into()])
            ]
        );
        // A second restore finds nothing to do.
        let again = w.restore(&mut j2);
        assert_eq!(again.summary(), "nothing to undo");
        drop(j);
    }

    #[test]
    fn restore_starts_no_workload_before_the_ground_they_stood_on_is_mounted_again() {
        let w = World::new(docker_systemd());
        let (r, mut j) = w.prepare(docker_holders());
        r.unwrap();
        // /data was mounted when the window opened; ADE's stripdown unmounted it and it failed to come back (#658).
        j.set_ground(vec![ground::Ground { mount_point: "/data".into(), source: "/dev/sdc1".into() }]).unwrap();
        let phase = j.record().phase;
        assert_eq!(j.record().version, crate::window::record::VERSION);
        let mi = w.paths.proc().join("self/mountinfo");
        std::fs::create_dir_all(mi.parent().unwrap()).unwrap();
        std::fs::write(&mi, "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap();
        let r = w.restore(&mut j);
        assert_eq!(r.failed.len(), 2, "{:?}", r.failed);
        assert!(
            r.failed[0].starts_with("/data (/dev/sdc1 when the window opened) is not mounted: data.mount: "),
            "{:?}",
            r.failed
        );
        // It tried the mount unit, as the boot would; nothing else was undone (SELinux stays permissive).
        let calls = w.sd.calls();
        let after_prepare = calls.iter().rposition(|c| matches!(c, FakeCall::Mask(..))).unwrap();
        assert_eq!(
            calls[after_prepare..]
                .iter()
                .filter(|c| matches!(c, FakeCall::Start(_) | FakeCall::Unmask(_)))
                .collect::<Vec<_>>(),
            [&FakeCall::Start(vec!["data.mount".into()])]
        );
        assert_eq!(w.sd.masked(), ["containerd.service", "docker.service", "docker.socket"]);
        assert_eq!(w.active("docker.service"), "inactive");
        assert_eq!(w.se.0.get(), Mode::Permissive);
        assert!(j.record().is_window_open());
        assert_eq!(j.record().phase, phase, "the window is as it was");
        // A second restore with /data mounted again would go on (tests/nspawn/volumes.rs); `restore
        // --without-ground` drops the check instead (recorded): everything comes back, /data or not.
        drop(j);
        let mut j = Journal::resume(FileStore::at(w.dir.path().join("state.json"))).unwrap().unwrap();
        j.clear_ground().unwrap();
        let mut j = Journal::resume(FileStore::at(w.dir.path().join("state.json"))).unwrap().unwrap();
        assert!(j.record().ground.is_none(), "the journal records the operator's choice");
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(w.active("docker.service"), "active");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_service_stopped_with_the_trigger_it_requires_is_recorded_as_running_and_comes_back() {
        // docker.service has Requires=docker.socket: stopping the socket (first wave) stops the service with it,
        // before the service's own wave. Found by the crash test in nspawn (tests/nspawn/crash.rs).
        let sd = docker_systemd().with_unit(UnitInfo {
            triggered_by: vec!["docker.socket".into()],
            requires: vec!["docker.socket".into()],
            ..service("docker.service", "active")
        });
        let w = World::new(sd);
        let (r, j) = w.prepare(docker_holders());
        r.unwrap();
        let stops: Vec<(u32, &str, &str)> = j
            .record()
            .entries
            .iter()
            .filter_map(|e| match &e.change {
                Change::StopUnit { unit, active_state_before } => {
                    Some((e.seq, unit.as_str(), active_state_before.as_str()))
                }
                _ => None,
            })
            .collect();
        assert!(stops.iter().all(|(_, _, before)| *before == "active"), "{stops:?}");
        // Every stop intent is in the journal before the first stop, so a crash between the waves loses none.
        let seqs: Vec<u32> = stops.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(seqs, (seqs[0]..seqs[0] + 3).collect::<Vec<_>>(), "{stops:?}");
        let mut j2 = Journal::resume(FileStore::at(w.dir.path().join("state.json"))).unwrap().unwrap();
        let r = w.restore(&mut j2);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        for u in ["docker.service", "docker.socket", "containerd.service"] {
            assert_eq!(w.active(u), "active", "{u}");
        }
    }

    /// containerd's tasks: two of its own in namespace demo (one paused), Docker's in moby, one already stopped.
    fn ctr_runner() -> FakeRunner {
        FakeRunner::default()
            .with_task("demo", "web", "RUNNING")
            .with_task("demo", "frozen", "PAUSED")
            .with_task("moby", "c1", "RUNNING")
            .with_task("demo", "done", "STOPPED")
    }

    fn task_changes(j: &Journal<FileStore>) -> Vec<(String, String, String, Status)> {
        j.record()
            .entries
            .iter()
            .filter_map(|e| match &e.change {
                Change::StopTask { namespace, id, state } => {
                    Some((namespace.clone(), id.clone(), state.clone(), e.status))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn containerds_own_tasks_are_journalled_then_stopped_and_restore_starts_exactly_those_running() {
        let mut w = World::new(docker_systemd());
        let state = w.dir.path().join("state.json");
        let seen: std::rc::Rc<RefCell<Vec<String>>> = Default::default();
        let (seen2, state2) = (seen.clone(), state.clone());
        w.runner = FakeRunner {
            // What the journal on disk holds at the first signal to a task.
            hook: Some(Box::new(move |argv: &[String]| {
                if argv.iter().any(|a| a == "kill") && seen2.borrow().is_empty() {
                    seen2.borrow_mut().push(std::fs::read_to_string(&state2).unwrap());
                }
            })),
            ..ctr_runner()
        };
        let (r, j) = w.prepare(docker_holders());
        r.unwrap();
        let journal_at_first_kill = seen.borrow()[0].clone();
        for id in ["\"web\"", "\"frozen\""] {
            assert!(journal_at_first_kill.contains(id), "{id} recorded before the first kill: {journal_at_first_kill}");
        }
        let want = |st: Status| {
            vec![
                ("demo".to_string(), "frozen".to_string(), "paused".to_string(), st),
                ("demo".to_string(), "web".to_string(), "running".to_string(), st),
            ]
        };
        assert_eq!(task_changes(&j), want(Status::Done), "Docker's moby and the stopped task are not recorded");
        assert_eq!(w.runner.task("demo", "web"), None, "stopped and deleted: its shim is gone");
        assert_eq!(w.runner.task("demo", "frozen"), None);
        assert_eq!(w.runner.task("moby", "c1").as_deref(), Some("RUNNING"), "Docker's are docker stop's");
        assert_eq!(w.runner.task("demo", "done").as_deref(), Some("STOPPED"), "left as it was");
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or_else(|| panic!("{c} not in {calls:?}"));
        assert!(at("ctr -n demo task kill -s SIGTERM frozen") < at("ctr -n demo task resume frozen"), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("SIGKILL")), "both ended on SIGTERM: {calls:?}");
        assert!(at("docker stop -t 30 c1 c2") < at("ctr -n demo task kill -s SIGTERM web"));
        let first_unit_stop = w.sd.calls().iter().position(|c| matches!(c, FakeCall::Stop(_))).unwrap();
        assert!(first_unit_stop > 0);
        // containerd was stopped after the tasks: the fake systemd saw no stop before them (calls are per edge, so
        // the journal's order says it).
        let seqs: Vec<u32> = j
            .record()
            .entries
            .iter()
            .filter(|e| matches!(e.change, Change::StopTask { .. } | Change::StopUnit { .. }))
            .map(|e| e.seq)
            .collect();
        let first_task = j.record().entries.iter().find(|e| matches!(e.change, Change::StopTask { .. })).unwrap().seq;
        assert_eq!(seqs[0], first_task, "the tasks are journalled before any unit stop");

        let mut j2 = Journal::resume(FileStore::at(state)).unwrap().unwrap();
        let r = w.restore(&mut j2);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(w.runner.task("demo", "web").as_deref(), Some("RUNNING"));
        assert_eq!(w.runner.task("demo", "frozen").as_deref(), Some("RUNNING"), "a paused task comes back running");
        assert_eq!(w.runner.task("demo", "done").as_deref(), Some("STOPPED"), "never started");
        assert_eq!(task_changes(&j2), want(Status::Undone));
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        let start = calls.iter().position(|c| c == "ctr -n demo task start --null-io -d web").unwrap();
        assert!(calls.iter().position(|c| c == "docker start c1 c2").unwrap() < start, "{calls:?}");
        assert_eq!(j2.record().phase, Phase::Closed);
    }

    #[test]
    fn a_task_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut w = World::new(docker_systemd());
        w.settings.docker.stop_grace_secs = 0;
        w.runner = FakeRunner { ignore_term: ["web".to_string()].into(), ..ctr_runner() };
        let (r, j) = w.prepare(docker_holders());
        r.unwrap();
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        let kills: Vec<&String> = calls.iter().filter(|c| c.contains("SIGKILL")).collect();
        assert_eq!(kills, ["ctr -n demo task kill -s SIGKILL web"], "{calls:?}");
        assert_eq!(w.runner.task("demo", "web"), None);
        assert!(task_changes(&j).iter().all(|t| t.3 == Status::Done));
    }

    #[test]
    fn a_task_that_cannot_be_stopped_fails_prepare_naming_it_and_the_rollback_restarts_what_was_stopped() {
        let mut w = World::new(docker_systemd());
        w.settings.docker.stop_grace_secs = 0;
        w.runner = FakeRunner {
            ignore_term: ["web".to_string()].into(),
            fail_when: vec!["task kill -s SIGKILL web".into()],
            ..ctr_runner()
        };
        let (r, j) = w.prepare(docker_holders());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("containerd task web in namespace demo: still runs after SIGTERM, 0 s and SIGKILL"), "{e}");
        assert!(e.contains("ctr -n demo task kill -s SIGKILL web: exit Some(1): boom"), "{e}");
        assert!(e.contains("rolled back"), "{e}");
        assert_eq!(w.runner.task("demo", "web").as_deref(), Some("RUNNING"), "never stopped, left running");
        assert_eq!(
            w.runner.task("demo", "frozen").as_deref(),
            Some("RUNNING"),
            "stopped, then started by the rollback"
        );
        assert_eq!(w.active("containerd.service"), "active", "no unit was stopped");
        assert!(!w.sd.calls().iter().any(|c| matches!(c, FakeCall::Stop(_))));
        assert!(task_changes(&j).iter().all(|t| t.3 == Status::Undone), "{:?}", task_changes(&j));
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_unit_that_fails_to_stop_after_the_tasks_rolls_back_and_the_tasks_run_again() {
        let mut w = World::new(docker_systemd().fail_stop("containerd.service", FakeFailure::Result("timeout".into())));
        w.runner = ctr_runner();
        let (r, j) = w.prepare(docker_holders());
        assert!(format!("{:#}", r.unwrap_err()).contains("rolled back"));
        assert_eq!(w.runner.task("demo", "web").as_deref(), Some("RUNNING"));
        assert_eq!(w.runner.task("demo", "frozen").as_deref(), Some("RUNNING"));
        assert_eq!(w.active("containerd.service"), "active");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn restore_after_a_crash_mid_step_starts_what_was_recorded_whatever_state_it_was_left_in() {
        // The journal has three tasks as intended; the crash came after `web` was deleted and `api` killed but not
        // deleted, before `db` got its signal.
        let mut w = World::new(docker_systemd());
        w.runner = FakeRunner::default().with_task("demo", "api", "STOPPED").with_task("demo", "db", "RUNNING");
        let mut j = w.journal();
        for id in ["web", "api", "db"] {
            j.intend(Change::StopTask { namespace: "demo".into(), id: id.into(), state: "running".into() }).unwrap();
        }
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        for id in ["web", "api", "db"] {
            assert_eq!(w.runner.task("demo", id).as_deref(), Some("RUNNING"), "{id}");
        }
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        assert!(calls.contains(&"ctr -n demo task delete api".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("start --null-io -d db")), "db still ran: {calls:?}");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn kubelets_pods_are_stopped_with_containerds_tasks_and_left_to_kubelet_by_restore() {
        let mut w = World::new(docker_systemd());
        w.runner = FakeRunner::default().with_task("k8s.io", "pod-a", "RUNNING").with_task("demo", "web", "RUNNING");
        let (r, _) = w.prepare(docker_holders());
        r.unwrap();
        assert_eq!(w.runner.task("k8s.io", "pod-a"), None, "stopped and deleted with containerd's tasks");
        let mut j = Journal::resume(FileStore::at(w.dir.path().join("state.json"))).unwrap().unwrap();
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(w.runner.task("demo", "web").as_deref(), Some("RUNNING"), "containerd's own: started again");
        assert_eq!(w.runner.task("k8s.io", "pod-a"), None, "kubelet's: never started by ctr");
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        assert!(!calls.iter().any(|c| c.starts_with("ctr -n k8s.io task start")), "{calls:?}");
        let pods: Vec<(Status, Option<String>)> = j
            .record()
            .entries
            .iter()
            .filter(|e| matches!(&e.change, Change::StopTask { namespace, .. } if namespace == "k8s.io"))
            .map(|e| (e.status, e.note.clone()))
            .collect();
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].0, Status::Undone, "nothing left to undo: the window closes");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_task_that_cannot_be_started_is_named_and_the_window_stays_open() {
        let mut w = World::new(docker_systemd());
        w.runner = FakeRunner { fail_when: vec!["task start".into()], ..ctr_runner() };
        let (r, mut j) = w.prepare(docker_holders());
        r.unwrap();
        let r = w.restore(&mut j);
        assert!(
            r.failed.iter().any(|f| f.starts_with("containerd task web in namespace demo: ctr -n demo task start")),
            "{:?}",
            r.failed
        );
        assert_eq!(j.record().phase, Phase::Restoring);
    }

    #[test]
    fn a_container_tasks_process_left_running_fails_prepare_and_neither_it_nor_its_shim_is_ended() {
        // A task ctr did not list (Docker's, with the engine down): under the terminate policy all the same.
        let mut w = World::new(docker_systemd().with_pid(50, "containerd.service"));
        w.settings.stray.policy = StrayPolicy::Terminate;
        let mut task = holder(51, "sh", None);
        task.cgroup = Some("/moby/abc".into());
        task.shim = Some(50);
        let mut hs = docker_holders();
        hs.extend([holder(50, "containerd-shim", Some("containerd.service")), task]);
        let (r, _) = w.prepare(hs);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("pid 51 sh (no unit), a container task's process under containerd-shim pid 50"), "{e}");
        assert!(
            e.contains("pid 50 containerd-shim (containerd.service), a containerd shim whose task still runs"),
            "{e}"
        );
        assert!(w.terminated.borrow().is_empty());
        assert!(!w.sd.calls().iter().any(|c| matches!(c, FakeCall::Kill(..))), "{:?}", w.sd.calls());
        assert_eq!(w.active("containerd.service"), "active", "rolled back");
    }

    #[test]
    fn a_unit_that_fails_to_stop_rolls_everything_back_and_names_it() {
        let w = World::new(docker_systemd().fail_stop("containerd.service", FakeFailure::Result("timeout".into())));
        let (r, j) = w.prepare(docker_holders());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("containerd.service") && e.contains("timeout"), "{e}");
        assert!(e.contains("rolled back"), "{e}");
        assert_eq!(w.sd.masked(), Vec::<String>::new());
        assert_eq!(w.active("docker.service"), "active");
        assert_eq!(w.active("docker.socket"), "active");
        assert_eq!(w.se.0.get(), Mode::Enforcing, "SELinux was never switched");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_refused_stop_rolls_back_and_names_the_unit_and_the_error() {
        let sd = docker_systemd()
            .fail_stop("containerd.service", FakeFailure::Refused("org.freedesktop.DBus.Error.AccessDenied".into()));
        let w = World::new(sd);
        let (r, j) = w.prepare(docker_holders());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("stop containerd.service: org.freedesktop.DBus.Error.AccessDenied"), "{e}");
        assert!(e.contains("rolled back"), "{e}");
        assert_eq!(w.active("docker.service"), "active");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_restore_that_cannot_unmask_keeps_the_window_open_and_names_the_units() {
        let w = World::new(docker_systemd().fail_unmask("docker.socket"));
        let (r, mut j) = w.prepare(docker_holders());
        r.unwrap();
        let r1 = w.restore(&mut j);
        assert!(r1.failed.iter().any(|f| f.contains("docker.socket")), "{:?}", r1.failed);
        assert_eq!(j.record().phase, Phase::Restoring, "the window stays open for a retry");
        w.sd.heal("docker.socket");
        let r2 = w.restore(&mut j);
        assert!(r2.failed.is_empty(), "{:?}", r2.failed);
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_rollback_that_cannot_start_a_unit_says_so_and_leaves_the_window_open() {
        let sd = docker_systemd()
            .fail_stop("containerd.service", FakeFailure::Result("timeout".into()))
            .fail_start("containerd.service", FakeFailure::Result("timeout".into()));
        let w = World::new(sd);
        let (r, j) = w.prepare(docker_holders());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.starts_with("prepare failed; rollback incomplete (containerd.service failed to come back: "), "{e}");
        assert!(e.contains("run `ade-prep restore` again"), "{e}");
        assert!(!e.contains("was rolled back"), "{e}");
        assert_eq!(j.record().phase, Phase::Restoring, "the window stays open for the next restore");
        assert_eq!(w.active("docker.service"), "active", "the rest is rolled back");
    }

    #[test]
    fn a_failing_pre_stop_rolls_back_before_anything_is_stopped() {
        let mut w = World::new(FakeSystemd::new().with_unit(service("cassandra.service", "active")));
        w.runner.codes.insert("nodetool".into(), 1);
        let (r, j) = w.prepare(vec![holder(20, "java", Some("cassandra.service"))]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("pre-stop of cassandra") && e.contains("exited 1"), "{e}");
        assert_eq!(w.active("cassandra.service"), "active");
        assert!(!w.sd.calls().iter().any(|c| matches!(c, FakeCall::Stop(_))));
        let pre = j.record().entries.iter().find(|e| matches!(e.change, Change::PreStop { .. })).unwrap();
        assert_eq!(pre.status, Status::Undone, "a failed step is kept, and closed by the rollback");
    }

    #[test]
    fn redis_is_saved_first_only_where_snapshots_are_configured_and_an_unanswered_question_refuses() {
        let ask = "redis-cli --raw CONFIG GET save";
        let run = |answer: Option<&str>, code: i32| {
            let mut w = World::new(FakeSystemd::new().with_unit(service("redis-server.service", "active")));
            if let Some(a) = answer {
                w.runner.stdouts.insert(ask.into(), a.into());
            }
            w.runner.codes.insert("redis-cli".into(), code);
            let (r, j) = w.prepare(vec![holder(50, "redis-server", Some("redis-server.service"))]);
            let calls: Vec<String> = w.runner.calls.borrow().iter().map(|a| a.join(" ")).collect();
            (r.map_err(|e| format!("{e:#}")), calls, j, w)
        };
        // Snapshots configured: asked, then saved, then stopped.
        let (r, calls, _, _) = run(Some("save\n3600 1 300 100 60 10000\n"), 0);
        r.unwrap();
        assert_eq!(calls, [ask, "redis-cli SAVE"]);
        // None configured (`save ""`): asked, not saved (a dump.rdb would be loaded at the next start), stopped.
        let (r, calls, j, w) = run(Some("save\n\n"), 0);
        r.unwrap();
        assert_eq!(calls, [ask]);
        assert_eq!(w.active("redis-server.service"), "inactive");
        let pre = j.record().entries.iter().find(|e| matches!(e.change, Change::PreStop { .. })).unwrap();
        assert_eq!(pre.status, Status::Done);
        // Redis does not answer: the step fails, naming the question, and nothing is stopped.
        let (r, calls, _, w) = run(None, 1);
        let e = r.unwrap_err();
        assert!(
            e.contains("pre-stop of redis: [\"redis-cli\", \"--raw\", \"CONFIG\", \"GET\", \"save\"] exited 1"),
            "{e}"
        );
        assert_eq!(calls, [ask]);
        assert_eq!(w.active("redis-server.service"), "active");
    }

    #[test]
    fn elasticsearch_allocation_is_limited_and_flushed_before_the_stop_and_restored_after_the_start_or_the_rollback() {
        let sd = || FakeSystemd::new().with_unit(service("elasticsearch.service", "active"));
        let es = || {
            let mut h = holder(80, "java", Some("elasticsearch.service"));
            h.cmdline = vec![
                "/usr/share/elasticsearch/jdk/bin/java".into(),
                "org.elasticsearch.bootstrap.Elasticsearch".into(),
            ];
            vec![h]
        };
        let calls = |w: &World, from: usize| -> Vec<String> {
            w.runner.calls.borrow()[from..].iter().map(|a| a.join(" ")).collect()
        };
        let settings = "curl -sS -f -X PUT -H Content-Type: application/json -d";
        let primaries = format!(
            "{settings} {{\"persistent\":{{\"cluster.routing.allocation.enable\":\"primaries\"}}}} \
             http://127.0.0.1:9200/_cluster/settings"
        );
        let flush = "curl -sS -f -X POST http://127.0.0.1:9200/_flush".to_string();
        let back = "curl -sS -f --retry 30 --retry-delay 2 -X PUT -H Content-Type: application/json -d \
                    {\"persistent\":{\"cluster.routing.allocation.enable\":null}} \
                    http://127.0.0.1:9200/_cluster/settings"
            .to_string();
        let health = "curl -sS -f http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=5s".to_string();

        // The window: allocation limited, flush, stop; after the start, allocation back, then health not red.
        let w = World::new(sd());
        let (r, mut j) = w.prepare(es());
        r.unwrap();
        assert_eq!(calls(&w, 0), [primaries.clone(), flush.clone()]);
        assert_eq!(w.active("elasticsearch.service"), "inactive");
        let before = w.runner.calls.borrow().len();
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty() && r.not_ready.is_empty(), "{r:?}");
        assert_eq!(calls(&w, before), [back.clone(), health.clone()]);
        assert_eq!(w.active("elasticsearch.service"), "active");

        // The flush fails: nothing is stopped, and the rollback sets allocation back although the node never
        // stopped (else the cluster would stay limited to primaries).
        let mut w = World::new(sd());
        w.runner.fail_when = vec!["_flush".into()];
        let (r, _) = w.prepare(es());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("rolled back"), "{e}");
        assert_eq!(w.active("elasticsearch.service"), "active");
        assert_eq!(calls(&w, 0), [primaries, flush, back, health], "allocation set back by the rollback");
    }

    #[test]
    fn restore_runs_the_post_start_steps_after_the_start_then_waits_for_readiness_naming_a_failing_probe() {
        let sd = || FakeSystemd::new().with_unit(service("postgresql@15-main.service", "active"));
        let holders = || vec![holder(70, "postgres", Some("postgresql@15-main.service"))];
        let mut w = World::new(sd());
        w.settings.workloads.get_mut("postgresql").unwrap().post_start = vec![crate::config::PreStop {
            argv: vec!["pg-after".into()],
            ..w.settings.workloads["sap"].pre_stop[0].clone()
        }];
        let (r, mut j) = w.prepare(holders());
        r.unwrap();
        let before = w.runner.calls.borrow().len();
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty() && r.not_ready.is_empty(), "{r:?}");
        let after: Vec<String> = w.runner.calls.borrow()[before..].iter().map(|a| a.join(" ")).collect();
        assert_eq!(after, ["pg-after", "pg_isready -q"], "post-start, then the probe, after the start");
        assert_eq!(w.active("postgresql@15-main.service"), "active");
        assert_eq!(j.record().phase, Phase::Closed);

        // A probe that never answers: reported, named, within its bound; the window still closes.
        let mut w = World::new(sd());
        w.settings.workloads.get_mut("postgresql").unwrap().ready.as_mut().unwrap().timeout_secs = 2;
        let (r, mut j) = w.prepare(holders());
        r.unwrap();
        w.runner.codes.insert("pg_isready".into(), 2);
        let t = std::time::Instant::now();
        let r = w.restore(&mut j);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(
            r.not_ready,
            ["workload postgresql not ready after 2 s: probe [\"pg_isready\", \"-q\"] as postgres: exited 2: boom"]
        );
        assert!(w.runner.calls.borrow().iter().filter(|a| a[0] == "pg_isready").count() >= 2, "asked again");
        assert!(r.summary().contains("not ready: workload postgresql"), "{}", r.summary());
        assert_eq!(j.record().phase, Phase::Closed);

        // Redis: PONG is ready, anything else is not.
        let mut w = World::new(FakeSystemd::new().with_unit(service("redis-server.service", "active")));
        w.settings.workloads.get_mut("redis").unwrap().ready.as_mut().unwrap().timeout_secs = 1;
        w.settings.workloads.get_mut("redis").unwrap().pre_stop.clear();
        let (r, mut j) = w.prepare(vec![holder(71, "redis-server", Some("redis-server.service"))]);
        r.unwrap();
        w.runner.stdouts.insert("redis-cli ping".into(), "LOADING Redis is loading the dataset in memory\n".into());
        let r = w.restore(&mut j);
        assert!(
            r.not_ready[0].ends_with("answered \"LOADING Redis is loading the dataset in memory\", not \"PONG\""),
            "{r:?}"
        );
    }

    #[test]
    fn a_post_start_step_with_retry_secs_is_run_again_while_it_fails_within_its_bound() {
        let sd = || FakeSystemd::new().with_unit(service("postgresql@15-main.service", "active"));
        let holders = || vec![holder(70, "postgres", Some("postgresql@15-main.service"))];
        let step = |retry_secs| crate::config::PreStop {
            argv: vec!["cluster-online".into()],
            retry_secs,
            ..Settings::default().workloads["sap"].pre_stop[0].clone()
        };
        // Fails twice (the cluster is not up yet), then succeeds: run three times, then the probe.
        let mut w = World::new(sd());
        w.settings.workloads.get_mut("postgresql").unwrap().post_start = vec![step(30)];
        let (r, mut j) = w.prepare(holders());
        r.unwrap();
        w.runner.fail_first.borrow_mut().insert("cluster-online".into(), 2);
        let before = w.runner.calls.borrow().len();
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty() && r.not_ready.is_empty(), "{r:?}");
        let after: Vec<String> = w.runner.calls.borrow()[before..].iter().map(|a| a.join(" ")).collect();
        assert_eq!(after, ["cluster-online", "cluster-online", "cluster-online", "pg_isready -q"]);

        // Without retry_secs: once, and its failure is named.
        let mut w = World::new(sd());
        w.settings.workloads.get_mut("postgresql").unwrap().post_start = vec![step(0)];
        let (r, mut j) = w.prepare(holders());
        r.unwrap();
        w.runner.fail_first.borrow_mut().insert("cluster-online".into(), 2);
        let r = w.restore(&mut j);
        assert_eq!(r.not_ready.len(), 1, "{r:?}");
        assert!(r.not_ready[0].starts_with("workload postgresql: post-start [\"cluster-online\"] as "), "{r:?}");
        assert!(r.not_ready[0].contains("exited Some(1)"), "{r:?}");
        assert_eq!(w.runner.calls.borrow().iter().filter(|a| a[0] == "cluster-online").count(), 1);

        // Always failing: given up after its bound, named.
        let mut w = World::new(sd());
        w.settings.workloads.get_mut("postgresql").unwrap().post_start = vec![step(2)];
        let (r, mut j) = w.prepare(holders());
        r.unwrap();
        w.runner.fail_first.borrow_mut().insert("cluster-online".into(), 1000);
        let t = std::time::Instant::now();
        let r = w.restore(&mut j);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(r.not_ready.len(), 1, "{r:?}");
        let n = w.runner.calls.borrow().iter().filter(|a| a[0] == "cluster-online").count();
        assert!((2..=4).contains(&n), "run again each second for 2 s: {n}");
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn an_undo_whose_target_is_gone_is_done_with_a_warning_and_the_window_ends() {
        let mut w = World::new(docker_systemd().with_unit(service("ade-gone.service", "active")));
        let mut wl = w.settings.workloads["mongodb"].clone();
        wl.units = vec!["ade-gone.service".into()];
        w.settings.workloads.insert("gone".into(), wl);
        let mut hs = docker_holders();
        hs.push(holder(40, "x", Some("ade-gone.service")));
        let (r, mut j) = w.prepare(hs);
        r.unwrap();
        // During the window: the engine removed c2 (`docker run --rm`), the unit file went with a package upgrade.
        w.runner.docker_gone.insert("c2".into());
        w.sd.forget("ade-gone.service");
        let out = w.restore(&mut j);
        assert!(out.failed.is_empty(), "{out:?}");
        assert!(out.warnings.iter().any(|x| x.contains("c2") && x.contains("no longer exist")), "{out:?}");
        assert!(out.warnings.iter().any(|x| x.contains("ade-gone.service") && x.contains("not-found")), "{out:?}");
        assert!(!j.is_window_open(), "the window ends");
        let calls: Vec<String> = w.runner.calls.borrow().iter().map(|c| c.join(" ")).collect();
        assert!(calls.contains(&"docker start c1".to_string()), "the container still there is started: {calls:?}");
        assert_eq!(w.active("docker.service"), "active");
    }

    #[test]
    fn a_containerd_task_whose_container_was_deleted_is_done_with_a_warning() {
        let mut w = World::new(docker_systemd());
        w.runner = FakeRunner::default();
        let mut j = w.journal();
        for id in ["web", "gone"] {
            j.intend(Change::StopTask { namespace: "demo".into(), id: id.into(), state: "running".into() }).unwrap();
        }
        w.runner.containers_gone.borrow_mut().insert(("demo".into(), "gone".into()));
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty(), "{r:?}");
        assert!(r.warnings.iter().any(|x| x.contains("gone") && x.contains("no longer exists")), "{r:?}");
        assert_eq!(w.runner.task("demo", "web").as_deref(), Some("RUNNING"));
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_pre_stop_password_never_reaches_the_journal_or_its_messages() {
        let mut w = World::new(FakeSystemd::new().with_unit(service("cassandra.service", "active")));
        let cfg = w.settings.workloads.get_mut("cassandra").unwrap();
        cfg.pre_stop[0].argv =
            ["nodetool", "-u", "cassandra", "-pw", "Hunter2-secret", "drain"].iter().map(|s| s.to_string()).collect();
        w.runner.codes.insert("nodetool".into(), 1);
        let (r, _) = w.prepare(vec![holder(20, "java", Some("cassandra.service"))]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("-pw") && !e.contains("Hunter2-secret"), "{e}");
        let text = std::fs::read_to_string(w.dir.path().join("state.json")).unwrap();
        assert!(text.contains("nodetool") && !text.contains("Hunter2-secret"), "{text}");
        assert!(w.runner.calls.borrow().iter().any(|c| c.contains(&"Hunter2-secret".to_string())), "run as written");
    }

    #[test]
    fn a_stray_workload_process_fails_prepare_under_the_report_policy() {
        let w = World::new(FakeSystemd::new().with_unit(service("mongod.service", "active")));
        let mut stray = holder(31, "mongod", None);
        stray.cgroup = Some("/user.slice".into());
        let (r, _) = w.prepare(vec![holder(30, "mongod", Some("mongod.service")), stray]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("pid 31 mongod (no unit)") && e.contains("stray policy report"), "{e}");
        assert_eq!(w.active("mongod.service"), "active", "rolled back");
    }

    #[test]
    fn a_stray_is_terminated_under_the_terminate_policy_and_recorded() {
        let mut w = World::new(FakeSystemd::new().with_unit(service("mongod.service", "active")));
        w.settings.stray.policy = StrayPolicy::Terminate;
        w.settings.stray.grace_secs = 5;
        let (r, j) = w.prepare(vec![holder(30, "mongod", Some("mongod.service")), holder(31, "mongod", None)]);
        r.unwrap();
        assert_eq!(*w.terminated.borrow(), [31], "through the process table, never a real pid");
        assert!(!w.sd.calls().iter().any(|c| matches!(c, FakeCall::Kill(..))), "a stray is in no unit");
        let e = j.record().entries.iter().find(|e| matches!(e.change, Change::TerminateProcess { pid: 31, .. }));
        assert_eq!(e.map(|e| e.status), Some(Status::Done));
    }

    #[test]
    fn a_stopped_units_leftover_is_killed_through_killunit_and_recorded() {
        // KillMode=process: the unit stops, its child stays in the cgroup and on the filesystem.
        let w = World::new(
            FakeSystemd::new().with_unit(service("mongod.service", "active")).with_pid(40, "mongod.service"),
        );
        let (r, j) =
            w.prepare(vec![holder(30, "mongod", Some("mongod.service")), holder(40, "mongod", Some("mongod.service"))]);
        r.unwrap();
        let kills: Vec<FakeCall> = w.sd.calls().into_iter().filter(|c| matches!(c, FakeCall::Kill(..))).collect();
        assert_eq!(kills, [FakeCall::Kill("mongod.service".into(), libc::SIGTERM)], "gone after SIGTERM: no SIGKILL");
        assert!(w.terminated.borrow().is_empty(), "a unit's leftovers go through the service manager");
        let e = j.record().entries.iter().find(|e| matches!(e.change, Change::TerminateProcess { pid: 40, .. }));
        assert_eq!(e.map(|e| e.status), Some(Status::Done));
    }

    #[test]
    fn a_unit_in_etc_is_held_by_the_generator_during_the_window_and_restore_reloads_before_starting_it() {
        let mut w = World::new(FakeSystemd::new());
        let etc = UnitInfo {
            fragment_path: "/etc/systemd/system/SAPHN1_00.service".into(),
            ..service("SAPHN1_00.service", "active")
        };
        w.sd = FakeSystemd::new().with_unit(etc).with_generator(&w.paths.hold_file());
        w.settings.workloads.get_mut("sap").unwrap().pre_stop.clear();
        let (r, mut j) = w.prepare(vec![holder(50, "sapstartsrv", Some("SAPHN1_00.service"))]);
        r.unwrap();
        assert!(!w.sd.calls().iter().any(|c| matches!(c, FakeCall::Mask(..))), "/etc outranks a runtime mask");
        assert_eq!(w.sd.masked(), ["SAPHN1_00.service"], "held by the generator's mask for the window");
        assert_eq!(w.sd.stopped_with_mask_in_effect(), Vec::<String>::new(), "the mask came after the stop");
        let listed = std::fs::read_to_string(w.paths.hold_file()).unwrap();
        assert!(listed.lines().any(|l| l == "SAPHN1_00.service"), "{listed}");
        let r = w.restore(&mut j);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert!(!w.paths.hold_file().exists(), "restore removes the list");
        assert_eq!(w.active("SAPHN1_00.service"), "active");
        let calls = w.sd.calls();
        let last_reload = calls.iter().rposition(|c| matches!(c, FakeCall::Reload)).unwrap();
        let start = calls.iter().position(|c| matches!(c, FakeCall::Start(_))).unwrap();
        assert!(last_reload < start, "{calls:?}");
    }

    #[test]
    fn a_rollback_removes_the_hold_list_and_reloads_before_starting() {
        let mut w = World::new(FakeSystemd::new());
        w.sd = docker_systemd()
            .fail_stop("containerd.service", FakeFailure::Result("timeout".into()))
            .with_generator(&w.paths.hold_file());
        // The list of an earlier, crashed attempt is still there: the rollback must not leave its masks.
        crate::window::hold::write_list(&w.paths, &["docker.service".to_string()]).unwrap();
        let (r, _) = w.prepare(docker_holders());
        assert!(format!("{:#}", r.unwrap_err()).contains("rolled back"));
        assert!(!w.paths.hold_file().exists());
        assert_eq!(w.sd.masked(), Vec::<String>::new());
        assert_eq!(w.active("docker.service"), "active");
    }

    #[test]
    fn a_restore_whose_journal_cannot_be_written_restores_the_machine_all_the_same_and_says_so() {
        let w = World::new(docker_systemd());
        let mem = crate::testing::store::MemStore::default();
        let procs =
            FakeProcs { holders: docker_holders(), systemd: &w.sd, terminated: &w.terminated, own_units: vec![] };
        let m = w.machine(&procs);
        let p = plan(&snapshot(&m, &["/".into()]).unwrap(), &w.settings).unwrap();
        let mut j = Journal::open(&mem, Path::new("/"), "boot-1").unwrap();
        execute(&m, &p, &mut j).unwrap();
        mem.fail.set(true); // the disk filled up during the window
        let r = restore::restore(&m, &mut j);
        for u in ["docker.service", "docker.socket", "containerd.service"] {
            assert_eq!(w.active(u), "active", "{u}");
        }
        assert_eq!(w.se.0.get(), Mode::Enforcing, "SELinux back although nothing could be recorded");
        assert!(r.failed.iter().any(|f| f.starts_with("journal: could not record")), "{:?}", r.failed);
        let saved = mem.saved.borrow().clone().unwrap();
        assert_eq!(
            saved.phase,
            Phase::Preparing,
            "on disk the window is as execute left it: the next restore records it"
        );
        mem.fail.set(false);
        let mut j2 = Journal::resume(&mem).unwrap().unwrap();
        let r2 = restore::restore(&m, &mut j2);
        assert!(r2.failed.is_empty(), "{:?}", r2.failed);
        assert_eq!(j2.record().phase, Phase::Closed);
    }

    #[test]
    fn restore_ends_the_leftovers_of_a_stopped_units_old_instance_before_starting_it_and_records_it() {
        // A crash between the stop of a KillMode=process unit and the clean-up of its leftover (pid 40, holding
        // the unit's socket): the journal has the stop, the leftover still runs in the unit's cgroup.
        let w = World::new(
            FakeSystemd::new()
                .with_unit(service("mongod.service", "inactive"))
                .with_pid(40, "mongod.service")
                .leftovers_block_start("mongod.service"),
        );
        let mut j = w.journal();
        let seq = j.intend(Change::StopUnit { unit: "mongod.service".into(), active_state_before: "active".into() });
        j.done(seq.unwrap()).unwrap();
        let procs = FakeProcs {
            holders: vec![holder(40, "mongod", Some("mongod.service"))],
            systemd: &w.sd,
            terminated: &w.terminated,
            own_units: vec![],
        };
        let r = restore::restore(&w.machine(&procs), &mut j);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(w.active("mongod.service"), "active");
        let calls = w.sd.calls();
        let kill = calls.iter().position(|c| *c == FakeCall::Kill("mongod.service".into(), libc::SIGTERM)).unwrap();
        let start = calls.iter().position(|c| matches!(c, FakeCall::Start(_))).unwrap();
        assert!(kill < start, "{calls:?}");
        let e = j.record().entries.iter().find(|e| matches!(e.change, Change::TerminateProcess { pid: 40, .. }));
        assert!(e.is_some(), "the kill is recorded: {:?}", j.record().entries);
        assert_eq!(j.record().phase, Phase::Closed);
    }

    #[test]
    fn a_unit_that_fails_to_come_back_is_named_and_retried_by_the_next_restore() {
        let w = World::new(FakeSystemd::new().with_unit(service("mongod.service", "active")));
        let (r, mut j) = w.prepare(vec![holder(30, "mongod", Some("mongod.service"))]);
        r.unwrap();
        // A new machine view where the unit refuses to start once.
        let w_fail = World {
            sd: FakeSystemd::new()
                .with_unit(service("mongod.service", "inactive"))
                .fail_start("mongod.service", FakeFailure::Result("failed".into())),
            se: FakeSelinux(Cell::new(Mode::Permissive)),
            runner: FakeRunner::default(),
            settings: Settings::default(),
            paths: w.paths.clone(),
            dir: tempfile::tempdir().unwrap(),
            terminated: RefCell::default(),
        };
        let r1 = w_fail.restore(&mut j);
        assert_eq!(r1.failed.len(), 1, "{:?}", r1);
        assert!(r1.failed[0].contains("mongod.service failed to come back"), "{:?}", r1.failed);
        assert_eq!(j.record().phase, Phase::Restoring, "the window stays open for a retry");
        w_fail.sd.heal("mongod.service");
        let r2 = w_fail.restore(&mut j);
        assert!(r2.failed.is_empty());
        assert_eq!(r2.undone, ["start mongod.service"]);
        assert_eq!(j.record().phase, Phase::Closed);
    }
}
