//! Against a real systemd in systemd-nspawn: the systemd edge, prepare/restore, `run` as a Type=notify unit, and
//! crash safety at every failpoint. Each module's host test boots the container once and runs its own
//! `<module>::in_container_*` tests of this binary inside it (tests/common::nspawn_suite).

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod daemon;
mod prepare;
mod signals;
mod systemd;
