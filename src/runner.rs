//! Running outside commands (pre-stop commands, `docker`): argv only, never a shell, as a given user, with a
//! timeout after which the whole process group gets SIGTERM, then SIGKILL after its grace ([`term_grace`]); a
//! stop request to ade-prep during prepare's steps ([`crate::signals::stop_now`]) ends it the same way.
//! An edge (`Runner` → `RealRunner`); it must not interpret what the commands mean.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Killed because the timeout ran out.
    pub timed_out: bool,
    /// Standard output.
    pub stdout: String,
    /// The last lines of standard error, for messages.
    pub stderr_tail: String,
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The user does not exist.
    #[error("user {0} does not exist")]
    NoUser(String),
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        source: std::io::Error,
    },
    /// Empty argv.
    #[error("empty command")]
    Empty,
}

/// Runs commands; one real implementation, fakes in tests.
pub trait Runner {
    /// Runs `argv` as `user` (a name), killing it after `timeout`.
    fn run(&self, argv: &[String], user: &str, timeout: Duration) -> Result<Outcome, RunError>;
}

/// Runs real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealRunner;

/// How long a command has between SIGTERM and SIGKILL: a tenth of its own timeout, 1 to 10 s.
pub fn term_grace(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

impl Runner for RealRunner {
    fn run(&self, argv: &[String], user: &str, timeout: Duration) -> Result<Outcome, RunError> {
        let (program, args) = argv.split_first().ok_or(RunError::Empty)?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let me = nix::unistd::geteuid();
        let pw = nix::unistd::User::from_name(user).ok().flatten().ok_or_else(|| RunError::NoUser(user.into()))?;
        if pw.uid != me {
            // Supplementary groups are looked up before the fork; only system calls run in the child.
            let name = std::ffi::CString::new(user).map_err(|_| RunError::NoUser(user.into()))?;
            let groups = nix::unistd::getgrouplist(&name, pw.gid).unwrap_or_else(|_| vec![pw.gid]);
            cmd.env("HOME", &pw.dir).env("USER", user).env("LOGNAME", user);
            cmd.current_dir(if pw.dir.is_dir() { pw.dir.as_path() } else { std::path::Path::new("/") });
            let (uid, gid) = (pw.uid, pw.gid);
            // std's uid()/gid() run before pre_exec, and setgroups needs root: drop privileges here, in order.
            // SAFETY: setgroups, setgid and setuid are plain system calls, async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::setgroups(&groups)?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
        // Its own process group, so that a timeout kills the command and everything it started.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| RunError::Spawn { program: program.clone(), source })?;
        let mut so = child.stdout.take();
        let mut se = child.stderr.take();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = so.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = se.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let start = Instant::now();
        let mut timed_out = false;
        let mut terminated: Option<Instant> = None;
        let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => match terminated {
                    // The timeout ran out, or ade-prep was asked to stop: SIGTERM to the group first.
                    None if start.elapsed() >= timeout || crate::signals::stop_now() => {
                        timed_out = true;
                        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::SIGTERM);
                        terminated = Some(Instant::now());
                    }
                    // Then SIGKILL once its grace is over.
                    Some(t) if t.elapsed() >= term_grace(timeout) => {
                        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::SIGKILL);
                        break child.wait().ok();
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                },
                Err(_) => break None,
            }
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        Ok(Outcome {
            code: if timed_out { None } else { status.and_then(|s| s.code()) },
            timed_out,
            stdout,
            stderr_tail: tail(&stderr, 3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn me() -> String {
        nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name
    }

    #[test]
    fn exit_code_and_output_pass_through_without_a_shell() {
        let o = RealRunner
            .run(&argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]), &me(), Duration::from_secs(5))
            .unwrap();
        assert_eq!((o.code, o.timed_out), (Some(3), false));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr_tail, "err");
        // argv is not interpreted by a shell
        let o = RealRunner.run(&argv(&["echo", "$HOME; true"]), &me(), Duration::from_secs(5)).unwrap();
        assert_eq!(o.stdout, "$HOME; true\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let t = Instant::now();
        let o = RealRunner.run(&argv(&["sh", "-c", "sleep 30 & sleep 30"]), &me(), Duration::from_millis(300)).unwrap();
        assert!(o.timed_out && o.code.is_none());
        // the background sleep held stdout open: returning at all proves the group was killed
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_timeout_sends_sigterm_first_then_sigkill_after_the_grace() {
        // A command that cleans up on SIGTERM gets to do it.
        let script = "trap 'echo cleaned; exit 7' TERM; sleep 30 & wait";
        let o = RealRunner.run(&argv(&["sh", "-c", script]), &me(), Duration::from_millis(300)).unwrap();
        assert!(o.timed_out, "{o:?}");
        assert_eq!(o.stdout, "cleaned\n");
        // One that ignores SIGTERM is killed once its grace (1 s here) is over.
        let t = Instant::now();
        let script = "trap '' TERM; echo started; while :; do sleep 0.05; done";
        let o = RealRunner.run(&argv(&["sh", "-c", script]), &me(), Duration::from_millis(300)).unwrap();
        assert!(o.timed_out && o.code.is_none(), "{o:?}");
        assert!(t.elapsed() >= Duration::from_millis(1300), "{:?}", t.elapsed());
        assert_eq!(term_grace(Duration::from_secs(600)), Duration::from_secs(10));
    }

    #[test]
    fn unknown_user_and_missing_program_are_named() {
        let e = RealRunner.run(&argv(&["true"]), "no-such-user-xyz", Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.to_string(), "user no-such-user-xyz does not exist");
        let e = RealRunner.run(&argv(&["/no/such/prog"]), &me(), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().starts_with("cannot start /no/such/prog:"), "{e}");
    }

    #[test]
    fn runs_as_another_user_when_root() {
        if crate::testing::skip_unless(crate::testing::root(), "needs root (runs a command as nobody)") {
            return;
        }
        let o = RealRunner.run(&argv(&["id", "-un"]), "nobody", Duration::from_secs(5)).unwrap();
        assert_eq!(o.stdout.trim(), "nobody");
    }
}
