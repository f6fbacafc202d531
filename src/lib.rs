//! ade-prep: makes Azure Disk Encryption of a Linux OS disk succeed by taking the workloads off `/` for the
//! encryption window (scan → classify → plan → execute → wait → restore) and putting everything back.
#![deny(missing_docs)]

pub mod checks;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod exit;
pub mod extension;
pub mod failpoint;
pub mod glob;
pub mod lock;
pub mod mountinfo;
pub mod paths;
pub mod report;
pub mod runner;
pub mod scan;
pub mod selinux;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod version;
pub mod window;
