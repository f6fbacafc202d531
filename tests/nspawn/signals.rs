//! Stop requests against a real systemd 252 in systemd-nspawn (issue 13): SIGTERM, SIGINT or SIGHUP arriving at
//! the failpoints of prepare (ADE_PREP_FAILPOINT=prepare:k:SIG, ade-prep built with the `failpoints` feature):
//! prepare finishes the step in flight, rolls back and exits 1 naming the signal, leaving the machine as it was;
//! arriving during restore, restore finishes and exits 0, the machine back to its baseline; `systemctl stop` of
//! `run` (as its Type=notify unit) while its prepare waits on a slow pre-stop command: the pre-stop gets SIGTERM,
//! prepare rolls back and run exits 1 by itself, before systemd's TimeoutStopSec; a stop request while a unit's
//! slow `ExecStop=` runs: prepare stops following the job and starts rolling back without waiting for it.

use std::path::Path;
use std::process::Output;

use crate::common::{ade_prep_cmd, inside, setup_workloads, MachineState};

#[test]
fn stop_signals_at_failpoints_in_nspawn() {
    if std::env::var(crate::common::IN_CONTAINER).is_ok() {
        return;
    }
    if !cfg!(feature = "failpoints") {
        crate::common::visible(
            "SKIPPED: signals_nspawn: built without the failpoints feature (cargo test --features failpoints)",
        );
        return;
    }
    crate::common::nspawn_suite("signals", 4, 900);
}

fn ade(args: &[&str], failpoint: &str) -> Output {
    let mut c = ade_prep_cmd(&[&["-v"], args].concat());
    c.env("ADE_PREP_FAILPOINT", failpoint);
    c.output().expect("running ade-prep")
}

fn text(o: &Output) -> String {
    format!("{} / stderr: {}", o.status, String::from_utf8_lossy(&o.stderr))
}

fn setup() -> MachineState {
    setup_workloads();
    crate::common::settle_workloads();
    let base = MachineState::baseline();
    assert_eq!(MachineState::read(), base);
    base
}

