//! The window's phase and its state machine: which phase may follow which (docs/design.md, "The window").
//! Owns the transitions only; it must not persist anything (the journal does) nor decide when to move.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where the window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// prepare is changing the machine (or died doing so: restore must look at every entry).
    Preparing,
    /// Everything is in place; waiting for ADE.
    Open,
    /// restore (or a rollback) is undoing the entries.
    Restoring,
    /// Nothing is left changed.
    Closed,
}

impl Phase {
    /// The transitions docs/design.md draws: closed → preparing → open → restoring → closed, the rollback
    /// (preparing → restoring) and a restore retried after a failed undo (restoring → restoring). A new window
    /// starts in preparing through `Journal::open`, never through a transition.
    pub fn can_become(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Preparing, Open)
                | (Preparing, Restoring)
                | (Open, Restoring)
                | (Restoring, Restoring)
                | (Restoring, Closed)
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Preparing => "preparing",
            Phase::Open => "open",
            Phase::Restoring => "restoring",
            Phase::Closed => "closed",
        })
    }
}
