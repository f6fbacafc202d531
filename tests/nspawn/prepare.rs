//! `ade-prep prepare` and `restore`, the built binary, end to end against a real systemd 252 in systemd-nspawn.
//!
//! `prepare_restore_in_nspawn` (host side) boots the harness container once, with this worktree at /work, and runs
//! this same test binary inside it with `--ignored in_container_`; each `in_container_*` test then runs
//! `ade-prep` (`ADE_PREP_BIN`) as the operator would, with the scenario units of tests/scenarios declared to it by
//! /etc/ade-prep/config.d/50-scenarios.toml. The container is Debian 12, whose `distro` check says no preparation
//! is needed: every prepare is run with `--force distro`.
//!
//! Skips (printed as "SKIPPED: ...") when not root or when the harness cache is missing
//! (`tests/harness/build-guest.sh --nspawn-only` builds it); ADE_REQUIRE_NSPAWN=1 turns a skip into a failure.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ade_prep::systemd::{JobCounters, ServiceManager, Systemd};
use serde_json::Value;

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 8;

use crate::common::{inside_with_scenarios as inside, sd, wait_for};

#[test]
fn prepare_restore_in_nspawn() {
    crate::common::nspawn_suite("prepare", IN_CONTAINER_TESTS, 600);
}

// ---- inside the container ---------------------------------------------------------------------------------

pub(crate) const CONFIG: &str = "/etc/ade-prep/config.d/50-scenarios.toml";
const RUNTIME_UNITS: &str = "/run/systemd/system";
pub(crate) const HOLD: &str = "/etc/ade-prep/hold";
const SLOW: [&str; 5] =
    ["ade-slow@1.service", "ade-slow@2.service", "ade-slow@3.service", "ade-slow@4.service", "ade-slow@5.service"];
/// The units the base configuration declares as workloads (all started by `install.sh --start`).
const WORKLOAD_UNITS: [&str; 8] =
    ["ade-db.service", "fake-docker.socket", "fake-docker.service", SLOW[0], SLOW[1], SLOW[2], SLOW[3], SLOW[4]];
/// Started by `install.sh --start` and never a workload of the base configuration.
const OTHER_UNITS: [&str; 2] = ["ade-protected.service", "ade-prestop-fails.service"];

/// The scenario workloads: db-like writer, docker-like pair, five slow units (30 s each); one protected service.
pub(crate) const BASE: &str = r#"
[workloads.db]
units = ["ade-db.service"]

[workloads.fake-docker]
units = ["fake-docker.service", "fake-docker.socket"]
companion_units = ["fake-docker.socket"]

[workloads.slow]
units = ["ade-slow@*.service"]
stop_timeout_secs = 30

[protected]
units = ["ade-protected.service"]
"#;

/// The output of one `ade-prep` run.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn ade_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("ADE_PREP_BIN").expect("ADE_PREP_BIN"));
    c.args(args).env_remove("RUST_LOG");
    c
}

