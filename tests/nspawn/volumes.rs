//! Data volumes (issue 17) against a real systemd in systemd-nspawn: a service holds a file open on a data volume,
//! as a database does; ADE's classic data step would meet a busy `umount` and skip the volume silently
//! (`DiskUtil.py:597-599`, `handle.py:1989-1993`). `prepare --volume-type data` frees it: a plain `umount`
//! succeeds, as ADE's would; `restore` brings the service back onto the volume.
//!
//! The data volume is a real ext4 filesystem on a loop device, made and mounted on the host by the host test (the
//! container has no loop device: nspawn gives it no /dev/loop-control), bound into the container at /data-src and
//! bound again at /data inside it. So the container sees an ext4 mount whose source is /dev/loopN, held by its own
//! processes, and `umount /data` there fails busy or succeeds as on a VM. What this does not show: ADE's own
//! selection of the volume from `lsblk` (the test names it with `--data-mount`), and the remount through a LUKS
//! mapper (the test binds /data-src again in its place); the qemu scenario (vmvol) covers those.

use std::path::{Path, PathBuf};
use std::process::Command;

use ade_prep::systemd::ServiceManager;
use serde_json::Value;

use crate::common::{inside, sd, sh, wait_for, IN_CONTAINER};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 2;

/// A loop-mounted ext4 image on the host, for one guest; unmounted and detached when dropped.
struct LoopVolume {
    dir: tempfile::TempDir,
    device: String,
}

