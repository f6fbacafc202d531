//! What a stopped unit leaves behind in its cgroup (KillMode=process), ended through systemd: prepare ends it
//! after the stop, restore before a start. It must not end a process outside the unit it names.

use std::time::{Duration, Instant};

use crate::window::Machine;

/// What a stopped unit left in its cgroup (KillMode=process): KillUnit SIGTERM, up to `grace` for `pids` to go,
/// then KillUnit SIGKILL. A unit whose processes (pid, start time) are already gone is fine.
pub(crate) fn kill_leftovers(m: &Machine, unit: &str, pids: &[(i32, u64)], grace: Duration) -> anyhow::Result<()> {
    let gone = || pids.iter().all(|&(p, start)| !m.procs.alive(p, start));
    if let Err(e) = m.systemd.kill_unit(unit, libc::SIGTERM) {
        if gone() {
            return Ok(());
        }
        return Err(e.into());
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if gone() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match m.systemd.kill_unit(unit, libc::SIGKILL) {
        Err(e) if !gone() => Err(e.into()),
        _ => Ok(()),
    }
}