fn run(mut c: Command) -> Run {
    let o = c.output().expect("running ade-prep");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

pub(crate) fn ade(args: &[&str]) -> Run {
    run(ade_cmd(args))
}

pub(crate) fn json(r: &Run) -> Value {
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

pub(crate) fn window_open() -> bool {
    json(&ade(&["status", "--json"]))["window_open"].as_bool().expect("window_open")
}

/// Writes the scenario config (root-owned 0644, as ade-prep requires when run as root).
pub(crate) fn write_config(text: &str) {
    std::fs::create_dir_all(Path::new(CONFIG).parent().unwrap()).unwrap();
    std::fs::write(CONFIG, text).unwrap();
    std::fs::set_permissions(CONFIG, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Every test starts here: the config, every scenario unit started, no window open.
/// A window left open by an earlier test is restored first (so that one failure does not fail every later test)
/// and fails this one.
pub(crate) fn baseline(config: &str) -> Systemd {
    write_config(config);
    let left_open = window_open().then(|| ade(&["restore"]));
    let dir = PathBuf::from(std::env::var("ADE_SCENARIOS").unwrap());
    let st = Command::new(dir.join("install.sh")).arg("--start").status().unwrap();
    assert!(st.success(), "install.sh --start: {st}");
    let sd = sd();
    for u in WORKLOAD_UNITS.iter().chain(&OTHER_UNITS) {
        assert_eq!(state(&sd, u), "active", "{u}");
        if !u.ends_with(".socket") {
            wait_execed(&sd, u);
        }
    }
    // fake-dockerd's shim is up (it writes its pid file once forked).
    wait_for("the shim's pid file", 5, || shim_pid().is_some());
    assert!(left_open.is_none(), "a window was left open before the test; restore: {left_open:?}");
    assert_eq!(runtime_masks(), Vec::<String>::new());
    sd
}

/// `systemctl start` of a simple service returns once systemd has forked: until the child execs (its comm is
/// "(sleep)" until then) a scan may find it outside the unit's cgroup.
fn wait_execed(sd: &Systemd, unit: &str) {
    let pid = main_pid(sd, unit);
    wait_for(&format!("{unit}'s main process to exec"), 5, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| !c.starts_with('('))
    });
}

pub(crate) fn state(sd: &Systemd, unit: &str) -> String {
    sd.unit(unit).unwrap().active_state.to_string()
}

fn states(sd: &Systemd) -> BTreeMap<String, String> {
    WORKLOAD_UNITS.iter().chain(&OTHER_UNITS).map(|u| (u.to_string(), state(sd, u))).collect()
}

fn main_pid(sd: &Systemd, unit: &str) -> u32 {
    sd.unit(unit).unwrap().main_pid.unwrap_or_else(|| panic!("{unit} has no main pid"))
}

fn shim_pid() -> Option<u32> {
    std::fs::read_to_string("/run/fake-docker/shim.pid").ok()?.trim().parse().ok().filter(|p| alive(*p))
}

/// The pids in a system unit's cgroup.
fn cgroup_procs(sd: &Systemd, unit: &str) -> Vec<u32> {
    let cg = sd.unit(unit).unwrap().control_group.unwrap_or_else(|| panic!("{unit} has no cgroup"));
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            // Any hierarchy's line: systemd 219 keeps units in the v1 name=systemd one only.
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.ends_with(&format!(":{cg}"))))
        })
        .collect();
    pids.sort();
    pids
}

