//! Holding the window across the reboot ADE's OS encryption needs: the hold list and SELinux set permissive again
//! after the boot. It must not mask anything itself (the generator does, at boot).
//!
//! Prepare's masks are runtime masks (`/run/systemd/system`): the reboot drops them, and the workloads would start
//! at boot while ADE has not yet reported completion; units whose file is in `/etc` or `/run` cannot be
//! runtime-masked at all. So prepare also writes the hold list [`paths::HOLD_FILE`] (one unit per line: every
//! holdable unit the window stopped), after the stops and before the Reload that activates the masks, and the
//! package installs a systemd generator (`/usr/lib/systemd/system-generators/ade-prep-generator`, a shell script
//! run at boot before any unit is loaded and at every daemon-reload) that masks each listed unit in the generator's
//! early folder, which outranks `/etc` too: in force for the window and through the reboot. Restore removes the
//! list, then reloads (always), so the masks are gone before any start. The list is root-owned 0644, never written
//! through a link; the generator trusts nothing else and masks only [`holdable`] names.
//!
//! The list is in /etc, not beside the journal in /var/lib, and the generator is a shell script, not ade-prep:
//! under SELinux policy (Debian's refpolicy, enforcing at boot) the generators' domain may read /etc but not
//! /var/lib, and the Rust runtime's start-up (`sched_getaffinity`) is denied there too (both seen in the e2e run).
//!
//! SELinux comes back at boot in the mode `/etc/selinux/config` gives; the daemon that resumes the window sets it
//! permissive again ([`reapply_selinux`]); restore later puts back the mode recorded before prepare.

use std::io::Write;
use std::path::Path;

use crate::paths::{self, Paths};
use crate::selinux::{Mode, Selinux};
use crate::window::journal::{Change, Entry, Record};
use crate::window::phase::Phase;

/// Where the generator writes its masks (systemd's early generator folder).
pub const GENERATOR_EARLY_DIR: &str = "/run/systemd/generator.early";

/// The units to hold down: every unit the window stopped or masked and that is not yet undone. Scopes are left out
/// (transient, nothing to mask), and so are names that are not plain unit file names. Sorted, without duplicates.
pub fn units_to_hold(record: &Record) -> Vec<String> {
    held_units(record.to_undo())
}

/// Every unit a window's journal stopped or masked, undone or not: what the generator may still mask after the
/// window closed.
pub fn units_ever_held(record: &Record) -> Vec<String> {
    held_units(record.entries.iter())
}

/// The holdable units the entries stopped or masked, sorted, without duplicates.
fn held_units<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<String> {
    let mut units: Vec<String> = entries
        .filter_map(|e| match &e.change {
            Change::MaskUnit { unit } | Change::StopUnit { unit, .. } => Some(unit.clone()),
            _ => None,
        })
        .filter(|u| holdable(u))
        .collect();
    units.sort();
    units.dedup();
    units
}

/// A unit name that is safe as a file name in a unit folder: `name.type`, no path separator, no leading dot.
fn valid_unit_name(u: &str) -> bool {
    let ok_chars = u.bytes().all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    ok_chars && !u.starts_with('.') && u.contains('.') && u.len() <= 255
}

/// Unit types the generator may mask: what a workload runs in or is started by. Never a target, mount, slice or
/// device (`default.target` or `-.mount` from a damaged list would make the machine unbootable).
pub const HOLDABLE_SUFFIXES: &[&str] = &[".service", ".socket", ".timer", ".path"];

/// A unit the hold list may name: a plain unit file name of a holdable type, not protected
/// ([`crate::classify::protected_unit`]). The generator applies the same rule (packaging/.../ade-prep-generator).
pub fn holdable(u: &str) -> bool {
    valid_unit_name(u)
        && HOLDABLE_SUFFIXES.iter().any(|s| u.ends_with(s))
        && crate::classify::protected_unit(u).is_none()
}

/// The units a hold list's text names, as the generator reads it: one a line, blank lines and `#` comments
/// skipped, only [`holdable`] names (a damaged or planted line never reaches a command line as an option).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && holdable(l))
        .map(String::from)
        .collect()
}

/// Writes the hold list (atomically: a temporary file renamed over it, then the folder synced), root-owned 0644,
/// never through a symbolic link (`O_NOFOLLOW`); names that are not [`holdable`] are left out.
pub fn write_list(paths: &Paths, units: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = paths.hold_file();
    let err = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    let dir = path.parent().expect("the hold file has a folder");
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    let mut text = format!(
        "# Written by ade-prep while an encryption window is open ({}); removed when it closes.\n\
         # ade-prep-generator masks these units at boot, so they stay down through the reboot until restore.\n",
        paths::STATE_FILE
    );
    for u in units.iter().filter(|u| holdable(u)) {
        text.push_str(u);
        text.push('\n');
    }
    // A leftover temporary file (or a link planted there) goes first: O_EXCL with O_NOFOLLOW then creates it anew.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(err)?;
    // The umask may have taken bits away; the generator accepts exactly 0644.
    f.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    sync_dir(dir).map_err(err)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the hold list (absent is fine); true when there was one. The folder is synced, so that a crash right
/// after cannot bring the list back at the next boot.
pub fn clear_list(paths: &Paths) -> anyhow::Result<bool> {
    let path = paths.hold_file();
    let err = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(e)),
        Ok(()) => {
            sync_dir(path.parent().expect("the hold file has a folder")).map_err(err)?;
            Ok(true)
        }
    }
}

