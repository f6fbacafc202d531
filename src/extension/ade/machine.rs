//! What ADE leaves on the machine besides its handler folder: the request queue file, the OS phase markers, its
//! resident `handle.py -daemon`, and where `/` is (a tmpfs in ADE's RAM root, `/oldroot` mounted, or the encrypted
//! volume). The one reader of these facts for `check` and `run`; it must not change anything.

use std::path::Path;

use serde::Serialize;

use crate::extension::ADE_HANDLER;
use crate::mountinfo::Mount;
use crate::paths::Paths;
use crate::scan::{list_pids, parse_cmdline};

/// ADE's request queue ("encryption marker"), in [`crate::paths::ADE_CONFIG_DIR`] (FINDINGS 11,
/// `EncryptionEnvironment.py:37`).
pub const QUEUE_FILE: &str = "azure_crypt_request_queue.ini";
/// ADE's OS phase markers folder, in [`crate::paths::ADE_CONFIG_DIR`] (FINDINGS 25, `EncryptionEnvironment.py:45`).
pub const MARKERS_DIR: &str = "os_encryption_markers";
/// Where ADE's unmount state keeps the old root after `pivot_root` (FINDINGS 21-23, `handle.py:2156`).
pub const OLDROOT: &str = "/oldroot";

/// Whether ADE's request queue file exists (FINDINGS 11): while it does, ADE has work queued.
pub fn queue_present(paths: &Paths) -> bool {
    paths.ade_config_dir().join(QUEUE_FILE).exists()
}

/// The names in ADE's markers folder, sorted (FINDINGS 25); empty when there is none.
pub fn markers(paths: &Paths) -> Vec<String> {
    let dir = paths.ade_config_dir().join(MARKERS_DIR);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// ADE's own test for its daemon (FINDINGS 12, `handle.py:690-701`): a command line holding
/// `<ADE handler>/main/handle.py` and `-daemon` (started as `extension_shim.sh -c <H>/main/handle.py -daemon`,
/// or through `sh -c` with all of it in one argument).
pub fn is_ade_daemon(cmdline: &[String]) -> bool {
    let words: Vec<&str> = cmdline.iter().flat_map(|a| a.split_whitespace()).collect();
    words.contains(&"-daemon")
        && words.iter().any(|w| w.ends_with("/main/handle.py") && w.contains(&format!("/{ADE_HANDLER}-")))
}

/// The pid of a live ADE `handle.py -daemon`, from `/proc` under the root; `None` when there is none.
pub fn ade_daemon(paths: &Paths) -> Option<i32> {
    let proc = paths.proc();
    let mut pids = list_pids(&proc).ok()?;
    pids.sort();
    pids.into_iter().find(|pid| {
        std::fs::read(proc.join(pid.to_string()).join("cmdline")).is_ok_and(|b| is_ade_daemon(&parse_cmdline(&b)))
    })
}

/// Where `/` stands, from the mount table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RootState {
    /// `/` is a tmpfs: ADE's RAM root (FINDINGS 23, ADE's own test `OSEncryptionState.py:186-188`).
    pub tmpfs: bool,
    /// `/oldroot` is a mount point: the disk, after ADE's `pivot_root` (FINDINGS 23, `handle.py:2156`).
    pub oldroot: bool,
    /// The source of the `/` mount (`/dev/sda1`, `/dev/mapper/osencrypt`, ...).
    pub source: String,
}

impl RootState {
    /// From a parsed mount table (the last mount on a path is the visible one).
    pub fn from_mounts(mounts: &[Mount]) -> Self {
        let root = mounts.iter().rev().find(|m| m.mount_point == Path::new("/"));
        RootState {
            tmpfs: root.is_some_and(|r| r.fstype == "tmpfs"),
            oldroot: mounts.iter().any(|m| m.mount_point == Path::new(OLDROOT)),
            source: root.map(|r| r.source.clone()).unwrap_or_default(),
        }
    }

    /// Reads `/proc/self/mountinfo` under the root.
    pub fn read(paths: &Paths) -> Result<Self, String> {
        let file = paths.proc().join("self/mountinfo");
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(Self::from_mounts(&crate::mountinfo::parse(&text).0))
    }

    /// ADE is in its RAM root: ade-prep must change nothing (FINDINGS 23).
    pub fn frozen(&self) -> bool {
        self.tmpfs || self.oldroot
    }

    /// `/` is mounted from a device-mapper volume, as after ADE's OS encryption (FINDINGS 15, `DiskUtil.py:674-679`).
    pub fn on_mapper(&self) -> bool {
        self.source.starts_with("/dev/mapper/") || self.source.starts_with("/dev/dm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    const H: &str = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12";

    #[test]
    fn ade_daemon_is_handle_py_with_dash_daemon_of_ade_only() {
        // FINDINGS 12: as ADE starts it (handle.py:2577-2590), and through sh -c.
        let shim = format!("{H}/main/extension_shim.sh");
        let py = format!("{H}/main/handle.py");
        assert!(is_ade_daemon(&v(&["/bin/bash", &shim, "-c", &py, "-daemon"])));
        assert!(is_ade_daemon(&v(&["python3", &py, "-daemon"])));
        assert!(is_ade_daemon(&v(&["/bin/sh", "-c", &format!("{shim} -c {py} -daemon")])));
        // Its handler operations and other extensions' daemons are not it (FINDINGS 30).
        assert!(!is_ade_daemon(&v(&["python3", &py, "--enable"])));
        let lad = "/var/lib/waagent/Microsoft.Azure.Diagnostics.LinuxDiagnostic-4.0.0/main/handle.py";
        assert!(!is_ade_daemon(&v(&["python2", lad, "-daemon"])));
        assert!(!is_ade_daemon(&v(&["python3", "/home/u/handle.py", "-daemon"])));
    }

    #[test]
    fn the_daemon_is_found_in_proc_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let put = |pid: &str, args: &[&str]| {
            std::fs::create_dir_all(d.path().join("proc").join(pid)).unwrap();
            std::fs::write(d.path().join("proc").join(pid).join("cmdline"), args.join("\0")).unwrap();
        };
        put("10", &["sshd"]);
        assert_eq!(ade_daemon(&paths), None);
        put("42", &["python3", &format!("{H}/main/handle.py"), "-daemon"]);
        assert_eq!(ade_daemon(&paths), Some(42));
    }

    #[test]
    fn root_state_tells_the_ram_root_the_disk_and_the_mapper() {
        let rs = |mi: &str| RootState::from_mounts(&crate::mountinfo::parse(mi).0);
        let disk = rs("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
        assert!(!disk.frozen() && !disk.on_mapper());
        // FINDINGS 21-23: after pivot_root, / is the tmpfs and the disk is on /oldroot.
        let ram = rs("22 1 8:1 / /oldroot rw - ext4 /dev/sda1 rw\n90 1 0:50 / / rw - tmpfs none rw\n");
        assert!(ram.tmpfs && ram.oldroot && ram.frozen());
        // After ADE unmounted /oldroot, / is still the tmpfs.
        assert!(rs("90 1 0:50 / / rw - tmpfs none rw\n").frozen());
        // FINDINGS 15: after the reboot / is on the mapper.
        let enc = rs("22 1 253:0 / / rw - ext4 /dev/mapper/osencrypt rw\n");
        assert!(enc.on_mapper() && !enc.frozen());
    }
}
