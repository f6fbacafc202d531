//! Outside commands in memory: records each argv, answers `docker ps` with two containers and `ctr` from an
//! in-memory containerd (its tasks by namespace and id, with their status). Test code only: it runs nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::runner::{Outcome, RunError, Runner};

/// Records argv; exits with the code given for argv[0] (0 otherwise).
#[derive(Default)]
pub(crate) struct FakeRunner {
    pub(crate) calls: RefCell<Vec<Vec<String>>>,
    pub(crate) codes: BTreeMap<String, i32>,
    /// containerd's tasks: (namespace, id) → status as `ctr task ls` prints it (RUNNING, PAUSED, STOPPED).
    pub(crate) tasks: RefCell<BTreeMap<(String, String), String>>,
    /// Tasks (ids) whose process ignores SIGTERM.
    pub(crate) ignore_term: BTreeSet<String>,
    /// A command whose words, joined by spaces, contain one of these fails (exit 1, stderr "boom").
    pub(crate) fail_when: Vec<String>,
    /// Called with each argv before it is answered (a test looks at the machine at that moment).
    #[allow(clippy::type_complexity)]
    pub(crate) hook: Option<Box<dyn Fn(&[String])>>,
    /// A SIGTERM sent to a paused task, delivered when it is resumed.
    pub(crate) pending_term: RefCell<BTreeSet<(String, String)>>,
    /// Standard output of a command, by its words joined by spaces.
    pub(crate) stdouts: BTreeMap<String, String>,
    /// containerd's containers (namespace, id): every task's given by [`FakeRunner::with_task`] (a task's container
    /// outlives the task), less those deleted by a test (`containers_gone`).
    pub(crate) containers: RefCell<BTreeSet<(String, String)>>,
    pub(crate) containers_gone: RefCell<BTreeSet<(String, String)>>,
    /// Docker containers the engine no longer has (removed since their stop): `docker ps` leaves them out,
    /// `docker start` of any of them fails (No such container), the others started.
    pub(crate) docker_gone: BTreeSet<String>,
    /// A command whose argv[0] is a key fails (exit 1, stderr "boom") that many times first, then answers as usual.
    pub(crate) fail_first: RefCell<BTreeMap<String, u32>>,
}

impl FakeRunner {
    /// A containerd task in `ns` with status `status` (RUNNING, PAUSED...).
    pub(crate) fn with_task(self, ns: &str, id: &str, status: &str) -> Self {
        self.tasks.borrow_mut().insert((ns.into(), id.into()), status.into());
        self.containers.borrow_mut().insert((ns.into(), id.into()));
        self
    }

    /// The status of a task, None when it has none.
    pub(crate) fn task(&self, ns: &str, id: &str) -> Option<String> {
        self.tasks.borrow().get(&(ns.to_string(), id.to_string())).cloned()
    }

