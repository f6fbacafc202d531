//! The packages and the documents shipped with them, kept in line with the code: deb and rpm contents, the units
//! against systemd 219 (units219),
//! man pages and completions, the default config file.

#[path = "../common/mod.rs"]
mod common;

mod docs;
mod package;
mod units219;
