//! Exit codes, the same for every command and documented in README.md.
//! It owns the mapping from errors to codes; it must not print.

/// Success.
pub const OK: u8 = 0;
/// The operation failed (a check failed, prepare rolled back, restore left something behind).
pub const FAILED: u8 = 1;
/// Bad input: usage, a path that does not exist, a malformed config or journal. Nothing was changed.
pub const USAGE: u8 = 2;
/// prepare refused: a precondition failed (see `ade-prep check`).
pub const PRECONDITION: u8 = 3;
/// The command changes the machine and needs root.
pub const NOT_ROOT: u8 = 4;
/// The lock or the window is held by someone else and the wait ran out.
pub const BUSY: u8 = 5;
/// `ade-prep lock -- CMD`: CMD could not be run (not executable), as shells report it.
pub const CMD_NOT_RUNNABLE: u8 = 126;
/// `ade-prep lock -- CMD`: CMD was not found, as shells report it.
pub const CMD_NOT_FOUND: u8 = 127;

/// An error with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Coded {
    /// Exit code.
    pub code: u8,
    /// The cause chain.
    pub error: anyhow::Error,
}

/// Wraps an error with an exit code.
pub fn with_code(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Coded { code, error: error.into() })
}

/// The exit code for an error: the code it carries, else by its type, else [`FAILED`].
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if cause.downcast_ref::<crate::config::ConfigError>().is_some() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<crate::lock::LockError>() {
            use crate::window::journal::StateError;
            return match e {
                crate::lock::LockError::Busy { .. } => BUSY,
                crate::lock::LockError::Journal(StateError::Corrupt { .. } | StateError::Version { .. }) => USAGE,
                _ => FAILED,
            };
        }
        if let Some(
            crate::window::journal::StateError::Corrupt { .. } | crate::window::journal::StateError::Version { .. },
        ) = cause.downcast_ref::<crate::window::journal::StateError>()
        {
            return USAGE;
        }
        if let Some(crate::scan::ScanError::Path { .. }) = cause.downcast_ref::<crate::scan::ScanError>() {
            return USAGE;
        }
    }
    FAILED
}