    fn ctr(&self, argv: &[String]) -> Result<String, String> {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut tasks = self.tasks.borrow_mut();
        let key = |ns: &str, id: &str| (ns.to_string(), id.to_string());
        match a.as_slice() {
            ["ctr", "namespaces", "ls", "-q"] => {
                let ns: BTreeSet<&str> = tasks.keys().map(|(n, _)| n.as_str()).collect();
                Ok(ns.into_iter().map(|n| format!("{n}\n")).collect())
            }
            ["ctr", "-n", ns, "task", "ls"] => {
                let mut out = "TASK    PID    STATUS    \n".to_string();
                for ((n, id), st) in tasks.iter() {
                    if n == ns {
                        out.push_str(&format!("{id}    4242    {st}\n"));
                    }
                }
                Ok(out)
            }
            ["ctr", "-n", ns, "task", "kill", "-s", sig, id] => {
                let k = key(ns, id);
                let st = tasks.get(&k).cloned().ok_or_else(|| format!("task {id}: not found"))?;
                match (*sig, st.as_str()) {
                    ("SIGKILL", "RUNNING" | "PAUSED") => {
                        tasks.insert(k, "STOPPED".into());
                    }
                    ("SIGTERM", "PAUSED") => {
                        self.pending_term.borrow_mut().insert(k);
                    }
                    ("SIGTERM", "RUNNING") if !self.ignore_term.contains(*id) => {
                        tasks.insert(k, "STOPPED".into());
                    }
                    ("SIGTERM" | "SIGKILL", "STOPPED") => return Err("process already finished: not found".into()),
                    _ => {}
                }
                Ok(String::new())
            }
            ["ctr", "-n", ns, "task", "resume", id] => {
                let k = key(ns, id);
                if tasks.get(&k).map(String::as_str) != Some("PAUSED") {
                    return Err(format!("task {id} is not paused"));
                }
                let term = self.pending_term.borrow_mut().remove(&k) && !self.ignore_term.contains(*id);
                tasks.insert(k, if term { "STOPPED" } else { "RUNNING" }.into());
                Ok(String::new())
            }
            ["ctr", "-n", ns, "task", "delete", id] => match tasks.get(&key(ns, id)).map(String::as_str) {
                Some("STOPPED") => {
                    tasks.remove(&key(ns, id));
                    Ok(String::new())
                }
                Some(_) => Err(format!("task {id} must be stopped before deletion")),
                None => Err(format!("task {id}: not found")),
            },
            ["ctr", "-n", ns, "containers", "ls", "-q"] => {
                // Every task's container and every one ever named to start, less the deleted ones.
                let gone = self.containers_gone.borrow();
                let known = self.containers.borrow();
                let mut ids: BTreeSet<&str> =
                    tasks.keys().chain(known.iter()).filter(|(n, _)| n == ns).map(|(_, i)| i.as_str()).collect();
                ids.retain(|i| !gone.contains(&key(ns, i)));
                Ok(ids.into_iter().map(|i| format!("{i}\n")).collect())
            }
            ["ctr", "-n", ns, "task", "start", "--null-io", "-d", id] => {
                if self.containers_gone.borrow().contains(&key(ns, id)) {
                    return Err(format!("container \"{id}\" in namespace \"{ns}\": not found"));
                }
                if tasks.contains_key(&key(ns, id)) {
                    return Err(format!("task {id}: already exists"));
                }
                tasks.insert(key(ns, id), "RUNNING".into());
                Ok(String::new())
            }
            _ => Err(format!("fake ctr does not know {a:?}")),
        }
    }
}

impl Runner for FakeRunner {
    fn run(&self, argv: &[String], _user: &str, _t: Duration) -> Result<Outcome, RunError> {
        self.calls.borrow_mut().push(argv.to_vec());
        if let Some(h) = &self.hook {
            h(argv);
        }
        let fail =
            |stderr: String| Outcome { code: Some(1), timed_out: false, stdout: String::new(), stderr_tail: stderr };
        if self.fail_when.iter().any(|f| argv.join(" ").contains(f.as_str())) {
            return Ok(fail("boom".into()));
        }
        if argv[0] == "docker" && argv.get(1).map(String::as_str) == Some("ps") {
            let stdout = ["c1", "c2"].iter().filter(|c| !self.docker_gone.contains(**c)).map(|c| format!("{c}\n"));
            return Ok(Outcome {
                code: Some(0),
                timed_out: false,
                stdout: stdout.collect(),
                stderr_tail: String::new(),
            });
        }
        if argv[0] == "docker" && argv.get(1).map(String::as_str) == Some("start") {
            if let Some(g) = argv[2..].iter().find(|id| self.docker_gone.contains(*id)) {
                return Ok(fail(format!("Error response from daemon: No such container: {g}")));
            }
        }
        if argv[0] == "ctr" && !self.codes.contains_key("ctr") {
            return Ok(match self.ctr(argv) {
                Ok(stdout) => Outcome { code: Some(0), timed_out: false, stdout, stderr_tail: String::new() },
                Err(e) => fail(e),
            });
        }
        if let Some(n) = self.fail_first.borrow_mut().get_mut(&argv[0]).filter(|n| **n > 0) {
            *n -= 1;
            return Ok(fail("boom".into()));
        }
        let code = self.codes.get(&argv[0]).copied().unwrap_or(0);
        let stdout = self.stdouts.get(&argv.join(" ")).cloned().unwrap_or_default();
        Ok(Outcome { code: Some(code), timed_out: false, stdout, stderr_tail: "boom".into() })
    }
}
