//! The SELinux switch: read the mode from selinuxfs and flip `enforce` for the window, so that ADE's pivot to a RAM
//! root is not denied. `/etc/selinux/config` is only ever read (to report the mode a reboot would bring back).
//! An edge (`Selinux` → `SelinuxFs`) and the one reader of the mode; it must never write the config file.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mountinfo;
use crate::paths::{self, Paths};

/// The SELinux mode of the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No SELinux on this machine: no selinuxfs, no `/etc/selinux/config`, not in `/proc/filesystems`.
    Absent,
    /// SELinux is known to the system but not active (selinuxfs not mounted, or disabled at boot).
    Disabled,
    /// Active, denials logged only.
    Permissive,
    /// Active and enforcing.
    Enforcing,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Absent => "absent",
            Mode::Disabled => "disabled",
            Mode::Permissive => "permissive",
            Mode::Enforcing => "enforcing",
        })
    }
}

/// What went wrong, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum SelinuxError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file holds something unexpected.
    #[error("{path}: unexpected content {content:?} (expected {expected})")]
    Content {
        path: PathBuf,
        /// What it holds (trimmed, at most 40 characters).
        content: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Switching needs an active SELinux.
    #[error("cannot set SELinux {wanted}: SELinux is {mode}")]
    Inactive {
        /// The mode asked for.
        wanted: &'static str,
        /// The mode found.
        mode: Mode,
    },
    /// The kernel did not take the new mode.
    #[error("{path}: wrote {wrote} but it reads back {read}")]
    NotApplied {
        /// The enforce file.
        path: PathBuf,
        /// What was written.
        wrote: &'static str,
        /// What it reads.
        read: Mode,
    },
}

/// The SELinux edge: one real implementation ([`SelinuxFs`]), fakes in tests.
pub trait Selinux {
    /// The current mode.
    fn mode(&self) -> Result<Mode, SelinuxError>;
    /// Sets enforcing (`true`) or permissive (`false`); an error when SELinux is absent or disabled.
    fn set_enforcing(&self, enforcing: bool) -> Result<(), SelinuxError>;
}

/// Where selinuxfs is mounted according to a mount table (the last selinuxfs mount), else its usual place
/// ([`paths::SELINUXFS`]): the one lookup of `check` and of the switch.
pub fn selinuxfs_in(mounts: &[mountinfo::Mount]) -> PathBuf {
    mounts
        .iter()
        .rev()
        .find(|m| m.fstype == "selinuxfs")
        .map_or_else(|| PathBuf::from(paths::SELINUXFS), |m| m.mount_point.clone())
}

/// What selinuxfs' `enforce` says: `1` enforcing, `0` permissive, anything else None. The one reading of the mode
/// of `check` and of the switch.
pub fn parse_enforce(text: &str) -> Option<Mode> {
    match text.trim() {
        "1" => Some(Mode::Enforcing),
        "0" => Some(Mode::Permissive),
        _ => None,
    }
}

/// The real switch: selinuxfs's `enforce` file, found through `/proc/self/mountinfo` under the [`Paths`] root.
#[derive(Debug, Clone)]
pub struct SelinuxFs {
    paths: Paths,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SelinuxError + '_ {
    move |source| SelinuxError::Io { path: path.to_path_buf(), source }
}

fn content(path: &Path, text: &str, expected: &'static str) -> SelinuxError {
    SelinuxError::Content { path: path.to_path_buf(), content: text.trim().chars().take(40).collect(), expected }
}

impl SelinuxFs {
    /// The switch of the system (or fixture tree) under `paths`.
    pub fn new(paths: &Paths) -> Self {
        SelinuxFs { paths: paths.clone() }
    }

    /// Where selinuxfs is mounted (resolved under the root): the `selinuxfs` line of mountinfo, else
    /// [`paths::SELINUXFS`] when it holds an `enforce` file; `None` when SELinux is not active.
    pub fn mount_point(&self) -> Option<PathBuf> {
        if let Ok(mounts) = mountinfo::read(&self.paths) {
            if mounts.iter().any(|m| m.fstype == "selinuxfs") {
                return Some(self.paths.resolve(selinuxfs_in(&mounts)));
            }
        }
        let fallback = self.paths.resolve(paths::SELINUXFS);
        fallback.join("enforce").is_file().then_some(fallback)
    }

    /// The mode `/etc/selinux/config` asks for at the next boot (`SELINUX=`), `None` when the file is missing.
    #[allow(dead_code)] // Not called by the agent (yet): only its unit tests read it.
    pub fn configured_mode(&self) -> Result<Option<Mode>, SelinuxError> {
        let path = self.paths.selinux_config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let value = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("SELINUX="))
            .next_back()
            .ok_or_else(|| content(&path, "", "a SELINUX= line"))?;
        match value.trim().trim_matches('"') {
            "enforcing" => Ok(Some(Mode::Enforcing)),
            "permissive" => Ok(Some(Mode::Permissive)),
            "disabled" => Ok(Some(Mode::Disabled)),
            other => Err(content(&path, other, "SELINUX=enforcing, permissive or disabled")),
        }
    }

    /// Whether the system knows SELinux at all: a config file, or selinuxfs in `/proc/filesystems`.
    fn known(&self) -> bool {
        self.paths.selinux_config().exists()
            || std::fs::read_to_string(self.paths.proc().join("filesystems"))
                .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some("selinuxfs")))
    }
}

