//! Against a real systemd in systemd-nspawn: the systemd edge, prepare/restore, `run` as a Type=notify unit,
//! crash safety at every failpoint, and the package's own units; each on Debian 12's systemd 252 and on RHEL 7's
//! 219. Each module's host test boots the containers once and runs its own `<module>::in_container_*` tests of
//! this binary inside them (tests/common::nspawn_suite).

#[path = "../common/mod.rs"]
mod common;

mod ade_replay;
mod cluster;
mod crash;
mod daemon;
mod docker;
mod hold;
mod journal;
mod prepare;
mod search;
mod signals;
mod systemd;
mod trust;
mod units;
mod volumes;
mod workloads;
mod writers;
