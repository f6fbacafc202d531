//! The snapshot: everything the plan depends on, read from the machine through the edges (the process table,
//! systemd, SELinux, the docker CLI) right before planning. It owns the reading; it must not change anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;

use super::Machine;
use crate::classify::{classify, Class, Classification};
use crate::runner::{RunError, Runner};
use crate::scan::Holder;
use crate::selinux::Mode;
use crate::systemd::{ActiveState, UnitKind};

/// What the planner knows of one unit (read from systemd before planning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitFacts {
    /// Unit name.
    pub id: String,
    /// `loaded`, `not-found`, `masked`...
    pub load_state: String,
    /// `active`, `inactive`, `activating`...
    pub active_state: ActiveState,
    /// Units that can start this one (sockets, timers, paths).
    pub triggered_by: Vec<String>,
    /// The unit file (a runtime mask cannot shadow one in /etc/systemd/system or /run/systemd/system).
    pub fragment_path: String,
    /// Units systemd stops along with this one: those that `Requires=`, `BindsTo=` or are `PartOf=` it
    /// (RequiredBy, BoundBy, ConsistsOf).
    pub stopped_with: Vec<String>,
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

/// A snapshot of the machine: everything the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The filesystem being freed.
    pub mount: PathBuf,
    /// Holders with their class.
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
}

/// Reads what the planner needs: holders and their classes, the facts of every unit involved, SELinux, containers.
pub fn snapshot(m: &Machine, mount: &Path) -> anyhow::Result<Snapshot> {
    let scan = m.procs.scan(mount)?;
    let holders: Vec<_> =
        scan.holders.into_iter().map(|h| (classify(&h, m.settings), h)).map(|(c, h)| (h, c)).collect();
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
                active_state: ActiveState::parse(&info.active_state),
                triggered_by: info.triggered_by,
                fragment_path: info.fragment_path,
                stopped_with,
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
    Ok(Snapshot {
        mount: mount.to_path_buf(),
        holders,
        units,
        selinux_enforcing,
        docker_containers,
        containerd_tasks,
        own_units,
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
