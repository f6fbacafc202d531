//! Journal entries with fields: `prepare` and `restore` run as oneshot units (`systemctl start` waits), so that their
//! stderr is the journal's stream, and `journalctl MESSAGE_ID=... -o json` must find each event with its UNIT= and
//! WINDOW_PHASE= fields, as docs/journal.md documents. Against the real journald of the nspawn container. Also the
//! live progress of the same two on a pseudo-terminal (`script`).

use std::process::Command;

use ade_prep::events::MESSAGE_IDS;
use serde_json::Value;

use crate::common::{ade_prep_cmd, inside, settle_workloads, setup_workloads, sh};

#[test]
fn journal_fields_in_nspawn() {
    crate::common::nspawn_suite("journal", 2, 300);
}

fn id(kind: &str) -> &'static str {
    MESSAGE_IDS.iter().find(|(k, _)| *k == kind).map(|(_, id)| *id).expect(kind)
}

/// `ade-prep ARGS` as the service `unit` (a oneshot unit file: `systemd-run --wait` is newer than 219), waited for
/// by its start job; its exit code.
fn as_unit(unit: &str, args: &[&str]) -> Option<i32> {
    let inner = ade_prep_cmd(args);
    // Each word single-quoted for systemd's ExecStart= parser ('$' doubled: systemd would expand it).
    // An absolute path: 219 ignores an ExecStart= whose executable is not one.
    let prog = std::path::Path::new(inner.get_program());
    let prog = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(prog))
        .find(|p| p.exists())
        .unwrap_or_else(|| prog.to_path_buf());
    let words: Vec<String> = std::iter::once(prog.as_os_str())
        .chain(inner.get_args())
        .map(|w| format!("'{}'", w.to_string_lossy().replace('$', "$$")))
        .collect();
    std::fs::write(
        format!("/run/systemd/system/{unit}.service"),
        format!("[Service]\nType=oneshot\nExecStart={}\n", words.join(" ")),
    )
    .unwrap();
    let _ = sh(&["systemctl", "daemon-reload"]);
    let _ = sh(&["systemctl", "start", &format!("{unit}.service")]);
    crate::common::unit_prop(&format!("{unit}.service"), "ExecMainStatus").parse().ok()
}

