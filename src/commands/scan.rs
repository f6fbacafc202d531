//! `scan`: who holds the filesystem and how, classified, as text (the verdict first) or JSON. Reads only; it must
//! not change the machine.

use std::path::Path;

use super::{existing, is_root, out};
use crate::config::Settings;
use crate::exit;
use crate::paths::Paths;
use crate::report;
use crate::scan::{ProcFs, ProcessTable};

/// Whether this process runs in a container: a user namespace other than the first (its uid map is not the
/// identity over every uid), or the marker files container managers leave (systemd-nspawn, Docker, Podman).
pub(crate) fn in_container(paths: &Paths) -> bool {
    let uid_map = std::fs::read_to_string(paths.proc().join("self/uid_map")).unwrap_or_default();
    let identity = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    !identity
        || ["/run/systemd/container", "/.dockerenv", "/run/.containerenv"].iter().any(|f| paths.resolve(f).exists())
}

/// The scan report of `mount`, as `scan` prints it.
pub fn scan_report(paths: &Paths, settings: &Settings, mount: &Path) -> anyhow::Result<report::ScanReport> {
    existing(mount)?;
    let scan = ProcFs::new(paths.proc()).scan(mount)?;
    let why = report::unreadable_why(is_root(), scan.unreadable_count() > 0 && in_container(paths));
    let os_id = std::fs::read_to_string(paths.os_release()).ok().and_then(|t| crate::checks::os_id(&t));
    Ok(report::scan_report(&scan, settings, why, os_id.as_deref()))
}

/// Prints the holders of `mount`: every process with `all`, kernel threads folded into one line otherwise.
pub fn run(paths: &Paths, settings: &Settings, mount: &Path, json: bool, all: bool) -> anyhow::Result<u8> {
    let r = scan_report(paths, settings, mount)?;
    if json {
        out(&(serde_json::to_string_pretty(&r)? + "\n"))?;
        if let Some(w) = report::unreadable_text(&r) {
            log::warn!("{}", w.trim_start_matches("warning: "));
        }
    } else {
        out(&report::scan_text(&r, all))?;
    }
    Ok(exit::OK)
}
