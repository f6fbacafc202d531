//! Failpoints for crash tests: with the `failpoints` cargo feature (never in release packages), the k-th failpoint
//! visited in a phase kills the process with SIGKILL when `ADE_PREP_FAILPOINT=<phase>:<k>`. Without the feature
//! [`hit`] does nothing. `ADE_PREP_FAILPOINT=<phase>:<k>:SIGTERM` (or another signal) sends that signal instead, to
//! test stop requests at every point. Tests walk k = 1, 2, ... until the command runs through, so every point is covered.
//! It must never be compiled into a package.

#[cfg(feature = "failpoints")]
static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A point between two changes to the machine, in `phase` (`prepare` or `restore`).
#[inline]
pub fn hit(phase: &str) {
    #[cfg(feature = "failpoints")]
    {
        let k = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let want = std::env::var("ADE_PREP_FAILPOINT").unwrap_or_default();
        let here = format!("{phase}:{k}");
        if want == here {
            eprintln!("ade-prep: failpoint {here}: killing myself");
            let _ = nix::sys::signal::raise(nix::sys::signal::SIGKILL);
        }
        // `<phase>:<k>:<SIGNAL>`: that signal arrives at this point (a stop request during the step in flight).
        if let Some(sig) = want.strip_prefix(&format!("{here}:")).and_then(|s| s.parse().ok()) {
            eprintln!("ade-prep: failpoint {here}: sending myself {sig}");
            let _ = nix::sys::signal::raise(sig);
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = phase;
}
