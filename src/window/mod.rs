//! The encryption window's core: its phase and their checked transitions, the snapshot of the machine, the pure
//! plan, its execution, the restore, the journal (record and store apart), the hold through a reboot, and in
//! `steps` what the doing and the undoing of one kind of change share (restore borrows nothing from execute). It works
//! on the machine only through the edges in `Machine`; it must not reach the command line, print, or talk to
//! systemd, SELinux or /proc directly.

pub(crate) mod ctr;
pub(crate) mod execute;
pub mod ground;
pub(crate) mod hold;
pub mod journal;
pub mod phase;
pub(crate) mod plan;
pub(crate) mod quorum;
pub mod record;
pub(crate) mod restore;
pub(crate) mod snapshot;
pub(crate) mod steps;
pub mod store;

use crate::config::Settings;
use crate::paths::Paths;
use crate::runner::Runner;
use crate::scan::ProcessTable;
use crate::selinux::Selinux;
use crate::systemd::ServiceManager;

/// The edges execution works through: one real implementation each, fakes in tests.
pub(crate) struct Machine<'a> {
    pub procs: &'a dyn ProcessTable,
    pub systemd: &'a dyn ServiceManager,
    pub selinux: &'a dyn Selinux,
    /// Outside commands (pre-stop, docker).
    pub runner: &'a dyn Runner,
    /// The effective configuration.
    pub settings: &'a Settings,
    /// Where the hold list is (the generator reads it; see [`hold`]).
    pub paths: &'a Paths,
}