/// A hold list on disk while no window is open (a crash between closing the window and removing it, or a list
/// left by hand): the generator would mask its units at the next boot or daemon-reload. `restore` removes it.
pub fn stale_list(paths: &Paths, window_open: bool) -> Option<std::path::PathBuf> {
    let path = paths.hold_file();
    (!window_open && std::fs::symlink_metadata(&path).is_ok()).then_some(path)
}

/// Units the generator still masks (links to /dev/null in [`GENERATOR_EARLY_DIR`]) among `units`: after the list is
/// gone, a daemon-reload drops them.
pub fn generator_masks(paths: &Paths, units: impl IntoIterator<Item = String>) -> Vec<String> {
    split_held(paths, units.into_iter().collect()).0
}

/// Splits `units` into those the generator's masks hold (a link to /dev/null in [`GENERATOR_EARLY_DIR`]) and the
/// others: what the resumed daemon reports, rather than assuming the generator ran.
pub fn split_held(paths: &Paths, units: Vec<String>) -> (Vec<String>, Vec<String>) {
    let dir = paths.resolve(GENERATOR_EARLY_DIR);
    units.into_iter().partition(|u| std::fs::read_link(dir.join(u)).is_ok_and(|t| t == Path::new("/dev/null")))
}

/// After a reboot in an open window whose journal set SELinux permissive (and not yet undone): sets it permissive
/// again when the boot brought it back enforcing. Returns true when it changed the mode. The journal keeps the mode
/// from before prepare, which restore puts back.
pub fn reapply_selinux(record: &Record, current_boot: &str, selinux: &dyn Selinux) -> anyhow::Result<bool> {
    if record.phase != Phase::Open || record.boot_id == current_boot {
        return Ok(false);
    }
    let held = record.to_undo().any(|e| matches!(e.change, Change::SelinuxPermissive { .. }));
    if !held || selinux.mode()? != Mode::Enforcing {
        return Ok(false);
    }
    selinux.set_enforcing(false)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::selinux::FakeSelinux;
    use crate::window::journal::{Entry, Status, VERSION_V1};
    use std::cell::Cell;

    fn record(phase: Phase, boot: &str, entries: Vec<(Change, Status)>) -> Record {
        Record {
            version: VERSION_V1,
            phase,
            opened_at: 1,
            updated_at: 1,
            boot_id: boot.into(),
            owner_pid: 1,
            mount: "/".into(),
            ade: None,
            deadline: None,
            volumes: None,
            ground: None,
            entries: entries
                .into_iter()
                .enumerate()
                .map(|(i, (change, status))| Entry { seq: i as u32 + 1, change, status, at: 1, note: None })
                .collect(),
        }
    }

    fn window(phase: Phase, boot: &str) -> Record {
        let mask = |u: &str| Change::MaskUnit { unit: u.into() };
        let stop = |u: &str| Change::StopUnit { unit: u.into(), active_state_before: "active".into() };
        record(
            phase,
            boot,
            vec![
                (Change::LockHeld {}, Status::Done),
                (mask("redis-server.service"), Status::Done),
                (mask("docker.socket"), Status::Done),
                (stop("docker.socket"), Status::Done),
                (stop("redis-server.service"), Status::Done),
                (stop("etc-unit.service"), Status::Done), // in /etc: stopped, not masked
                (stop("docker-abc.scope"), Status::Done),
                (stop("undone.service"), Status::Undone),
                (stop("../../etc/passwd"), Status::Done),
                (Change::SelinuxPermissive { previous: Mode::Enforcing }, Status::Done),
            ],
        )
    }

    #[test]
    fn every_stopped_or_masked_unit_not_yet_undone_is_held_but_scopes_and_odd_names() {
        assert_eq!(
            units_to_hold(&window(Phase::Open, "boot-a")),
            ["docker.socket", "etc-unit.service", "redis-server.service"]
        );
        // After the window: every unit it ever held, for the generator's masks a restore must reload away.
        assert_eq!(
            units_ever_held(&window(Phase::Closed, "boot-a")),
            ["docker.socket", "etc-unit.service", "redis-server.service", "undone.service"]
        );
    }

    #[test]
    fn unit_names_that_are_not_file_names_are_refused() {
        assert!(valid_unit_name("redis-server.service"));
        assert!(valid_unit_name("getty@tty1.service"));
        assert!(valid_unit_name("SAPABC_00.service"));
        for bad in ["../../etc/passwd", "a/b.service", ".service", "noext", "", "a b.service", "a\n.service"] {
            assert!(!valid_unit_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn selinux_is_set_permissive_again_only_after_a_reboot_that_brought_it_back_enforcing() {
        let se = FakeSelinux(Cell::new(Mode::Enforcing));
        assert!(!reapply_selinux(&window(Phase::Open, "boot-a"), "boot-a", &se).unwrap());
        assert_eq!(se.0.get(), Mode::Enforcing);
        assert!(!reapply_selinux(&window(Phase::Restoring, "boot-a"), "boot-b", &se).unwrap());
        assert_eq!(se.0.get(), Mode::Enforcing);
        // A window that did not touch SELinux leaves it alone.
        let no_selinux = record(Phase::Open, "boot-a", vec![(Change::LockHeld {}, Status::Done)]);
        assert!(!reapply_selinux(&no_selinux, "boot-b", &se).unwrap());
        assert_eq!(se.0.get(), Mode::Enforcing);
        assert!(reapply_selinux(&window(Phase::Open, "boot-a"), "boot-b", &se).unwrap());
        assert_eq!(se.0.get(), Mode::Permissive);
        // Already permissive (the config says so): nothing to do.
        assert!(!reapply_selinux(&window(Phase::Open, "boot-a"), "boot-b", &se).unwrap());
    }

    #[test]
    fn the_hold_list_is_written_one_unit_per_line_and_cleared() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        clear_list(&paths).unwrap(); // absent: fine
        let units = units_to_hold(&window(Phase::Open, "boot-a"));
        write_list(&paths, &units).unwrap();
        let text = std::fs::read_to_string(paths.hold_file()).unwrap();
        let listed: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(listed, units);
        assert!(!paths.hold_file().with_extension("tmp").exists());
        clear_list(&paths).unwrap();
        assert!(!paths.hold_file().exists());
        // What the resumed daemon reports: held by the generator's links, or not.
        let early = paths.resolve(GENERATOR_EARLY_DIR);
        std::fs::create_dir_all(&early).unwrap();
        std::os::unix::fs::symlink("/dev/null", early.join("docker.socket")).unwrap();
        let (held, loose) = split_held(&paths, vec!["docker.socket".into(), "other.service".into()]);
        assert_eq!((held, loose), (vec!["docker.socket".to_string()], vec!["other.service".to_string()]));
    }

    fn generator(dir: &Path, list: &str, mode: u32) -> (Vec<String>, String) {
        use std::os::unix::fs::PermissionsExt;
        let hold = dir.join("hold");
        std::fs::write(&hold, list).unwrap();
        std::fs::set_permissions(&hold, std::fs::Permissions::from_mode(mode)).unwrap();
        let early = dir.join("early");
        let _ = std::fs::remove_dir_all(&early);
        let script =
            concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/usr/lib/systemd/system-generators/ade-prep-generator");
        let out = std::process::Command::new("sh")
            .arg(script)
            .args([dir.join("normal"), early.clone(), dir.join("late")])
            .env("ADE_PREP_HOLD", &hold)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut links: Vec<String> = std::fs::read_dir(&early)
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        links.sort();
        for l in &links {
            assert_eq!(std::fs::read_link(early.join(l)).unwrap(), Path::new("/dev/null"));
        }
        (links, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn the_generator_masks_only_plain_workload_units_from_a_root_owned_0644_list() {
        // Runs the packaged script, whose owner check trusts only a root-owned list.
        if crate::testing::skip_unless(crate::testing::root(), "needs root (the list must be root-owned)") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let list = "# comment\nSAPHN1_00.service\ndocker.socket\nmongod.timer\nx.path\ndbus.service\n\
                    systemd-journald.service\ndefault.target\n-.mount\nuser@1000.service\n../../etc/passwd\n\
                    ade-prep.service\n";
        let (links, err) = generator(dir.path(), list, 0o644);
        assert_eq!(links, ["SAPHN1_00.service", "docker.socket", "mongod.timer", "x.path"], "{err}");
        assert!(err.contains("protected unit, never held: dbus.service"), "{err}");
        assert!(err.contains("left alone: default.target"), "{err}");
        // A list anyone could have written is not trusted.
        let (links, err) = generator(dir.path(), "mongod.service\n", 0o666);
        assert!(links.is_empty() && err.contains("ignored"), "{links:?} {err}");
        // Every holdable name is one the generator masks.
        assert!(holdable("SAPHN1_00.service") && !holdable("dbus.service") && !holdable("default.target"));
    }

    #[test]
    fn the_hold_list_is_0644_never_written_through_a_link_and_only_names_holdable_units() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let tmp = paths.hold_file().with_extension("tmp");
        std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, &tmp).unwrap(); // planted
        let old = unsafe { libc::umask(0o077) };
        let r = write_list(&paths, &["mongod.service".into(), "dbus.service".into(), "default.target".into()]);
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(paths.hold_file()).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
        let text = std::fs::read_to_string(paths.hold_file()).unwrap();
        let listed: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(listed, ["mongod.service"]);
        // Stale: a list while no window is open.
        assert_eq!(stale_list(&paths, false), Some(paths.hold_file()));
        assert_eq!(stale_list(&paths, true), None);
        assert!(clear_list(&paths).unwrap());
        assert!(!clear_list(&paths).unwrap());
        assert_eq!(stale_list(&paths, false), None);
    }
}
