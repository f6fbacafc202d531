//! Failpoints for crash tests: with the `failpoints` cargo feature (never in release packages), the k-th failpoint
//! visited in a phase kills the process with SIGKILL when `ADE_PREP_FAILPOINT=<phase>:<k>`. Without the feature
//! [`hit`] does nothing. Tests walk k = 1, 2, ... until the command runs through, so every point is covered.
//! It must never be compiled into a package.

#[cfg(feature = "failpoints")]
static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A point between two changes to the machine, in `phase` (`prepare` or `restore`).
#[inline]
pub fn hit(phase: &str) {
    #[cfg(feature = "failpoints")]
    {
        let k = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if std::env::var("ADE_PREP_FAILPOINT").ok().as_deref() == Some(&format!("{phase}:{k}")) {
            eprintln!("ade-prep: failpoint {phase}:{k}: killing myself");
            let _ = nix::sys::signal::raise(nix::sys::signal::SIGKILL);
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = phase;
}