#[test]
#[ignore = "runs inside the nspawn container, started by stop_signals_at_failpoints_in_nspawn"]
fn in_container_a_stop_signal_during_prepare_rolls_back_and_exits_1_naming_it() {
    if !inside() {
        return;
    }
    let base = setup();
    let mut stopped = 0;
    for (k, sig) in (1..).zip(["SIGTERM", "SIGINT", "SIGHUP"].iter().cycle()) {
        let o = ade(&["prepare", "--force", "distro"], &format!("prepare:{k}:{sig}"));
        if o.status.success() {
            // Past the last failpoint: the signal came after the check after the last step, or never.
            assert!(k > 3, "prepare:{k}:{sig} ran through: {}", text(&o));
            let r = ade_prep_cmd(&["restore"]).output().unwrap();
            assert!(r.status.success(), "{}", text(&r));
            crate::common::settle_workloads();
            break;
        }
        assert_eq!(o.status.code(), Some(1), "prepare:{k}:{sig}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(&format!("stopped by {sig}")) && e.contains("rolled back"), "prepare:{k}:{sig}: {e}");
        crate::common::settle_workloads();
        assert_eq!(MachineState::read(), base, "after {sig} at prepare:{k}");
        stopped += 1;
    }
    println!("MEASURED: prepare stopped and rolled back at each of {stopped} failpoints");
    assert!(stopped > 5, "only {stopped} failpoints");
}

#[test]
#[ignore = "runs inside the nspawn container, started by stop_signals_at_failpoints_in_nspawn"]
fn in_container_a_stop_signal_during_restore_lets_it_finish() {
    if !inside() {
        return;
    }
    let base = setup();
    for k in [1, 3, 6] {
        let o = ade_prep_cmd(&["prepare", "--force", "distro"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(MachineState::read().is_fully_prepared());
        let o = ade(&["restore"], &format!("restore:{k}:SIGTERM"));
        assert!(o.status.success(), "restore:{k}:SIGTERM: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("sending myself SIGTERM"), "{}", text(&o));
        crate::common::settle_workloads();
        assert_eq!(MachineState::read(), base, "after SIGTERM at restore:{k}");
    }
}

#[test]
#[ignore = "runs inside the nspawn container, started by stop_signals_at_failpoints_in_nspawn"]
fn in_container_systemctl_stop_of_run_during_a_slow_pre_stop_rolls_back_and_ends_run() {
    if !inside() {
        return;
    }
    use crate::daemon::{finish, show, start_unit, unit_log, write_settings, write_status, UNIT};
    let base = setup();
    // The db's pre-stop takes 10 minutes (its own timeout 20): prepare is in that step when the stop comes.
    let marker = "/run/ade-slow-prestop";
    let _ = std::fs::remove_file(marker);
    std::fs::write(
        "/etc/ade-prep/config.d/50-test.toml",
        format!(
            "[workloads.db]\nunits = [\"ade-db.service\"]\n\
             pre_stop = [{{ argv = [\"/bin/sh\", \"-c\", \"touch {marker}; exec /bin/sleep 600\"], timeout_secs = 1200 }}]\n\n\
             [workloads.fakedocker]\nunits = [\"fake-docker.service\"]\ncompanion_units = [\"fake-docker.socket\"]\n\
             stop_timeout_secs = 30\n"
        ),
    )
    .unwrap();
    write_settings(0, "EnableEncryption", "All");
    write_status(0, "transitioning", "EncryptionInProgress");
    let child = start_unit();
    crate::common::wait_for("the slow pre-stop to start", 60, || Path::new(marker).exists());
    assert_eq!(show("ActiveState"), "activating", "prepare is in flight: not READY yet");
    let t = std::time::Instant::now();
    let o = crate::common::sh(&["systemctl", "stop", UNIT]);
    assert!(o.status.success(), "systemctl stop: {o:?}");
    let stopped_in = t.elapsed();
    let (code, out) = finish(child);
    let log = unit_log();
    println!(
        "MEASURED: systemctl stop of run during a slow pre-stop took {:.2}s (TimeoutStopSec {}); run's last line: {}",
        stopped_in.as_secs_f64(),
        show("TimeoutStopUSec"),
        log.lines().rfind(|l| l.contains("rolled back")).unwrap_or("")
    );
    // Ended by itself (exited, not killed by systemd after TimeoutStopSec: Result would be timeout, ExecMainCode 2).
    assert_eq!(code, Some(1), "run's exit: {out}\n{log}");
    assert!(out.starts_with("exit-code 1 1"), "Result ExecMainCode ExecMainStatus: {out}\n{log}");
    assert!(log.contains("stopped by SIGTERM") && log.contains("rolled back"), "{log}");
    // Nothing left stopped, masked or recorded open; the journal reads as closed.
    crate::common::settle_workloads();
    assert_eq!(MachineState::read(), base, "after systemctl stop during prepare: {log}");
    let st = ade_prep_cmd(&["status"]).output().unwrap();
    assert!(st.status.success(), "status after the stop: {}", text(&st));
    let _ = std::fs::remove_dir_all("/var/lib/waagent");
    let _ = crate::common::sh(&["systemctl", "reset-failed", UNIT]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by stop_signals_at_failpoints_in_nspawn"]
fn in_container_a_stop_request_during_a_slow_stop_job_rolls_back_without_waiting_for_the_stop() {
    if !inside() {
        return;
    }
    let base = setup();
    // ade-db's ExecStop= runs until the test releases it (a drain that takes as long as it takes).
    let (began, release) = ("/run/ade-slow-stop-began", "/run/ade-slow-stop-release");
    for f in [began, release] {
        let _ = std::fs::remove_file(f);
    }
    let dropin = Path::new("/run/systemd/system/ade-db.service.d");
    std::fs::create_dir_all(dropin).unwrap();
    std::fs::write(
        dropin.join("50-slow-stop.conf"),
        format!(
            "[Service]\nExecStop=/bin/sh -c 'touch {began}; while [ ! -e {release} ]; do sleep 0.2; done'\n\
             TimeoutStopSec=600\n"
        ),
    )
    .unwrap();
    assert!(crate::common::sh(&["systemctl", "daemon-reload"]).status.success());
    let mut c = ade_prep_cmd(&["-v", "prepare", "--force", "distro"]);
    c.stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    let mut child = c.spawn().expect("spawning prepare");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    crate::common::wait_for("ade-db's ExecStop to begin", 60, || Path::new(began).exists());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    // The rollback begins while the ExecStop still runs (nothing has released it): the stop job is not waited for.
    let mut seen = vec![];
    let rolling_back = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(l) => {
                let hit = l.contains("rolling back");
                seen.push(l);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let active = crate::common::unit_prop("ade-db.service", "ActiveState");
    std::fs::write(release, "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    let log = seen.join("\n");
    assert!(rolling_back, "no rollback while ade-db's ExecStop ran (ade-db {active}):\n{log}");
    assert_eq!(active, "deactivating", "the rollback began during the stop, not after it:\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("stopped by SIGTERM") && log.contains("no longer followed"), "{log}");
    // The rollback's start brought ade-db back once its stop ended; nothing left masked, held or open.
    let _ = std::fs::remove_dir_all(dropin);
    assert!(crate::common::sh(&["systemctl", "daemon-reload"]).status.success());
    crate::common::settle_workloads();
    assert_eq!(MachineState::read(), base, "after a stop request during a slow stop:\n{log}");
}
