//! The hold and the protected rule (issue 12), the built binary against systemd 252 in systemd-nspawn, with
//! ade-prep-generator installed where the package installs it (packaging/install.sh) and a boot simulated by
//! removing the runtime state (/run's masks) and reloading, which runs the generators as a boot does.
//!
//! `hold_in_nspawn` (host side) boots the harness container once and runs this binary's `hold::in_container_*`
//! tests inside it; the scenario units of tests/scenarios are there, plus units written to /etc/systemd/system here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ade_prep::systemd::{ServiceManager, Systemd};

use crate::common::inside_with_scenarios as inside;
use crate::prepare::{
    ade, baseline, generator_masks, json, load_state, prepare, runtime_masks, state, window_open, BASE, HOLD,
};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 5;

#[test]
fn hold_in_nspawn() {
    crate::common::nspawn_suite("hold", IN_CONTAINER_TESTS, 600);
}

// ---- inside the container ---------------------------------------------------------------------------------

/// A workload whose unit file is in /etc (as SAP's and most admins' units are); its ExecStop leaves a trace.
const ETC_UNIT: &str = "ade-etc.service";
/// `Requires=` and `After=` ETC_UNIT: systemd stops it with the workload.
const DEPENDENT: &str = "ade-dependent.service";
/// `PartOf=` ETC_UNIT (ETC_UNIT's `ConsistsOf`): systemd stops it with the workload too.
const PART_OF: &str = "ade-partof.service";
/// A workload whose unit file is in /run/systemd/system (written at runtime), where a runtime mask would replace it.
const RUN_UNIT: &str = "ade-run.service";
const WORKER: &str = "/usr/local/bin/ade-etc-worker";
const STOPS: &str = "/var/tmp/ade-etc.stops";
/// KillMode=process: its child keeps a lock the next instance's ExecStartPre needs (as an inherited listening
/// socket would keep the port).
const LEFTOVER_UNIT: &str = "ade-leftover.service";

fn config() -> String {
    format!("{BASE}\n[workloads.etc]\nunits = [\"{ETC_UNIT}\", \"{RUN_UNIT}\", \"ade-runner.service\", \"{LEFTOVER_UNIT}\"]\ncomms = [\"ade-etc-worker\"]\n")
}

fn sh(cmd: &str) -> std::process::Output {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(o.status.success(), "{cmd}: {o:?}");
    o
}

fn reload() {
    sh("systemctl daemon-reload");
}

/// Installs the generator as the packages do: packaging/install.sh into a staging root (with a stand-in binary and
/// documents), then its generator where systemd looks for it.
fn install_generator() {
    let stage = tempfile::tempdir().unwrap();
    let docs = stage.path().join("docs");
    for f in ["man/ade-prep.1", "completions/ade-prep.bash", "completions/_ade-prep", "completions/ade-prep.fish"] {
        std::fs::create_dir_all(docs.join(f).parent().unwrap()).unwrap();
        std::fs::write(docs.join(f), "").unwrap();
    }
    let dest = stage.path().join("root");
    let st = Command::new("/work/packaging/install.sh").arg(&dest).arg("/bin/true").arg(&docs).status().unwrap();
    assert!(st.success(), "install.sh: {st}");
    let gen = "usr/lib/systemd/system-generators/ade-prep-generator";
    let installed = dest.join(gen);
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    std::fs::create_dir_all(Path::new("/").join(gen).parent().unwrap()).unwrap();
    std::fs::copy(&installed, Path::new("/").join(gen)).unwrap();
}

