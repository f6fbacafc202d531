//! The snapshot: everything the plan depends on, read from the machine through the edges (the process table,
//! systemd, SELinux, the docker CLI) right before planning. It owns the reading; it must not change anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;

use super::Machine;
use crate::classify::{classify, Class, Classification};
use crate::runner::{RunError, Runner};
use crate::scan::{Holder, ProcessTable, ScanError};
use crate::selinux::Mode;
use crate::systemd::{ActiveState, LoadState, UnitKind};

/// What the planner knows of one unit (read from systemd before planning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitFacts {
    /// Unit name.
    pub id: String,
    /// `loaded`, `not-found`, `masked`...
    pub load_state: LoadState,
    /// `active`, `inactive`, `activating`...
    pub active_state: ActiveState,
    /// Units that can start this one (sockets, timers, paths).
    pub triggered_by: Vec<String>,
    /// The unit file (a runtime mask cannot shadow one in /etc/systemd/system or /run/systemd/system).
    pub fragment_path: String,
    /// Units systemd stops along with this one: those that `Requires=`, `BindsTo=` or are `PartOf=` it
    /// (RequiredBy, BoundBy, ConsistsOf).
    pub stopped_with: Vec<String>,
    /// `RefuseManualStop=yes`: a stop of it is refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refuse_manual_stop: bool,
    /// Created at runtime (`systemd-run`): gone once stopped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

impl UnitFacts {
    /// Running or on its way (a stop job is needed).
    pub fn is_running(&self) -> bool {
        self.active_state.is_running()
    }
    /// A transient unit (scope): stopped, never masked or started again.
    pub fn is_transient(&self) -> bool {
        UnitKind::of(&self.id) == UnitKind::Scope
    }
    /// A runtime mask (in /run/systemd/system) can shadow this unit's file.
    pub fn maskable(&self) -> bool {
        !self.is_transient()
            && !self.fragment_path.starts_with("/etc/systemd/system/")
            && !self.fragment_path.starts_with("/run/systemd/")
    }
    /// A unit that starts others.
    pub fn is_trigger(&self) -> bool {
        UnitKind::of(&self.id) == UnitKind::Trigger
    }
}

/// What holds one of the filesystems being freed (for the dry run; the plan works on the union).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The filesystem (its mount point, or the path asked for).
    pub mount: PathBuf,
    /// The pids of its holders (in [`Snapshot::holders`]).
    pub pids: Vec<i32>,
    /// Mount points below it and swap files on it: the kernel's users, which keep a plain `umount` from
    /// succeeding too.
    pub kernel: Vec<PathBuf>,
}

/// A snapshot of the machine: everything the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The filesystems being freed, in ADE's order: the data volumes first, then `/` (`handle.py:2168-2209`).
    pub mounts: Vec<Held>,
    /// Holders of any of them with their class, each process once.
    pub holders: Vec<(Holder, Classification)>,
    /// Facts of the units of workload holders, their triggers, their workloads' companion units and the units
    /// systemd stops with any of them.
    pub units: BTreeMap<String, UnitFacts>,
    /// SELinux is enforcing now.
    pub selinux_enforcing: bool,
    /// Running Docker containers (ids) when Docker is a workload; with live-restore they outlive dockerd.
    pub docker_containers: Vec<String>,
    /// containerd's own running and paused tasks (namespaces other than Docker's) when containerd.service runs:
    /// their shims hold the filesystem and `KillMode=process` keeps them past containerd's stop.
    pub containerd_tasks: Vec<super::ctr::Task>,
    /// The units of ade-prep and its ancestors: never stopped.
    pub own_units: BTreeSet<String>,
    /// Corosync's quorum as this node sees it, or why it could not be read; read while corosync.service runs.
    pub quorum: Option<Result<super::quorum::Quorum, String>>,
}

/// Every process holding any of `mounts`, each once (a process on `/` and a data volume is one holder), and what
/// holds each mount.
pub(crate) fn scan_mounts(procs: &dyn ProcessTable, mounts: &[PathBuf]) -> Result<(Vec<Holder>, Vec<Held>), ScanError> {
    let mut all: Vec<Holder> = vec![];
    let mut held = vec![];
    for mount in mounts {
        let scan = procs.scan(mount)?;
        let pids = scan.holders.iter().map(|h| h.pid).collect();
        let kernel = scan.kernel.mounts_below.iter().chain(&scan.kernel.swap_files).cloned().collect();
        held.push(Held { mount: mount.clone(), pids, kernel });
        for h in scan.holders {
            if !all.iter().any(|a| a.pid == h.pid && a.start_time == h.start_time) {
                all.push(h);
            }
        }
    }
    all.sort_by_key(|h| h.pid);
    Ok((all, held))
}

