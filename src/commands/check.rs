//! `check`: the preconditions of ADE on this machine, as text or JSON; exit 1 when one fails. Reads only.

use std::io::IsTerminal;

use super::out;
use crate::checks;
use crate::config::Settings;
use crate::exit;
use crate::paths::Paths;
use crate::window::hold;
use crate::window::store::{FileStore, Store};

/// Prints the check report.
pub fn run(paths: &Paths, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let report = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths));
    warn_stale_hold_list(paths);
    if json {
        out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        out(&checks::render::text(&report, std::io::stdout().is_terminal()))?;
    }
    Ok(if report.has_failures() { exit::FAILED } else { exit::OK })
}

/// A hold list with no window open masks its units at the next boot or daemon-reload: said on stderr (the report's
/// shape is docs/checks.md's), with the fix.
fn warn_stale_hold_list(paths: &Paths) {
    let open = FileStore::new(paths).load().ok().flatten().is_some_and(|r| r.is_window_open());
    if let Some(p) = hold::stale_list(paths, open) {
        log::warn!(
            "stale hold list {} with no window open: its units are masked at the next boot or reload; \
             run `ade-prep restore` to remove it",
            p.display()
        );
    }
}
