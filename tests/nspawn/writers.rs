//! Issue 25, every other writer: a service in no workload holding a file on `/` open for writing is named by
//! `scan` and `check` (unit and pid); with `[policy] writers = "stop"` prepare stops and holds it like a workload
//! and restore starts it again, its enablement untouched; a user's process writing to `/` is named, never stopped.
//! On systemd 252 and 219.

use std::path::Path;

use serde_json::Value;

use crate::common::{inside_with_scenarios as inside, sh, wait_for};
use crate::prepare::{ade, baseline, json, prepare, runtime_masks, state, window_open, BASE, HOLD};
use crate::trust::{as_user, comm, UserProcs};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 1;

#[test]
fn writers_in_nspawn() {
    crate::common::nspawn_suite("writers", IN_CONTAINER_TESTS, 300);
}

// ---- inside the container ---------------------------------------------------------------------------------

const ENABLED: &str = "ade-writer.service";
const DISABLED: &str = "ade-writer2.service";
const TRANSIENT: &str = "ade-writer-run.service";
const REFUSES: &str = "ade-writer-refuses.service";

/// A small service appending to a file under /var for as long as it runs (fd 3 open for writing), installed in
/// /etc like a package's; `enable`d or not.
fn install_writer(unit: &str, enable: bool) {
    let name = unit.trim_end_matches(".service");
    std::fs::write(
        format!("/etc/systemd/system/{unit}"),
        format!(
            "[Unit]\nDescription=ade-prep test: a service writing under /var\n[Service]\nExecStart=/bin/sh -c \
             'mkdir -p /var/lib/{name}; exec 3>>/var/lib/{name}/log; while :; do echo tick >&3; sleep 1; done'\n\
             [Install]\nWantedBy=multi-user.target\n"
        ),
    )
    .unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    if enable {
        assert!(sh(&["systemctl", "enable", unit]).status.success());
    }
    assert!(sh(&["systemctl", "start", unit]).status.success());
}

fn remove_writer(unit: &str) {
    let _ = sh(&["systemctl", "stop", unit]);
    let _ = sh(&["systemctl", "disable", unit]);
    let _ = std::fs::remove_file(format!("/etc/systemd/system/{unit}"));
    let _ = sh(&["systemctl", "daemon-reload"]);
}

fn is_enabled(unit: &str) -> String {
    String::from_utf8_lossy(&sh(&["systemctl", "is-enabled", unit]).stdout).trim().to_string()
}

fn main_pid(unit: &str) -> u64 {
    crate::common::unit_prop(unit, "MainPID").parse().unwrap()
}

fn writer_of(scan: &Value, pid: u64) -> Value {
    scan["verdict"]["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"].as_u64() == Some(pid))
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not among the verdict's writers: {}", scan["verdict"]))
}

