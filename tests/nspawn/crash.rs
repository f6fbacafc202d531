//! Crash safety against a real systemd 252 in systemd-nspawn (issue 7 §4): ade-prep built with the `failpoints`
//! feature is killed with SIGKILL at every failpoint of prepare, then of restore, and a new `ade-prep restore`
//! must bring the units, their runtime masks, the SELinux mode and the lock back to what they were.
//!
//! The host side (`crash_at_every_failpoint_in_nspawn`) boots the harness container once and runs the
//! `in_container_*` tests of this binary inside it (see tests/common). SELinux: the container has none, so ade-prep
//! runs with a stand-in at /sys/fs/selinux in its own mount namespace ([`crate::common::ade_prep_cmd`]).
//!
//! Without the feature (a plain `cargo test`) it is a skip (tests/common `skip`: a failure under the test command
//! and in CI); tests/run.sh runs the suite with `--features failpoints`.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Instant;

use crate::common::{ade_prep_cmd, inside, setup_workloads, MachineState};

#[test]
fn crash_at_every_failpoint_in_nspawn() {
    if std::env::var(crate::common::IN_CONTAINER).is_ok() {
        return;
    }
    if !cfg!(feature = "failpoints") {
        // The binary has no failpoints to kill at: a skip like any other (a failure under the test command).
        crate::common::skip("crash: built without the failpoints feature (cargo test --features failpoints)");
        return;
    }
    crate::common::nspawn_suite("crash", 2, 900);
}

fn ade(args: &[&str], failpoint: Option<String>) -> Output {
    let mut c = ade_prep_cmd(&[&["-v"], args].concat());
    if let Some(f) = failpoint {
        c.env("ADE_PREP_FAILPOINT", f);
    }
    c.output().expect("running ade-prep")
}

fn text(o: &Output) -> String {
    format!(
        "{} / stdout: {} / stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn killed(o: &Output) -> bool {
    o.status.signal() == Some(libc::SIGKILL)
}

fn restore_ok() {
    let o = ade(&["restore"], None);
    assert!(o.status.success(), "restore: {}", text(&o));
    crate::common::settle_workloads();
}

fn prepare_ok() {
    let o = ade(&["prepare", "--force", "distro"], None);
    assert!(o.status.success(), "prepare: {}", text(&o));
    let s = MachineState::read();
    assert!(s.is_fully_prepared(), "{s:?}");
}

fn setup() {
    setup_workloads();
    crate::common::settle_workloads();
    assert_eq!(MachineState::read(), MachineState::baseline());
}

#[test]
#[ignore = "runs inside the nspawn container, started by crash_at_every_failpoint_in_nspawn"]
fn in_container_a_kill_at_every_prepare_failpoint_is_restored() {
    if !inside() {
        return;
    }
    setup();
    let base = MachineState::baseline();
    let t = Instant::now();
    let mut seen_changed = (false, false, false, false);
    let mut k = 1;
    loop {
        let o = ade(&["prepare", "--force", "distro"], Some(format!("prepare:{k}")));
        if !killed(&o) {
            // Ran through: the window is fully open; a plain restore closes it.
            assert!(o.status.success(), "prepare with failpoint prepare:{k} not reached: {}", text(&o));
            assert!(MachineState::read().is_fully_prepared());
            restore_ok();
            assert_eq!(MachineState::read(), base, "after the full prepare and restore");
            break;
        }
        let during = MachineState::read();
        println!("killed at prepare:{k}: {during:?}");
        assert!(during.window_open, "the journal is written before any change (k={k})");
        seen_changed.0 |= during.units.iter().any(|(_, a, _, _)| a != "active");
        seen_changed.1 |= during.units.iter().any(|(_, _, _, f)| *f);
        seen_changed.2 |= during.enforce == "0";
        seen_changed.3 |= during.lock == "stale";
        restore_ok();
        assert_eq!(MachineState::read(), base, "after a kill at prepare:{k} and a restore");
        k += 1;
    }
    println!(
        "MEASURED: prepare killed at each of its {} failpoints then restored: {:.1}s in all",
        k - 1,
        t.elapsed().as_secs_f64()
    );
    assert!(k - 1 > 5, "only {} failpoints in prepare", k - 1);
    // The kills did leave things to restore: stopped units, mask files, SELinux permissive, a stale lock.
    assert_eq!(seen_changed, (true, true, true, true));
}

#[test]
#[ignore = "runs inside the nspawn container, started by crash_at_every_failpoint_in_nspawn"]
fn in_container_a_kill_at_every_restore_failpoint_is_finished_by_the_next_restore() {
    if !inside() {
        return;
    }
    setup();
    let base = MachineState::baseline();
    let t = Instant::now();
    let mut k = 1;
    loop {
        prepare_ok();
        let o = ade(&["restore"], Some(format!("restore:{k}")));
        if !killed(&o) {
            assert!(o.status.success(), "restore with failpoint restore:{k} not reached: {}", text(&o));
            assert_eq!(MachineState::read(), base, "after a full restore");
            break;
        }
        let during = MachineState::read();
        println!("killed at restore:{k}: {during:?}");
        // (At the last failpoint the window is already closed: nothing is left for the next restore.)
        restore_ok();
        assert_eq!(MachineState::read(), base, "after a kill at restore:{k} and a second restore");
        // And a third restore finds nothing to do.
        let o = ade(&["restore"], None);
        assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to restore"), "{}", text(&o));
        k += 1;
    }
    println!(
        "MEASURED: restore killed at each of its {} failpoints then finished: {:.1}s in all",
        k - 1,
        t.elapsed().as_secs_f64()
    );
    assert!(k - 1 > 5, "only {} failpoints in restore", k - 1);
}
