//! Holding the window across the reboot ADE's OS encryption needs.
//!
//! Prepare's masks are runtime masks (`/run/systemd/system`): the reboot drops them, and the workloads would start
//! at boot while ADE has not yet reported completion. So `ade-prep` is also a systemd generator
//! (`/usr/lib/systemd/system-generators/ade-prep-generator`, run at boot before any unit is loaded, and at every
//! daemon-reload): when the journal says the window is open (phase `open`) and was opened in an earlier boot, it
//! masks every unit the window stopped or masked, in the generator's early folder (it overrides `/etc` too). Once
//! restore sets the phase to `restoring`, the next reload (restore's own) drops those masks. In the boot that
//! opened the window the generator adds nothing: the runtime masks are there, and a mask loaded before a stop
//! would drop the unit's ExecStop (see plan).
//!
//! SELinux comes back at boot in the mode `/etc/selinux/config` gives; the daemon that resumes the window sets it
//! permissive again ([`reapply_selinux`]); restore later puts back the mode recorded before prepare.

use std::path::{Path, PathBuf};

use crate::paths::Paths;
use crate::selinux::{Mode, Selinux};
use crate::state::{self, Change, FileStore, Phase, Record, Store};

/// The units a generator must mask in the boot `current_boot`: every unit the window stopped or masked and that is
/// not yet undone, when the window is open (not restoring) and was opened in another boot. Scopes are left out
/// (transient, nothing to mask). Sorted, without duplicates.
pub fn held_units(record: &Record, current_boot: &str) -> Vec<String> {
    if record.phase != Phase::Open || record.boot_id == current_boot {
        return vec![];
    }
    let mut units: Vec<String> = record
        .to_undo()
        .filter_map(|e| match &e.change {
            Change::MaskUnit { unit } | Change::StopUnit { unit, .. } => Some(unit.clone()),
            _ => None,
        })
        .filter(|u| !u.ends_with(".scope"))
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

/// The generator: masks [`held_units`] in `early_dir` (symlinks to /dev/null). Returns the units masked. Errors name
/// the journal or the file that could not be written.
pub fn generate(paths: &Paths, early_dir: &Path) -> anyhow::Result<Vec<String>> {
    let Some(record) = FileStore::new(paths).load()? else { return Ok(vec![]) };
    let boot = state::boot_id(paths)?;
    let units = held_units(&record, &boot);
    if units.is_empty() {
        return Ok(units);
    }
    std::fs::create_dir_all(early_dir).map_err(|e| anyhow::anyhow!("{}: {e}", early_dir.display()))?;
    let mut masked = vec![];
    for u in units {
        if !valid_unit_name(&u) {
            log::warn!("{}: unit name {u:?} left alone (not a unit file name)", paths.state_file().display());
            continue;
        }
        let link: PathBuf = early_dir.join(&u);
        match std::os::unix::fs::symlink("/dev/null", &link) {
            Ok(()) => masked.push(u),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => masked.push(u),
            Err(e) => anyhow::bail!("{}: {e}", link.display()),
        }
    }
    Ok(masked)
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
    use crate::selinux::FakeSelinux;
    use crate::state::{Entry, Status, VERSION};
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
                (Change::SelinuxPermissive { previous: Mode::Enforcing }, Status::Done),
            ],
        )
    }

    #[test]
    fn after_a_reboot_an_open_window_holds_every_stopped_or_masked_unit() {
        assert_eq!(
            held_units(&window(Phase::Open, "boot-a"), "boot-b"),
            ["docker.socket", "etc-unit.service", "redis-server.service"]
        );
    }

    #[test]
    fn nothing_is_held_in_the_same_boot_while_restoring_or_once_closed() {
        assert!(held_units(&window(Phase::Open, "boot-a"), "boot-a").is_empty());
        for phase in [Phase::Restoring, Phase::Closed, Phase::Preparing] {
            assert!(held_units(&window(phase, "boot-a"), "boot-b").is_empty(), "{phase}");
        }
    }

    #[test]
    fn unit_names_that_are_not_file_names_are_refused() {
        assert!(valid_unit_name("redis-server.service"));
        assert!(valid_unit_name("getty@tty1.service"));
        assert!(valid_unit_name("SAPABC_00.service"));
        for bad in ["../../etc/passwd", "a/b.service", ".service", "noext", ""] {
            assert!(!valid_unit_name(bad), "{bad}");
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
    fn the_generator_writes_dev_null_links_from_the_journal_on_disk() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        std::fs::create_dir_all(paths.proc().join("sys/kernel/random")).unwrap();
        std::fs::write(paths.proc().join("sys/kernel/random/boot_id"), "boot-b\n").unwrap();
        let early = root.path().join("run/systemd/generator.early");
        // No journal: nothing, no folder made.
        assert!(generate(&paths, &early).unwrap().is_empty());
        assert!(!early.exists());
        FileStore::new(&paths).save(&window(Phase::Open, "boot-a")).unwrap();
        let got = generate(&paths, &early).unwrap();
        assert_eq!(got, ["docker.socket", "etc-unit.service", "redis-server.service"]);
        for u in &got {
            assert_eq!(std::fs::read_link(early.join(u)).unwrap(), Path::new("/dev/null"), "{u}");
        }
        assert_eq!(std::fs::read_dir(&early).unwrap().count(), 3);
        // Run again (every daemon-reload): the same, no error.
        assert_eq!(generate(&paths, &early).unwrap(), got);
    }
}
