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
/// ADE's decryption request queue, in [`crate::paths::ADE_CONFIG_DIR`] (`EncryptionEnvironment.py:38`): written by
/// DisableEncryption before it starts the daemon (`handle.py:156-169`), removed by the daemon at its end
/// (`handle.py:2497`).
pub const DECRYPT_QUEUE_FILE: &str = "azure_decrypt_request_queue.ini";
/// ADE's OS mapper name (`CommonVariables.osmapper_name`; `DiskUtil.get_osmapper_path`).
pub const OS_MAPPER: &str = "osencrypt";
/// ADE's OS phase markers folder, in [`crate::paths::ADE_CONFIG_DIR`] (FINDINGS 25, `EncryptionEnvironment.py:45`).
pub const MARKERS_DIR: &str = "os_encryption_markers";
/// Where ADE's unmount state keeps the old root after `pivot_root` (FINDINGS 21-23, `handle.py:2156`).
pub const OLDROOT: &str = "/oldroot";

/// Whether ADE's request queue file exists (FINDINGS 11): while it does, ADE has work queued.
pub fn queue_present(paths: &Paths) -> bool {
    paths.ade_config_dir().join(QUEUE_FILE).exists()
}

/// ADE's own record of a request's volume type, written by Python's configparser (keys lowercased):
/// `azure_crypt_config.ini` (`EncryptionEnvironment.py:33`, section `azure_crypt_config`), which the daemon reads
/// (`handle.py:2157`), else the queue's `VolumeType` (`EncryptionMarkConfig.py:39-40`, `:61-73`). None: neither.
pub fn recorded_volume_type(paths: &Paths) -> Option<String> {
    [CONFIG_FILE, QUEUE_FILE].iter().find_map(|f| {
        let text = std::fs::read_to_string(paths.ade_config_dir().join(f)).ok()?;
        ini_value(&text, "volumetype")
    })
}

/// The item ADE's daemon is copying, in [`crate::paths::ADE_CONFIG_DIR`] (`EncryptionEnvironment.py:39`): committed
/// at every 50 MiB slice of an in-place copy (`TransactionalCopyTask.py:187-188`, `:229-230`).
pub const ONGOING_ITEM_FILE: &str = "azure_crypt_ongoing_item.ini";

