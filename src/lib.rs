//! ade-prep: makes Azure Disk Encryption of a Linux OS disk succeed by taking the workloads off `/` for the
//! encryption window (scan → classify → plan → execute → wait → restore) and putting everything back.
//! The layers and what each may use are drawn in docs/architecture.md ("Layers").
#![deny(missing_docs)]

pub(crate) mod bundle;
pub(crate) mod checks;
pub(crate) mod classify;
pub mod cli;
pub mod clock;
pub(crate) mod commands;
pub mod config;
pub mod datavol;
pub mod events;
pub mod exit;
pub(crate) mod extension;
pub(crate) mod failpoint;
pub mod fleet;
pub(crate) mod fsread;
pub mod fuzz;
pub(crate) mod glob;
pub mod lock;
pub(crate) mod mountinfo;
pub(crate) mod netlink;
pub mod paths;
pub(crate) mod pidref;
pub(crate) mod procs;
pub(crate) mod report;
pub(crate) mod runner;
pub(crate) mod scan;
pub(crate) mod selinux;
pub mod signals;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod text;
pub(crate) mod trust;
pub(crate) mod version;
pub(crate) mod volumes;
pub mod window;
