//! The packages and the documents shipped with them, kept in line with the code: deb and rpm contents, the units
//! against systemd 219 (units219), the .deb installed, run and purged on Debian 12 in nspawn (deb_nspawn),
//! man pages and completions, the default config file.

#[path = "../common/mod.rs"]
mod common;

mod deb_nspawn;
mod docs;
mod package;
mod units219;