impl Selinux for SelinuxFs {
    fn mode(&self) -> Result<Mode, SelinuxError> {
        let Some(mnt) = self.mount_point() else {
            return Ok(if self.known() { Mode::Disabled } else { Mode::Absent });
        };
        let path = mnt.join("enforce");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        parse_enforce(&text).ok_or_else(|| content(&path, &text, "0 or 1"))
    }

    fn set_enforcing(&self, enforcing: bool) -> Result<(), SelinuxError> {
        let wanted = if enforcing { "enforcing" } else { "permissive" };
        let before = self.mode()?;
        let Some(mnt) = self.mount_point().filter(|_| matches!(before, Mode::Enforcing | Mode::Permissive)) else {
            return Err(SelinuxError::Inactive { wanted, mode: before });
        };
        let path = mnt.join("enforce");
        let value = if enforcing { "1" } else { "0" };
        // Like libselinux's security_setenforce: open for writing without truncating (selinuxfs has no size).
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
        f.write_all(value.as_bytes()).map_err(io(&path))?;
        drop(f);
        let after = self.mode()?;
        if after != if enforcing { Mode::Enforcing } else { Mode::Permissive } {
            return Err(SelinuxError::NotApplied { path, wrote: value, read: after });
        }
        log::info!("SELinux: {before} -> {after} ({})", path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const MOUNTINFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                             30 22 0:20 / /selinux rw,relatime - selinuxfs selinuxfs rw\n";

    #[test]
    fn mode_comes_from_the_selinuxfs_named_in_mountinfo() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/self/mountinfo", MOUNTINFO);
        write(d.path(), "selinux/enforce", "1");
        // A decoy at the fallback location must not be read when mountinfo names another mount point.
        write(d.path(), "sys/fs/selinux/enforce", "0");
        let s = SelinuxFs::new(&Paths::under(d.path()));
        assert_eq!(s.mount_point(), Some(d.path().join("selinux")));
        assert_eq!(s.mode().unwrap(), Mode::Enforcing);
    }

    #[test]
    fn falls_back_to_sys_fs_selinux() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
        write(d.path(), "sys/fs/selinux/enforce", "0");
        assert_eq!(SelinuxFs::new(&Paths::under(d.path())).mode().unwrap(), Mode::Permissive);
    }

    #[test]
    fn absent_and_disabled_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let s = SelinuxFs::new(&Paths::under(d.path()));
        assert_eq!(s.mode().unwrap(), Mode::Absent);
        write(d.path(), "proc/filesystems", "nodev\tsysfs\nnodev\tselinuxfs\n\text4\n");
        assert_eq!(s.mode().unwrap(), Mode::Disabled);
        let e = s.set_enforcing(false).unwrap_err().to_string();
        assert_eq!(e, "cannot set SELinux permissive: SELinux is disabled");
    }

    #[test]
    fn switches_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/self/mountinfo", MOUNTINFO);
        write(d.path(), "selinux/enforce", "1");
        write(d.path(), "etc/selinux/config", "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n");
        let s = SelinuxFs::new(&Paths::under(d.path()));
        s.set_enforcing(false).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("selinux/enforce")).unwrap(), "0");
        assert_eq!(s.mode().unwrap(), Mode::Permissive);
        s.set_enforcing(true).unwrap();
        assert_eq!(s.mode().unwrap(), Mode::Enforcing);
        // The config file is never written.
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/selinux/config")).unwrap(),
            "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n"
        );
        assert_eq!(s.configured_mode().unwrap(), Some(Mode::Enforcing));
    }

    #[test]
    fn garbage_in_enforce_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/self/mountinfo", MOUNTINFO);
        write(d.path(), "selinux/enforce", "yes\n");
        let e = SelinuxFs::new(&Paths::under(d.path())).mode().unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: unexpected content \"yes\" (expected 0 or 1)", d.path().join("selinux/enforce").display())
        );
    }

    #[test]
    fn configured_mode_reports_missing_and_bad_values() {
        let d = tempfile::tempdir().unwrap();
        let s = SelinuxFs::new(&Paths::under(d.path()));
        assert_eq!(s.configured_mode().unwrap(), None);
        write(d.path(), "etc/selinux/config", "SELINUX=\"permissive\"\n");
        assert_eq!(s.configured_mode().unwrap(), Some(Mode::Permissive));
        write(d.path(), "etc/selinux/config", "SELINUX=maybe\n");
        assert!(s.configured_mode().unwrap_err().to_string().contains("config: unexpected content \"maybe\""));
    }

    #[test]
    fn mode_serialises_in_snake_case() {
        assert_eq!(serde_json::to_string(&Mode::Enforcing).unwrap(), "\"enforcing\"");
        assert_eq!(serde_json::from_str::<Mode>("\"absent\"").unwrap(), Mode::Absent);
    }
}
