//! `check`: the preconditions of ADE on this machine, as text or JSON; exit 1 when one fails. Reads only.

use std::io::IsTerminal;

use super::out;
use crate::checks;
use crate::config::Settings;
use crate::exit;
use crate::paths::Paths;

/// Prints the check report.
pub fn run(paths: &Paths, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let report = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths));
    if json {
        out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        out(&checks::render::text(&report, std::io::stdout().is_terminal()))?;
    }
    Ok(if report.has_failures() { exit::FAILED } else { exit::OK })
}
