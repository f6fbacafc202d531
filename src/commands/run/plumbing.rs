//! `run`'s plumbing with systemd and signals: the one stop token (raised by SIGTERM, SIGINT and SIGHUP), sd_notify
//! (READY, STATUS, STOPPING) and the watchdog pings. It owns no decision; it must not read ADE or the journal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The process's one stop token: every wait of `run` (the settings, the next request, ADE's completion) ends when
/// it is raised. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// The token SIGTERM, SIGINT and SIGHUP raise ([`crate::signals`]): the same stop request that prepare
    /// honours between its steps and that restore finishes despite.
    pub fn from_signals() -> anyhow::Result<Self> {
        Ok(StopToken(crate::signals::install()?))
    }
    /// Whether it was raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub(crate) fn notify(state: &[sd_notify::NotifyState]) {
    // Outside a Type=notify unit NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(false, state);
}

pub(crate) fn status(text: &str) {
    log::info!("{text}");
    // A newline from outside text (an ADE message) would start another notify assignment (READY=1, MAINPID=).
    notify(&[sd_notify::NotifyState::Status(&crate::text::escape_controls(text))]);
}

/// Pings the watchdog at half its interval, when the unit asks for it.
pub(crate) fn start_watchdog() {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = Duration::from_micros(usec / 2);
        std::thread::spawn(move || loop {
            notify(&[sd_notify::NotifyState::Watchdog]);
            std::thread::sleep(every);
        });
    }
}
