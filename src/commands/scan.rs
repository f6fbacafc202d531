//! `scan`: who holds the filesystem and how, classified, as text or JSON. Reads only; it must not change the
//! machine.

use std::path::Path;

use super::{existing, is_root, out};
use crate::config::Settings;
use crate::exit;
use crate::paths::Paths;
use crate::report;
use crate::scan::{ProcFs, ProcessTable};

/// Prints the holders of `mount`.
pub fn run(paths: &Paths, settings: &Settings, mount: &Path, json: bool) -> anyhow::Result<u8> {
    existing(mount)?;
    let scan = ProcFs::new(paths.proc()).scan(mount)?;
    let r = report::scan_report(&scan, settings);
    if json {
        out(&(serde_json::to_string_pretty(&r)? + "\n"))?;
    } else {
        out(&report::scan_text(&r))?;
    }
    if scan.unreadable_count() > 0 {
        log::warn!(
            "{} entries could not be read{}",
            scan.unreadable_count(),
            if is_root() { "" } else { " (not root)" }
        );
    }
    Ok(exit::OK)
}
