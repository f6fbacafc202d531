//! containerd's own tasks through its `ctr` CLI (bug 2 of docs/docker.md): list the running and paused tasks of
//! every namespace but Docker's (`moby`, whose containers `docker stop` ends), stop tasks (SIGTERM, up to the grace,
//! SIGKILL, delete: the shim exits with its task) and start one again. It owns the `ctr` command lines and the reading
//! of their output, through the [`Runner`] edge; it must not decide which tasks to stop (the plan does) nor journal
//! (execute and restore do).
//!
//! Every command and flag used exists in ctr 1.2 (Docker CE and RHEL 7 era) as in 1.6 (Debian 12's containerd
//! 1.6.20 in the VM guest), read in containerd's source at tags v1.2.0 and v1.6.20: `--namespace, -n`
//! (cmd/ctr/app/main.go), `namespaces ls --quiet, -q` (cmd/ctr/commands/namespaces/namespaces.go), `task ls`
//! printing `TASK PID STATUS` with the status in capitals (cmd/ctr/commands/tasks/list.go), `task kill --signal, -s`
//! (tasks/kill.go), `task resume` (tasks/resume.go), `task delete` (tasks/delete.go), `task start --null-io
//! --detach, -d` (tasks/start.go).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::runner::{RunError, Runner};

/// Docker's namespace: its containers are stopped and started with the docker CLI, never here.
pub const DOCKER_NAMESPACE: &str = "moby";

/// containerd's CRI plugin's namespace: kubelet's pods. Their containers are created and started through the CRI;
/// a `ctr task start` behind it would run a pod's container again without kubelet (and the CRI's own record of it).
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Whether restore leaves a stopped task to kubelet instead of starting it again: the CRI's namespace. kubelet, once
/// started again, finds its pods' containers exited and recreates them through the CRI, as after a node's reboot.
pub fn left_to_kubelet(t: &Task) -> bool {
    t.namespace == CRI_NAMESPACE
}

/// How long one `ctr` command may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a task has to end after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long `start` waits for containerd to answer once its unit has started.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// One containerd task to stop and bring back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Task {
    /// containerd namespace.
    pub namespace: String,
    /// The container id (the task's name).
    pub id: String,
    /// `running` or `paused`.
    pub state: String,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} in namespace {}", self.id, self.namespace)?;
        if self.state != "running" {
            write!(f, " ({})", self.state)?;
        }
        Ok(())
    }
}

/// Why a `ctr` command did not do its job (the message names the command, hence namespace and container).
#[derive(Debug)]
enum CtrError {
    /// No `ctr` on the machine.
    Missing,
    Failed(String),
}

impl std::fmt::Display for CtrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtrError::Missing => f.write_str("ctr is not installed"),
            CtrError::Failed(s) => f.write_str(s),
        }
    }
}

fn ctr(runner: &dyn Runner, ns: Option<&str>, args: &[&str]) -> Result<String, CtrError> {
    let mut argv: Vec<String> = vec!["ctr".into()];
    if let Some(ns) = ns {
        argv.extend(["-n".to_string(), ns.to_string()]);
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    let shown = argv.join(" ");
    match runner.run(&argv, "root", CTR_TIMEOUT) {
        Err(RunError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Err(CtrError::Missing),
        Err(e) => Err(CtrError::Failed(format!("{shown}: {e}"))),
        Ok(o) if o.code == Some(0) => Ok(o.stdout),
        Ok(o) if o.timed_out => Err(CtrError::Failed(format!("{shown}: timed out after {} s", CTR_TIMEOUT.as_secs()))),
        Ok(o) => Err(CtrError::Failed(format!("{shown}: exit {:?}: {}", o.code, o.stderr_tail.trim()))),
    }
}

/// The tasks of namespace `ns` and their status, lower case (`running`, `paused`, `stopped`, `created`...), from
/// `ctr -n NS task ls`: a `TASK PID STATUS` header, then one line a task.
fn statuses(runner: &dyn Runner, ns: &str) -> Result<BTreeMap<String, String>, CtrError> {
    let out = ctr(runner, Some(ns), &["task", "ls"])?;
    Ok(out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_ascii_lowercase()))
        })
        .collect())
}