/// When ADE's daemon last wrote one of its work files (the request queues, the ongoing item), nanoseconds since the
/// epoch: its progress besides the status file.
pub fn work_files_mtime(paths: &Paths) -> Option<u128> {
    [QUEUE_FILE, DECRYPT_QUEUE_FILE, ONGOING_ITEM_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(paths.ade_config_dir().join(f)).and_then(|m| m.modified()).ok())
        .filter_map(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .max()
}

/// ADE's encryption config, in [`crate::paths::ADE_CONFIG_DIR`] (`EncryptionEnvironment.py:33`).
pub const CONFIG_FILE: &str = "azure_crypt_config.ini";

/// The value of `key` (any case) in a configparser file (`key = value` or `key: value`).
fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(['=', ':'])?;
        (k.trim().eq_ignore_ascii_case(key) && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// Whether ADE's decryption request queue file exists.
pub fn decrypt_queue_present(paths: &Paths) -> bool {
    paths.ade_config_dir().join(DECRYPT_QUEUE_FILE).exists()
}

/// Whether the OS volume is encrypted by ADE's own test (`DiskUtil.py:654-659`, `:674-677`): for an LVM OS disk,
/// `pvdisplay | grep /dev/mapper/osencrypt` (a PV of the root's volume group is ADE's OS mapper); otherwise `/`
/// mounted from `/dev/mapper/*` or `/dev/dm*`. Read from sysfs rather than by running pvdisplay: the root's device
/// `/sys/dev/block/<maj:min>`, an LVM volume when its `dm/uuid` starts with `LVM-` (device-mapper's LVM prefix),
/// then its `slaves` followed down: encrypted when one of them is the device-mapper device named `osencrypt`.
pub fn os_encrypted(paths: &Paths, mounts: &[Mount]) -> bool {
    let Some(root) = mounts.iter().rev().find(|m| m.mount_point == Path::new("/")) else { return false };
    let on_mapper = root.source.starts_with("/dev/mapper/") || root.source.starts_with("/dev/dm");
    if !on_mapper {
        return false;
    }
    let dev = paths.sys().join(format!("dev/block/{}:{}", root.dev.0, root.dev.1));
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).map(|s| s.trim().to_string()).ok();
    let lvm = read(&dev, "dm/uuid").is_some_and(|u| u.starts_with("LVM-"))
        || (read(&dev, "dm/uuid").is_none() && root.source.starts_with("/dev/mapper/rootvg-"));
    if !lvm {
        return true;
    }
    let mut stack = vec![dev];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        for e in std::fs::read_dir(d.join("slaves")).into_iter().flatten().flatten() {
            let slave = std::fs::canonicalize(e.path()).unwrap_or_else(|_| e.path());
            if read(&slave, "dm/name").as_deref() == Some(OS_MAPPER) {
                return true;
            }
            stack.push(slave);
        }
    }
    false
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
/// or through `sh -c` with all of it in one argument). The shape only: [`ade_daemon`] also checks that ADE started it.
pub fn is_ade_daemon(cmdline: &[String]) -> bool {
    daemon_script(cmdline).is_some()
}

/// The `<ADE handler>/main/handle.py` word of a command line of ADE's daemon's shape.
fn daemon_script(cmdline: &[String]) -> Option<&str> {
    let words: Vec<&str> = cmdline.iter().flat_map(|a| a.split_whitespace()).collect();
    if !words.contains(&"-daemon") {
        return None;
    }
    words.into_iter().find(|w| w.ends_with("/main/handle.py") && w.contains(&format!("/{ADE_HANDLER}-")))
}

/// The agent's slice prefix for extension handlers' scopes (`WALA/azurelinuxagent/ga/cgroupapi.py:42`, `:76-83`:
/// `azure-vmextensions-<Publisher.Type>.slice`, each command in a scope of it, `:315`).
pub const EXTENSION_SLICE: &str = "azure-vmextensions-";
/// The agent's own units: with cgroups off the agent starts handler commands directly (FINDINGS 28,
/// `WALA/azurelinuxagent/ga/cgroupconfigurator.py:839`), so ADE's daemon stays in the agent's cgroup.
pub const AGENT_UNITS: &[&str] = &["walinuxagent.service", "waagent.service"];

/// Whether a cgroup path's component `part`, under `parent`, is the scope an agent older than the per-extension
/// slice gives a handler command: `systemd-run --unit=<Name-Version with '-' as '_'>_<uuid> --scope`, in
/// `system.slice` (`WALA v2.2.53 azurelinuxagent/common/cgroupapi.py:89-91`, `:663-682`) or, from 2.3,
/// `--slice=azure-vmextensions.slice` (`v2.4.0.2 cgroupapi.py:237-242`); still the distro's agent where
/// `AutoUpdate.Enabled=n` pins it. Only root creates units in the system manager's slices.
fn legacy_agent_scope(parent: &str, part: &str) -> bool {
    matches!(parent, "system.slice" | "azure-vmextensions.slice")
        && part.starts_with(&format!("{ADE_HANDLER}_"))
        && part.ends_with(".scope")
}

/// Why process `pid`, whose command line has ADE's daemon's shape, was not started by ADE, or Ok when it was:
/// root's process (real and effective uid 0); its `handle.py` an absolute path straight in a handler folder of
/// ADE in the agent's folder, no symlink, the script, `main/` and the handler folder owned by root and writable by
/// no one else (as the agent unpacks them); and in the cgroup the agent gives ADE's commands, its extension slice
/// or, with cgroups off, the agent's own service. A process any user can start with that command line is none of
/// these.
pub fn started_as_ade(paths: &Paths, pid: i32, cmdline: &[String]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let dir = paths.proc().join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).map_err(|e| format!("pid {pid}: status: {e}"))?;
    let uids: Vec<&str> =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    if uids.len() < 2 || uids[0] != "0" || uids[1] != "0" {
        return Err(format!("pid {pid} is not root's (Uid: {})", uids.join(" ")));
    }
    let script = Path::new(daemon_script(cmdline).ok_or_else(|| format!("pid {pid}: not a daemon command line"))?);
    let main = script.parent().filter(|m| m.file_name().is_some_and(|n| n == "main"));
    let handler = main.and_then(Path::parent);
    let in_agent = handler.and_then(Path::parent).is_some_and(|w| paths.resolve(w) == paths.waagent_dir());
    let plain = script.is_absolute()
        && script.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir));
    let (Some(main), Some(handler), true, true) = (main, handler, in_agent, plain) else {
        return Err(format!(
            "pid {pid}: {} is not in an ADE handler folder of {}",
            script.display(),
            crate::paths::WAAGENT_DIR
        ));
    };
    // An upgrade or a removal deletes the handler folder while its daemon works on (WALA exthandlers.py:943,
    // :1759-1782): a folder gone entirely is left to the cgroup test below (second reading, finding 3).
    let gone =
        matches!(std::fs::symlink_metadata(paths.resolve(handler)), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    for p in [script, main, handler].into_iter().filter(|_| !gone) {
        let md = std::fs::symlink_metadata(paths.resolve(p)).map_err(|e| format!("pid {pid}: {}: {e}", p.display()))?;
        if md.file_type().is_symlink() || md.uid() != 0 || md.mode() & 0o022 != 0 {
            return Err(format!(
                "pid {pid}: {} is not root's alone (a symlink, another owner or writable by others)",
                p.display()
            ));
        }
    }
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).map_err(|e| format!("pid {pid}: cgroup: {e}"))?;
    let ours = cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2)).any(|path| {
        let parts: Vec<&str> = path.split('/').collect();
        parts.iter().enumerate().any(|(i, part)| {
            (part.starts_with(EXTENSION_SLICE) && part.contains(ADE_HANDLER) && part.ends_with(".slice"))
                || AGENT_UNITS.contains(part)
                || (i > 0 && legacy_agent_scope(parts[i - 1], part))
        })
    });
    if !ours {
        return Err(format!("pid {pid} is in neither ADE's extension slice nor the agent's service"));
    }
    Ok(())
}

