//! `lock -- CMD`: runs a command holding the lock, outside the encryption window, passing signals on to it. The
//! wrapper holds the lock for CMD's life and no longer: CMD gets no lock fd (a background process it leaves
//! behind never keeps the lock), and dies with the wrapper (PR_SET_PDEATHSIG); its pid and start time in the lock
//! file make the next holder wait for that death, so it never runs unlocked. It owns the child and its signals;
//! the lock protocol itself is [`crate::lock`]'s.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::exit;
use crate::lock::Lock;
use crate::paths::Paths;
use crate::window::store::FileStore;

/// The child run under the lock, for the signal forwarder (0 while it is not started yet).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal to pass on that came before the child existed.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// A handler that does nothing: unlike SIG_IGN it is not inherited by the command (exec resets handlers).
extern "C" fn leave_to_child(_: libc::c_int) {}

/// `ade-prep lock [--wait SECS] -- CMD ARGS...`: runs `argv` holding the lock, outside the encryption window, and
/// returns its exit code (128 + signal when it was killed; 126/127 when it cannot be run, as shells do).
/// While it runs, SIGTERM and SIGHUP are passed on to it and SIGINT/SIGQUIT are left to it (the terminal sends
/// them to it too), so the lock is held until it has exited.
pub fn run(paths: &Paths, wait_secs: Option<u64>, argv: &[std::ffi::OsString]) -> anyhow::Result<u8> {
    let wait = wait_secs.map(Duration::from_secs);
    let (program, args) = argv.split_first().context("no command given")?;
    let shown: Vec<String> = argv.iter().map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()).collect();
    let mut command = format!("ade-prep lock -- {}", shown.join(" "));
    if command.len() > 200 {
        command = format!("{}...", command.chars().take(197).collect::<String>());
    }
    let store = FileStore::new(paths);
    // Its exit code comes from exit::code_of, which knows LockError.
    let mut guard = Lock::new(paths).acquire_when_closed(&command, &store, wait)?;
    // Handlers go in before the command starts, so that no signal can end this process while it runs.
    let pass_on = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    let leave = SigAction::new(SigHandler::Handler(leave_to_child), SaFlags::SA_RESTART, SigSet::empty());
    let mut saved = vec![];
    for (sig, action) in
        [(Signal::SIGTERM, &pass_on), (Signal::SIGHUP, &pass_on), (Signal::SIGINT, &leave), (Signal::SIGQUIT, &leave)]
    {
        // SAFETY: the handlers only touch atomics and call kill(2).
        if let Ok(old) = unsafe { signal::sigaction(sig, action) } {
            saved.push((sig, old));
        }
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let wrapper = std::process::id() as libc::pid_t;
    // CMD can never run unlocked: it is killed when this wrapper dies (SIGKILL of the wrapper included), and the
    // lock file names it until then. The lock file itself is O_CLOEXEC: CMD never holds it.
    // SAFETY: prctl, getppid and _exit are async-signal-safe system calls.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The wrapper died between fork and prctl: do not run at all.
            if libc::getppid() != wrapper {
                libc::_exit(exit::FAILED.into());
            }
            Ok(())
        });
    }
    let status = match cmd.spawn() {
        Ok(mut child) => {
            CHILD.store(child.id() as i32, Ordering::SeqCst);
            let pid = child.id() as i32;
            let start = std::fs::read_to_string(paths.proc().join(pid.to_string()).join("stat"))
                .ok()
                .and_then(|t| crate::scan::parse_stat(&t))
                .map(|st| st.start_time);
            if let Some(start) = start {
                if let Err(e) = guard.set_child(pid, start) {
                    log::warn!("lock: could not record the command's pid {pid}: {e}");
                }
            }
            let early = PENDING.swap(0, Ordering::SeqCst);
            if early != 0 {
                // SAFETY: plain kill(2) of our own child.
                unsafe { libc::kill(child.id() as i32, early) };
            }
            let status = child.wait();
            CHILD.store(0, Ordering::SeqCst);
            Ok(status)
        }
        Err(e) => Err(e),
    };
    for (sig, old) in saved {
        // SAFETY: puts back the disposition found above.
        let _ = unsafe { signal::sigaction(sig, &old) };
    }
    drop(guard);
    let status = match status {
        Ok(s) => s.with_context(|| format!("waiting for {}", shown[0]))?,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::CMD_NOT_FOUND,
                _ => exit::CMD_NOT_RUNNABLE,
            };
            return Err(exit::with_code(code, anyhow::anyhow!("{}: {e}", shown[0])));
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        (None, None) => exit::FAILED,
    })
}
