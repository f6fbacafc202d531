//! `run`'s small readings around a prepare: how old ADE's settings are (its head start) and whether ADE's OS work
//! has begun. What the files say is [`crate::extension::ade`]'s; it must not decide or change anything.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::extension::ade;
use crate::paths::Paths;

/// Seconds since a file was last written (ADE's head start: its daemon sleeps about 60 s before the OS work).
pub(crate) fn age(path: &Path) -> Option<Duration> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// ADE's OS-disk work has begun when its markers folder holds anything (FINDINGS 25).
pub(crate) fn os_work_started(paths: &Paths) -> Option<Vec<String>> {
    let names = ade::machine::markers(paths);
    (!names.is_empty()).then_some(names)
}
