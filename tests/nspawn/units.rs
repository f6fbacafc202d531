//! The package's own systemd units (packaging/: ade-prep.service, ade-prep.path, ade-prep-generator) installed in
//! the nspawn guests as the RPM installs them (packaging/install.sh, then the spec's %post), on both systemd 252
//! and RHEL 7's 219 (issue 18): they load without warnings, `systemd-analyze verify` accepts them, the path unit
//! is enabled and started by %post, starts the service when ADE's settings arrive, the generator masks the
//! units of /etc/ade-prep/hold, and the deadline timer (enabled and started by %post) restores a window past its
//! recorded deadline and leaves one not yet due alone.
//!
//! The host side boots each guest once and runs the `in_container_*` test inside it (see tests/common).

use std::path::Path;

use crate::common::{self, inside, sh, wait_for};

#[test]
fn package_units_in_nspawn() {
    common::nspawn_suite("units", 1, 300);
}

const HANDLER: &str = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.1";

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn show(unit: &str, prop: &str) -> String {
    common::unit_prop(unit, prop)
}

fn journal() -> String {
    text(&sh(&["journalctl", "-q", "--no-pager", "-o", "cat"]))
}

/// The `%post` scriptlet of rpm/ade-prep.spec.
fn rpm_post() -> String {
    let spec = std::fs::read_to_string("/work/rpm/ade-prep.spec").expect("rpm/ade-prep.spec");
    let body = spec.split("\n%post\n").nth(1).expect("a %post section");
    body.split("\n%").next().unwrap().to_string()
}

#[test]
#[ignore = "runs inside the nspawn container, started by package_units_in_nspawn"]
fn in_container_package_units_load_start_and_generate() {
    if !inside() {
        return;
    }
    let guest = std::env::var("ADE_GUEST").unwrap_or_default();
    // install.sh needs the generated docs; their content does not matter here.
    let docs = Path::new("/tmp/ade-docs");
    for f in ["man/ade-prep.1", "completions/ade-prep.bash", "completions/_ade-prep", "completions/ade-prep.fish"] {
        std::fs::create_dir_all(docs.join(f).parent().unwrap()).unwrap();
        std::fs::write(docs.join(f), "").unwrap();
    }
    let bin = std::env::var("ADE_PREP_BIN").expect("ADE_PREP_BIN");
    let o = sh(&["/work/packaging/install.sh", "/", &bin, "/tmp/ade-docs"]);
    assert!(o.status.success(), "install.sh: {}", text(&o));
    let o = sh(&["sh", "-c", &rpm_post(), "post", "1"]);
    assert!(o.status.success(), "%post: {}", text(&o));

    // Every check is made and the failures are reported together: one run shows all that a systemd objects to.
    let mut problems: Vec<String> = vec![];
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };

    // Loaded, no directive this systemd does not know or cannot parse.
    for u in ["ade-prep.service", "ade-prep.path"] {
        check(show(u, "LoadState") == "loaded", format!("{u} not loaded: {}", text(&sh(&["systemctl", "status", u]))));
    }
    let j = journal();
    let warnings: Vec<&str> = j
        .lines()
        .filter(|l| l.contains("ade-prep.") && (l.contains("Unknown") || l.contains("Failed to parse")))
        .collect();
    check(warnings.is_empty(), format!("systemd warns about the package's units:\n{}", warnings.join("\n")));
    // `systemd-analyze verify`; the guests have no man, and the man page is not the point here.
    let o = sh(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/ade-prep.service",
        "/usr/lib/systemd/system/ade-prep.path",
    ]);
    let v = text(&o);
    check(o.status.success() && !v.contains("ade-prep."), format!("systemd-analyze verify ({}):\n{v}", o.status));

    // %post enabled and started the path unit.
    check(show("ade-prep.path", "UnitFileState") == "enabled", "ade-prep.path not enabled by %post".into());
    check(
        show("ade-prep.path", "ActiveState") == "active",
        format!("ade-prep.path not started by %post: {}", text(&sh(&["systemctl", "status", "ade-prep.path"]))),
    );

    // ADE's settings arrive: the path unit starts the service, which settles (READY=1, or a documented exit code
    // kept active by SuccessExitStatus= and RemainAfterExit=) instead of failing.
    let dir = Path::new(HANDLER).join("config");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = serde_json::json!({"runtimeSettings": [{"handlerSettings": {
        "publicSettings": {"EncryptionOperation": "EnableEncryption", "VolumeType": "Data",
                           "KeyVaultURL": "https://kv.vault.azure.net/", "SequenceVersion": "seq-1"}
    }}]});
    std::fs::write(dir.join("1.settings"), settings.to_string()).unwrap();
    let svc = |p: &str| show("ade-prep.service", p);
    wait_for("ade-prep.service to be started by ade-prep.path", 30, || svc("ExecMainStartTimestampMonotonic") != "0");
    wait_for("ade-prep.service to settle", 60, || svc("ActiveState") != "activating");
    check(
        (svc("ActiveState"), svc("Result")) == ("active".into(), "success".into()),
        format!(
            "ade-prep.service started by the path unit: {}/{}:\n{}\n{}",
            svc("ActiveState"),
            svc("Result"),
            text(&sh(&["systemctl", "status", "-l", "--no-pager", "ade-prep.service", "ade-prep.path"])),
            text(&sh(&["journalctl", "-q", "--no-pager", "-u", "ade-prep.service", "-u", "ade-prep.path"]))
        ),
    );
    let o = sh(&["systemctl", "stop", "ade-prep.path", "ade-prep.service"]);
    check(o.status.success(), format!("stop: {}", text(&o)));
    std::fs::remove_dir_all("/var/lib/waagent").unwrap();

    // The generator: a unit listed in /etc/ade-prep/hold is masked after a daemon-reload, and loads again once the
    // list is gone.
    std::fs::write("/etc/systemd/system/ade-held.service", "[Service]\nExecStart=/bin/sleep 600\n").unwrap();
    std::fs::write("/etc/ade-prep/hold", "ade-held.service\n").unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    check(show("ade-held.service", "LoadState") == "masked", format!("generator did not mask:\n{}", journal()));
    let o = sh(&["systemctl", "start", "ade-held.service"]);
    check(!o.status.success(), format!("a held unit started: {}", text(&o)));
    std::fs::remove_file("/etc/ade-prep/hold").unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    check(show("ade-held.service", "LoadState") == "loaded", "released unit not loaded".into());
    let o = sh(&["systemctl", "start", "ade-held.service"]);
    check(o.status.success(), format!("released unit: {}", text(&o)));

    deadline_timer(&mut check);
    assert!(problems.is_empty(), "on systemd {guest}:\n- {}", problems.join("\n- "));
}

