//! A reference to one process that a reused PID cannot redirect: a pidfd (`pidfd_open`, Linux 5.3) that signals
//! are sent through (`pidfd_send_signal`) and that becomes readable when the process exits. Where the kernel lacks
//! them (CentOS 7's 3.10: ENOSYS) the plain PID, with its start time from `/proc/PID/stat` read when the reference
//! is taken and checked again before every signal. An edge; it must not decide whom to signal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One process, held by identity.
#[derive(Debug)]
pub enum PidRef {
    /// Through a pidfd.
    Fd {
        /// The pidfd.
        fd: OwnedFd,
    },
    /// A kernel without pidfds: the pid and the start time that identifies it.
    Plain {
        /// The pid.
        pid: i32,
        /// Field 22 of `/proc/PID/stat` (clock ticks after boot).
        start: u64,
        /// Where `/proc` is.
        proc_root: PathBuf,
    },
}

/// The start time and state of `pid` (fields 22 and 3 of `/proc/PID/stat`); `None` when it is gone.
fn stat_of(proc_root: &Path, pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // After the comm (which may hold spaces and parentheses): state is field 3, starttime field 22.
    let rest: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    Some((rest.get(19)?.parse().ok()?, rest.first()?.chars().next()?))
}

fn gone() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ESRCH)
}

impl PidRef {
    /// Takes a reference to `pid` now: a pidfd, or on a kernel without them its start time. Err(ESRCH) when it is
    /// gone.
    pub fn open(proc_root: &Path, pid: i32) -> std::io::Result<PidRef> {
        // SAFETY: pidfd_open(pid, 0) returns a new fd or -1; nothing else is touched.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the fd was just returned to us and is owned by nobody else.
            return Ok(PidRef::Fd { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } });
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS) => Self::open_plain(proc_root, pid),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Takes a reference to `pid` only if it is still the process that started at `start_time` (as a scan saw it):
    /// the start time is read after the pidfd is opened, so the pidfd names the process seen then. Err(ESRCH) when it
    /// is gone or the pid now names another process.
    pub fn open_started(proc_root: &Path, pid: i32, start_time: u64) -> std::io::Result<PidRef> {
        let r = Self::open(proc_root, pid)?;
        match stat_of(proc_root, pid) {
            Some((s, state)) if s == start_time && state != 'Z' => Ok(r),
            _ => Err(gone()),
        }
    }

    /// The fallback, by pid and start time (public for the tests of kernels without pidfds).
    pub fn open_plain(proc_root: &Path, pid: i32) -> std::io::Result<PidRef> {
        match stat_of(proc_root, pid) {
            Some((start, state)) if state != 'Z' => Ok(PidRef::Plain { pid, start, proc_root: proc_root.into() }),
            _ => Err(gone()),
        }
    }

    /// Sends `sig` to this process; Err(ESRCH) when it is gone (or its pid now names another process).
    pub fn signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        match self {
            PidRef::Fd { fd, .. } => {
                // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) on an fd we own.
                let r = unsafe {
                    libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0)
                };
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
            PidRef::Plain { pid, start, proc_root } => {
                if !matches!(stat_of(proc_root, *pid), Some((s, st)) if s == *start && st != 'Z') {
                    return Err(gone());
                }
                // SAFETY: kill(2). (A reuse between the check and here needs the pid to cycle in microseconds.)
                if unsafe { libc::kill(*pid, sig) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }

    /// Whether the process has exited (a zombie counts as exited).
    pub fn exited(&self) -> bool {
        match self {
            PidRef::Fd { fd, .. } => {
                let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll on one pollfd we own, without waiting.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                n > 0 && p.revents != 0
            }
            PidRef::Plain { pid, start, proc_root } => {
                !matches!(stat_of(proc_root, *pid), Some((s, st)) if s == *start && st != 'Z')
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; true when it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        loop {
            if self.exited() {
                return true;
            }
            if t.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(timeout.saturating_sub(t.elapsed())));
        }
    }
}

/// SIGTERM, up to `grace` for the process to go, then SIGKILL, all through one [`PidRef`] taken before the first
/// signal and only if `pid` still started at `start_time`: a pid reused since it was seen, or during the grace, is
/// never signalled.
pub fn terminate(proc_root: &Path, pid: i32, start_time: u64, grace: Duration) {
    let Ok(r) = PidRef::open_started(proc_root, pid, start_time) else { return };
    terminate_ref(&r, grace);
}

/// [`terminate`] through a reference already taken.
pub fn terminate_ref(r: &PidRef, grace: Duration) {
    if r.signal(libc::SIGTERM).is_err() {
        return;
    }
    if !r.wait_exit(grace) {
        let _ = r.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn reaped_within(child: &mut std::process::Child, secs: u64) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn sigterm_then_sigkill_through_a_pidfd_and_through_the_plain_fallback() {
        let proc_root = Path::new("/proc");
        for plain in [false, true] {
            // One that ignores SIGTERM: killed after the grace.
            let mut c = Command::new("sh").args(["-c", "trap '' TERM; while :; do sleep 0.05; done"]).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let pid = c.id() as i32;
            let r = if plain { PidRef::open_plain(proc_root, pid) } else { PidRef::open(proc_root, pid) }.unwrap();
            assert_eq!(matches!(r, PidRef::Plain { .. }), plain);
            let t = Instant::now();
            terminate_ref(&r, Duration::from_millis(300));
            assert!(reaped_within(&mut c, 5), "plain={plain}");
            assert!(t.elapsed() >= Duration::from_millis(300));
            assert!(r.exited());
            assert_eq!(r.signal(libc::SIGKILL).unwrap_err().raw_os_error(), Some(libc::ESRCH), "plain={plain}");
        }
    }

    fn start_time_of(pid: i32) -> u64 {
        stat_of(Path::new("/proc"), pid).unwrap().0
    }

    #[test]
    fn terminate_leaves_alone_a_pid_that_names_another_process_than_the_one_seen() {
        let proc_root = Path::new("/proc");
        // The process a scan saw: it exits and is reaped; its start time is what the scan recorded.
        let mut first = Command::new("true").spawn().unwrap();
        let seen = (first.id() as i32, start_time_of(first.id() as i32));
        first.wait().unwrap();
        assert_eq!(PidRef::open_started(proc_root, seen.0, seen.1).unwrap_err().raw_os_error(), Some(libc::ESRCH));
        // Another process: with its own start time it is signalled, with the seen one's (as if it had the reused
        // pid) it is not.
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = other.id() as i32;
        let real = start_time_of(pid);
        let stale = real.wrapping_add(1);
        terminate(proc_root, pid, stale, Duration::from_millis(100));
        assert!(PidRef::open_started(proc_root, pid, stale).is_err());
        assert!(other.try_wait().unwrap().is_none(), "a process with another start time was left alone");
        terminate(proc_root, pid, real, Duration::from_millis(100));
        assert!(reaped_within(&mut other, 5), "the process seen, with its start time, is ended");
    }

    #[test]
    fn the_fallback_refuses_a_pid_whose_start_time_changed() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = c.id() as i32;
        let PidRef::Plain { start, .. } = PidRef::open_plain(Path::new("/proc"), pid).unwrap() else { panic!() };
        // As if the pid had been reused since the reference was taken: another start time.
        let stale = PidRef::Plain { pid, start: start + 1, proc_root: "/proc".into() };
        assert_eq!(stale.signal(libc::SIGKILL).unwrap_err().raw_os_error(), Some(libc::ESRCH));
        assert!(c.try_wait().unwrap().is_none(), "the process with the reused pid was left alone");
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
