//! A process table in memory, tied to the fake systemd: nothing here signals a real process.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use crate::scan::{Access, Holder, ProcessTable, Scan, ScanError};
use crate::systemd::ServiceManager;
use crate::testing::systemd::FakeSystemd;

/// Holders are there until terminated; those in a unit while systemd says the unit runs, or while the fake
/// systemd still counts them in the unit's cgroup (a KillMode=process leftover, until KillUnit).
pub(crate) struct FakeProcs<'a> {
    pub(crate) holders: Vec<Holder>,
    pub(crate) systemd: &'a FakeSystemd,
    pub(crate) terminated: &'a RefCell<Vec<i32>>,
    /// The units of "ade-prep" and its ancestors.
    pub(crate) own_units: Vec<String>,
}
impl FakeProcs<'_> {
    fn is_there(&self, h: &Holder) -> bool {
        !self.terminated.borrow().contains(&h.pid)
            && h.unit.as_ref().is_none_or(|u| {
                self.systemd.unit(u).map(|i| i.is_running()).unwrap_or(false)
                    || self.systemd.unit_by_pid(h.pid as u32).unwrap().as_ref() == Some(u)
            })
    }
}
impl ProcessTable for FakeProcs<'_> {
    fn scan(&self, path: &Path) -> Result<Scan, ScanError> {
        let live = self.holders.iter().filter(|h| self.is_there(h)).cloned().collect();
        Ok(Scan::from_holders(path, live))
    }
    fn alive(&self, pid: i32, start_time: u64) -> bool {
        self.holders.iter().any(|h| h.pid == pid && h.start_time == start_time && self.is_there(h))
    }
    fn terminate(&self, pid: i32, start_time: u64, _grace: Duration) {
        if self.holders.iter().any(|h| h.pid == pid && h.start_time == start_time) {
            self.terminated.borrow_mut().push(pid);
        }
    }
    fn own_units(&self) -> Vec<String> {
        self.own_units.clone()
    }
}

/// A holder made by hand for unit tests elsewhere in the crate: an open file on the filesystem, in `unit`.
pub(crate) fn holder(pid: i32, comm: &str, unit: Option<&str>) -> Holder {
    Holder {
        pid,
        ppid: 1,
        uid: 0,
        uids: Some([0, 0]),
        comm: comm.into(),
        cmdline: vec![comm.into()],
        exe: None,
        cwd: None,
        unit: unit.map(Into::into),
        cgroup: unit.map(|u| format!("/system.slice/{u}")),
        kernel_thread: false,
        access: Access { file: true, ..Default::default() },
        fds: 1,
        writable_fds: 0,
        start_time: 1000 + pid as u64,
        shim: None,
    }
}
