//! The packages and the documents shipped with them, kept in line with the code: deb and rpm contents, the
//! man pages and completions, the default config file.

#[path = "../common/mod.rs"]
mod common;

mod docs;
mod package;
