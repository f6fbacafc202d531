//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Reports that a test cannot run here. Outside CI it prints `SKIPPED: why` and the test returns early; in CI
/// (`CI=true`, set by .ci/run's environment) a skip is a failure, since CI installs everything the tests need.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// True (after reporting a skip) unless running as root.
pub fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        false
    } else {
        skip("needs root")
    }
}
