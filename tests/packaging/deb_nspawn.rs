//! The .deb installed, run and purged on Debian 12 with its real systemd 252 as PID 1, in a systemd-nspawn container
//! of the harness (tests/harness/nspawn-run.sh, guest 252: rootfs-ns, a throwaway overlay). This needs no kernel of
//! its own (no reboot, no pivot, no SELinux, no dm-crypt), so it left the qemu guest it used to boot (one TCG boot,
//! 1-2 minutes of the test command, for a container booted in seconds). The guest side is
//! tests/packaging/guest-deb.sh; the assertions are the ones the qemu test made, unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::packages::{packages, source_dir};

/// Boots the 252 container with a work folder holding the .deb and guest-deb.sh at /work, runs `cmd` in it and
/// returns the KEY=value facts it printed; None (after `skip`) when the harness cannot run here.
fn in_container(cmd: &str) -> Option<BTreeMap<String, String>> {
    if crate::common::need_root() {
        return None;
    }
    let harness = std::env::var("ADE_HARNESS_DIR").unwrap_or_else(|_| "/var/cache/ade-prep-harness".into());
    let root = Path::new(&harness).join("rootfs-ns");
    if !root.join("usr/lib/systemd/systemd").exists() {
        crate::common::skip(&format!("no {} (tests/harness/build-guest.sh --nspawn-only)", root.display()));
        return None;
    }
    let p = packages()?;
    let _one = crate::common::one_guest();
    let src = source_dir();
    std::fs::create_dir_all(src.join("target")).unwrap();
    let work = tempfile::Builder::new().prefix("nspawn-deb.").tempdir_in(src.join("target")).unwrap();
    std::fs::copy(&p.deb, work.path().join(p.deb.file_name().unwrap())).unwrap();
    std::fs::copy(src.join("tests/packaging/guest-deb.sh"), work.path().join("guest-deb.sh")).unwrap();
    let t = std::time::Instant::now();
    let o = Command::new(src.join("tests/harness/nspawn-run.sh"))
        .args(["-g", "252", "-t", "300"])
        .arg(work.path())
        .arg(cmd)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("--- container output ({:.0?}) ---\n{out}--- nspawn-run ---\n{err}", t.elapsed());
    assert_eq!(o.status.code(), Some(0), "nspawn-run.sh {cmd}: {err}");
    let facts = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(facts)
}

fn fact<'a>(facts: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    facts.get(key).unwrap_or_else(|| panic!("the guest did not report {key}: {facts:?}"))
}

#[test]
fn deb_installs_runs_and_purges_without_a_trace_on_debian_12() {
    let Some(f) = in_container("bash guest-deb.sh") else { return };
    assert_eq!(fact(&f, "install_rc"), "0");
    assert_eq!(fact(&f, "version"), format!("ade-prep {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(fact(&f, "service_known"), "yes");
    assert_eq!(fact(&f, "path_known"), "yes");
    // The enablement decision (README): the path unit enabled and running, the service static, not started.
    assert_eq!(fact(&f, "path_enabled"), "enabled");
    assert_eq!(fact(&f, "path_active"), "active");
    assert_eq!(fact(&f, "service_enabled"), "static");
    assert_eq!(fact(&f, "service_active"), "inactive");
    assert_eq!(fact(&f, "run_dir"), "755 root", "tmpfiles.d did not create /run/ade-prep");
    assert_eq!(fact(&f, "conffile").trim(), "/etc/ade-prep/config.toml");
    assert_eq!(fact(&f, "verify_rc"), "0", "systemd-analyze verify");
    assert!(!f.contains_key("missing"), "man page or completion missing: {:?}", f.get("missing"));
    assert_eq!(fact(&f, "scan_rc"), "0");
    assert_eq!(fact(&f, "scan_pid1_class"), "protected", "scan's class for PID 1");
    // The guest is no Azure VM: some checks fail (exit 1); what matters is that it runs and reports.
    assert!(["0", "1"].contains(&fact(&f, "check_rc")), "ade-prep check exited {}", fact(&f, "check_rc"));
    assert_eq!(fact(&f, "triggered_by_handler_dir"), "yes", "ade-prep.path did not start the service");
    // `run` waited for the settings and decided: ADE does not unmount / on Debian 12, and ade-prep does not model
    // ADE's data-volume support per distribution, so a data-only request there is not prepared for either
    // (`commands::run::decide`, its unit test); it said so, READY=1, and exited: no later request on this
    // distribution can need the window (the path unit does not start it again while it is active).
    assert_eq!(fact(&f, "service_after_trigger"), "active exited success");
    assert_ne!(fact(&f, "service_decision_logged"), "0", "{f:?}");
    assert!(fact(&f, "service_status").contains("ADE does not unmount / on this distribution"), "{f:?}");
    // Purge refused while the journal says a window is open; the package stays installed.
    assert_ne!(fact(&f, "purge_open_rc"), "0");
    assert!(fact(&f, "after_refusal").ends_with(" ok installed"), "{f:?}");
    assert_eq!(fact(&f, "after_refusal_binary"), "present");
    // Then purge leaves nothing behind.
    assert_eq!(fact(&f, "purge_rc"), "0");
    assert_eq!(fact(&f, "left_behind"), "nothing");
    assert_eq!(fact(&f, "units_after_purge"), "0");
    assert!(fact(&f, "status_after_purge").contains("no packages found"), "{f:?}");
}