/// Masks in a unit folder: symlinks to /dev/null.
fn dev_null_links(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/null")))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runtime masks: symlinks to /dev/null in /run/systemd/system.
pub(crate) fn runtime_masks() -> Vec<String> {
    dev_null_links(RUNTIME_UNITS)
}

fn alive(pid: u32) -> bool {
    // A zombie (a child of ours not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Pids of workload processes in `ade-prep scan --json`.
fn workload_pids() -> Vec<u64> {
    let scan = json(&ade(&["scan", "--json"]));
    scan["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["class"] == "workload")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

/// What must not change when ade-prep refuses or only plans.
#[derive(Debug, PartialEq)]
struct Observed {
    states: BTreeMap<String, String>,
    masks: Vec<String>,
    jobs: JobCounters,
    journal: Option<Vec<u8>>,
}

fn observe(sd: &Systemd) -> Observed {
    Observed {
        states: states(sd),
        masks: runtime_masks(),
        jobs: sd.job_counters().unwrap(),
        journal: std::fs::read("/var/lib/ade-prep/state.json").ok(),
    }
}

pub(crate) fn prepare(extra: &[&str]) -> Run {
    let mut args = vec!["prepare", "--force", "distro", "-v"];
    args.extend(extra);
    ade(&args)
}

/// After a rollback or a restore: every scenario unit is active, no mask is left, the window is closed.
fn assert_all_back(sd: &Systemd) {
    for u in WORKLOAD_UNITS.iter().chain(&OTHER_UNITS) {
        assert_eq!(state(sd, u), "active", "{u} is not back");
    }
    assert_eq!(runtime_masks(), Vec::<String>::new(), "runtime masks left in {RUNTIME_UNITS}");
    assert!(!window_open(), "the window is still open");
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_prepare_stops_masks_and_clears_then_restore_brings_everything_back() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    let db = main_pid(&sd, "ade-db.service");
    let dockerd = main_pid(&sd, "fake-docker.service");
    let shim = shim_pid().unwrap();
    // KillMode=process: what fake-dockerd leaves behind when it stops (its shim; earlier tests' rollbacks, which
    // restart dockerd next to its old shim, may have left more).
    let leftovers: Vec<u32> = cgroup_procs(&sd, "fake-docker.service").into_iter().filter(|p| *p != dockerd).collect();
    assert!(leftovers.contains(&shim), "{leftovers:?}");
    let slow: Vec<u32> = SLOW.iter().map(|u| main_pid(&sd, u)).collect();
    let protected = main_pid(&sd, "ade-protected.service");
    let before = workload_pids();
    for p in [db, dockerd, shim].iter().chain(&slow) {
        assert!(before.contains(&u64::from(*p)), "pid {p} is not listed as a workload holder: {before:?}");
    }

    let together = crate::common::StopsTogether::watch(&SLOW);
    let t = Instant::now();
    let r = prepare(&[]);
    let took = t.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    println!("MEASURED: prepare of db + docker pair + 5 slow units (ExecStop 2 s): {:.2}s", took.as_secs_f64());
    let summary = format!("window open: stopped 8 unit(s), masked 8, terminated {} process(es)", leftovers.len());
    assert!(r.stdout.contains(&summary), "{r:?}");
    // The five slow stops (2 s each) ran together.
    assert!(together.seen(), "the five slow stops never ran at the same time");

    for u in WORKLOAD_UNITS {
        assert_eq!(state(&sd, u), "inactive", "{u}");
    }
    for p in [db, dockerd].iter().chain(&slow).chain(&leftovers) {
        assert!(!alive(*p), "workload pid {p} survived prepare");
    }
    assert_eq!(state(&sd, "ade-protected.service"), "active");
    assert_eq!(main_pid(&sd, "ade-protected.service"), protected, "the protected unit was touched");
    let mut masks: Vec<String> = WORKLOAD_UNITS.iter().map(|u| u.to_string()).collect();
    masks.sort();
    assert_eq!(runtime_masks(), masks);
    for u in WORKLOAD_UNITS {
        assert!(sd.unit(u).unwrap().is_masked(), "{u}: mask not in effect");
    }
    // The KillMode=process leftover was terminated, and recorded.
    let status = json(&ade(&["status", "--json"]));
    assert_eq!(status["window_open"], true, "{status}");
    let entries = status["journal"]["entries"].as_array().expect("journal entries");
    assert!(
        entries.iter().any(|e| e.to_string().contains(&format!("{shim}")) && e.to_string().contains("fake-docker")),
        "no journal entry for the shim {shim}: {status}"
    );
    for p in &leftovers {
        assert!(r.stderr.contains(&format!("terminated pid {p} ")), "{r:?}");
    }

    // Nothing of a workload holds / any more.
    assert_eq!(workload_pids(), Vec::<u64>::new());
    // And fuser, which ADE itself runs, agrees (the guest has psmisc: tests/harness/build-guest.sh).
    let o = Command::new("fuser").args(["-m", "/"]).output().expect("fuser in the container");
    let pids: Vec<u32> = String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    assert!(pids.contains(&protected), "fuser does not list the protected writer: {pids:?}");
    for p in [db, dockerd, shim].iter().chain(&slow) {
        assert!(!pids.contains(p), "fuser lists workload pid {p}");
    }

    // Nothing brings them back during the window: not another script's start...
    for u in ["ade-db.service", "fake-docker.service", "fake-docker.socket", SLOW[0]] {
        let o = Command::new("systemctl").args(["start", u]).output().unwrap();
        assert!(!o.status.success(), "systemctl start {u} succeeded while masked");
        assert!(String::from_utf8_lossy(&o.stderr).contains("masked"), "{u}: {o:?}");
    }
    // ...nor Restart=always (RestartSec=1), nor a client of the socket (stopped with its service: nobody listens).
    let conn = UnixStream::connect("/run/fake-docker.sock");
    assert!(conn.is_err(), "something listens on the stopped socket: {conn:?}");
    crate::common::holds_for("fake-docker.service and .socket stay inactive during the window", 2500, || {
        ["fake-docker.service", "fake-docker.socket"].iter().all(|u| state(&sd, u) == "inactive")
    });
    assert_eq!(workload_pids(), Vec::<u64>::new());

    let t = Instant::now();
    let r = ade(&["restore", "-v"]);
    println!("MEASURED: restore of the 8 units: {:.2}s", t.elapsed().as_secs_f64());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("restored: "), "{r:?}");
    assert_all_back(&sd);
    assert_ne!(main_pid(&sd, "ade-db.service"), db);
    assert_eq!(main_pid(&sd, "ade-protected.service"), protected);
    for u in WORKLOAD_UNITS {
        let i = sd.unit(u).unwrap();
        assert!(!i.is_masked(), "{u}: {i:?}");
    }
    assert_eq!(sd.unit("fake-docker.service").unwrap().kill_mode.as_deref(), Some("process"));
    assert!(!workload_pids().is_empty());

    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "nothing to restore: no window is open\n", "{r:?}");
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_dry_run_prints_the_ordered_plan_and_changes_nothing() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    let before = observe(&sd);
    let r = prepare(&["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let after = observe(&sd);
    assert_eq!(before, after, "a dry run changed something\n{r:?}");
    println!("{}", r.stdout);

    // The steps, numbered in order, with their timeouts.
    let want = [
        "1. wait for other extension handlers to finish (at most 900 s)",
        "2. take the serialisation lock for the window",
        "3. write runtime masks (effective at the reload): ade-db.service ade-slow@1.service ade-slow@2.service \
         ade-slow@3.service ade-slow@4.service ade-slow@5.service fake-docker.service fake-docker.socket",
        "4. stop triggers concurrently: fake-docker.socket (90 s)",
        "5. stop services concurrently: ade-db.service (90 s) ade-slow@1.service (30 s) ade-slow@2.service (30 s) \
         ade-slow@3.service (30 s) ade-slow@4.service (30 s) ade-slow@5.service (30 s) fake-docker.service (90 s)",
        "6. write the hold list /etc/ade-prep/hold (ade-prep-generator masks these at the reload, units in /etc \
         included, until restore): ade-db.service ade-slow@1.service ade-slow@2.service ade-slow@3.service \
         ade-slow@4.service ade-slow@5.service fake-docker.service fake-docker.socket",
        "7. reload systemd: the masks take effect for the window",
        "8. re-scan; kill leftovers of stopped units; processes in no unit: report (grace 10 s)",
    ];
    let lines: Vec<&str> = r.stdout.lines().map(str::trim).collect();
    let steps: Vec<&str> =
        lines.iter().copied().filter(|l| l.split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())).collect();
    assert_eq!(steps, want, "{r:?}");
    assert!(lines.iter().any(|l| l.starts_with("left alone (")), "{r:?}");
    assert!(
        lines.iter().any(|l| l.contains("ade-protected.service matches ade-protected.service")),
        "the protected unit is listed as left alone: {r:?}"
    );
    assert_eq!(lines.last(), Some(&"(dry run: nothing was changed)"));

    // The JSON form: the same plan, not executed.
    let before = observe(&sd);
    let p = json(&prepare(&["--dry-run", "--json"]));
    assert_eq!(observe(&sd), before);
    assert_eq!(p["executed"], false);
    let kinds: Vec<&str> = p["plan"]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "wait_for_extensions",
            "take_lock",
            "mask_units",
            "stop_units",
            "stop_units",
            "hold_units",
            "activate_masks",
            "clear_holders"
        ]
    );
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_a_failing_pre_stop_fails_prepare_and_rolls_back() {
    if !inside() {
        return;
    }
    let config = format!(
        "{BASE}\n[workloads.drain]\nunits = [\"ade-prestop-fails.service\"]\n\
         pre_stop = [{{ argv = [\"/usr/local/libexec/ade-scenarios/prestop-fails.sh\"], timeout_secs = 10 }}]\n"
    );
    let sd = baseline(&config);
    let db = main_pid(&sd, "ade-db.service");
    let r = prepare(&[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("pre-stop of drain: [\"/usr/local/libexec/ade-scenarios/prestop-fails.sh\"] exited 3"),
        "{r:?}"
    );
    assert!(r.stderr.contains("cannot drain: connection refused"), "the command's stderr is quoted: {r:?}");
    assert!(r.stderr.contains("rolled back"), "{r:?}");
    assert_all_back(&sd);
    assert_eq!(main_pid(&sd, "ade-db.service"), db, "nothing is stopped before the pre-stop commands succeed");
    assert_eq!(state(&sd, "ade-prestop-fails.service"), "active");
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_a_stop_over_its_timeout_fails_prepare_and_rolls_back() {
    if !inside() {
        return;
    }
    // ade-stuck's ExecStop sleeps 30 s; its workload allows 2 s.
    let config = format!("{BASE}\n[workloads.stuck]\nunits = [\"ade-stuck.service\"]\nstop_timeout_secs = 2\n");
    let sd = baseline(&config);
    let st = Command::new("systemctl").args(["start", "ade-stuck.service"]).status().unwrap();
    assert!(st.success());
    wait_execed(&sd, "ade-stuck.service");
    let t = Instant::now();
    let r = prepare(&[]);
    let took = t.elapsed();
    println!("MEASURED: prepare with a stop over its 2 s timeout, rollback included: {:.2}s", took.as_secs_f64());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("stop ade-stuck.service: no job result within 2s"), "{r:?}");
    // ade-stuck is still running the ExecStop (30 s) of the stop ade-prep canceled: the rollback's start job waits
    // for it, as long as systemd lets the unit start (TimeoutStartSec, 90 s by default), not the workload's 2 s; so
    // the rollback is complete and the window closed.
    assert!(r.stderr.contains("prepare failed and was rolled back"), "{r:?}");
    assert!(took >= Duration::from_secs(20), "the rollback did not wait for ade-stuck's stop to end: {r:?}");
    assert_eq!(state(&sd, "ade-stuck.service"), "active");
    assert_all_back(&sd);
    let st = Command::new("systemctl").args(["kill", "ade-stuck.service"]).status().unwrap();
    assert!(st.success());
    let st = Command::new("systemctl").args(["stop", "ade-stuck.service"]).status().unwrap();
    assert!(st.success());
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_a_stray_workload_process_is_refused_before_any_change_under_report_and_terminated_under_terminate() {
    if !inside() {
        return;
    }
    // A workload process outside the workload's units: started here (in the harness's scope, as from a shell).
    std::fs::copy("/bin/sleep", "/usr/local/bin/ade-stray").unwrap();
    let config = format!("{BASE}\n[workloads.stray]\ncomms = [\"ade-stray\"]\n");
    let sd = baseline(&config);
    let mut child = Command::new("setsid").args(["/usr/local/bin/ade-stray", "infinity"]).spawn().unwrap();
    let pid = child.id();
    wait_for("the stray's comm", 5, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ade-stray")
    });

    // Under report: refused before any change (no stop, no mask, no window), naming the stray and what to do.
    let db = main_pid(&sd, "ade-db.service");
    let r = prepare(&[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "pid {pid} ade-stray (workload stray) runs in nspawn-run-job.scope, which no stop ends (a stray; stray \
             policy report)"
        )),
        "{r:?}"
    );
    assert!(r.stderr.contains("set [stray] policy = \"terminate\""), "{r:?}");
    assert!(!r.stderr.contains("rolled back"), "{r:?}");
    assert!(alive(pid), "the stray was touched under report");
    assert_eq!(main_pid(&sd, "ade-db.service"), db, "a workload was stopped before the refusal");
    assert!(!window_open());
    assert_all_back(&sd);

    write_config(&format!("{config}\n[stray]\npolicy = \"terminate\"\ngrace_secs = 2\n"));
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "the stray ended by SIGTERM");
    assert!(r.stderr.contains(&format!("terminated pid {pid} ade-stray (nspawn-run-job.scope)")), "{r:?}");
    let journal = json(&ade(&["status", "--json"]));
    assert!(
        journal["journal"]["entries"].as_array().unwrap().iter().any(|e| e.to_string().contains(&format!("{pid}"))),
        "{journal}"
    );
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_all_back(&sd);
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_not_root_and_a_malformed_config_change_nothing() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    let before = observe(&sd);

    let mut c = ade_cmd(&["prepare", "--force", "distro"]);
    c.uid(65534).gid(65534);
    let r = run(c);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("run it as root"), "{r:?}");
    assert_eq!(observe(&sd), before);

    write_config(&format!("{BASE}\n[workloads.bad]\nunits = [\"x.service\"]\nstop_timeout = 5\n"));
    let r = prepare(&[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&format!("{CONFIG}:")) && r.stderr.contains("stop_timeout"), "{r:?}");
    // Ending a window never depends on the config (issue 13): restore warns, and with no window changes nothing.
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "a bad config is a warning for restore: {r:?}");
    assert!(r.stderr.contains("stop_timeout") && r.stderr.contains("built-in defaults apply"), "{r:?}");
    assert_eq!(observe(&sd), before);
    write_config(BASE);
}

