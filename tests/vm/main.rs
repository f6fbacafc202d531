//! In the qemu guests (slow: not part of a quick run): end to end with SELinux enforcing, and the packages
//! installed on the distributions they are built for.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod packaging;
