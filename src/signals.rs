//! Stop requests: SIGINT, SIGTERM and SIGHUP, once [`install`]ed, no longer end the process; they are recorded, and
//! the long operations ask [`received`] between their steps (prepare finishes the step in flight, then rolls back
//! and exits 1 naming the signal; restore finishes, so the journal stays consistent; `run`'s waits end through the
//! same flag, [`crate::commands::run::plumbing::StopToken`]). It owns the handler; it must not decide what a stop
//! means for a verb.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use nix::sys::signal::Signal;

/// The first stop signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The flag `run`'s waits watch, raised by the same handler.
static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The signals that ask ade-prep to stop.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn on_stop(sig: libc::c_int) {
    // Atomic stores and OnceLock::get (an atomic load): async-signal-safe.
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    if let Some(f) = FLAG.get() {
        f.store(true, Ordering::SeqCst);
    }
}

/// Installs the handler for [`STOP_SIGNALS`] (idempotent); returns the flag it raises.
pub fn install() -> anyhow::Result<Arc<AtomicBool>> {
    use anyhow::Context;
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    // SA_RESTART: a system call in flight (a D-Bus read, a wait for a child) finishes its step.
    let act = SigAction::new(SigHandler::Handler(on_stop), SaFlags::SA_RESTART, SigSet::empty());
    for s in STOP_SIGNALS {
        // SAFETY: the handler only touches atomics.
        unsafe { sigaction(s, &act) }.with_context(|| format!("installing the {s} handler"))?;
    }
    Ok(flag)
}

/// The stop signal received since [`install`], if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// Set while the steps of a prepare run: only then does a stop request end a command in flight.
static STOPPABLE: AtomicBool = AtomicBool::new(false);

/// Runs `f` (prepare's steps) as stoppable: a command it runs is ended by a stop request ([`stop_now`]). Outside
/// it (a rollback, a restore) commands run to their end, so that what they bring back comes back.
pub fn stoppable<T>(f: impl FnOnce() -> T) -> T {
    STOPPABLE.store(true, Ordering::SeqCst);
    let r = f();
    STOPPABLE.store(false, Ordering::SeqCst);
    r
}

/// Whether a command in flight should be ended now: a stop signal came, and the work is [`stoppable`].
pub fn stop_now() -> bool {
    STOPPABLE.load(Ordering::SeqCst) && received().is_some()
}

/// A stop request, as an error: what was asked and where it was honoured.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal} {when}")]
pub struct Stopped {
    /// The signal.
    pub signal: Signal,
    /// Where it was honoured ("before step 3 of 7: stop mongod.service").
    pub when: String,
}

/// `Err` when a stop signal was received: the caller stops before its next step.
pub fn check(when: impl FnOnce() -> String) -> Result<(), Stopped> {
    match received() {
        Some(signal) => Err(Stopped { signal, when: when() }),
        None => Ok(()),
    }
}