/// The entries of `unit` with the MESSAGE_ID of `kind`, once at least one is there (219's journalctl has no
/// `--sync`: the stream may still be in journald's hands for a moment after the unit ended).
fn entries(unit: &str, kind: &str) -> Vec<Value> {
    let t = std::time::Instant::now();
    loop {
        let found = entries_now(unit, kind);
        if !found.is_empty() {
            return found;
        }
        if t.elapsed() > std::time::Duration::from_secs(10) {
            let all = sh(&["journalctl", "--no-pager", "-o", "verbose", "-u", &format!("{unit}.service")]);
            panic!("no {kind} entry of {unit} within 10 s; its journal:\n{}", String::from_utf8_lossy(&all.stdout));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The entries of `unit` with the MESSAGE_ID of `kind` the journal has now, by `_SYSTEMD_UNIT=` (what `journalctl
/// -u` shows an operator). journald before 232-ish (219 here) finds a sender's unit in /proc when it reads the
/// entry: ade-prep waits at exit until journald has read all it sent (src/events.rs `sync_journal`), else the
/// entries of its last moments have no unit on 219.
fn entries_now(unit: &str, kind: &str) -> Vec<Value> {
    let m = format!("MESSAGE_ID={}", id(kind));
    let u = format!("_SYSTEMD_UNIT={unit}.service");
    let o = sh(&["journalctl", "--no-pager", "-o", "json", &m, &u]);
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("journalctl -o json")).collect()
}

#[test]
#[ignore = "runs inside the nspawn container, started by journal_fields_in_nspawn"]
fn in_container_prepare_and_restore_write_entries_with_fields() {
    if !inside() {
        return;
    }
    setup_workloads();
    settle_workloads();
    let tag = std::process::id();
    let (prep, rest) = (format!("ade-prep-evprep-{tag}"), format!("ade-prep-evrest-{tag}"));
    assert_eq!(as_unit(&prep, &["prepare", "--force", "distro"]), Some(0), "prepare as a unit");
    let restored = as_unit(&rest, &["restore"]);

    let opened = entries(&prep, "window-opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["WINDOW_PHASE"], "preparing");
    assert!(opened[0]["MESSAGE"].as_str().unwrap().starts_with("window opened: "), "{opened:?}");

    let stopped = entries(&prep, "unit-stopped");
    let units: Vec<&str> = stopped.iter().filter_map(|e| e["UNIT"].as_str()).collect();
    for u in crate::common::WORKLOAD_UNITS {
        assert!(units.contains(&u), "no unit-stopped entry with UNIT={u}: {units:?}");
    }
    assert!(stopped
        .iter()
        .all(|e| e["WINDOW_PHASE"] == "preparing" && e["MESSAGE"].as_str().unwrap().contains(" in ")));

    let selinux = entries(&prep, "selinux-set");
    assert_eq!(selinux.len(), 1, "{selinux:?}");
    assert_eq!(selinux[0]["MESSAGE"], "SELinux set to permissive");

    assert_eq!(restored, Some(0), "restore as a unit");
    let closed = entries(&rest, "window-closed");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["WINDOW_PHASE"], "closed");
    let started: Vec<String> =
        entries(&rest, "unit-started").iter().filter_map(|e| e["UNIT"].as_str().map(String::from)).collect();
    assert!(started.iter().any(|u| u == "ade-db.service"), "{started:?}");
    // Read after the restore's other entries arrived: its stream is in the journal by now.
    assert!(entries_now(&rest, "restore-incomplete").is_empty());
}

/// `ade-prep ARGS` on a pseudo-terminal (`script`): its exit code and the screen.
fn on_terminal(args: &[&str]) -> (Option<i32>, String) {
    let inner = ade_prep_cmd(args);
    let mut line = vec![inner.get_program().to_string_lossy().into_owned()];
    // Single quotes for the shell script runs the line with; none of the arguments holds one but the sh -c script.
    line.extend(inner.get_args().map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"))));
    let o = Command::new("script").args(["-qefc", &line.join(" "), "/dev/null"]).output().expect("script");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
#[ignore = "runs inside the nspawn container, started by journal_fields_in_nspawn"]
fn in_container_prepare_and_restore_show_live_progress_on_a_terminal() {
    if !inside() {
        return;
    }
    setup_workloads();
    // Two units slow enough for a live line to be drawn whatever the machine's speed (a unit that stops in a
    // millisecond may never show one): ade-slow@1 takes 2 s to stop, ade-slowstart 4 s to start.
    std::fs::write(
        "/etc/ade-prep/config.d/60-slow.toml",
        "[workloads.slow]\nunits = [\"ade-slow@1.service\", \"ade-slowstart.service\"]\n",
    )
    .unwrap();
    let _ = sh(&["systemctl", "start", "ade-slow@1.service", "ade-slowstart.service"]);
    settle_workloads();
    let (code, screen) = on_terminal(&["prepare", "--force", "distro"]);
    assert_eq!(code, Some(0), "{screen}");
    // A spinner line per unit while it stops, with its timeout, redrawn; then the result with the time it took.
    assert!(screen.contains("stopping ade-slow@1.service (timeout "), "{screen:?}");
    assert!(screen.contains("\x1b["), "not redrawn: {screen:?}");
    for u in crate::common::WORKLOAD_UNITS {
        let done = format!("stopped {u} in ");
        assert!(screen.contains(&done), "no {done:?}: {screen:?}");
    }
    assert!(screen.contains("SELinux set to permissive"), "{screen:?}");
    let (code, screen) = on_terminal(&["restore"]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("starting ade-slowstart.service (timeout "), "{screen:?}");
    assert!(screen.contains("started ade-db.service in "), "{screen:?}");
    assert!(screen.contains("window closed: "), "{screen:?}");
    std::fs::remove_file("/etc/ade-prep/config.d/60-slow.toml").unwrap();
    let _ = sh(&["systemctl", "stop", "ade-slow@1.service", "ade-slowstart.service"]);
}