/// Reads what the planner needs: the holders of every filesystem in `mounts` and their classes, the facts of every
/// unit involved, SELinux, containers.
pub fn snapshot(m: &Machine, mounts: &[PathBuf]) -> anyhow::Result<Snapshot> {
    let (holders, held) = scan_mounts(m.procs, mounts)?;
    let holders: Vec<_> = holders.into_iter().map(|h| (classify(&h, m.settings), h)).map(|(c, h)| (h, c)).collect();
    let mut units: BTreeMap<String, UnitFacts> = BTreeMap::new();
    let mut todo: Vec<String> = vec![];
    let mut workloads = BTreeSet::new();
    for (h, c) in &holders {
        if c.class == Class::Workload {
            todo.extend(h.unit.clone());
            workloads.extend(c.workload.clone());
        }
    }
    for w in &workloads {
        todo.extend(m.settings.workloads[w].companion_units.iter().cloned());
    }
    // The other writers' services, when prepare is to stop them: the plan needs their facts as a workload's.
    if m.settings.policy.writers == crate::config::WritersPolicy::Stop {
        let writers = crate::classify::writers(holders.iter().map(|(h, c)| (h, c)));
        todo.extend(writers.into_iter().filter_map(|w| w.unit));
    }
    while let Some(u) = todo.pop() {
        if units.contains_key(&u) {
            continue;
        }
        let info = m.systemd.unit(&u).with_context(|| format!("reading unit {u}"))?;
        todo.extend(info.triggered_by.iter().cloned());
        let stopped_with: Vec<String> =
            info.required_by.into_iter().chain(info.bound_by).chain(info.consists_of).collect();
        todo.extend(stopped_with.iter().cloned());
        units.insert(
            u,
            UnitFacts {
                id: info.id,
                load_state: info.load_state,
                active_state: info.active_state,
                triggered_by: info.triggered_by,
                fragment_path: info.fragment_path,
                stopped_with,
                refuse_manual_stop: info.refuse_manual_stop,
                transient: info.transient,
            },
        );
    }
    let selinux_enforcing = m.selinux.mode()? == Mode::Enforcing;
    // `docker ps` only while the engine runs: with it down the CLI fails ("Cannot connect"), and with docker.socket
    // listening it would start the engine prepare is about to stop (docs/docker.md, bug 3).
    let engine_running = units.get("docker.service").is_some_and(|f| f.active_state.is_running());
    let docker_containers =
        if workloads.contains("docker") && engine_running { running_containers(m.runner)? } else { vec![] };
    // containerd's own tasks (`ctr run`, not Docker's): listed through the containerd that runs (docs/docker.md,
    // bug 2).
    let containerd_running = units.get("containerd.service").is_some_and(|f| f.active_state.is_running());
    let containerd_tasks = if containerd_running { super::ctr::running_tasks(m.runner)? } else { vec![] };
    let own_units = m.procs.own_units().into_iter().collect();
    // Corosync's quorum while it runs: the plan refuses a stop that would leave the cluster without it.
    let corosync_running = units.get(super::quorum::COROSYNC_UNIT).is_some_and(|f| f.active_state.is_running());
    let quorum = corosync_running.then(|| super::quorum::read(m.runner));
    Ok(Snapshot {
        mounts: held,
        holders,
        units,
        selinux_enforcing,
        docker_containers,
        containerd_tasks,
        own_units,
        quorum,
    })
}

/// Ids of running Docker containers; none when the docker CLI is not installed.
fn running_containers(runner: &dyn Runner) -> anyhow::Result<Vec<String>> {
    let argv: Vec<String> = ["docker", "ps", "-q", "--no-trunc"].iter().map(|s| s.to_string()).collect();
    match runner.run(&argv, "root", Duration::from_secs(60)) {
        Err(RunError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(anyhow!("docker ps: {e}")),
        Ok(o) if o.code == Some(0) => Ok(o.stdout.split_whitespace().map(str::to_string).collect()),
        Ok(o) => Err(anyhow!("docker ps: exit {:?}: {}", o.code, o.stderr_tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Scan;
    use crate::testing::procs::holder;
    use std::path::Path;

    /// Holders per mount point; nothing else.
    struct ByMount(Vec<(&'static str, Vec<Holder>)>);
    impl ProcessTable for ByMount {
        fn scan(&self, path: &Path) -> Result<Scan, ScanError> {
            let hs = self.0.iter().find(|(m, _)| Path::new(m) == path).map(|(_, h)| h.clone()).unwrap_or_default();
            let mut s = Scan::from_holders(path, hs);
            if path == Path::new("/data") {
                s.kernel.swap_files.push("/data/swapfile".into());
            }
            Ok(s)
        }
        fn alive(&self, _: i32, _: u64) -> bool {
            true
        }
        fn terminate(&self, _: i32, _: u64, _: Duration) {}
        fn own_units(&self) -> Vec<String> {
            vec![]
        }
    }

    #[test]
    fn scanning_several_mounts_lists_each_process_once_and_what_holds_each_mount() {
        let t = ByMount(vec![
            ("/data", vec![holder(20, "mongod", Some("mongod.service")), holder(30, "vim", None)]),
            ("/", vec![holder(10, "dockerd", Some("docker.service")), holder(20, "mongod", Some("mongod.service"))]),
        ]);
        let (all, held) = scan_mounts(&t, &["/data".into(), "/".into()]).unwrap();
        let pids: Vec<i32> = all.iter().map(|h| h.pid).collect();
        assert_eq!(pids, [10, 20, 30]);
        assert_eq!(held[0], Held { mount: "/data".into(), pids: vec![20, 30], kernel: vec!["/data/swapfile".into()] });
        assert_eq!(held[1], Held { mount: "/".into(), pids: vec![10, 20], kernel: vec![] });
    }
}
