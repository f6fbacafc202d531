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
