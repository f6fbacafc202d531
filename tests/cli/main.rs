//! The built binary from the command line: bad input, `check` over fixture trees (packages and network in their
//! own file), the stable outputs, the `lock` verb, and `scan` against fuser. One test binary.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod check;
mod check_packages_network;
mod general;
mod lock;
mod progress;
mod report;
mod scan_fuser;
mod scan_text;
mod volumes;
