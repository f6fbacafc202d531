//! `run`'s waiting on ADE before a decision: its first settings file, a settings file the guest agent is still
//! writing, and its next request once one was dealt with. Each wait ends when the stop token is raised. It owns the
//! polling; what the files say is [`crate::extension::ade`]'s, and it must not decide or change anything.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::plumbing::{notify, status, StopToken};
use super::verdict_text;
use crate::extension::ade::{self, Observation, PublicSettings};
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

/// How long `run` reads a settings file again while it cannot be parsed: the guest agent writes it in place
/// (truncate, then write), so `run`, started by the path unit, can find it empty or half written.
pub const SETTINGS_READ_WAIT: Duration = Duration::from_secs(15);

/// ADE's public settings for `seq`, read again every 200 ms while the file cannot be parsed, until `timeout`.
pub fn read_settings_patiently(
    handler_dir: &Path,
    seq: u64,
    timeout: Duration,
    stop: &StopToken,
) -> Result<PublicSettings, ade::ExtensionError> {
    let start = Instant::now();
    loop {
        match ade::read_settings(handler_dir, seq) {
            Ok(p) => return Ok(p),
            Err(e) if start.elapsed() >= timeout || stop.is_raised() => return Err(e),
            Err(e) => log::debug!("{e}; reading again"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long `run` waits for ADE's first settings file when the handler folder is there without one.
pub const SETTINGS_WAIT: Duration = Duration::from_secs(600);

/// Looks at ADE; while its handler folder exists without a settings file, looks again every `every` until one
/// appears, `timeout` passes or `stop` is raised. The path unit starts `run` when the folder appears (the guest
/// agent unpacks the handler, then writes config/<seq>.settings before calling enable), so the settings may follow.
pub fn observe_settings(paths: &Paths, timeout: Duration, every: Duration, stop: &StopToken) -> Observation {
    let start = Instant::now();
    let mut said = false;
    loop {
        let obs = ade::observe(paths);
        let waited = start.elapsed();
        if obs.handler.is_none() || obs.seq.is_some() || waited >= timeout || stop.is_raised() {
            return obs;
        }
        if !said {
            status(&format!(
                "waiting up to {} s for ADE's settings: {}",
                timeout.as_secs(),
                verdict_text(&obs.verdict)
            ));
            said = true;
        }
        std::thread::sleep(every.min(timeout - waited));
    }
}

/// Watches ADE (every 2 s) until its request is another than (`handler_dir`, `seq`); false when stopped first.
pub(crate) fn wait_for_next_request(
    paths: &Paths,
    handler_dir: Option<&Path>,
    seq: Option<u64>,
    stop: &StopToken,
) -> bool {
    notify(&[sd_notify::NotifyState::Ready]);
    let handled = seq.map_or_else(|| "none".to_string(), |s| s.to_string());
    let stamp = settings_stamp(handler_dir, seq);
    let mut said = false;
    loop {
        if stop.is_raised() {
            status("stopping: no window open");
            return false;
        }
        let obs = ade::observe(paths);
        let dir = obs.handler.as_ref().map(|h| h.dir.as_path());
        if obs.seq.is_some() && (dir != handler_dir || obs.seq != seq) {
            log::info!("ADE's request changed (seq {handled} -> {}): deciding again", obs.seq.unwrap_or_default());
            return true;
        }
        let now = settings_stamp(handler_dir, seq);
        if now != stamp {
            log::info!("ADE's settings seq {handled} were written again: deciding again");
            return true;
        }
        if !said {
            status(&format!("idle: watching for ADE's next request (seq {handled} was dealt with)"));
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The settings file's size and modification time, to see it written again.
fn settings_stamp(handler_dir: Option<&Path>, seq: Option<u64>) -> Option<(u64, SystemTime)> {
    let md = std::fs::metadata(ade::settings_path(handler_dir?, seq?)).ok()?;
    Some((md.len(), md.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_file_found_empty_is_read_again_until_written() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("ADE-1.4.0.1");
        std::fs::create_dir_all(h.join("config")).unwrap();
        let file = h.join("config/0.settings");
        std::fs::write(&file, "").unwrap(); // truncated, not yet written
        let never = StopToken::new();
        // Never written: an error naming the file, after the wait.
        let t = Instant::now();
        let e = read_settings_patiently(&h, 0, Duration::from_millis(400), &never).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(400));
        assert!(e.to_string().contains("0.settings"), "{e}");
        // Written while `run` reads: seen.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(
                file,
                r#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"All"}}}]}"#,
            )
            .unwrap();
        });
        let p = read_settings_patiently(&h, 0, Duration::from_secs(20), &never).unwrap();
        writer.join().unwrap();
        assert!(p.is_enable() && p.includes_os(), "{p:?}");
    }

    #[test]
    fn settings_written_after_the_handler_folder_are_waited_for() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let never = StopToken::new();
        let (long, tick) = (Duration::from_secs(20), Duration::from_millis(20));
        // No handler folder: no ADE request, answered at once.
        let t = Instant::now();
        assert_eq!(observe_settings(&paths, long, tick, &never).handler, None);
        assert!(t.elapsed() < Duration::from_secs(5));
        let h = d.path().join("var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.1");
        std::fs::create_dir_all(h.join("config")).unwrap();
        // The folder alone: waits, here until the timeout.
        let t = Instant::now();
        let o = observe_settings(&paths, Duration::from_millis(300), tick, &never);
        assert!(o.handler.is_some() && o.seq.is_none() && t.elapsed() >= Duration::from_millis(300), "{o:?}");
        // The settings follow the folder: seen.
        let settings = h.join("config/0.settings");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(settings, "{}").unwrap();
        });
        let o = observe_settings(&paths, long, tick, &never);
        writer.join().unwrap();
        assert_eq!(o.seq, Some(0), "{o:?}");
        // A stop request ends the wait.
        std::fs::remove_file(h.join("config/0.settings")).unwrap();
        let raised = StopToken::new();
        raised.raise();
        let t = Instant::now();
        assert_eq!(observe_settings(&paths, long, tick, &raised).seq, None);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
