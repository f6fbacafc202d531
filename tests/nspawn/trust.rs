//! Issue 24: what a local user can make of a root agent, tried as a user would in the real guest (systemd 252 and
//! 219). Each test starts what an unprivileged user (nobody, 65534) can start: processes in a scope of user.slice
//! (as a login session's are), named and argued as they like.

use std::path::Path;
use std::process::{Child, Command};

use serde_json::Value;

use crate::common::{inside_with_scenarios as inside, sh, unit_prop, wait_for};
use crate::prepare::{ade, baseline, json, prepare, window_open, BASE};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 8;

#[test]
fn trust_in_nspawn() {
    crate::common::nspawn_suite("trust", IN_CONTAINER_TESTS, 300);
}

// ---- inside the container ---------------------------------------------------------------------------------

/// A user's processes, ended when dropped.
pub(crate) struct UserProcs(pub(crate) Vec<Child>);
impl Drop for UserProcs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `argv` run by nobody in a transient scope of user.slice (where logind puts a login session's processes; a
/// user cannot place a process outside it), with its cwd at `/`.
pub(crate) fn as_user(argv: &[&str]) -> Child {
    let mut c = Command::new("systemd-run");
    // chroot --userspec: coreutils on both guests; drops real and effective uid and gid before the exec.
    c.args(["--scope", "--slice=user.slice", "--", "chroot", "--userspec=65534:65534", "/"]).args(argv);
    c.current_dir("/");
    c.spawn().unwrap()
}

pub(crate) fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_string())
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1)?.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

