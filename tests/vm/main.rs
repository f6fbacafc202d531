//! In the qemu guests (slow: the `vm` tier of tests/run.sh): end to end with SELinux enforcing, reboots, power cuts,
//! ADE's pivot and dm-crypt, where the kernel matters. The .deb's install, run and purge on Debian 12 need none of
//! that and run in systemd-nspawn (tests/packaging/deb_nspawn.rs); its SELinux facts ride on e2e_vm_ade_error's boot.

#[path = "../common/mod.rs"]
mod common;

mod e2e;