#[test]
#[ignore = "runs inside the nspawn container, started by writers_in_nspawn"]
fn in_container_other_writers_are_named_and_under_stop_stopped_held_and_restored() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    install_writer(ENABLED, true);
    install_writer(DISABLED, false);
    // Two writers prepare must leave running, each named: a transient service (`systemd-run`: nothing could start
    // it again) and one that refuses a manual stop (as auditd does on RHEL 7).
    let script = |name: &str| {
        format!("mkdir -p /var/lib/{name}; exec 3>>/var/lib/{name}/log; while :; do echo tick >&3; sleep 1; done")
    };
    let run = sh(&["systemd-run", &format!("--unit={TRANSIENT}"), "/bin/sh", "-c", &script("ade-writer-run")]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    std::fs::write(
        format!("/etc/systemd/system/{REFUSES}"),
        format!("[Unit]\nRefuseManualStop=yes\n[Service]\nExecStart=/bin/sh -c '{}'\n", script("ade-writer-refuses")),
    )
    .unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    assert!(sh(&["systemctl", "start", REFUSES]).status.success());
    let enablement = (is_enabled(ENABLED), is_enabled(DISABLED));
    assert_eq!(enablement, ("enabled".to_string(), "disabled".to_string()));
    // A user writing to a file on / (their session's process: reported, never stopped).
    let dir = Path::new("/var/tmp/ade-user-writes");
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    let user = as_user(&["/bin/sh", "-c", "exec 3>>/var/tmp/ade-user-writes/log; exec sleep 3600"]);
    let user_pid = user.id();
    let _procs = UserProcs(vec![user]);
    wait_for("the user's writer", 10, || comm(user_pid).as_deref() == Some("sleep"));
    let (w1, w2, w3, w4) = (main_pid(ENABLED), main_pid(DISABLED), main_pid(TRANSIENT), main_pid(REFUSES));
    let mut last = Value::Null;
    for _ in 0..100 {
        last = json(&ade(&["scan", "--json"]));
        let pids: Vec<u64> =
            last["verdict"]["writers"].as_array().unwrap().iter().filter_map(|w| w["pid"].as_u64()).collect();
        if [w1, w2, w3, w4, user_pid.into()].iter().all(|p| pids.contains(p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for p in [w1, w2, w3, w4, user_pid.into()] {
        writer_of(&last, p);
    }

    // scan's verdict names each writer: the services by unit, the user's process with why it is only reported.
    let scan = json(&ade(&["scan", "--json"]));
    assert_eq!(writer_of(&scan, w1)["unit"], ENABLED);
    assert_eq!(writer_of(&scan, w2)["unit"], DISABLED);
    let u = writer_of(&scan, user_pid.into());
    assert!(u["unit"].is_null(), "{u}");
    assert!(u["report_only"].as_str().unwrap().contains("a user's process"), "{u}");
    assert_eq!(scan["verdict"]["writers_policy"], "report");
    let text = ade(&["scan"]).stdout;
    assert!(text.contains(&format!("{ENABLED} (pid {w1})")) && text.contains("kill -9"), "{text}");
    // check names them with what ADE does (the guest's os-release is Debian's: both distributions' ways are given).
    let check = ade(&["check", "--json"]);
    let check: Value = serde_json::from_str(&check.stdout).unwrap_or_else(|e| panic!("{e}: {check:?}"));
    let c = check["checks"].as_array().unwrap().iter().find(|c| c["id"] == "writers").unwrap().clone();
    let ev = c["evidence"].as_str().unwrap();
    assert!(ev.contains(&format!("{ENABLED} (pid {w1})")) && ev.contains(&format!("{DISABLED} (pid {w2})")), "{c}");
    assert!(ev.contains("systemctl rescue") && ev.contains("RAM root"), "{c}");

    // report (the default): prepare leaves them running, each named in its plan.
    let dry = prepare(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains(&format!("other writer {ENABLED} (pid {w1}): left to ADE")), "{dry:?}");

    // stop: prepare stops and holds both services; the user's process is left running.
    crate::prepare::write_config(&format!("{BASE}\n[policy]\nwriters = \"stop\"\n"));
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    for unit in [ENABLED, DISABLED] {
        assert_eq!(state(&sd, unit), "inactive", "{unit}: {r:?}");
        // Its file in /etc outranks a runtime mask: held by ade-prep-generator's mask, from the hold list (the
        // generator itself is tested in the hold suite).
        assert!(std::fs::read_to_string(HOLD).unwrap().lines().any(|l| l == unit), "{unit} not held");
    }
    assert!(comm(user_pid).is_some(), "the user's process was ended");
    for (unit, why) in [(TRANSIENT, "is transient"), (REFUSES, "refuses a manual stop")] {
        assert_eq!(state(&sd, unit), "active", "{unit}: {r:?}");
        assert!(r.stdout.contains(&format!("{unit} {why}")), "{unit} not named: {r:?}");
    }
    // Journaled as a workload unit's stop: restore starts it because it was active.
    let journal: Value = serde_json::from_slice(&std::fs::read("/var/lib/ade-prep/state.json").unwrap()).unwrap();
    for unit in [ENABLED, DISABLED] {
        let stop = journal["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["change"]["kind"] == "stop_unit" && e["change"]["unit"] == unit);
        let stop = stop.unwrap_or_else(|| panic!("no stop of {unit} in the journal: {journal:#}"));
        assert_eq!(stop["change"]["active_state_before"], "active", "{stop}");
        assert_eq!(stop["status"], "done", "{stop}");
    }

    // restore: both running again, enablement as it was, nothing masked.
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!window_open());
    for unit in [ENABLED, DISABLED] {
        assert_eq!(state(&sd, unit), "active", "{unit}");
    }
    assert_eq!((is_enabled(ENABLED), is_enabled(DISABLED)), enablement);
    assert_eq!(runtime_masks(), Vec::<String>::new());
    assert_eq!(crate::prepare::state(&sd, "ade-db.service"), "active");

    crate::prepare::write_config(BASE);
    remove_writer(ENABLED);
    remove_writer(DISABLED);
    let _ = sh(&["systemctl", "stop", TRANSIENT]);
    let _ = sh(&["systemctl", "kill", REFUSES]);
    remove_writer(REFUSES);
    let _ = std::fs::remove_dir_all(dir);
}
