//! End to end in the SELinux qemu guest (issue 6): ade-prep installed from its package, real systemd, SELinux
//! enforcing, real workloads (redis-server with a key, a docker-like socket + Restart=always pair, a custom-script-like
//! process), and a simulated ADE extension advancing its status file; osstep adds ADE's OS step itself (the pivot
//! into a RAM root and `umount /oldroot`, which must succeed at its first try). One `tests/harness/vm-run.sh -s` run
//! per scenario; the guest side is tests/e2e/guest.sh (what is asserted is listed there). Each run prints its timeline.
//!
//! The package: target/packages/ade-prep_*_amd64.deb, built by `packaging/build.sh` when missing or stale
//! (tests/common/packages.rs; the test command's packaging tier has built it already); ADE_E2E_DEB=PATH uses a
//! given one. ADE_E2E_BINARY=1 installs this build's debug binary with the packaged units instead (quicker while
//! developing). Boots take 30-120 s under TCG on a loaded machine: a scenario takes 4-8 minutes (measured: error
//! 247 s with its retry, success 302 s and reset 277 s for their two boots before success took reset's power cut
//! as its first reboot; osstep 497-613 s: boot 1 374-431 s with 100-135 s of ADE's copies into the tmpfs, boot 2
//! 123-182 s; with the data volume of issue 17: error 213-402 s, its data step 32 s; success 231-241 s; reset 219 s).
//! The scenarios run one at a time
//! (they would otherwise starve each other's guests of CPU). They are the `vm` tier of the README test command
//! (tests/run.sh vm; the budget is in tests/harness/NOTES.md).
//!
//! The Docker scenarios (issue 14, docs/docker.md) boot images/debian12-docker.img (Debian's docker.io engine) and run
//! tests/e2e/docker.sh: one run of two boots. With all four phases (containerd, no-live-restore, live-restore, reboot)
//! it took 675-885 s (boot 1 537-719 s; 1173 s in a more loaded hour), of which the phases no-live-restore and
//! live-restore were 148 s and 155 s of boot 1 in the 885 s run; the test command's scenario now runs only the reboot
//! phase, the others run in the `docker` nspawn guest (tests/nspawn/docker.rs, ~75 s there).
//!
//! The error and success scenarios also carry a data volume on a second disk (issue 17; tests/e2e/guest.sh).
//!
//! Skips (tests/common skip: a failure in CI) when not root or when the harness images are missing
//! (`tests/harness/build-guest.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Why the guests cannot run here, if they cannot (`image`: the disk image under images/).
fn cannot_run(image: &str) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("e2e_vm: needs root (qemu guests of tests/harness/vm-run.sh)".into());
    }
    let h = std::env::var("ADE_HARNESS_DIR").unwrap_or_else(|_| "/var/cache/ade-prep-harness".into());
    let image = format!("images/{image}.img");
    let needed = [image.as_str(), "images/vmlinuz", "qemu-root/usr/bin/qemu-system-x86_64"];
    needed
        .iter()
        .map(|f| Path::new(&h).join(f))
        .find(|p| !p.exists())
        .map(|p| format!("e2e_vm: {} missing (build it with tests/harness/build-guest.sh)", p.display()))
}

/// The package to install: ADE_E2E_DEB, or target/packages' .deb, built by packaging/build.sh only when missing or
/// older than its sources (tests/common/packages.rs: the test command's packaging tier has usually built it already).
/// None (after a skip) when the package tools are missing.
fn package() -> Option<PathBuf> {
    static DEB: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut deb = DEB.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = deb.as_ref() {
        return Some(d.clone());
    }
    let path = match std::env::var_os("ADE_E2E_DEB") {
        Some(p) => PathBuf::from(p),
        None => crate::common::packages::packages()?.deb,
    };
    assert!(path.is_file(), "{}: no such package", path.display());
    *deb = Some(path.clone());
    Some(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        }
    }
}

