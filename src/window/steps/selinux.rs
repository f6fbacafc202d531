//! SELinux set permissive for the window, one kind of change in one place: when the plan asks for it
//! ([`needed`]), the intent execute records before the switch ([`intent`]), the switch ([`apply`]) and its undo
//! ([`undo`]). The journal entry is [`Change::SelinuxPermissive`]; the event is [`Event::SelinuxSet`]. It must not
//! write the journal: execute records the intent and the outcome, restore the undo's.

use crate::events::{self, Event};
use crate::selinux::Mode;
use crate::window::journal::Change;
use crate::window::Machine;

/// The plan's rule: SELinux is set permissive for ADE's OS pass (its pivot and unmount of `/`); a window of data
/// volumes only (ADE's plain umount of each, FINDINGS 47, 55) leaves it alone.
pub(crate) fn needed(enforcing: bool, frees_root: bool) -> bool {
    enforcing && frees_root
}

/// What to record before the switch: the mode now when it is enforcing; None when it is permissive already (nothing
/// to change, nothing to undo).
pub(crate) fn intent(m: &Machine) -> anyhow::Result<Option<Change>> {
    let previous = m.selinux.mode()?;
    Ok((previous == Mode::Enforcing).then_some(Change::SelinuxPermissive { previous }))
}

/// Sets SELinux permissive.
pub(crate) fn apply(m: &Machine) -> anyhow::Result<()> {
    m.selinux.set_enforcing(false)?;
    events::emit(Event::SelinuxSet("permissive"));
    Ok(())
}

/// Sets SELinux back to `previous`: Ok with what was undone, Err with what could not be, for restore's outcome.
pub(crate) fn undo(m: &Machine, previous: Mode) -> Result<String, String> {
    match m.selinux.set_enforcing(previous == Mode::Enforcing) {
        Ok(()) => {
            events::emit(Event::SelinuxSet(&previous.to_string()));
            Ok(format!("SELinux back to {previous}"))
        }
        Err(e) => Err(format!("SELinux back to {previous}: {e}")),
    }
}
