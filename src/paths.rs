//! Every path ade-prep reads or writes, in one place, so that docs and code cannot drift and tests can point the
//! whole agent at a fixture tree. A leaf: it must not read or write any of them.

use std::path::{Path, PathBuf};

/// The main configuration file.
pub const CONFIG_FILE: &str = "/etc/ade-prep/config.toml";
/// Drop-in configuration files, read in lexical order after [`CONFIG_FILE`].
pub const CONFIG_DIR: &str = "/etc/ade-prep/config.d";
/// The journal of the encryption window.
pub const STATE_FILE: &str = "/var/lib/ade-prep/state.json";
/// The folder of the journal.
pub const STATE_DIR: &str = "/var/lib/ade-prep";
/// The fleet slot this VM holds (src/fleet/record.rs), kept through ADE's reboot until `restore` gives it back.
pub const FLEET_SLOT_FILE: &str = "/var/lib/ade-prep/fleet-slot.json";
/// The units to hold down through a reboot while a window is open, for ade-prep-generator (src/window/hold.rs).
pub const HOLD_FILE: &str = "/etc/ade-prep/hold";
/// Runtime folder (tmpfiles.d creates it).
pub const RUN_DIR: &str = "/run/ade-prep";
/// The serialisation lock taken by `prepare` and `lock`.
pub const LOCK_FILE: &str = "/run/ade-prep/lock";
/// Where the Azure guest agent keeps extension handlers.
pub const WAAGENT_DIR: &str = "/var/lib/waagent";
/// Where the ADE extension keeps its own state (request queue, encryption markers).
pub const ADE_CONFIG_DIR: &str = "/var/lib/azure_disk_encryption_config";
/// ADE's extension logs (read by `report`).
pub const ADE_LOG_DIR: &str = "/var/log/azure/Microsoft.Azure.Security.AzureDiskEncryptionForLinux";
/// procfs (under a fixture root in tests, through [`Paths`]).
pub const PROC: &str = "/proc";
/// sysfs.
pub const SYS: &str = "/sys";
/// Distribution identification.
pub const OS_RELEASE: &str = "/etc/os-release";
/// The SELinux configuration file (read, never written).
pub const SELINUX_CONFIG: &str = "/etc/selinux/config";
/// Where selinuxfs is mounted when mountinfo does not say otherwise.
pub const SELINUXFS: &str = "/sys/fs/selinux";
/// Red Hat's release file (CentOS's os-release lacks the minor version).
pub const REDHAT_RELEASE: &str = "/etc/redhat-release";
/// CentOS's release file.
pub const CENTOS_RELEASE: &str = "/etc/centos-release";
/// The filesystem table (read: ADE rewrites a data volume's line to its mapper).
pub const FSTAB: &str = "/etc/fstab";
/// The crypt table (read: ADE adds a line per encrypted data volume).
pub const CRYPTTAB: &str = "/etc/crypttab";
/// The waagent udev rules' links to Azure disks (`root`, `resource`, `scsiN/lunM`).
pub const DEV_DISK_AZURE: &str = "/dev/disk/azure";
/// cloud-init's links to Azure disks (`azure_root`, `azure_resource`).
pub const DEV_DISK_CLOUD: &str = "/dev/disk/cloud";

/// The guest agent's configuration (read by `check`: ADE's extension parses it when it starts).
pub const WAAGENT_CONF: &str = "/etc/waagent.conf";
/// Login-wide environment variables (read by `check` for proxies).
pub const ETC_ENVIRONMENT: &str = "/etc/environment";

/// Every constant above, for the test that keeps README.md and the packaging in line with the code.
pub const ALL: &[(&str, &str)] = &[
    ("CONFIG_FILE", CONFIG_FILE),
    ("CONFIG_DIR", CONFIG_DIR),
    ("STATE_FILE", STATE_FILE),
    ("HOLD_FILE", HOLD_FILE),
    ("FLEET_SLOT_FILE", FLEET_SLOT_FILE),
    ("RUN_DIR", RUN_DIR),
    ("LOCK_FILE", LOCK_FILE),
    ("WAAGENT_DIR", WAAGENT_DIR),
    ("ADE_CONFIG_DIR", ADE_CONFIG_DIR),
    ("ADE_LOG_DIR", ADE_LOG_DIR),
    ("WAAGENT_CONF", WAAGENT_CONF),
    ("ETC_ENVIRONMENT", ETC_ENVIRONMENT),
];

/// The root every absolute path is resolved under: `/` on a real machine, a fixture tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::system()
    }
}

impl Paths {
    /// The running system.
    pub fn system() -> Self {
        Paths { root: PathBuf::from("/") }
    }

    /// A fixture tree (or `/` when `root` is `/`).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is the running system.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Resolves an absolute path of the running system under the root.
    pub fn resolve(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").unwrap_or(abs);
        self.root.join(rel)
    }

    /// `/proc` under the root.
    pub fn proc(&self) -> PathBuf {
        self.resolve(PROC)
    }
    /// `/sys` under the root.
    pub fn sys(&self) -> PathBuf {
        self.resolve(SYS)
    }
    /// The main config file under the root.
    pub fn config_file(&self) -> PathBuf {
        self.resolve(CONFIG_FILE)
    }
    /// The drop-in config folder under the root.
    pub fn config_dir(&self) -> PathBuf {
        self.resolve(CONFIG_DIR)
    }
    /// The journal under the root.
    pub fn state_file(&self) -> PathBuf {
        self.resolve(STATE_FILE)
    }
    /// The fleet slot record under the root.
    pub fn fleet_slot_file(&self) -> PathBuf {
        self.resolve(FLEET_SLOT_FILE)
    }
    /// The hold list under the root.
    pub fn hold_file(&self) -> PathBuf {
        self.resolve(HOLD_FILE)
    }
    /// The lock file under the root.
    pub fn lock_file(&self) -> PathBuf {
        self.resolve(LOCK_FILE)
    }
    /// The guest agent's folder under the root.
    pub fn waagent_dir(&self) -> PathBuf {
        self.resolve(WAAGENT_DIR)
    }
    /// ADE's own state folder under the root.
    pub fn ade_config_dir(&self) -> PathBuf {
        self.resolve(ADE_CONFIG_DIR)
    }
    /// ADE's extension logs under the root.
    pub fn ade_log_dir(&self) -> PathBuf {
        self.resolve(ADE_LOG_DIR)
    }
    /// os-release under the root.
    pub fn os_release(&self) -> PathBuf {
        self.resolve(OS_RELEASE)
    }
    /// The SELinux configuration file under the root.
    pub fn selinux_config(&self) -> PathBuf {
        self.resolve(SELINUX_CONFIG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_puts_absolute_paths_under_the_root() {
        let p = Paths::under("/tmp/fx");
        assert_eq!(p.state_file(), PathBuf::from("/tmp/fx/var/lib/ade-prep/state.json"));
        assert_eq!(Paths::system().proc(), PathBuf::from("/proc"));
    }
}