/// An open window whose only change is `unit` stopped (it was active), recorded with `deadline`.
fn write_window(unit: &str, deadline: u64) {
    let mut dead = std::process::Command::new("/bin/true").spawn().unwrap();
    dead.wait().unwrap();
    let now = ade_prep::clock::now();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let j = serde_json::json!({
        "version": 1, "phase": "open", "opened_at": now - 7200, "updated_at": now - 7200,
        "boot_id": boot_id.trim(), "owner_pid": dead.id(), "mount": "/", "deadline": deadline,
        "ade": {"handler_dir": HANDLER, "seq": 0},
        "entries": [{"seq": 1, "change": {"kind": "stop_unit", "unit": unit, "active_state_before": "active"},
                     "status": "done", "at": now - 7200, "note": null}]
    });
    let path = ade_prep::paths::Paths::system().state_file();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, j.to_string()).unwrap();
}

fn window_open() -> bool {
    use ade_prep::window::store::Store;
    ade_prep::window::store::FileStore::new(&ade_prep::paths::Paths::system())
        .load()
        .ok()
        .flatten()
        .is_some_and(|r| r.phase == ade_prep::window::phase::Phase::Open)
}

/// The deadline timer as installed and enabled by %post: loaded, active, every 10 minutes from 5 minutes after
/// boot; its service leaves a window not yet due alone and restores one past its recorded deadline.
fn deadline_timer(check: &mut dyn FnMut(bool, String)) {
    let t = "ade-prep-deadline.timer";
    check(show(t, "LoadState") == "loaded", format!("{t} not loaded: {}", text(&sh(&["systemctl", "status", t]))));
    check(show(t, "UnitFileState") == "enabled", format!("{t} not enabled by %post"));
    check(show(t, "ActiveState") == "active", format!("{t} not started by %post"));
    // 252's `systemctl show` prints the timers; 219's says [unprintable]: there they are read over D-Bus (busctl,
    // in 219), in microseconds.
    let timers = show(t, "TimersMonotonic");
    let timers_ok = if timers.contains("unprintable") {
        let o = sh(&[
            "busctl",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/ade_2dprep_2ddeadline_2etimer",
            "org.freedesktop.systemd1.Timer",
            "TimersMonotonic",
        ]);
        let v = text(&o);
        (v.contains("\"OnBootUSec\" 300000000") && v.contains("\"OnUnitActiveUSec\" 600000000"), v)
    } else {
        (timers.contains("OnBootUSec=5min") && timers.contains("OnUnitActiveUSec=10min"), timers)
    };
    check(timers_ok.0, format!("{t}: TimersMonotonic={}", timers_ok.1));
    check(show(t, "Unit") == "ade-prep-deadline.service", format!("{t} triggers {}", show(t, "Unit")));

    let unit = "ade-held.service";
    let svc = "ade-prep-deadline.service";
    let run_service = || {
        let o = sh(&["systemctl", "start", svc]);
        (o.status.success(), format!("{}\n{}", text(&o), text(&sh(&["journalctl", "-q", "--no-pager", "-u", svc]))))
    };
    // Not yet due: the unit stays stopped, the window open.
    assert!(sh(&["systemctl", "stop", unit]).status.success());
    write_window(unit, ade_prep::clock::now() + 3600);
    let (ok, log) = run_service();
    check(ok, format!("{svc} with a window not yet due: {log}"));
    check(window_open(), format!("{svc} closed a window not yet due: {log}"));
    check(show(unit, "ActiveState") == "inactive", format!("{svc} restarted {unit} before the deadline: {log}"));
    // Past its recorded deadline: restored.
    write_window(unit, ade_prep::clock::now() - 60);
    let (ok, log) = run_service();
    check(ok, format!("{svc} with a window past its deadline: {log}"));
    check(!window_open(), format!("{svc} left the window past its deadline open: {log}"));
    check(show(unit, "ActiveState") == "active", format!("{svc} did not start {unit} again: {log}"));
    let _ = sh(&["systemctl", "stop", unit]);
}
