//! The clock and the boot: unix seconds, their UTC rendering for messages, and the current boot's id. Owns no
//! state; it must not know about the journal that records these values.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths::Paths;

/// Why the boot's id cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BootIdError {
    path: PathBuf,
    source: std::io::Error,
}

/// The current boot's id (`/proc/sys/kernel/random/boot_id`), to record at open and compare after a reboot.
pub fn boot_id(paths: &Paths) -> Result<String, BootIdError> {
    let path = paths.proc().join("sys/kernel/random/boot_id");
    std::fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|source| BootIdError { path, source })
}

/// Seconds since this boot (`/proc/uptime`'s first field); None when unreadable.
pub fn uptime_secs(paths: &Paths) -> Option<u64> {
    let text = std::fs::read_to_string(paths.proc().join("uptime")).ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// Now, in unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, for messages.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_utc_gives_civil_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_714_564_799), "2024-05-01T11:59:59Z");
    }
}
