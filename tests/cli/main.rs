//! The built binary from the command line: bad input, `check` over fixture trees (packages and network in their
//! own file), the stable outputs, the `lock` verb, and `scan` against fuser. One test binary.

#[path = "../common/mod.rs"]
mod common;

/// The binary under test: this build's (`CARGO_BIN_EXE_ade-prep`), or the one `ADE_PREP_TEST_BIN` names: tests/run.sh's
/// packaging tier runs this suite again against the release binary the packages ship (release profile: LTO,
/// panic=abort, stripped, linked for glibc 2.17).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("ADE_PREP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ade-prep").to_string())
    })
}

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
