//! Stop requests against a real systemd 252 in systemd-nspawn (issue 13): SIGTERM, SIGINT or SIGHUP arriving at
//! the failpoints of prepare (ADE_PREP_FAILPOINT=prepare:k:SIG, ade-prep built with the `failpoints` feature):
//! prepare finishes the step in flight, rolls back and exits 1 naming the signal, leaving the machine as it was;
//! arriving during restore, restore finishes and exits 0, the machine back to its baseline.

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
    crate::common::nspawn_suite("signals", 2, 900);
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
