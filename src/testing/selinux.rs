//! A SELinux switch in memory. Test code only.

use crate::selinux::{Mode, Selinux, SelinuxError};

/// A SELinux switch in memory, for the unit tests of the modules that flip it.
pub(crate) struct FakeSelinux(pub std::cell::Cell<Mode>);

impl Selinux for FakeSelinux {
    fn mode(&self) -> Result<Mode, SelinuxError> {
        Ok(self.0.get())
    }
    fn set_enforcing(&self, on: bool) -> Result<(), SelinuxError> {
        self.0.set(if on { Mode::Enforcing } else { Mode::Permissive });
        Ok(())
    }
}