impl LoopVolume {
    fn new() -> Result<LoopVolume, String> {
        let dir = tempfile::Builder::new().prefix("ade-datavol.").tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("data.img");
        let run = |argv: &[&str]| -> Result<String, String> {
            let o = Command::new(argv[0]).args(&argv[1..]).output().map_err(|e| format!("{argv:?}: {e}"))?;
            if !o.status.success() {
                return Err(format!("{argv:?}: {}", String::from_utf8_lossy(&o.stderr)));
            }
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let img_s = img.to_str().unwrap();
        run(&["truncate", "-s", "160M", img_s])?;
        run(&["mkfs.ext4", "-q", "-F", img_s])?;
        let device = run(&["losetup", "-f", "--show", img_s])?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let v = LoopVolume { dir, device };
        run(&["mount", "-t", "ext4", &v.device, mnt.to_str().unwrap()])?;
        Ok(v)
    }
    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount_point()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn data_volume_in_nspawn() {
    if std::env::var(IN_CONTAINER).is_ok() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        crate::common::skip_nspawn("volumes", "not root (systemd-nspawn and losetup need root)");
        return;
    }
    crate::common::nspawn_suite_each("volumes", |g| {
        // One volume per guest: the two containers run side by side.
        let vol = LoopVolume::new().map_err(|e| format!("making the loop volume: {e}"))?;
        let bind = format!("{}:/data-src", vol.mount_point().display());
        crate::common::nspawn_suite_on_with("volumes", g, IN_CONTAINER_TESTS, 300, &[bind])
    });
}

// ---- inside the container ---------------------------------------------------------------------------------

const CONFIG: &str = "/etc/ade-prep/config.d/50-datavol.toml";
const DATA_UNIT: &str = "ade-datavol.service";
const ROOT_UNIT: &str = "ade-rootonly.service";
const UNIT_DIR: &str = "/usr/local/lib/systemd/system";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn ade(args: &[&str]) -> Run {
    let o = Command::new(std::env::var("ADE_PREP_BIN").expect("ADE_PREP_BIN"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running ade-prep");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(path))
}

fn state(unit: &str) -> String {
    sd().unit(unit).unwrap().active_state.to_string()
}

/// /data mounted (bound from the host's ext4 volume), the two services running: one holding a file open for
/// writing on /data, one holding only `/`; no window open.
fn baseline() {
    if ade(&["status", "--json"]).stdout.contains("\"window_open\": true") {
        let r = ade(&["restore"]);
        panic!("a window was left open before the test; restore: {r:?}");
    }
    assert!(mounted("/data-src"), "the host's volume is not bound at /data-src");
    std::fs::create_dir_all("/data").unwrap();
    if !mounted("/data") {
        assert!(sh(&["mount", "--bind", "/data-src", "/data"]).status.success());
    }
    let unit = |holds: &str| format!("[Service]\nExecStart=/bin/sh -c 'exec sleep infinity 3>>{holds}'\n");
    // Where packaged units would be (as tests/scenarios/install.sh does): a runtime mask can shadow it.
    std::fs::create_dir_all(UNIT_DIR).unwrap();
    std::fs::write(format!("{UNIT_DIR}/{DATA_UNIT}"), unit("/data/held.log")).unwrap();
    std::fs::write(format!("{UNIT_DIR}/{ROOT_UNIT}"), unit("/var/tmp/rootonly.log")).unwrap();
    std::fs::create_dir_all(Path::new(CONFIG).parent().unwrap()).unwrap();
    std::fs::write(CONFIG, format!("[workloads.datasvc]\nunits = [\"{DATA_UNIT}\", \"{ROOT_UNIT}\"]\n")).unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    assert!(sh(&["systemctl", "start", DATA_UNIT, ROOT_UNIT]).status.success());
    for u in [DATA_UNIT, ROOT_UNIT] {
        wait_for(&format!("{u} to hold its file"), 10, || holder_pids(u).len() == 1);
    }
}

/// The pids of `unit` with an fd open on /data or /var/tmp (its held file).
fn holder_pids(unit: &str) -> Vec<u32> {
    let Some(main) = sd().unit(unit).unwrap().main_pid else { return vec![] };
    let fd3 = std::fs::read_link(format!("/proc/{main}/fd/3")).unwrap_or_default();
    if fd3.to_string_lossy().ends_with(".log") {
        vec![main]
    } else {
        vec![]
    }
}

/// Pids `ade-prep scan --mount PATH --json` lists in `unit`.
fn scan_pids(path: &str, unit: &str) -> Vec<u64> {
    let v = json(&ade(&["scan", "--mount", path, "--json"]));
    v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["unit"] == unit)
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

#[test]
#[ignore = "runs inside the nspawn container, started by data_volume_in_nspawn"]
fn in_container_a_data_volume_held_by_a_service_is_freed_for_a_plain_umount_and_the_service_comes_back() {
    if !inside() {
        return;
    }
    baseline();
    let pid = holder_pids(DATA_UNIT)[0];
    assert_eq!(scan_pids("/data", DATA_UNIT), [u64::from(pid)]);
    assert!(scan_pids("/data", ROOT_UNIT).is_empty(), "the / holder does not hold /data");

    // ADE's classic data step as it stands: a plain umount meets the service and fails (ADE skips the volume).
    let busy = sh(&["umount", "/data"]);
    assert!(!busy.status.success(), "umount succeeded under a holder");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("busy"), "{busy:?}");
    assert!(mounted("/data"));

    let dry = ade(&["prepare", "--force", "distro", "--volume-type", "data", "--data-mount", "/data", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.starts_with("plan to free /data:\n"), "{dry:?}");
    let held = format!("  /data held by: pid {pid} sleep ({DATA_UNIT}, workload datasvc)\n");
    assert!(dry.stdout.contains(&held), "{held}{dry:?}");
    assert!(!dry.stdout.contains(ROOT_UNIT), "with VolumeType Data, / is not part of the window: {dry:?}");
    assert_eq!(state(DATA_UNIT), "active", "a dry run changes nothing");

    // The boot mounts /data (its fstab line; here a bind of the host's volume).
    let fstab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
    let with_line = |src: &str| format!("{fstab}{src} /data none bind 0 0\n");
    std::fs::write("/etc/fstab", with_line("/data-src")).unwrap();
    let r = ade(&["prepare", "--force", "distro", "-v", "--volume-type", "data", "--data-mount", "/data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(state(DATA_UNIT), "inactive");
    assert!(sd().unit(DATA_UNIT).unwrap().is_masked(), "{DATA_UNIT} is held masked for the window");
    assert_eq!(state(ROOT_UNIT), "active", "the holder of / alone is left running");
    let st = json(&ade(&["status", "--json"]));
    assert_eq!(st["window_open"], true, "{st}");
    // Data volumes and the ground (/data itself among it, a block device): version 3.
    assert_eq!(st["journal"]["version"], 3, "a journal with data volumes and ground is version 3: {st}");
    let ground = st["journal"]["ground"].as_array().unwrap_or_else(|| panic!("no ground recorded: {st}"));
    assert!(ground.iter().any(|g| g["mount_point"] == "/data"), "/data is not in the ground: {st}");
    assert_eq!(st["volumes"][0]["volume"]["mount_point"], "/data", "{st}");
    let device = st["volumes"][0]["volume"]["device"].as_str().unwrap().to_string();
    assert!(device.starts_with("/dev/loop"), "the volume's device is the host's loop device: {st}");
    assert_eq!(st["volumes"][0]["volume"]["fstype"], "ext4", "{st}");

    // ADE's classic step now: the plain umount succeeds. Then the volume comes back (ADE mounts it again through
    // its mapper; here the same filesystem is bound again).
    let um = sh(&["umount", "/data"]);
    assert!(um.status.success(), "umount after prepare: {um:?}");
    assert!(!mounted("/data"));
    // Left unmounted (ADE's data step failed, azure-linux-extensions #658), and its fstab line names a source that
    // is gone: the mount unit fails; restore undoes nothing, names the mount and keeps the service held.
    std::fs::write("/etc/fstab", with_line("/data-src-gone")).unwrap();
    // (systemd creates a bind mount's missing source: data.mount mounts an empty folder, which is no ground either.)
    let r = ade(&["restore"]);
    assert_eq!(r.code, 1, "restore with /data not mounted: {r:?}");
    assert!(r.stderr.contains("mounted from overlay, not a block device"), "{r:?}");
    assert!(r.stderr.contains("restore refused, nothing was undone: /data ("), "{r:?}");
    assert!(r.stderr.contains("is not mounted: data.mount: "), "{r:?}");
    assert_eq!(state(DATA_UNIT), "inactive", "started with /data not mounted");
    assert!(sd().unit(DATA_UNIT).unwrap().is_masked(), "{DATA_UNIT} no longer held");
    assert_eq!(json(&ade(&["status", "--json"]))["window_open"], true, "the window closed");

    // The operator unmounts the empty bind and fixes fstab: restore mounts /data as the boot would (its mount
    // unit), then brings the service back on it.
    assert!(sh(&["umount", "/data"]).status.success());
    std::fs::write("/etc/fstab", with_line("/data-src")).unwrap();
    let r = ade(&["restore"]);
    std::fs::write("/etc/fstab", &fstab).unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(mounted("/data"), "restore did not mount /data");
    assert_eq!(state(DATA_UNIT), "active", "restore brings the service back");
    assert!(!sd().unit(DATA_UNIT).unwrap().is_masked());
    wait_for("the service to hold /data again", 10, || holder_pids(DATA_UNIT).len() == 1);
    let back = holder_pids(DATA_UNIT)[0];
    assert_ne!(back, pid, "a new instance");
    assert_eq!(scan_pids("/data", DATA_UNIT), [u64::from(back)], "it holds the volume again");
    assert!(std::fs::read_link(format!("/proc/{back}/fd/3")).unwrap().starts_with("/data"));

    // The window is closed: `status` verifies the volume, which no LUKS step touched here: an error naming it.
    let st = ade(&["status"]);
    assert_eq!(st.code, 1, "a data volume left unencrypted is an error: {st:?}");
    let want = format!("error: data volume /data ({device}) is not encrypted: ");
    assert!(st.stdout.contains(&want), "{want}\n{st:?}");
    println!("status after the window: {}", st.stdout.lines().find(|l| l.starts_with("error:")).unwrap_or(""));
}

#[test]
#[ignore = "runs inside the nspawn container, started by data_volume_in_nspawn"]
fn in_container_volume_type_all_frees_the_data_volume_first_and_then_root() {
    if !inside() {
        return;
    }
    baseline();
    let dry = ade(&["prepare", "--force", "distro", "--volume-type", "ALL", "--data-mount", "/data", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.starts_with("plan to free /data, /:\n"), "ADE's order, data first: {dry:?}");
    assert!(dry.stdout.contains(&format!("({DATA_UNIT}, workload datasvc)")), "{dry:?}");
    assert!(dry.stdout.contains(&format!("({ROOT_UNIT}, workload datasvc)")), "{dry:?}");

    let r = ade(&["prepare", "--force", "distro", "--volume-type", "all", "--data-mount", "/data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!((state(DATA_UNIT), state(ROOT_UNIT)), ("inactive".to_string(), "inactive".to_string()));
    assert!(scan_pids("/data", DATA_UNIT).is_empty() && scan_pids("/", ROOT_UNIT).is_empty());
    let r = ade(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!((state(DATA_UNIT), state(ROOT_UNIT)), ("active".to_string(), "active".to_string()));
}