pub(crate) fn load_state(unit: &str) -> String {
    crate::common::unit_prop(unit, "LoadState")
}

/// Masks the generator made: symlinks to /dev/null in the early generator folder.
pub(crate) fn generator_masks() -> Vec<String> {
    dev_null_links("/run/systemd/generator.early")
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_after_a_reboot_the_generator_holds_the_stopped_units_down_until_restore() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    // The packaged generator (a shell script reading /etc/ade-prep/hold; src/window/hold.rs).
    let gen_dir = Path::new("/run/systemd/system-generators");
    std::fs::create_dir_all(gen_dir).unwrap();
    let gen = gen_dir.join("ade-prep-generator");
    std::fs::copy("/work/packaging/usr/lib/systemd/system-generators/ade-prep-generator", &gen).unwrap();
    std::fs::set_permissions(&gen, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reload = || assert!(Command::new("systemctl").arg("daemon-reload").status().unwrap().success());
    let mut want: Vec<String> = WORKLOAD_UNITS.iter().map(|u| u.to_string()).collect();
    want.sort();

    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    let hold = std::fs::read_to_string(HOLD).expect("prepare writes the hold list");
    let mut listed: Vec<&str> = hold.lines().filter(|l| !l.starts_with('#')).collect();
    listed.sort();
    assert_eq!(listed, want);
    assert_eq!(runtime_masks(), want);

    // "Reboot": /run's masks are gone; the generator runs (at boot, here at a daemon-reload) from the hold list.
    for u in runtime_masks() {
        std::fs::remove_file(Path::new(RUNTIME_UNITS).join(u)).unwrap();
    }
    reload();
    assert_eq!(runtime_masks(), Vec::<String>::new());
    assert_eq!(generator_masks(), want, "the generator masks every stopped unit");
    for u in WORKLOAD_UNITS {
        assert_eq!(load_state(u), "masked", "{u}");
        assert_eq!(state(&sd, u), "inactive", "{u}");
    }
    let o = Command::new("systemctl").args(["start", "ade-db.service"]).output().unwrap();
    assert!(!o.status.success(), "a held unit started: {o:?}");
    assert_eq!(state(&sd, "ade-db.service"), "inactive");

    // Restore removes the list first, so its Reload drops the generator's masks, and every unit comes back.
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new(HOLD).exists(), "restore left {HOLD}");
    assert_eq!(generator_masks(), Vec::<String>::new());
    for u in WORKLOAD_UNITS {
        assert_eq!(load_state(u), "loaded", "{u}");
    }
    assert_all_back(&sd);
    std::fs::remove_file(&gen).unwrap();
    reload();
}

#[test]
#[ignore = "runs inside the nspawn container, started by prepare_restore_in_nspawn"]
fn in_container_restore_follows_a_start_longer_than_the_stop_timeout() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    write_config(&format!(
        "{BASE}\n[workloads.slowstart]\nunits = [\"ade-slowstart.service\"]\nstop_timeout_secs = 1\n"
    ));
    assert!(Command::new("systemctl").args(["start", "ade-slowstart.service"]).status().unwrap().success());
    wait_execed(&sd, "ade-slowstart.service");
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(state(&sd, "ade-slowstart.service"), "inactive");
    // Its start takes 4 s (TimeoutStartSec=60), its workload's stop timeout is 1 s: restore waits for the start.
    let t = Instant::now();
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(t.elapsed() >= Duration::from_secs(4), "restore returned before the start could end: {r:?}");
    assert_eq!(state(&sd, "ade-slowstart.service"), "active");
    assert_eq!(sd.unit("ade-slowstart.service").unwrap().timeout_start_usec, Some(60_000_000));
    assert!(Command::new("systemctl").args(["stop", "ade-slowstart.service"]).status().unwrap().success());
    write_config(BASE);
    assert_all_back(&sd);
}