/// The folder shared with the guest at /work: guest.sh, the scenario units and scripts, and ade-prep (None, after a
/// skip, when the package cannot be built here).
fn stage() -> Option<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix("ade-e2e-vm.").tempdir().unwrap();
    let m = manifest();
    std::fs::copy(m.join("tests/e2e/guest.sh"), d.path().join("guest.sh")).unwrap();
    std::fs::copy(m.join("tests/e2e/docker.sh"), d.path().join("docker.sh")).unwrap();
    std::fs::copy(m.join("tests/e2e/ade-data-step.sh"), d.path().join("ade-data-step.sh")).unwrap();
    copy_dir(&m.join("tests/scenarios"), &d.path().join("scenarios"));
    if std::env::var("ADE_E2E_BINARY").as_deref() == Ok("1") {
        std::fs::copy(env!("CARGO_BIN_EXE_ade-prep"), d.path().join("ade-prep")).unwrap();
        copy_dir(&m.join("packaging/usr/lib/systemd/system"), &d.path().join("units"));
        let generator = "packaging/usr/lib/systemd/system-generators/ade-prep-generator";
        std::fs::copy(m.join(generator), d.path().join("ade-prep-generator")).unwrap();
        // The hold across the reboot needs the generator, as the package installs it.
        copy_dir(&m.join("packaging/usr/lib/systemd/system-generators"), &d.path().join("generators"));
    } else {
        std::fs::copy(package()?, d.path().join("ade-prep.deb")).unwrap();
    }
    Some(d)
}

/// Runs one scenario of tests/e2e/guest.sh in a fresh SELinux guest with the guest's memory (MiB) set, else
/// vm-run.sh's default (1024), and checks that it passed. Returns the guest's output (None when skipped).
fn scenario_mem(name: &str, timeout_secs: u64, mem_mib: Option<u32>) -> Option<String> {
    let vm = Vm { mem_mib, data_disk_mb: None };
    guest(name, "debian12-selinux", &format!("bash /work/guest.sh {name}"), "E2E PASS", timeout_secs, vm)
}

/// A scenario with a data disk (issue 17): vm-run.sh's VMRUN_DATA_DISK_MB, 160 MiB, above ADE's 150 MB minimum
/// (`Common.py:113`); guest.sh makes the ext4 volume on it and runs the scenario's data-volume pass.
fn scenario_with_data_disk(name: &str, timeout_secs: u64) -> Option<String> {
    let vm = Vm { mem_mib: None, data_disk_mb: Some(160) };
    guest(name, "debian12-selinux", &format!("bash /work/guest.sh {name}"), "E2E PASS", timeout_secs, vm)
}

/// What the guest gets beyond vm-run.sh's defaults.
#[derive(Default)]
struct Vm {
    /// Memory in MiB (VMRUN_MEM), else 1024.
    mem_mib: Option<u32>,
    /// A second, empty disk of this many MiB (VMRUN_DATA_DISK_MB), else none.
    data_disk_mb: Option<u32>,
}