fn scan_entry(scan: &Value, pid: u32) -> Value {
    scan["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid.into()))
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not in scan: {scan}"))
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_what_a_user_names_or_runs_never_changes_what_prepare_does() {
    if !inside() {
        return;
    }
    // A workload the admin declares by its executable, installed by root (as /usr/bin/mongod is).
    std::fs::copy("/bin/sleep", "/usr/local/bin/ade-userd").unwrap();
    let config = format!("{BASE}\n[workloads.userd]\nexes = [\"/usr/local/bin/ade-userd\"]\n");
    let sd = baseline(&config);
    // The user's own copy of a shell named containerd-shim (the built-in docker workload's shim), with a child.
    let dir = Path::new("/tmp/ade-user");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/sh", dir.join("containerd-shim")).unwrap();
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(dir.join("containerd-shim"), Some(65534), Some(65534)).unwrap();
    let shim = as_user(&["/tmp/ade-user/containerd-shim", "-c", "sleep 3600; :"]);
    // The user running the admin's workload binary for themselves (`mongod --dbpath ~/db`).
    let userd = as_user(&["/usr/local/bin/ade-userd", "3600"]);
    let (shim_pid, userd_pid) = (shim.id(), userd.id());
    let _procs = UserProcs(vec![shim, userd]);
    wait_for("the user's processes", 10, || {
        comm(shim_pid).as_deref() == Some("containerd-shim")
            && comm(userd_pid).as_deref() == Some("ade-userd")
            && !children_of(shim_pid).is_empty()
    });
    let task = children_of(shim_pid)[0];

    // scan shows each with why it is left alone.
    let scan = json(&ade(&["scan", "--json"]));
    for pid in [task, userd_pid] {
        let e = scan_entry(&scan, pid);
        assert_eq!(e["class"], "other", "pid {pid}: {e}");
        assert_eq!(e["uids"], serde_json::json!([65534, 65534]), "{e}");
    }
    let e = scan_entry(&scan, userd_pid);
    assert!(e["reason"].as_str().unwrap().contains("exe /usr/local/bin/ade-userd matches"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("left alone"), "{e}");
    assert!(scan_entry(&scan, task).get("shim").is_none(), "a user's containerd-shim is no shim");

    // prepare stops the admin's workloads and nothing of the user's; it neither refuses nor ends them.
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    for pid in [shim_pid, task, userd_pid] {
        assert!(comm(pid).is_some(), "the user's pid {pid} was ended");
    }
    assert_eq!(crate::prepare::state(&sd, "ade-db.service"), "inactive");
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!window_open());
    std::fs::remove_file("/usr/local/bin/ade-userd").unwrap();
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_a_window_whose_undo_cannot_succeed_still_ends() {
    if !inside() {
        return;
    }
    // A transient unit (`systemd-run`), collected by systemd once stopped; and a RefuseManualStart=yes unit, started
    // through a unit that wants it (as at boot), whose start by restore systemd refuses.
    let run = "/run/systemd/system";
    std::fs::write(
        format!("{run}/ade-refuse.service"),
        "[Unit]\nRefuseManualStart=yes\n[Service]\nExecStart=/bin/sleep 3600\n",
    )
    .unwrap();
    std::fs::write(
        format!("{run}/ade-refuse-pull.service"),
        "[Unit]\nWants=ade-refuse.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .unwrap();
    let config = format!(
        "{BASE}\n[workloads.transient]\nunits = [\"ade-transient.service\"]\n\
         [workloads.refuse]\nunits = [\"ade-refuse.service\"]\n"
    );
    let _sd = baseline(&config);
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    assert!(sh(&["systemctl", "start", "ade-refuse-pull.service"]).status.success());
    let _ = sh(&["systemctl", "reset-failed", "ade-transient.service"]);
    let o = sh(&["systemd-run", "--unit=ade-transient", "/bin/sleep", "3600"]);
    assert!(o.status.success(), "{o:?}");
    wait_for("both units", 10, || {
        unit_prop("ade-transient.service", "ActiveState") == "active"
            && unit_prop("ade-refuse.service", "ActiveState") == "active"
    });

    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    wait_for("the transient unit to be collected", 10, || {
        unit_prop("ade-transient.service", "LoadState") == "not-found"
    });

    // The transient unit's start is done with a warning naming it; the refused start is an undo that failed.
    let r = ade(&["restore"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("ade-transient.service no longer exists"), "{r:?}");
    assert!(r.stderr.contains("ade-refuse.service failed to come back"), "{r:?}");
    assert!(window_open());
    let st = ade(&["status"]);
    let line = st.stdout.lines().find(|l| l.contains("ade-refuse.service") && l.contains("undo failed"));
    let seq = line.unwrap_or_else(|| panic!("{st:?}")).split_whitespace().next().unwrap().to_string();
    assert!(st.stdout.contains(&format!("ade-prep restore --abandon {seq}")), "{st:?}");
    // A wrong entry changes nothing.
    let r = ade(&["restore", "--abandon", "1"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(window_open());
    // The operator closes it: recorded, and the window ends.
    let r = ade(&["restore", "--abandon", &seq]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!window_open());
    let journal = json(&ade(&["status", "--json"]));
    let e = journal["journal"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"].as_u64().is_some_and(|n| n.to_string() == seq))
        .cloned()
        .unwrap();
    assert_eq!(e["status"], "undone", "{e}");
    assert!(e["note"].as_str().unwrap().contains("abandoned by the operator"), "{e}");
    let _ = sh(&["systemctl", "stop", "ade-refuse-pull.service", "ade-refuse.service"]);
    std::fs::remove_file(format!("{run}/ade-refuse.service")).unwrap();
    std::fs::remove_file(format!("{run}/ade-refuse-pull.service")).unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_the_lock_lives_as_long_as_its_command_and_run_overrides_a_holder_past_the_head_start() {
    use crate::daemon::{finish, show, start_unit, unit_log, write_settings, write_status, HANDLER};
    if !inside() {
        return;
    }
    let _ = std::fs::remove_file(crate::prepare::CONFIG);
    let _ = std::fs::remove_dir_all(HANDLER);
    crate::common::setup_workloads();
    crate::common::settle_workloads();
    let lock = |args: &[&str]| crate::common::ade_prep_cmd(&[&["lock", "--"][..], args].concat());

    // A process CMD leaves in the background holds no lock: prepare takes it at once.
    let o = lock(&["sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /run/ade-bg.pid"]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let bg = std::fs::read_to_string("/run/ade-bg.pid").unwrap().trim().to_string();
    let r = ade(&["prepare", "--force", "distro", "--wait", "0"]);
    let _ = sh(&["kill", &bg]);
    assert_eq!(r.code, 0, "the lock outlived its command: {r:?}");
    assert_eq!(ade(&["restore"]).code, 0);
    crate::common::settle_workloads();

    // A live holder: `run`, for a request whose head start is over (its settings written 2 minutes ago), prepares
    // anyway, saying which holder it overrode.
    let mut holder = lock(&["sleep", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the holder", 10, || std::fs::read_to_string("/run/ade-prep/lock").is_ok_and(|t| t.contains("sleep 600")));
    write_settings(9, "EnableEncryption", "OS");
    write_status(9, "transitioning", "EncryptionInProgress");
    let settings = format!("{HANDLER}/config/9.settings");
    assert!(sh(&["touch", "-d", "2 minutes ago", &settings]).status.success());
    let child = start_unit();
    wait_for("the unit to be active (READY=1)", 60, || show("ActiveState") == "active");
    assert!(window_open(), "run did not prepare");
    let log = unit_log();
    assert!(log.contains("lock: overridden") && log.contains("sleep 600"), "{log}");
    // The holder ends; ADE reports success; run restores and watches on (issue 23); SIGTERM ends it with 0.
    holder.kill().unwrap();
    holder.wait().unwrap();
    write_status(9, "success", "Encrypted");
    wait_for("run to restore after ADE's success", 60, || show("StatusText").contains("(seq 9 was dealt with)"));
    assert!(!window_open());
    assert!(sh(&["systemctl", "stop", crate::daemon::UNIT]).status.success());
    let (code, out) = finish(child);
    assert_eq!(code, Some(0), "{out}");
    let _ = std::fs::remove_dir_all(HANDLER);
    let _ = std::fs::remove_file("/etc/ade-prep/config.d/50-test.toml");
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_a_users_process_named_as_ades_daemon_holds_no_window_open_and_ades_own_does() {
    use crate::daemon::{finish, show, start_unit, unit_log, write_settings, write_status, HANDLER, UNIT};
    if !inside() {
        return;
    }
    let _ = std::fs::remove_file(crate::prepare::CONFIG);
    let _ = std::fs::remove_dir_all(HANDLER);
    crate::common::setup_workloads();
    crate::common::settle_workloads();
    // ADE's handler as the agent unpacks it: root's, writable by root alone.
    let script = format!("{HANDLER}/main/handle.py");
    std::fs::create_dir_all(format!("{HANDLER}/main")).unwrap();
    std::fs::write(&script, "# ADE's handler (stand-in file: only its path, owner and mode matter)\n").unwrap();
    assert!(sh(&["chmod", "-R", "go-w", HANDLER]).status.success());
    let sleeper = "import time; time.sleep(3600)";
    let seq_dealt = |seq: u32| move || show("StatusText").contains(&format!("(seq {seq} was dealt with)"));

    // A window for ADE's request; then a user starts a process with ADE's daemon's command line, as the agent's
    // shim runs it (issue 24, item 2).
    write_settings(0, "EnableEncryption", "All");
    write_status(0, "transitioning", "EncryptionInProgress");
    let child = start_unit();
    wait_for("the unit to be active (READY=1)", 60, || show("ActiveState") == "active");
    assert!(window_open(), "run did not prepare");
    let forged = as_user(&["python3", "-c", sleeper, &script, "-daemon"]);
    let forged_pid = forged.id();
    let _procs = UserProcs(vec![forged]);
    wait_for("the user's forged daemon", 10, || {
        std::fs::read_to_string(format!("/proc/{forged_pid}/cmdline")).is_ok_and(|c| c.contains("-daemon"))
    });
    // ADE reports success: the forgery keeps nothing open; run restores at once.
    write_status(0, "success", "Encrypted");
    wait_for("run to restore after ADE's success", 60, seq_dealt(0));
    assert!(!window_open(), "the window stayed open");
    assert!(
        !unit_log().contains("ADE's daemon is at work"),
        "a user's process was taken for ADE's daemon: {}",
        unit_log()
    );
    assert!(std::fs::metadata(format!("/proc/{forged_pid}")).is_ok(), "the user's process was ended");
    crate::common::settle_workloads();

    // ADE's own daemon, started as the agent starts it with its cgroups off (in the agent's service, FINDINGS 28):
    // while it lives after the final status, the window stays; once it ends, run restores.
    let agent = "/run/systemd/system/walinuxagent.service";
    std::fs::write(agent, format!("[Service]\nExecStart=/usr/bin/python3 -c \"{sleeper}\" {script} -daemon\n"))
        .unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    write_settings(1, "EnableEncryption", "All");
    write_status(1, "transitioning", "EncryptionInProgress");
    wait_for("the window for seq 1", 60, window_open);
    assert!(sh(&["systemctl", "start", "walinuxagent.service"]).status.success());
    write_status(1, "success", "Encrypted");
    // run looks every second: five looks later the window is still open, run still waiting for ADE.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(window_open(), "restored while ADE's daemon lived: {}", unit_log());
    assert!(show("StatusText").contains("waiting for ADE"), "{}", show("StatusText"));
    assert!(sh(&["systemctl", "stop", "walinuxagent.service"]).status.success());
    wait_for("run to restore once ADE's daemon ended", 60, seq_dealt(1));
    assert!(!window_open());
    assert!(sh(&["systemctl", "stop", UNIT]).status.success());
    let (code, out) = finish(child);
    assert_eq!(code, Some(0), "{out}");
    std::fs::remove_file(agent).unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
    let _ = std::fs::remove_dir_all(HANDLER);
    // setup_workloads' drop-in would replace the next tests' db workload (lexically after 50-scenarios.toml).
    let _ = std::fs::remove_file("/etc/ade-prep/config.d/50-test.toml");
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_no_secret_reaches_the_journal_or_the_bundle_and_report_writes_through_no_link() {
    if !inside() {
        return;
    }
    const SECRET: &str = "Hunter2-pre-stop-secret";
    const KEY: &str = "cleartext-key-bytes-0123456789";
    // The pre-stop command of a 0600 drop-in carries a password (as sapcontrol's or nodetool's would).
    let config = BASE.replace(
        "[workloads.db]\nunits = [\"ade-db.service\"]\n",
        &format!(
            "[workloads.db]\nunits = [\"ade-db.service\"]\npre_stop = [{{ argv = [\"/bin/echo\", \"--password\", \"{SECRET}\"] }}]\n"
        ),
    );
    assert!(config.contains(SECRET), "BASE changed: {BASE}");
    let _sd = baseline(&config);
    // ADE's key file, and a process whose command line carries a secret.
    std::fs::create_dir_all("/var/lib/azure_disk_encryption_config").unwrap();
    std::fs::write("/var/lib/azure_disk_encryption_config/cleartext_key_test", KEY).unwrap();
    let arg = format!("--db-password={SECRET}");
    let mut p = Command::new("sh").args(["-c", "sleep 600; :", "sh", &arg]).current_dir("/").spawn().unwrap();

    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    let state = std::fs::read_to_string("/var/lib/ade-prep/state.json").unwrap();
    assert!(state.contains("/bin/echo") && !state.contains(SECRET), "{state}");

    // report, run by root in a folder anyone can write, where a user planted links at the archive's name.
    let dir = Path::new("/tmp/ade-report");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    std::fs::write("/root/ade-victim", "root's file").unwrap();
    std::os::unix::fs::symlink("/root/ade-victim", dir.join("b.tar.gz")).unwrap();
    std::os::unix::fs::symlink("/root/ade-victim", dir.join("b.tar.gz.tmp")).unwrap();
    let r = ade(&["report", "--output", "/tmp/ade-report/b.tar.gz"]);
    let _ = p.kill();
    let _ = p.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string("/root/ade-victim").unwrap(), "root's file");
    let md = std::fs::symlink_metadata(dir.join("b.tar.gz")).unwrap();
    assert!(md.is_file());
    let raw = sh(&["sh", "-c", "gzip -dc /tmp/ade-report/b.tar.gz | tar -xOf -"]);
    let all = String::from_utf8_lossy(&raw.stdout);
    assert!(all.contains("--db-password=<redacted>"), "the process is in scan.json, redacted");
    assert!(!all.contains(SECRET) && !all.contains(KEY), "a secret is in the bundle");
    assert!(all.contains("listed     ade/markers/cleartext_key_test"), "the key file is listed");

    assert_eq!(ade(&["restore"]).code, 0);
    std::fs::remove_file("/var/lib/azure_disk_encryption_config/cleartext_key_test").unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file("/root/ade-victim");
}

/// The `sleep`s in ade-kmp.service's cgroup.
fn kmp_sleeps() -> Vec<u32> {
    let cg = unit_prop("ade-kmp.service", "ControlGroup");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.ends_with(&format!(":{cg}"))))
                && comm(*p).as_deref() == Some("sleep")
        })
        .collect()
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_a_leftover_of_a_workload_unit_stopped_earlier_is_refused_under_report_and_ended_under_terminate() {
    if !inside() {
        return;
    }
    // KillMode=process, as SAP's units and containerd's: the admin's stop leaves the child running in the cgroup.
    std::fs::write(
        "/run/systemd/system/ade-kmp.service",
        "[Service]\nKillMode=process\nExecStart=/bin/sh -c 'sleep 600 & exec sleep 600'\n",
    )
    .unwrap();
    let config = format!("{BASE}\n[workloads.kmp]\nunits = [\"ade-kmp.service\"]\n");
    let _sd = baseline(&config);
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    assert!(sh(&["systemctl", "start", "ade-kmp.service"]).status.success());
    wait_for("both processes", 10, || kmp_sleeps().len() == 2);
    assert!(sh(&["systemctl", "stop", "ade-kmp.service"]).status.success());
    let masks = crate::prepare::runtime_masks();

    let r = prepare(&[]);
    assert_eq!(r.code, 3, "refused before any change: {r:?}");
    assert!(r.stderr.contains("ade-kmp.service, which is not running"), "{r:?}");
    assert!(!r.stderr.contains("rolled back"), "{r:?}");
    assert!(!window_open());
    assert_eq!(crate::prepare::runtime_masks(), masks);
    assert!(r.stderr.contains("or set [stray] policy = \"terminate\""), "the refusal says what to do: {r:?}");

    // Under the terminate policy the leftover is ended in the window like those of the units prepare stops; the
    // unit is masked for the window and, inactive before, not started by restore.
    let left: Vec<u32> = kmp_sleeps();
    assert_eq!(left.len(), 1, "{left:?}");
    crate::prepare::write_config(&format!("{config}\n[stray]\npolicy = \"terminate\"\ngrace_secs = 2\n"));
    let r = prepare(&[]);
    let gone = comm(left[0]).is_none();
    // Kept down for the window: a runtime mask, or (its file is in /run/systemd/system, where the mask would go)
    // the generator's hold list.
    let masked = crate::prepare::runtime_masks().iter().any(|m| m == "ade-kmp.service")
        || std::fs::read_to_string("/etc/ade-prep/hold").is_ok_and(|h| h.lines().any(|l| l == "ade-kmp.service"));
    let restored = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("ade-kmp.service, which is not running"), "a warning names it: {r:?}");
    assert!(out.contains("also the leftovers of ade-kmp.service"), "the plan says so: {r:?}");
    assert!(gone, "the leftover pid {} still runs", left[0]);
    assert!(masked, "ade-kmp.service neither masked nor held for the window");
    assert_eq!(restored.code, 0, "{restored:?}");
    assert_eq!(unit_prop("ade-kmp.service", "ActiveState"), "inactive", "restore started a unit stopped before");
    assert_eq!(crate::prepare::runtime_masks(), masks);
    crate::prepare::write_config(&config);

    let _ = sh(&["systemctl", "kill", "ade-kmp.service"]);
    std::fs::remove_file("/run/systemd/system/ade-kmp.service").unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_a_target_mount_or_timer_that_requires_a_workload_is_stopped_by_systemd_and_restored_never_masked() {
    if !inside() {
        return;
    }
    // Units of each type that Requires= the workload ade-db.service, beside a service that does (where packaged
    // units would be: a runtime mask in /run shadows them).
    const DIR: &str = "/usr/local/lib/systemd/system";
    let req = "[Unit]\nRequires=ade-db.service\nAfter=ade-db.service\n";
    let units = [
        ("ade-dep.target", req.to_string()),
        ("mnt-adedep.mount", format!("{req}[Mount]\nWhat=tmpfs\nWhere=/mnt/adedep\nType=tmpfs\n")),
        ("ade-dep.timer", format!("{req}[Timer]\nOnActiveSec=1h\nUnit=ade-dep-job.service\n")),
        ("ade-dep-job.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n".to_string()),
        ("ade-dep.service", format!("{req}[Service]\nExecStart=/bin/sleep 600\n")),
    ];
    for (u, text) in &units {
        std::fs::write(format!("{DIR}/{u}"), text).unwrap();
    }
    std::fs::create_dir_all("/mnt/adedep").unwrap();
    let sd = baseline(BASE);
    let deps = ["ade-dep.target", "mnt-adedep.mount", "ade-dep.timer", "ade-dep.service"];
    let start_all = || {
        let mut a = vec!["systemctl", "start"];
        a.extend(deps);
        let r = sh(&a);
        assert!(r.status.success(), "{r:?}");
    };
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    start_all();
    let state = |u: &str| crate::prepare::state(&sd, u);
    for u in deps {
        assert_eq!(state(u), "active", "{u}");
    }
    // What systemd itself does to each when the workload is stopped (the evidence in docs/decisions.md): it stops
    // every unit that Requires= it, whatever its type, and starts none again when the workload starts.
    // Stopped: inactive; for the tmpfs mount also `failed`, which systemd 219 in the container sometimes leaves
    // when it unmounts it (seen 2 runs in 5, with a plain `systemctl stop ade-db.service` and no ade-prep at all).
    let stopped = |u: &str| {
        let s = state(u);
        s == "inactive" || (u.ends_with(".mount") && s == "failed")
    };
    assert!(sh(&["systemctl", "stop", "ade-db.service"]).status.success());
    for u in deps {
        assert!(stopped(u), "systemd stops {u} with the unit it requires: {}", state(u));
    }
    assert!(sh(&["systemctl", "start", "ade-db.service"]).status.success());
    for u in deps {
        assert!(stopped(u), "systemd does not start {u} again with the unit it requires: {}", state(u));
    }
    start_all();

    // The window: all are stopped with the workload (systemd would stop them anyway) and recorded; only the
    // service is masked (it could start the workload again and holds /); the target, mount and timer are not.
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    for u in deps {
        assert!(stopped(u), "{u}: {}", state(u));
    }
    let masks = crate::prepare::runtime_masks();
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(masks.iter().any(|m| m == "ade-dep.service"), "{masks:?}");
    for u in ["ade-dep.target", "mnt-adedep.mount", "ade-dep.timer"] {
        assert!(!masks.iter().any(|m| m == u), "{u} runtime-masked: {masks:?}");
    }
    assert!(!window_open());
    for u in deps {
        assert_eq!(state(u), "active", "{u} is started again by restore");
    }

    let mut a = vec!["systemctl", "stop"];
    a.extend(deps);
    let _ = sh(&a);
    for (u, _) in &units {
        let _ = std::fs::remove_file(format!("{DIR}/{u}"));
    }
    let _ = sh(&["systemctl", "daemon-reload"]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by trust_in_nspawn"]
fn in_container_a_users_job_that_atd_runs_in_its_own_unit_never_changes_what_prepare_does() {
    if !inside() {
        return;
    }
    // atd as Debian runs it (no pam_systemd in its PAM stack): root's daemon switches to the job's owner and
    // leaves the job in atd.service. The job runs the admin's workload executable and holds / (its cwd).
    const UNIT: &str = "/usr/local/lib/systemd/system/atd.service";
    std::fs::copy("/bin/sleep", "/usr/local/bin/ade-atjob").unwrap();
    std::fs::write(
        UNIT,
        "[Service]\nExecStart=/bin/sh -c 'chroot --userspec=65534:65534 / /usr/local/bin/ade-atjob 600 & exec sleep \
         600'\n",
    )
    .unwrap();
    let config = format!("{BASE}\n[workloads.atjob]\nexes = [\"/usr/local/bin/ade-atjob\"]\n");
    let sd = baseline(&config);
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    assert!(sh(&["systemctl", "start", "atd.service"]).status.success());
    let mut job = 0;
    wait_for("the user's job", 10, || {
        job = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| comm(*p).as_deref() == Some("ade-atjob"))
            .unwrap_or(0);
        job != 0
    });
    let e = scan_entry(&json(&ade(&["scan", "--json"])), job);
    assert_eq!(e["class"], "other", "{e}");
    assert!(e["reason"].as_str().unwrap().contains("atd.service runs users' jobs"), "{e}");

    let r = prepare(&[]);
    let atd = crate::prepare::state(&sd, "atd.service");
    let alive = comm(job).is_some();
    if r.code == 0 {
        assert_eq!(ade(&["restore"]).code, 0);
    }
    let _ = sh(&["systemctl", "stop", "atd.service"]);
    std::fs::remove_file(UNIT).unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
    std::fs::remove_file("/usr/local/bin/ade-atjob").unwrap();
    assert_eq!(r.code, 0, "the user's job neither blocks nor is ended: {r:?}");
    assert_eq!(atd, "active", "atd.service was stopped");
    assert!(alive, "the user's job was ended");
    assert!(!window_open());
}
