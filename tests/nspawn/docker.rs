//! Docker and containerd with the real engine (issue 14, docs/docker.md) in the `docker` guest (rootfs-docker-ns:
//! rootfs-ns plus Debian 12's docker.io 20.10.24, containerd 1.6.20 and runc 1.1.5; systemd 252, cgroup v2; see
//! `nspawn-run.sh -g docker` for what the container is given). The guest side is tests/e2e/docker.sh, the script the
//! qemu Docker scenario runs, with the phases that need no kernel of their own: `containerd` (containerd alone, a
//! `ctr` task, the docker CLI moved away), `kubelet` (a pod's task in namespace k8s.io beside a STAND-IN
//! kubelet.service: Debian 12 has no kubelet package; issue 25's order, kubelet stopped before containerd and the pod
//! left to kubelet by restore), `no-live-restore` and `live-restore` (the six containers and the two `ctr` tasks of
//! namespace e2e through prepare, the window and restore); what each phase asserts is listed in docker.sh's header.
//! Docker's cgroupfs driver, as in the qemu scenario. Only the reboot phase stays in the qemu guest (tests/vm/e2e.rs
//! e2e_vm_docker_cgroupfs).
//!
//! `docker_in_nspawn` (host side) boots the `docker` guest once and runs this binary's `docker::in_container_*` test
//! inside it. It skips (SKIPPED) when rootfs-docker-ns has not been built (`tests/harness/build-guest.sh
//! --nspawn-only`).

use std::process::Command;
use std::time::Instant;

use crate::common::inside;

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 1;

#[test]
fn docker_in_nspawn() {
    let _one = crate::common::one_guest();
    if let Err(e) = crate::common::nspawn_suite_on("docker", "docker", IN_CONTAINER_TESTS, 900) {
        panic!("{e}");
    }
}

// ---- inside the container ---------------------------------------------------------------------------------

/// The phases run here, in docker.sh's order.
const PHASES: [&str; 4] = ["containerd", "kubelet", "no-live-restore", "live-restore"];

#[test]
#[ignore = "runs inside the nspawn container, started by docker_in_nspawn"]
fn in_container_docker_containerd_and_kubelet_through_the_window() {
    if !inside() {
        return;
    }
    let generator = "/work/packaging/usr/lib/systemd/system-generators/ade-prep-generator";
    let t = Instant::now();
    // ADE_PREP_BIN (this build's binary, set by the host side) passes through; docker.sh installs both.
    let out = Command::new("bash")
        .arg("/work/tests/e2e/docker.sh")
        .arg("cgroupfs")
        .args(PHASES)
        .env("ADE_PREP_GENERATOR", generator)
        .output()
        .expect("running tests/e2e/docker.sh");
    let took = t.elapsed().as_secs_f64();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    eprintln!("{stderr}");
    // Each prepare's and restore's time (docker.sh's summary lines), past the host side's filter.
    for l in stdout.lines().filter(|l| PHASES.iter().any(|p| l.starts_with(&format!("{p}: ade-prep ")))) {
        println!("MEASURED: {l}");
    }
    println!("MEASURED: docker.sh {} {took:.1}s", PHASES.join(" "));
    assert!(out.status.success() && stdout.contains("E2E PASS docker"), "docker.sh failed ({})", out.status);
    assert!(!stdout.contains("CHECK FAIL"), "a check failed");
    // Each phase ran to its end: its last check is there (a phase skipped by mistake would pass silently).
    let last = [
        "containerd: the task runs again",
        "kubelet: kubelet started the pod again",
        "no-live-restore: journal: window closed",
        "live-restore: journal: window closed",
    ];
    for l in last {
        assert!(stdout.contains(&format!("CHECK ok   {l}")), "a phase did not finish: no \"{l}\"");
    }
}