/// Runs `command` in a fresh guest booted from images/`image`.img (-s: SELinux) with `vm`'s memory and data disk,
/// checks that it printed `pass` (then the name) and exited 0, and returns its output (None when
/// skipped).
fn guest(name: &str, image: &str, command: &str, pass: &str, timeout_secs: u64, vm: Vm) -> Option<String> {
    if let Some(why) = cannot_run(image) {
        crate::common::skip(&why);
        return None;
    }
    let _one = crate::common::one_guest();
    let dir = stage()?;
    let t = Instant::now();
    let mut cmd = Command::new(manifest().join("tests/harness/vm-run.sh"));
    if let Some(m) = vm.mem_mib {
        cmd.env("VMRUN_MEM", m.to_string());
    }
    if let Some(mb) = vm.data_disk_mb {
        cmd.env("VMRUN_DATA_DISK_MB", mb.to_string());
    }
    let out = cmd
        .args(["-s", "-t", &timeout_secs.to_string()])
        .env("VMRUN_IMAGE", image)
        .arg(dir.path())
        .arg(command)
        .output()
        .expect("running tests/harness/vm-run.sh");
    let took = t.elapsed().as_secs_f64();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The timeline and the summary show on a normal `cargo test` run; everything on a failure.
    let mut shown = format!("e2e_vm {name}: timeline\n");
    let timeline = |l: &&str| {
        ["TL ", "E2E ", "OSSTEP ", "FACT ", "  fuser| ", "  DATASTEP ", "  status| ", "  check| ", "CHECK FAIL"]
            .iter()
            .any(|p| l.starts_with(p))
    };
    for l in stdout.lines().filter(timeline) {
        shown.push_str(&format!("  {l}\n"));
    }
    for l in stderr.lines().filter(|l| l.starts_with("vm-run: rc=")) {
        shown.push_str(&format!("  {l}\n"));
    }
    shown.push_str(&format!("  e2e_vm {name}: {took:.0}s wall\n"));
    eprint!("{shown}");
    let passed = out.status.code() == Some(0) && stdout.contains(&format!("{pass} {name}"));
    assert!(passed, "e2e_vm {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(!stdout.contains("CHECK FAIL"), "{stdout}");
    Some(stdout.into_owned())
}

// Timeouts at about three times the run measured in CI on this 2-core machine (the three scenarios took 778-1053 s
// together, each about 250-350 s with its boots): enough for a loaded machine, and a hang costs 15 minutes, not 40.

/// Through a power cut and a reboot in the window (three boots: the power cut while ADE encrypts the OS volume, the
/// window resumed; ADE's restart, the window resumed again; ADE's success, everything restored), with a data volume
/// (issue 17) that ADE's data step skips: after ADE's success, status, the daemon's log and check's
/// encryption-status name it not encrypted. It was two scenarios, success and reset (`e2e_vm_hard_reset_in_the_window`),
/// each of two boots with the same first boot: the power cut is now this run's first reboot, with every check of both.
#[test]
fn e2e_vm_ade_success_through_a_power_cut_and_the_reboot() {
    if let Some(out) = scenario_with_data_disk("success", 1300) {
        assert!(out.contains("CHECK ok   status: error naming /data"), "no unencrypted-volume verdict in:\n{out}");
        for after in ["power cut", "reboot"] {
            let check = format!("CHECK ok   journal: window still open after the {after}");
            assert!(out.contains(&check), "no \"{check}\" in:\n{out}");
        }
        assert!(
            out.contains("CHECK ok   came up permissive, as configured"),
            "boot 2 (permissive) not checked:\n{out}"
        );
        assert!(out.contains("CHECK ok   came up enforcing, as configured"), "boot 3 (enforcing) not checked:\n{out}");
    }
}

/// With a data volume (issue 17) freed by prepare and encrypted by a stand-in of ADE's classic data step
/// (tests/e2e/ade-data-step.sh), which fails while the workload holds it.
///
/// Before ADE arrives, the same boot carries what tests/vm/packaging.rs's SELinux tests asserted in a boot of their
/// own (two tests sharing one boot of the SELinux image, about two minutes under TCG): the .deb installed with
/// SELinux enforcing, labelled and working, and a prepare/restore round trip from the command line with a real unit
/// (redis-server) and SELinux enforcing. Every one of their assertions is here, on guest.sh's FACT lines.
#[test]
fn e2e_vm_ade_error() {
    if let Some(out) = scenario_with_data_disk("error", 1200) {
        assert!(out.contains("CHECK ok   ADE's data step succeeded in the window"), "no data step in:\n{out}");
        if std::env::var("ADE_E2E_BINARY").as_deref() != Ok("1") {
            deb_with_selinux_enforcing(&facts(&out));
        }
    }
}

/// The `FACT key=value` lines of a guest's output.
fn facts(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("FACT "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fact<'a>(facts: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    facts.get(key).unwrap_or_else(|| panic!("the guest did not report {key}: {facts:?}"))
}

/// The assertions of tests/vm/packaging.rs's two SELinux tests (moved here with their boot), unchanged.
fn deb_with_selinux_enforcing(f: &BTreeMap<String, String>) {
    // deb_installs_with_selinux_enforcing_labelled_and_working
    assert_eq!(fact(f, "enforce_at_install"), "1");
    assert_eq!(fact(f, "install_rc"), "0");
    assert_eq!(fact(f, "label_service"), "systemd_unit_t");
    assert_eq!(fact(f, "label_binary"), "bin_t");
    assert_eq!(fact(f, "label_config"), "etc_t");
    assert_eq!(fact(f, "path_enabled"), "enabled");
    assert_eq!(fact(f, "path_active"), "active");
    assert_eq!(fact(f, "scan_rc"), "0");
    // prepare_and_restore_round_trip_with_a_real_unit_and_selinux_enforcing
    assert_eq!(fact(f, "redis_before"), "active");
    assert_eq!(fact(f, "enforce_before"), "1");
    assert_eq!(fact(f, "prepare_rc"), "0");
    assert_eq!(fact(f, "redis_during"), "inactive");
    assert_eq!(fact(f, "enforce_during"), "0");
    assert_eq!(fact(f, "restore_rc"), "0");
    assert_eq!(fact(f, "redis_after"), "active");
    assert_eq!(fact(f, "enforce_after"), "1");
}

/// Docker through the reboot (issue 14; docs/docker.md): Debian's docker.io in images/debian12-docker.img, the
/// containers of tests/e2e/docker.sh and two `ctr` tasks of containerd's own (namespace e2e, one paused) beside
/// them; prepare with live-restore on, the reboot in the window (boot 2: the engine held down through the boot), then
/// restore, in one run of two boots. Docker's cgroupfs driver (its default on the cgroup v1 hosts ADE supports).
/// Only this phase needs the VM (a boot): the other phases of docker.sh (containerd alone; a stand-in kubelet beside
/// containerd; live-restore off, then on, each through prepare, the window and restore) run with the same engine
/// packages in the `docker` nspawn guest (tests/nspawn/docker.rs, the nspawn tier).
#[test]
fn e2e_vm_docker_cgroupfs() {
    let phases = "reboot";
    guest(
        "docker",
        "debian12-docker",
        &format!("bash /work/docker.sh cgroupfs {phases}"),
        "E2E PASS",
        1500,
        Vm::default(),
    );
}

/// The same with Docker's systemd cgroup driver (the default of Debian 12's docker.io on cgroup v2): every container
/// runs in a docker-<id>.scope that prepare plans to stop after `docker stop` has ended it.
#[test]
#[ignore = "not in the test command (another 9-12 minutes of VM time); bug 1 of docs/docker.md, which made it fail, is \
            fixed and this scenario passed against the fix (517 s): \
            cargo test --test vm -- --ignored e2e_vm_docker_systemd_cgroup_driver"]
fn e2e_vm_docker_systemd_cgroup_driver() {
    let phases = "no-live-restore live-restore reboot";
    guest(
        "docker",
        "debian12-docker",
        &format!("bash /work/docker.sh systemd {phases}"),
        "E2E PASS",
        2400,
        Vm::default(),
    );
}

/// containerd alone (containerd.service and a `ctr` task, the engine stopped): the task must be stopped and come back.
/// The same phase runs in the `docker` nspawn guest (tests/nspawn/docker.rs); this runs it in a boot of the qemu
/// guest, with the overlayfs snapshotter and the kernel of the image.
#[test]
#[ignore = "covered by the nspawn docker suite (tests/nspawn/docker.rs, its containerd phase); in the VM it costs a \
            boot: cargo test --test vm -- --ignored e2e_vm_containerd_alone"]
fn e2e_vm_containerd_alone() {
    guest("docker", "debian12-docker", "bash /work/docker.sh cgroupfs containerd", "E2E PASS", 1800, Vm::default());
}

/// ADE's OS step itself (tests/ade/FINDINGS.md 21-23): tmpfs root, pivot_root, `systemctl rescue`, fuser, kill -9,
/// `telinit u`; `umount /oldroot` must succeed at its first try. 3 GiB: ADE's copies fill ~750 MiB of the tmpfs
/// (half the RAM by default), /usr/lib (kernel modules) most of it.
#[test]
fn e2e_vm_ade_os_step_unmounts_oldroot_first_try() {
    if let Some(out) = scenario_mem("osstep", 1200, Some(3072)) {
        assert!(out.contains("OSSTEP umount /oldroot: first try ok"), "no first-try unmount in:\n{out}");
    }
}

/// The same with RHEL 7's unmount state: no rescue; every running service but the agent and sshd is restarted into
/// the RAM root, ade-prep.service included (measured: 362 s, boot 1 293 s, boot 2 69 s). Opt-in (`-- --ignored`):
/// another 6-10 minutes would take the test command near its 45.
#[test]
#[ignore = "10 more minutes of VM: run with `cargo test --test vm -- --ignored os_step_rhel`"]
fn e2e_vm_ade_os_step_rhel_unmounts_oldroot_first_try() {
    if let Some(out) = scenario_mem("osstep-rhel", 1200, Some(3072)) {
        assert!(out.contains("OSSTEP umount /oldroot: first try ok"), "no first-try unmount in:\n{out}");
    }
}