/// The pid of ADE's live daemon, from `/proc` under the root: a process of its command line's shape
/// ([`is_ade_daemon`]) that ADE started ([`started_as_ade`]); `None` when there is none.
pub fn ade_daemon(paths: &Paths) -> Option<i32> {
    let proc = paths.proc();
    let mut pids = list_pids(&proc).ok()?;
    pids.sort();
    pids.into_iter().find(|pid| {
        let Ok(b) = std::fs::read(proc.join(pid.to_string()).join("cmdline")) else { return false };
        let args = parse_cmdline(&b);
        is_ade_daemon(&args)
            && started_as_ade(paths, *pid, &args).map_err(|why| log::debug!("not ADE's daemon: {why}")).is_ok()
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
        let mounts = crate::mountinfo::read(paths).map_err(|e| e.to_string())?;
        Ok(Self::from_mounts(&mounts))
    }

    /// ADE is in its RAM root: ade-prep must change nothing (FINDINGS 23).
    pub fn frozen(&self) -> bool {
        self.tmpfs || self.oldroot
    }

    /// `/` is mounted from a device-mapper volume: ADE's test for a non-LVM OS disk (FINDINGS 15,
    /// `DiskUtil.py:674-677`); an LVM root is on the mapper without being encrypted: [`os_encrypted`] tells (the rule
    /// `check` and `run` use; this one only in tests).
    #[cfg(test)]
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

    /// A process under a fake `/proc`: its command line, uid and cgroup.
    fn put_proc(root: &Path, pid: &str, args: &[&str], uid: u32, cgroup: &str) {
        let d = root.join("proc").join(pid);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cmdline"), args.join("\0")).unwrap();
        std::fs::write(d.join("status"), format!("Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")).unwrap();
        std::fs::write(d.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
    }

    const SCOPE: &str = "/azure.slice/azure-vmextensions.slice/\
        azure-vmextensions-Microsoft.Azure.Security.AzureDiskEncryptionForLinux.slice/enable_1f2e.scope";

    #[test]
    fn the_daemon_is_found_in_proc_under_the_root_only_as_ade_starts_it() {
        use std::os::unix::fs::PermissionsExt;
        if crate::testing::skip_unless(crate::testing::root(), "needs root (root-owned handler files)") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let py = format!("{H}/main/handle.py");
        let script = paths.resolve(&py);
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "").unwrap();
        for p in [script.clone(), script.parent().unwrap().to_path_buf(), paths.resolve(H)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let shim = format!("{H}/main/extension_shim.sh");
        put_proc(d.path(), "10", &["sshd"], 0, "/system.slice/ssh.service");
        assert_eq!(ade_daemon(&paths), None);
        // Forgeries: a user's process, a user's session, a copy elsewhere, a path through `..`.
        put_proc(d.path(), "20", &["/bin/bash", &shim, "-c", &py, "-daemon"], 1000, SCOPE);
        put_proc(d.path(), "21", &["python3", &py, "-daemon"], 0, "/user.slice/user-1000.slice/session-3.scope");
        let elsewhere = format!("/tmp{H}/main/handle.py");
        put_proc(d.path(), "22", &["python3", &elsewhere, "-daemon"], 0, SCOPE);
        let dotdot = format!("{H}/../{}-9/main/handle.py", crate::extension::ADE_HANDLER);
        put_proc(d.path(), "23", &["python3", &dotdot, "-daemon"], 0, SCOPE);
        assert_eq!(ade_daemon(&paths), None, "none of these is ADE's daemon");
        // A handler script writable by others is not the agent's.
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o666)).unwrap();
        put_proc(d.path(), "42", &["/bin/bash", &shim, "-c", &py, "-daemon"], 0, SCOPE);
        assert_eq!(ade_daemon(&paths), None, "a world-writable handle.py");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        // As ADE starts it: root, the real handler's script, the enable scope of ADE's slice.
        assert_eq!(ade_daemon(&paths), Some(42));
        // With the agent's cgroups off: in the agent's own service.
        std::fs::remove_dir_all(d.path().join("proc/42")).unwrap();
        put_proc(d.path(), "43", &["python3", &py, "-daemon"], 0, "/system.slice/walinuxagent.service");
        assert_eq!(ade_daemon(&paths), Some(43));
        // With an agent older than the extension slice (WALA 2.2.53): its systemd-run scope in system.slice; the
        // same scope name in a user's slice is not the agent's.
        std::fs::remove_dir_all(d.path().join("proc/43")).unwrap();
        let legacy =
            "Microsoft.Azure.Security.AzureDiskEncryptionForLinux_1.4.0.12_5d2c0d7e-9f1a-4b7e-a2a4-0c1d2e3f4a5b.scope";
        put_proc(d.path(), "45", &["python3", &py, "-daemon"], 0, &format!("/user.slice/user-0.slice/{legacy}"));
        assert_eq!(ade_daemon(&paths), None, "an agent scope's name outside system.slice");
        std::fs::remove_dir_all(d.path().join("proc/45")).unwrap();
        put_proc(d.path(), "43", &["python3", &py, "-daemon"], 0, &format!("/system.slice/{legacy}"));
        assert_eq!(ade_daemon(&paths), Some(43));
        // WALA 2.3-2.4: the same scope in azure-vmextensions.slice.
        std::fs::remove_dir_all(d.path().join("proc/43")).unwrap();
        put_proc(
            d.path(),
            "43",
            &["python3", &py, "-daemon"],
            0,
            &format!("/azure.slice/azure-vmextensions.slice/{legacy}"),
        );
        assert_eq!(ade_daemon(&paths), Some(43));
        // Its handler folder deleted by an upgrade or a removal while it works on: still ADE's daemon (root's, in
        // the agent's cgroup); a user's process naming a deleted folder is still not.
        std::fs::remove_dir_all(paths.resolve(H)).unwrap();
        assert_eq!(ade_daemon(&paths), Some(43));
        std::fs::remove_dir_all(d.path().join("proc/43")).unwrap();
        put_proc(d.path(), "44", &["python3", &py, "-daemon"], 1000, "/system.slice/walinuxagent.service");
        assert_eq!(ade_daemon(&paths), None);
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

#[cfg(test)]
mod lvm_tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs with `dm-0` (the root LV, uuid `LVM-...`) on `slave` (`dm-1` named `name`, or the partition sda2).
    fn sysfs(root: &Path, lv_uuid: &str, pv: Option<&str>) {
        let b = root.join("sys/devices/virtual/block");
        std::fs::create_dir_all(b.join("dm-0/dm")).unwrap();
        std::fs::create_dir_all(b.join("dm-0/slaves")).unwrap();
        std::fs::write(b.join("dm-0/dm/uuid"), format!("{lv_uuid}\n")).unwrap();
        std::fs::write(b.join("dm-0/dm/name"), "rootvg-rootlv\n").unwrap();
        std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        symlink("../../devices/virtual/block/dm-0", root.join("sys/dev/block/253:0")).unwrap();
        match pv {
            Some(name) => {
                std::fs::create_dir_all(b.join("dm-1/dm")).unwrap();
                std::fs::write(b.join("dm-1/dm/name"), format!("{name}\n")).unwrap();
                symlink("../../dm-1", b.join("dm-0/slaves/dm-1")).unwrap();
            }
            None => {
                let sda2 = root.join("sys/devices/pci0/host0/block/sda/sda2");
                std::fs::create_dir_all(&sda2).unwrap();
                symlink(&sda2, b.join("dm-0/slaves/sda2")).unwrap();
            }
        }
    }

    fn mounts(source: &str) -> Vec<Mount> {
        crate::mountinfo::parse(&format!("22 1 253:0 / / rw - xfs {source} rw\n")).0
    }

    #[test]
    fn an_lvm_root_is_encrypted_only_on_ades_os_mapper() {
        // DiskUtil.py:654-659: an LVM OS disk is encrypted when `pvdisplay | grep /dev/mapper/osencrypt`.
        let d = tempfile::tempdir().unwrap();
        sysfs(d.path(), "LVM-abcdef", None);
        let p = Paths::under(d.path());
        assert!(!os_encrypted(&p, &mounts("/dev/mapper/rootvg-rootlv")), "rootvg on a plain partition");
        let d = tempfile::tempdir().unwrap();
        sysfs(d.path(), "LVM-abcdef", Some("osencrypt"));
        assert!(os_encrypted(&Paths::under(d.path()), &mounts("/dev/mapper/rootvg-rootlv")), "PV is osencrypt");
        let d = tempfile::tempdir().unwrap();
        sysfs(d.path(), "LVM-abcdef", Some("other-crypt"));
        assert!(!os_encrypted(&Paths::under(d.path()), &mounts("/dev/mapper/rootvg-rootlv")), "PV another mapper");
        // DiskUtil.py:674-677: a non-LVM root on the mapper is encrypted; on a partition it is not.
        let d = tempfile::tempdir().unwrap();
        sysfs(d.path(), "CRYPT-LUKS1-abc-osencrypt", None);
        assert!(os_encrypted(&Paths::under(d.path()), &mounts("/dev/mapper/osencrypt")));
        assert!(!os_encrypted(&Paths::under(d.path()), &mounts("/dev/sda1")));
        // No sysfs: a rootvg name is taken as LVM (not encrypted without the osencrypt PV).
        let none = tempfile::tempdir().unwrap();
        assert!(!os_encrypted(&Paths::under(none.path()), &mounts("/dev/mapper/rootvg-rootlv")));
        assert!(os_encrypted(&Paths::under(none.path()), &mounts("/dev/mapper/osencrypt")));
    }

    #[test]
    fn the_recorded_volume_type_is_ades_config_then_its_queue() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let dir = paths.ade_config_dir();
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(recorded_volume_type(&paths), None);
        // configparser's own layout: a section, keys lowercased (EncryptionMarkConfig.py:61-73).
        std::fs::write(
            dir.join(QUEUE_FILE),
            "[encryption_request_queue]\ncommand = EnableEncryption\nvolumetype = Data\n",
        )
        .unwrap();
        assert_eq!(recorded_volume_type(&paths).as_deref(), Some("Data"));
        std::fs::write(dir.join(CONFIG_FILE), "[azure_crypt_config]\nVolumeType: All\n").unwrap();
        assert_eq!(recorded_volume_type(&paths).as_deref(), Some("All"));
    }
}