/// The baseline of the prepare tests, the generator installed, and the /etc units running.
fn setup() -> Systemd {
    let sd = baseline(&config());
    install_generator();
    // Copied aside and renamed over: a worker left running by an earlier test keeps the old file busy.
    std::fs::copy("/bin/sleep", format!("{WORKER}.new")).unwrap();
    std::fs::rename(format!("{WORKER}.new"), WORKER).unwrap();
    std::fs::write(
        format!("/etc/systemd/system/{ETC_UNIT}"),
        format!(
            "[Service]\nExecStart=/bin/sh -c 'exec 3>>/var/tmp/ade-etc.log; exec {WORKER} infinity'\n\
             ExecStop=/bin/sh -c 'echo stopped >>{STOPS}'\nRestart=always\n"
        ),
    )
    .unwrap();
    std::fs::write(
        format!("/etc/systemd/system/{DEPENDENT}"),
        format!("[Unit]\nRequires={ETC_UNIT}\nAfter={ETC_UNIT}\n[Service]\nExecStart=/bin/sleep infinity\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(STOPS);
    reload();
    sh(&format!("systemctl start {ETC_UNIT} {DEPENDENT}"));
    crate::common::wait_for("the /etc workload to exec", 5, || {
        let pid = sd.unit(ETC_UNIT).unwrap().main_pid.unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ade-etc-worker")
    });
    sd
}

fn start_fails(unit: &str) -> bool {
    !Command::new("systemctl").args(["start", unit]).output().unwrap().status.success()
}

#[test]
#[ignore = "runs inside the nspawn container, started by hold_in_nspawn"]
fn in_container_a_unit_in_etc_and_its_dependent_are_held_through_the_window_and_a_boot_and_come_back() {
    if !inside() {
        return;
    }
    let sd = setup();
    // A PartOf= dependent of the /etc unit, and a second workload unit in /run/systemd/system.
    std::fs::write(
        format!("/etc/systemd/system/{PART_OF}"),
        format!("[Unit]\nPartOf={ETC_UNIT}\n[Service]\nExecStart=/bin/sleep infinity\n"),
    )
    .unwrap();
    std::fs::write(
        format!("/run/systemd/system/{RUN_UNIT}"),
        format!("[Service]\nExecStart={WORKER} infinity\nRestart=always\n"),
    )
    .unwrap();
    reload();
    sh(&format!("systemctl start {PART_OF} {RUN_UNIT}"));
    let all = [ETC_UNIT, DEPENDENT, PART_OF, RUN_UNIT];
    for u in all {
        assert_eq!(state(&sd, u), "active", "{u} did not start");
    }
    let dry = prepare(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains(&format!("also stopped and restored: {DEPENDENT} (systemd stops it with {ETC_UNIT})")),
        "{dry:?}"
    );
    assert!(
        dry.stdout.contains(&format!("also stopped and restored: {PART_OF} (systemd stops it with {ETC_UNIT})")),
        "{dry:?}"
    );
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    // A second prepare does not queue behind the open window: exit 5 at once (it waits only with --wait).
    let t = std::time::Instant::now();
    let again = prepare(&[]);
    assert_eq!(again.code, 5, "{again:?}");
    assert!(again.stderr.contains("--wait") && t.elapsed().as_secs() < 10, "{again:?}");
    // Stopped with its own ExecStop (the generator's mask was loaded only after the stop), then held.
    assert_eq!(std::fs::read_to_string(STOPS).unwrap_or_default(), "stopped\n", "ExecStop did not run");
    for u in all {
        assert_eq!(state(&sd, u), "inactive", "{u}");
        assert_eq!(load_state(u), "masked", "{u} is not held during the window");
        assert!(start_fails(u), "{u} could be started during the window");
    }
    let status = json(&ade(&["status", "--json"]));
    let stops: Vec<&str> = status["journal"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["change"]["kind"] == "stop_unit")
        .map(|e| e["change"]["unit"].as_str().unwrap_or(""))
        .collect();
    for u in [DEPENDENT, PART_OF] {
        assert!(stops.contains(&u), "the dependent {u} is not recorded as a stop: {status:#}");
    }

    // A boot: the runtime masks are gone, the generators run from the hold list.
    for u in runtime_masks() {
        std::fs::remove_file(Path::new("/run/systemd/system").join(u)).unwrap();
    }
    reload();
    for u in [ETC_UNIT, RUN_UNIT] {
        assert!(generator_masks().iter().any(|g| g == u), "{u}: {:?}", generator_masks());
    }
    for u in all {
        assert_eq!(load_state(u), "masked", "{u} is not held after the boot");
        assert!(start_fails(u), "{u} could be started after the boot");
    }

    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new(HOLD).exists(), "restore left {HOLD}");
    assert_eq!(generator_masks(), Vec::<String>::new());
    for u in all {
        assert_eq!(load_state(u), "loaded", "{u}");
        assert_eq!(state(&sd, u), "active", "{u} is not back");
    }
    assert!(!window_open());
    let again = ade(&["restore"]);
    assert_eq!(again.code, 0, "{again:?}");
    sh(&format!("systemctl stop {DEPENDENT} {PART_OF} {RUN_UNIT} {ETC_UNIT}"));
    std::fs::remove_file(format!("/run/systemd/system/{RUN_UNIT}")).unwrap();
    reload();
}

#[test]
#[ignore = "runs inside the nspawn container, started by hold_in_nspawn"]
fn in_container_a_stale_or_damaged_hold_list_is_reported_trusted_only_when_safe_and_removed_by_restore() {
    if !inside() {
        return;
    }
    let sd = setup();
    let write_hold = |text: &str, mode: u32| {
        std::fs::create_dir_all(Path::new(HOLD).parent().unwrap()).unwrap();
        std::fs::write(HOLD, text).unwrap();
        std::fs::set_permissions(HOLD, std::fs::Permissions::from_mode(mode)).unwrap();
        reload();
    };
    // A damaged list: protected units, targets and mounts are never masked.
    write_hold(&format!("dbus.service\nsystemd-journald.service\ndefault.target\n-.mount\n{ETC_UNIT}\n"), 0o644);
    assert_eq!(generator_masks(), [ETC_UNIT]);
    // A list anyone may write is ignored.
    write_hold(&format!("{ETC_UNIT}\n"), 0o666);
    assert_eq!(generator_masks(), Vec::<String>::new());
    // A stale list (no window open): reported, and `restore` removes it and reloads.
    write_hold(&format!("{ETC_UNIT}\n"), 0o644);
    assert_eq!(load_state(ETC_UNIT), "masked");
    let st = ade(&["status"]);
    assert!(st.stdout.contains(&format!("stale hold list: {HOLD}")), "{st:?}");
    assert_eq!(json(&ade(&["status", "--json"]))["stale_hold_list"], HOLD);
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new(HOLD).exists());
    assert_eq!(load_state(ETC_UNIT), "loaded", "restore did not reload after removing the list");
    sh(&format!("systemctl restart {ETC_UNIT}"));
    assert_eq!(state(&sd, ETC_UNIT), "active");
    sh(&format!("systemctl stop {DEPENDENT} {ETC_UNIT}"));
}

