//! `ade-prep lock -- CMD` between real processes: the built binary, run twice against the same `--root` tree
//! (its /proc a link to the real one, so holders' pids can be checked).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", d.path().join("proc")).unwrap();
    d
}

fn ade_prep(root: &Path) -> Command {
    let mut c = Command::new(crate::bin());
    // Commands run under the lock write their relative files into the tree.
    c.arg("--root").arg(root).env_remove("RUST_LOG").current_dir(root);
    c
}

/// Starts `lock -- sh -c SCRIPT` in the background and waits until SCRIPT runs (it creates `started`).
pub(crate) fn hold(root: &Path, script: &str) -> Child {
    let started = root.join("started");
    let _ = std::fs::remove_file(&started);
    let child = ade_prep(root)
        .args(["lock", "--", "sh", "-c"])
        .arg(format!("echo $$ > {}/cmd.pid; touch {}; {script}", root.display(), started.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !started.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "the holder never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn run(root: &Path, args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = ade_prep(root).args(args).output().unwrap();
    (out, t.elapsed())
}

/// Kills the process whose pid a test script wrote into `file` (commands left behind by a killed holder).
fn kill_pidfile(file: &Path) {
    if let Ok(pid) = std::fs::read_to_string(file).unwrap_or_default().trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_journal(root: &Path, phase: &str) -> PathBuf {
    let text = include_str!("../fixtures/state/v1.json").replacen(
        "\"phase\": \"open\"",
        &format!("\"phase\": \"{phase}\""),
        1,
    );
    let p = root.join("var/lib/ade-prep/state.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_exit_code_of_the_command_passes_through() {
    let d = root();
    let (o, _) = run(d.path(), &["lock", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let (o, _) = run(d.path(), &["lock", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let (o, _) = run(d.path(), &["lock", "--", "/nonexistent/cmd"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("/nonexistent/cmd: No such file"), "{}", stderr(&o));
    let (o, _) = run(d.path(), &["lock"]);
    assert_eq!(o.status.code(), Some(2), "a command is required");
}

#[test]
fn a_second_process_waits_and_names_the_holder_then_gives_up() {
    let d = root();
    let mut a = hold(d.path(), "sleep 5");
    let (o, took) = run(d.path(), &["lock", "--wait", "1", "--", "touch", "ran"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let e = stderr(&o);
    assert!(e.contains(&format!("held by pid {} (ade-prep lock -- sh -c", a.id())), "{e}");
    assert!(e.contains("busy after waiting 1."), "{e}");
    assert!(!d.path().join("ran").exists(), "the command must not run without the lock");
    a.kill().unwrap();
    a.wait().unwrap();
    kill_pidfile(&d.path().join("cmd.pid"));
}

#[test]
fn a_waiter_runs_once_the_holder_is_done() {
    let d = root();
    let mut a = hold(d.path(), "sleep 1; touch first-done");
    let (o, took) = run(d.path(), &["lock", "--wait", "20", "--", "sh", "-c", "test -e first-done"]);
    assert_eq!(o.status.code(), Some(0), "ran before the first command finished: {}", stderr(&o));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(a.wait().unwrap().code(), Some(0));
}

#[test]
fn an_open_window_in_the_journal_makes_lock_wait() {
    let d = root();
    let journal = write_journal(d.path(), "open");
    let (o, _) = run(d.path(), &["lock", "--wait", "1", "--", "true"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("the encryption window is open since 2024-05-01T11:58:20Z"), "{e}");
    assert!(e.contains(&journal.display().to_string()), "{e}");
    write_journal(d.path(), "closed");
    let (o, _) = run(d.path(), &["lock", "--wait", "1", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_corrupt_journal_is_refused_naming_the_file() {
    let d = root();
    let journal = write_journal(d.path(), "open");
    std::fs::write(&journal, "{\"version\": 1, \"phase\": \"op").unwrap();
    let (o, _) = run(d.path(), &["lock", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}: corrupt journal", journal.display())), "{}", stderr(&o));
    std::fs::write(&journal, include_str!("../fixtures/state/v1.json").replacen("\"version\": 1", "\"version\": 4", 1))
        .unwrap();
    let (o, _) = run(d.path(), &["lock", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("journal version 4 is from a newer ade-prep"), "{}", stderr(&o));
}

#[test]
fn a_killed_holder_leaves_stale_information_that_the_next_one_reports() {
    let d = root();
    let mut a = hold(d.path(), "exec sleep 30");
    let a_pid = a.id();
    // SIGKILL: no chance to release; the flock goes with the process, its information stays.
    a.kill().unwrap();
    a.wait().unwrap();
    let (o, _) = run(d.path(), &["lock", "--wait", "5", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("stale holder information in {}", d.path().join("run/ade-prep/lock").display())),
        "{e}"
    );
    assert!(e.contains(&format!("pid {a_pid} (ade-prep lock -- sh -c")) && e.contains("is gone"), "{e}");
    kill_pidfile(&d.path().join("cmd.pid"));
}

#[test]
fn sigterm_is_passed_on_and_the_lock_held_until_the_command_ends() {
    let d = root();
    let mut a = hold(d.path(), "trap 'echo got-term > term; exit 9' TERM; sleep 30 & echo $! > sleep.pid; wait");
    // `started` is touched before the trap is set: wait for sleep.pid, written after it.
    let t = Instant::now();
    while std::fs::read_to_string(d.path().join("sleep.pid")).map_or(true, |s| !s.ends_with('\n')) {
        assert!(t.elapsed() < Duration::from_secs(10), "the command never got past its trap");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = a.wait().unwrap();
    kill_pidfile(&d.path().join("sleep.pid"));
    assert_eq!(status.code(), Some(9), "the command's own exit code after SIGTERM");
    assert_eq!(std::fs::read_to_string(d.path().join("term")).unwrap(), "got-term\n");
    let (o, _) = run(d.path(), &["lock", "--wait", "0", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "released after the command ended: {}", stderr(&o));
}

#[test]
fn a_command_never_runs_unlocked_when_its_wrapper_is_sigkilled() {
    let d = root();
    // The first command would run for 30 s; a second `lock` waits for it.
    let mut a = hold(d.path(), "exec sleep 30");
    let first: i32 = std::fs::read_to_string(d.path().join("cmd.pid")).unwrap().trim().parse().unwrap();
    // Alive means a process that still runs (a zombie left to a parent that is gone runs no more).
    let script = format!(
        "s=$(cut -d' ' -f3 /proc/{first}/stat 2>/dev/null); \
         if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo overlap > second; else echo alone > second; fi"
    );
    let mut b = ade_prep(d.path()).args(["lock", "--wait", "20", "--", "sh", "-c", &script]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!d.path().join("second").exists(), "the second command ran while the first held the lock");
    // SIGKILL of the wrapper: its command dies with it, and holds the lock until it has.
    a.kill().unwrap();
    a.wait().unwrap();
    assert_eq!(b.wait().unwrap().code(), Some(0));
    assert_eq!(std::fs::read_to_string(d.path().join("second")).unwrap(), "alone\n");
    let state = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
    let running = state.split(' ').nth(2).is_some_and(|s| s != "Z");
    assert!(!running, "the first command outlived its wrapper: {state}");
}

#[test]
fn a_background_process_the_command_leaves_never_keeps_the_lock() {
    // Issue 24: `helper &` left behind by CMD (or a daemon forking without closing fds) held the inherited lock fd.
    let d = root();
    let script = format!(
        "sleep 30 & echo $! > {}/bg.pid; ls -l /proc/self/fd/ > {}/fds",
        d.path().display(),
        d.path().display()
    );
    let (o, _) = run(d.path(), &["lock", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let fds = std::fs::read_to_string(d.path().join("fds")).unwrap();
    let (o, waited) = run(d.path(), &["lock", "--wait", "0", "--", "true"]);
    kill_pidfile(&d.path().join("bg.pid"));
    assert!(!fds.contains("ade-prep/lock"), "the command got the lock fd:\n{fds}");
    assert_eq!(o.status.code(), Some(0), "the lock outlived its command: {}", stderr(&o));
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}