/// The running and paused tasks of every namespace but Docker's; none when `ctr` is not installed.
pub fn running_tasks(runner: &dyn Runner) -> anyhow::Result<Vec<Task>> {
    let namespaces = match ctr(runner, None, &["namespaces", "ls", "-q"]) {
        Err(CtrError::Missing) => {
            log::warn!("containerd runs but ctr is not installed: its own tasks (outside Docker) cannot be listed");
            return Ok(vec![]);
        }
        Err(e) => anyhow::bail!("listing containerd's namespaces: {e}"),
        Ok(out) => out,
    };
    let mut tasks = vec![];
    for ns in namespaces.split_whitespace().filter(|ns| *ns != DOCKER_NAMESPACE) {
        let st =
            statuses(runner, ns).map_err(|e| anyhow::anyhow!("listing containerd's tasks in namespace {ns}: {e}"))?;
        for (id, s) in st {
            let state = match s.as_str() {
                "running" => "running",
                "paused" | "pausing" => "paused",
                _ => continue,
            };
            tasks.push(Task { namespace: ns.to_string(), id, state: state.into() });
        }
    }
    Ok(tasks)
}

/// Whether each task has ended (stopped, or gone): one `task ls` a namespace. A namespace that cannot be read
/// counts as not ended.
fn ended(runner: &dyn Runner, tasks: &[&Task]) -> BTreeMap<(String, String), bool> {
    let mut by_ns: BTreeMap<&str, Option<BTreeMap<String, String>>> = BTreeMap::new();
    for t in tasks {
        by_ns.entry(&t.namespace).or_insert_with(|| statuses(runner, &t.namespace).ok());
    }
    tasks
        .iter()
        .map(|t| {
            let done = match &by_ns[t.namespace.as_str()] {
                None => false,
                Some(st) => st.get(&t.id).is_none_or(|s| s == "stopped"),
            };
            ((t.namespace.clone(), t.id.clone()), done)
        })
        .collect()
}

/// Waits up to `wait` for the tasks to end; returns those still running.
fn wait_ended<'a>(runner: &dyn Runner, tasks: Vec<&'a Task>, wait: Duration) -> Vec<&'a Task> {
    let start = Instant::now();
    let mut left = tasks;
    loop {
        let e = ended(runner, &left);
        left.retain(|t| !e[&(t.namespace.clone(), t.id.clone())]);
        if left.is_empty() || start.elapsed() >= wait {
            return left;
        }
        std::thread::sleep(POLL.min(wait.saturating_sub(start.elapsed())));
    }
}

/// Stops the tasks together as `docker stop` stops containers: SIGTERM to each (a paused task is resumed after it,
/// so that it gets the signal, as dockerd does), up to `grace` for them to end, SIGKILL to those left, then
/// `task delete` of each (its shim exits and its rootfs is unmounted). One result a task, in order; an error names
/// the task, its namespace and the command.
pub fn stop(runner: &dyn Runner, tasks: &[Task], grace: Duration) -> Vec<Result<(), String>> {
    let what = |t: &Task, e: &dyn std::fmt::Display| format!("containerd {t}: {e}");
    let mut kill_err: BTreeMap<usize, String> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        // A kill that fails because the task just ended is no error: the wait below decides.
        if let Err(e) = ctr(runner, Some(&t.namespace), &["task", "kill", "-s", "SIGTERM", &t.id]) {
            kill_err.insert(i, e.to_string());
        }
        if t.state == "paused" {
            if let Err(e) = ctr(runner, Some(&t.namespace), &["task", "resume", &t.id]) {
                kill_err.insert(i, e.to_string());
            }
        }
    }
    let left = wait_ended(runner, tasks.iter().collect(), grace);
    for t in &left {
        log::warn!("containerd {t} still runs after SIGTERM and {} s: SIGKILL", grace.as_secs());
        if let Err(e) = ctr(runner, Some(&t.namespace), &["task", "kill", "-s", "SIGKILL", &t.id]) {
            let i = tasks.iter().position(|x| x == *t).unwrap_or_default();
            kill_err.insert(i, e.to_string());
        }
    }
    let still = wait_ended(runner, left, KILL_WAIT);
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if still.contains(&t) {
                let why = kill_err.get(&i).map_or(String::new(), |e| format!(" ({e})"));
                return Err(what(t, &format!("still runs after SIGTERM, {} s and SIGKILL{why}", grace.as_secs())));
            }
            match ctr(runner, Some(&t.namespace), &["task", "delete", &t.id]) {
                Ok(_) => Ok(()),
                // Already deleted (a retry): nothing left of it.
                Err(_) if statuses(runner, &t.namespace).is_ok_and(|s| !s.contains_key(&t.id)) => Ok(()),
                Err(e) => Err(what(t, &e)),
            }
        })
        .collect()
}

