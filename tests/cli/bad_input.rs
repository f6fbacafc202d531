//! Bad input gets a clear message (issue 7 §8), from the built binary against `--root` fixture trees (their /proc
//! a link to the real one): a missing ADE handler folder, an unreadable status file, a lock left by a dead
//! process, a journal from a newer ade-prep.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ade-prep");
const HANDLER: &str = "var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.1";

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", d.path().join("proc")).unwrap();
    d
}

fn ade_prep(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(root).args(args).env_remove("RUST_LOG").env_remove("NOTIFY_SOCKET");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn put(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_without_an_ade_handler_folder_says_why_and_exits_0() {
    if crate::common::need_root() {
        return;
    }
    let d = root();
    let o = ade_prep(d.path(), &["-v", "run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!(
        "nothing to do: no ADE request: no Microsoft.Azure.Security.AzureDiskEncryptionForLinux-<version> folder in {}",
        d.path().join("var/lib/waagent").display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!d.path().join("var/lib/ade-prep/state.json").exists(), "no window was opened");
}

#[test]
fn an_unreadable_status_keeps_run_waiting_and_says_so() {
    if crate::common::need_root() {
        return;
    }
    let d = root();
    // An open window (prepare done, nothing left to undo), whose ADE status is half written.
    let mut j: serde_json::Value = serde_json::from_str(include_str!("../fixtures/state/v1.json")).unwrap();
    j["opened_at"] = ade_prep::clock::now().into();
    j["entries"] = serde_json::json!([]);
    put(d.path(), "var/lib/ade-prep/state.json", &j.to_string());
    put(
        d.path(),
        &format!("{HANDLER}/config/0.settings"),
        r#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"All"}}}]}"#,
    );
    let status = put(
        d.path(),
        &format!("{HANDLER}/status/0.status"),
        r#"[{"version":1.0,"timestampUTC":"2024-05-01T12:00:00Z","status":{"name":"Microsoft.Az"#,
    );
    let log = d.path().join("run.log");
    let mut child =
        ade_prep(d.path(), &["-v", "run"]).stderr(Stdio::from(std::fs::File::create(&log).unwrap())).spawn().unwrap();
    let want = format!("waiting for ADE: {}: ", status.display());
    crate::common::wait_for("run to say it reads the status again", 20, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains(&want)
    });
    crate::common::holds_for("run keeps waiting on the unreadable status", 300, || child.try_wait().unwrap().is_none());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reading again"), "{text}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    let after = std::fs::read_to_string(d.path().join("var/lib/ade-prep/state.json")).unwrap();
    assert!(after.contains("\"phase\": \"open\"") || after.contains("\"phase\":\"open\""), "{after}");
}

#[test]
fn a_lock_left_by_a_dead_process_is_reported_stale_by_status() {
    let d = root();
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    put(d.path(), "run/ade-prep/lock", &format!("{{\"pid\":{pid},\"command\":\"prepare\",\"since\":1714564700}}\n"));
    let o = ade_prep(d.path(), &["status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("lock: stale, pid {pid} (prepare) since 2024-05-01T11:58:20Z")), "{out}");
    let o = ade_prep(d.path(), &["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lock"], "stale");
}

#[test]
fn a_journal_from_a_newer_version_is_refused_by_restore_and_status_naming_the_file() {
    if crate::common::need_root() {
        return;
    }
    let d = root();
    let text = include_str!("../fixtures/state/v1.json").replacen("\"version\": 1", "\"version\": 2", 1);
    let p = put(d.path(), "var/lib/ade-prep/state.json", &text);
    for args in [&["restore"][..], &["status"], &["status", "--json"]] {
        let o = ade_prep(d.path(), args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!("{}: journal version 2 is from a newer ade-prep", p.display()))
                && e.contains("refusing"),
            "{args:?}: {e}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "the journal is left as it was");
}

#[test]
fn run_does_not_prepare_again_for_an_ade_request_already_handled() {
    if crate::common::need_root() {
        return;
    }
    let d = root();
    // The window of seq 0 was closed (after ADE's error, say); the path unit starts `run` again at the next boot.
    let mut j: serde_json::Value = serde_json::from_str(include_str!("../fixtures/state/v1.json")).unwrap();
    j["phase"] = "closed".into();
    j["entries"] = serde_json::json!([]);
    j["ade"] = serde_json::json!({"handler_dir": d.path().join(HANDLER), "seq": 0});
    let journal = put(d.path(), "var/lib/ade-prep/state.json", &j.to_string());
    put(
        d.path(),
        &format!("{HANDLER}/config/0.settings"),
        r#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"All"}}}]}"#,
    );
    let before = std::fs::read(&journal).unwrap();
    let log = d.path().join("run.log");
    let mut child = ade_prep(d.path(), &["-v", "run", "--force", "distro"])
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    // It stays up for ADE's next request (a retry would come with seq 1), idle, without preparing.
    crate::common::wait_for("run to go idle", 20, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("idle: watching for ADE's next request (seq 0")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("nothing to do: ADE request seq 0 was already handled"), "{text}");
    assert!(child.try_wait().unwrap().is_none(), "run ended: {text}");
    assert_eq!(std::fs::read(&journal).unwrap(), before, "the journal is untouched");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(0), "{text}");
    assert!(text.contains("stopping: no window open"), "{text}");
    assert_eq!(std::fs::read(&journal).unwrap(), before, "the journal is untouched");
}

#[test]
fn prepare_refuses_a_failed_check_with_exit_3_before_touching_anything() {
    // A machine under 7 GB of RAM (the memory check fails); no --force: exit 3 naming the check, nothing written,
    // and the system bus is not even needed (none here), as a dry run shows too.
    let d = root_with_meminfo("MemTotal:        4025432 kB\n");
    for args in [&["prepare", "--dry-run"][..], &["prepare"][..]] {
        let o = ade_prep(d.path(), args).output().unwrap();
        if args.len() == 1 && !nix::unistd::geteuid().is_root() {
            assert_eq!(o.status.code(), Some(4), "not root: {}", stderr(&o));
            continue;
        }
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("checks failed: ") && stderr(&o).contains("memory"), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    assert!(!d.path().join("var/lib/ade-prep").exists(), "no journal was written");
}

/// A root whose /proc has only what the checks read (meminfo), with no ADE and no SELinux.
fn root_with_meminfo(meminfo: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), "proc/meminfo", meminfo);
    put(d.path(), "proc/self/mountinfo", "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n");
    put(d.path(), "etc/os-release", "NAME=\"Ubuntu\"\nVERSION_ID=\"18.04\"\nID=ubuntu\n");
    d
}

#[test]
fn a_hold_list_left_with_no_window_open_is_reported_stale_by_status_and_check() {
    let d = root();
    let hold = put(d.path(), "etc/ade-prep/hold", "mongod.service\n");
    let o = ade_prep(d.path(), &["status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("stale hold list: {}", hold.display())), "{out}");
    assert!(out.contains("run `ade-prep restore` to remove it"), "{out}");
    let o = ade_prep(d.path(), &["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stale_hold_list"], hold.display().to_string());
    let o = ade_prep(d.path(), &["check"]).output().unwrap();
    assert!(stderr(&o).contains(&format!("stale hold list {} with no window open", hold.display())), "{}", stderr(&o));
    std::fs::remove_file(&hold).unwrap();
    let o = ade_prep(d.path(), &["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["stale_hold_list"].is_null(), "{v}");
}