#[test]
#[ignore = "runs inside the nspawn container, started by hold_in_nspawn"]
fn in_container_a_workload_outside_its_units_or_beside_ade_prep_blocks_prepare_and_nothing_changes() {
    if !inside() {
        return;
    }
    let sd = setup();
    // In a unit the workload's globs do not name.
    // Plain systemd-run: 219 has neither --collect nor -p WorkingDirectory= (a transient unit runs in / anyway).
    sh(&format!("systemd-run --unit=ade-adhoc.service {WORKER} infinity"));
    // Active is not enough: until the exec the process is not yet ade-etc-worker, and prepare's plan would miss it.
    crate::common::wait_for("ade-adhoc to exec its worker", 5, || {
        let pid = sd.unit("ade-adhoc.service").unwrap().main_pid.unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ade-etc-worker")
    });
    let r = prepare(&[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("runs in ade-adhoc.service, which the workload's units"), "{r:?}");
    assert!(r.stderr.contains("nothing was changed"), "{r:?}");
    assert_eq!(state(&sd, ETC_UNIT), "active");
    assert_eq!(state(&sd, "ade-adhoc.service"), "active");
    assert!(!window_open());
    sh("systemctl stop ade-adhoc.service");

    // In the unit that runs ade-prep itself (a cloud-init step, a systemd-run unit): never stopped.
    // A oneshot unit file rather than `systemd-run --wait --pipe`, which 219 lacks: its output and exit code go to
    // files the test reads once the start job (which waits for a oneshot) has ended.
    let bin = std::env::var("ADE_PREP_BIN").unwrap();
    let (out, rc) = ("/run/ade-runner.out", "/run/ade-runner.rc");
    std::fs::write(
        "/run/systemd/system/ade-runner.service",
        format!(
            "[Service]\nType=oneshot\nWorkingDirectory=/\nExecStart=/bin/sh -c '{WORKER} infinity & sleep 1; \
             {bin} prepare --force distro >{out} 2>&1; echo $$? >{rc}; kill $$!'\n"
        ),
    )
    .unwrap();
    reload();
    let started = Command::new("systemctl").args(["start", "ade-runner.service"]).output().unwrap();
    assert!(started.status.success(), "{started:?}");
    let err = std::fs::read_to_string(out).unwrap();
    assert_eq!(std::fs::read_to_string(rc).unwrap().trim(), "3", "{err}");
    assert!(err.contains("runs in ade-runner.service, the unit that runs ade-prep"), "{err}");
    assert_eq!(state(&sd, ETC_UNIT), "active");
    assert!(!window_open());
    sh(&format!("systemctl stop {DEPENDENT} {ETC_UNIT}"));
}

#[test]
#[ignore = "runs inside the nspawn container, started by hold_in_nspawn"]
fn in_container_no_journal_no_window_and_a_full_journal_disk_does_not_stop_the_restore() {
    if !inside() {
        return;
    }
    let sd = setup();
    let state_dir = "/var/lib/ade-prep";
    std::fs::create_dir_all(state_dir).unwrap();
    // A full journal folder: prepare refuses before changing anything.
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {state_dir}"));
    let r = prepare(&[]);
    sh(&format!("umount {state_dir}"));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("nothing was changed"), "{r:?}");
    assert_eq!(state(&sd, ETC_UNIT), "active");
    assert_eq!(runtime_masks(), Vec::<String>::new());
    assert!(!Path::new(HOLD).exists());

    // The disk fills up during the window: restore brings everything back all the same, says so, and the next
    // restore (with room again) closes the window.
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    sh(&format!(
        "cp -a {state_dir} /tmp/ade-state && mount -t tmpfs -o size=1m tmpfs {state_dir} && \
         cp -a /tmp/ade-state/. {state_dir}/ && (dd if=/dev/zero of={state_dir}/fill bs=4k 2>/dev/null || true)"
    ));
    let r = ade(&["restore"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("journal: could not record"), "{r:?}");
    for u in [ETC_UNIT, DEPENDENT, "ade-db.service"] {
        assert_eq!(state(&sd, u), "active", "{u} is not back");
    }
    assert!(window_open(), "the journal on disk still has the window open");
    std::fs::remove_file(format!("{state_dir}/fill")).unwrap();
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!window_open());
    // The closed journal goes back to the disk under the tmpfs (which still has the open one from before).
    sh(&format!(
        "cp {state_dir}/state.json /tmp/ade-closed.json && umount {state_dir} && cp /tmp/ade-closed.json {state_dir}/state.json"
    ));
    assert!(!window_open());
    sh(&format!("systemctl stop {DEPENDENT} {ETC_UNIT}"));
}