/// Starts a stopped task again, detached, its output to /dev/null (`ctr` cannot tell what I/O the task had; a
/// detached task whose output nobody reads would block once the pipe is full). Idempotent: a task that runs (or is
/// still paused: it was never stopped) is left as it is, a stopped one not yet deleted is deleted first. Waits up to
/// 30 s for containerd to answer (its unit has just started).
pub fn start(runner: &dyn Runner, t: &Task) -> Result<(), String> {
    let what = |e: &dyn std::fmt::Display| format!("containerd {t}: {e}");
    let begin = Instant::now();
    let st = loop {
        match statuses(runner, &t.namespace) {
            Ok(st) => break st,
            Err(CtrError::Missing) => return Err(what(&CtrError::Missing)),
            Err(e) if begin.elapsed() >= CONNECT_WAIT => return Err(what(&e)),
            Err(_) => std::thread::sleep(POLL),
        }
    };
    match st.get(&t.id).map(String::as_str) {
        Some("running") | Some("paused") | Some("pausing") => return Ok(()),
        Some(_) => {
            ctr(runner, Some(&t.namespace), &["task", "delete", &t.id]).map_err(|e| what(&e))?;
        }
        None => {}
    }
    ctr(runner, Some(&t.namespace), &["task", "start", "--null-io", "-d", &t.id]).map(|_| ()).map_err(|e| what(&e))
}

/// Whether the task's container is gone from containerd (deleted since the stop: nothing can start its task
/// again): `ctr -n NS containers ls -q` answers and does not list it. False when ctr cannot be asked.
pub fn container_gone(runner: &dyn Runner, t: &Task) -> bool {
    ctr(runner, Some(&t.namespace), &["containers", "ls", "-q"]).is_ok_and(|out| !out.lines().any(|l| l.trim() == t.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runner::FakeRunner;

    #[test]
    fn running_and_paused_tasks_of_every_namespace_but_dockers() {
        let r = FakeRunner::default()
            .with_task("default", "a", "RUNNING")
            .with_task("demo", "b", "PAUSED")
            .with_task("demo", "c", "STOPPED")
            .with_task("demo", "d", "CREATED")
            .with_task("moby", "e", "RUNNING");
        let t = |ns: &str, id: &str, st: &str| Task { namespace: ns.into(), id: id.into(), state: st.into() };
        assert_eq!(running_tasks(&r).unwrap(), [t("default", "a", "running"), t("demo", "b", "paused")]);
        let calls: Vec<String> = r.calls.borrow().iter().map(|c| c.join(" ")).collect();
        assert!(!calls.iter().any(|c| c.contains("-n moby")), "{calls:?}");
    }

    #[test]
    fn only_the_cri_namespaces_tasks_are_left_to_kubelet() {
        let t = |ns: &str| Task { namespace: ns.into(), id: "x".into(), state: "running".into() };
        assert!(left_to_kubelet(&t("k8s.io")));
        for ns in ["default", "demo", "k8s", "k8s.io.x", "buildkit"] {
            assert!(!left_to_kubelet(&t(ns)), "{ns}");
        }
    }

    #[test]
    fn a_ctr_that_fails_is_an_error_naming_the_command_and_namespace() {
        let r = FakeRunner { fail_when: vec!["-n demo task ls".into()], ..Default::default() }
            .with_task("demo", "b", "RUNNING");
        let e = running_tasks(&r).unwrap_err().to_string();
        assert_eq!(e, "listing containerd's tasks in namespace demo: ctr -n demo task ls: exit Some(1): boom");
    }
}
