//! Progress of a wait, as people see it: `lock --wait` behind a held lock, run once through a pseudo-terminal
//! (`script`, so stderr is a TTY: a live line with what it waits for and the seconds left, redrawn) and once
//! through a pipe (no TTY: plain log lines, no terminal control sequences).

use std::path::Path;
use std::process::{Command, Stdio};

/// A fixture root whose lock is held by a background `lock -- sleep` until it is dropped.
struct Held {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Held {
    fn new() -> Held {
        let dir = crate::lock::root();
        let child = crate::lock::hold(dir.path(), "exec sleep 30");
        Held { dir, child }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn on_a_terminal_the_wait_is_live_with_the_time_left() {
    if Command::new("script").arg("--version").output().is_err() {
        crate::common::skip("script (util-linux) is not installed");
        return;
    }
    let held = Held::new();
    let inner = format!("{} --root {} lock --wait 2 -- true", crate::bin(), held.root().display());
    // script runs the command on a new pseudo-terminal and copies what it writes there to its stdout.
    let o = Command::new("script").args(["-qefc", &inner, "/dev/null"]).env_remove("RUST_LOG").output().unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "the wait runs out while the lock is held: {screen}");
    let live: Vec<&str> = screen.split(['\r', '\n']).filter(|l| l.contains(" s left): ")).collect();
    assert!(!live.is_empty(), "no progress line: {screen:?}");
    assert!(live.iter().all(|l| l.contains("] waiting (") && l.contains("lock is held by")), "{live:?}");
    // The log line about the wait is printed whole, on its own line, not into the live one (after the live line's
    // clear, `ESC[2K`, when the first redraw came before it).
    let whole = |l: &str| l.trim_start_matches("\x1b[2K").starts_with("[WARN ] waiting (0 s so far): ");
    assert!(screen.split(['\r', '\n']).any(whole), "{screen:?}");
    // A live line: redrawn in place (carriage return or cursor movement), the seconds left counting down.
    assert!(screen.contains('\r') || screen.contains("\x1b["), "not redrawn: {screen:?}");
    assert!(screen.contains("(1 s left)") && screen.contains("(0 s left)"), "no countdown: {screen:?}");
}

#[test]
fn without_a_terminal_there_are_log_lines_and_no_control_sequences() {
    let held = Held::new();
    let o = Command::new(crate::bin())
        .arg("--root")
        .arg(held.root())
        .args(["lock", "--wait", "1", "--", "true"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().any(|l| l.contains("waiting (0 s so far): ") && l.contains("is held by pid")), "{err}");
    assert!(!err.contains('\r') && !err.contains("\x1b["), "control sequences without a terminal: {err:?}");
}