#[test]
#[ignore = "runs inside the nspawn container, started by hold_in_nspawn"]
fn in_container_restore_ends_a_leftover_that_a_crash_kept_prepare_from_ending_then_starts_the_unit() {
    if !inside() {
        return;
    }
    let sd = setup();
    std::fs::write(
        format!("/etc/systemd/system/{LEFTOVER_UNIT}"),
        format!(
            "[Service]\nKillMode=process\nExecStartPre=/usr/bin/flock -n /var/tmp/ade-leftover.lock true\n\
             ExecStart=/bin/sh -c 'flock /var/tmp/ade-leftover.lock {WORKER} infinity & exec {WORKER} infinity'\n"
        ),
    )
    .unwrap();
    reload();
    sh(&format!("systemctl start {LEFTOVER_UNIT}"));
    let leftover_alive = || sh("pgrep -x flock || true").stdout.iter().any(u8::is_ascii_digit);
    crate::common::wait_for("the leftover-to-be to hold its lock", 5, leftover_alive);
    // Crash prepare at each failpoint in turn until one leaves the unit stopped with its leftover still running.
    let mut found = false;
    for k in 1..60 {
        let mut c = std::process::Command::new(std::env::var("ADE_PREP_BIN").unwrap());
        c.args(["prepare", "--force", "distro"]).env("ADE_PREP_FAILPOINT", format!("prepare:{k}"));
        let o = c.output().unwrap();
        if o.status.success() {
            break; // ran through: no point left
        }
        if state(&sd, LEFTOVER_UNIT) != "active" && leftover_alive() {
            found = true;
            break;
        }
        let r = ade(&["restore"]);
        assert_eq!(r.code, 0, "k={k}: {r:?}");
        assert_eq!(state(&sd, LEFTOVER_UNIT), "active", "k={k}");
    }
    assert!(found, "no failpoint between the stop and the clean-up of the leftover");
    assert!(start_fails(LEFTOVER_UNIT), "the leftover does not block a start: the test shows nothing");
    let r = ade(&["restore", "-v"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("ended what {LEFTOVER_UNIT}'s old instance left")), "{r:?}");
    assert_eq!(state(&sd, LEFTOVER_UNIT), "active", "{r:?}");
    assert!(!window_open());
    sh(&format!("systemctl stop {LEFTOVER_UNIT} {DEPENDENT} {ETC_UNIT}; systemctl kill {LEFTOVER_UNIT} || true"));
}
