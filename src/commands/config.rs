//! `config`: the effective configuration and the files it came from. Reads only.

use super::out;
use crate::config::{self, Settings};
use crate::exit;
use crate::paths::Paths;

/// Prints the effective configuration as TOML, headed by the files merged.
pub fn run(paths: &Paths, settings: &Settings) -> anyhow::Result<u8> {
    let files = config::files(paths)?;
    let mut text = String::from("# effective configuration: built-in defaults");
    for f in &files {
        text.push_str(&format!(", then {}", f.display()));
    }
    text.push('\n');
    text.push_str(&settings.to_toml());
    out(&text)?;
    Ok(exit::OK)
}
