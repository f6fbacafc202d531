//! Holding the window across the reboot ADE's OS encryption needs: the hold list and SELinux set permissive again
//! after the boot. It must not mask anything itself (the generator does, at boot).
//!
//! Prepare's masks are runtime masks (`/run/systemd/system`): the reboot drops them, and the workloads would start
//! at boot while ADE has not yet reported completion. So prepare also writes the hold list [`paths::HOLD_FILE`]
//! (one unit per line: every unit the window stopped or masked), and the package installs a systemd generator
//! (`/usr/lib/systemd/system-generators/ade-prep-generator`, a shell script run at boot before any unit is loaded
//! and at every daemon-reload) that masks each listed unit in the generator's early folder, which outranks `/etc`
//! too. Restore removes the list first, so its own Reload drops those masks.
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
use crate::systemd::UnitKind;
use crate::window::journal::{Change, Record};
use crate::window::phase::Phase;

/// Where the generator writes its masks (systemd's early generator folder).
pub const GENERATOR_EARLY_DIR: &str = "/run/systemd/generator.early";

/// The units to hold down: every unit the window stopped or masked and that is not yet undone. Scopes are left out
/// (transient, nothing to mask), and so are names that are not plain unit file names. Sorted, without duplicates.
pub fn units_to_hold(record: &Record) -> Vec<String> {
    let mut units: Vec<String> = record
        .to_undo()
        .filter_map(|e| match &e.change {
            Change::MaskUnit { unit } | Change::StopUnit { unit, .. } => Some(unit.clone()),
            _ => None,
        })
        .filter(|u| UnitKind::of(u) != UnitKind::Scope && valid_unit_name(u))
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

/// Writes the hold list (atomically: a temporary file renamed over it), 0644.
pub fn write_list(paths: &Paths, units: &[String]) -> anyhow::Result<()> {
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
    for u in units {
        text.push_str(u);
        text.push('\n');
    }
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(())
}

/// Removes the hold list (absent is fine).
pub fn clear_list(paths: &Paths) -> anyhow::Result<()> {
    let path = paths.hold_file();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::anyhow!("{}: {e}", path.display())),
        _ => Ok(()),
    }
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
    use crate::window::journal::{Entry, Status, VERSION};
    use std::cell::Cell;

    fn record(phase: Phase, boot: &str, entries: Vec<(Change, Status)>) -> Record {
        Record {
            version: VERSION,
            phase,
            opened_at: 1,
            updated_at: 1,
            boot_id: boot.into(),
            owner_pid: 1,
            mount: "/".into(),
            ade: None,
            deadline: None,
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
}
