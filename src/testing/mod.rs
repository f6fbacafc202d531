//! Every fake of the crate's edges, in one place, for the unit tests: a process table, systemd, SELinux, the
//! kernel's routes, the runner of outside commands, the journal store and the data volumes, each in memory and
//! able to fail on demand. Test code only (compiled under `cfg(test)`); production code is never swapped for it.

pub(crate) mod procs;
pub(crate) mod routes;
pub(crate) mod runner;
pub(crate) mod selinux;
pub(crate) mod store;
pub(crate) mod systemd;
pub(crate) mod volumes;

/// A unit test that cannot run here says why and returns early (`if testing::skip_unless(root, "..") { return; }`):
/// SKIPPED on stderr for a developer's fast loop as another user; under the test command (`ADE_TEST_COMMAND=1`,
/// tests/run.sh as root) or CI a skip is a failure, as in tests/common's `skip`.
pub(crate) fn skip_unless(can_run: bool, why: &str) -> bool {
    if can_run {
        return false;
    }
    let must = std::env::var("ADE_TEST_COMMAND").as_deref() == Ok("1") || std::env::var("CI").as_deref() == Ok("true");
    assert!(!must, "cannot run under the test command or CI, where a skip is a failure: {why}");
    eprintln!("SKIPPED: {why}");
    true
}

/// Whether the tests run as root.
pub(crate) fn root() -> bool {
    nix::unistd::geteuid().is_root()
}
