//! ADE's own sequences (tests/ade/replay/*.toml, each step citing ADE's or the agent's code) replayed step by step
//! inside the nspawn guest against the real `ade-prep.service`, started by the real `ade-prep.path` (the units of
//! packaging/, installed as packaging/install.sh lays them out, the binary at /usr/bin/ade-prep), with the real
//! workload units of tests/scenarios. At every `expect` the window's state is asserted (closed, opening, open,
//! frozen, restored: the journal, the workload units stopped and masked or back), and every assertion names the
//! step's `source`.
//!
//! Done for real: the guest agent's settings files (written in place), ADE's status files (in place), the request
//! queue, markers, a live `handle.py -daemon` process (a shell script of that name, so that its command line is
//! ADE's, root's, in the agent's extension slice as ADE's enable starts it), `systemctl daemon-reload`, Ubuntu's `systemctl rescue` as the stop of both ade-prep units, RHEL's
//! restart of ade-prep.service.
//!
//! Simulated, and how:
//! - `pivot_root`: done for real, but in a private mount namespace ([`pivoted_run`]): a tmpfs root with copies of
//!   /etc and /var/lib, `pivot_root . oldroot`, and `ade-prep run` started there (as RHEL restarts services into the
//!   RAM root), then SIGTERM (as `systemctl rescue`): it must say it is frozen and leave the disk unchanged. Not in
//!   the container's own namespace: there `pivot_root` would move systemd (PID 1), the bus and this test into the
//!   tmpfs, and nothing could bring them back for the next step (ADE ends that state with a reboot). For the real
//!   service, which stays in the container's namespace, the replay mounts a tmpfs on `/oldroot`: the other half of
//!   the mount-table fact ADE and ade-prep test for the RAM root (FINDINGS 23), so the service must freeze on it.
//!   Files ADE writes with `root = "ram"` are not written to the disk (they would land in the RAM copy and vanish
//!   at the reboot).
//! - `reboot`: ade-prep.service killed with SIGKILL, the daemon process killed, `/oldroot` unmounted, ade-prep's
//!   runtime folder emptied, `systemctl daemon-reload`, then ade-prep.path started again (as at boot), which starts
//!   the service. The boot id does not change (a container cannot), so the SELinux re-apply of a new boot is not
//!   exercised here.
//! - `sleep_head_start`: not slept (the head start is a setting of the test, [`HEAD_START`]: an `opening` window
//!   must be open within it).
//! - `encrypt_data`, `encrypt_os`, `stamp_settings`, `umount_all`, `swapoff`, `fuser_kill`, `telinit_u`,
//!   `umount_oldroot`, agent stops/starts, `tmpfs_root`, snaps, SELinux: nothing to do in the guest; logged.
//! - handler commands (`handler_start`/`handler_exit`): logged; ADE's own are excluded from prepare's wait anyway.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::common::{inside, settle_workloads, setup_workloads, sh, wait_for, MachineState};
use ade_prep::paths::Paths;

#[test]
fn ade_replay_in_nspawn() {
    crate::common::nspawn_suite("ade_replay", 1, 900);
}

const HANDLER: &str = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12";
const DP_HANDLER: &str = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-0.1.0.999345";
const ADE_CONFIG: &str = "/var/lib/azure_disk_encryption_config";
/// The head start the replay allows the window to open in (ADE's is 60 s; compressed, FINDINGS 26).
const HEAD_START: u64 = 40;

#[derive(serde::Deserialize, Debug)]
struct Flow {
    flow: String,
    #[serde(default)]
    then_flow: Option<String>,
    #[serde(default)]
    starts_after: Option<StartsAfter>,
    #[serde(rename = "step")]
    steps: Vec<toml::Table>,
}

#[derive(serde::Deserialize, Debug)]
struct StartsAfter {
    flow: String,
    through: String,
}

fn load(name: &str) -> Flow {
    let p = PathBuf::from("/work/tests/ade/replay").join(format!("{name}.toml"));
    toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn s<'a>(t: &'a toml::Table, k: &str) -> &'a str {
    t.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

struct Replay {
    flow: String,
    handler: PathBuf,
    daemon: Option<Child>,
    frozen_journal: Option<String>,
    oldroot: bool,
}

fn journal() -> String {
    std::fs::read_to_string(Paths::system().state_file()).unwrap_or_default()
}

fn active(unit: &str) -> String {
    String::from_utf8_lossy(&sh(&["systemctl", "is-active", unit]).stdout).trim().to_string()
}

impl Replay {
    fn max_status_seq(&self) -> u64 {
        std::fs::read_dir(self.handler.join("config"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".settings")?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    fn step(&mut self, st: &toml::Table) {
        let verb = s(st, "do");
        let source = s(st, "source");
        let ram = s(st, "root") == "ram";
        let ctx = format!("{} step {verb} ({source})", self.flow);
        println!("replay: {ctx}");
        match verb {
            "install_handler" => {
                for d in ["config", "status"] {
                    std::fs::create_dir_all(self.handler.join(d)).unwrap();
                }
            }
            "write_settings" => {
                let seq = st["seq"].as_integer().unwrap();
                let text = serde_json::json!({"runtimeSettings": [{"handlerSettings": {
                    "protectedSettingsCertThumbprint": "1BE9A13AA1321C7C515EF109746998BAB6D86FD1",
                    "protectedSettings": "MIIByAYJKoZIhvcNAQcDoIIBuTCCAbUCAQAx",
                    "publicSettings": {"EncryptionOperation": s(st, "operation"), "VolumeType": s(st, "volume_type")}
                }}]});
                std::fs::create_dir_all(self.handler.join("config")).unwrap();
                // In place, as the agent does (open "wb", write): no rename.
                std::fs::write(self.handler.join(format!("config/{seq}.settings")), text.to_string()).unwrap();
            }
            "write_mrseq" => {
                // ADE's save_seq (HandlerUtil.py:408-413), in the handler folder.
                std::fs::write(self.handler.join("mrseq"), st["seq"].as_integer().unwrap().to_string()).unwrap();
            }
            "upgrade" => {
                // The agent's upgrade: a new version's folder with the old one's config, mrseq and status copied
                // (WALA exthandlers.py:1389-1408); the old folder stays until its uninstall.
                let new = self.handler.with_file_name(format!(
                    "Microsoft.Azure.Security.AzureDiskEncryptionForLinux-{}",
                    s(st, "version")
                ));
                for sub in ["config", "status", "main"] {
                    std::fs::create_dir_all(new.join(sub)).unwrap();
                    for e in std::fs::read_dir(self.handler.join(sub)).into_iter().flatten().flatten() {
                        std::fs::copy(e.path(), new.join(sub).join(e.file_name())).unwrap();
                    }
                }
                if self.handler.join("mrseq").exists() {
                    std::fs::copy(self.handler.join("mrseq"), new.join("mrseq")).unwrap();
                }
                self.handler = new;
            }
            "reject_settings" => {
                let seq = st["seq"].as_integer().unwrap();
                let c = self.handler.join("config");
                std::fs::copy(c.join(format!("{seq}.settings")), c.join(format!("{seq}.settings.rejected"))).unwrap();
            }
            "write_status" if ram => println!("  (RAM root: not on the disk)"),
            "write_status" => {
                let sub = serde_json::json!({"data": s(st, "data"), "os": s(st, "os")}).to_string();
                let text = serde_json::json!([{"version": 1.0, "timestampUTC": "2026-01-01T00:00:00Z", "status": {
                    "name": "Microsoft.Azure.Security.AzureDiskEncryptionForLinux", "operation": s(st, "op"),
                    "status": s(st, "status"), "code": st["code"].clone(),
                    "formattedMessage": {"lang": "en-US", "message": s(st, "message")},
                    "substatus": [{"name": "Microsoft.Azure.Security.AzureDiskEncryptionForLinux",
                        "operation": s(st, "op"), "status": s(st, "status"), "code": st["code"].clone(),
                        "formattedMessage": {"lang": "en-US", "message": sub}}]}}]);
                std::fs::create_dir_all(self.handler.join("status")).unwrap();
                let seq = self.max_status_seq();
                std::fs::write(self.handler.join(format!("status/{seq}.status")), text.to_string()).unwrap();
            }
            "write_queue" | "write_config" | "write_marker" | "remove_queue" if ram => {
                println!("  (RAM root: not on the disk)")
            }
            "write_queue" => {
                std::fs::create_dir_all(ADE_CONFIG).unwrap();
                let q = format!(
                    "[encryption_request_queue]\nencryptionoperation = {}\nvolumetype = {}\n",
                    s(st, "command"),
                    s(st, "volume_type")
                );
                std::fs::write(Path::new(ADE_CONFIG).join("azure_crypt_request_queue.ini"), q).unwrap();
            }
            "remove_queue" => {
                let _ = std::fs::remove_file(Path::new(ADE_CONFIG).join("azure_crypt_request_queue.ini"));
            }
            "write_config" => {
                std::fs::create_dir_all(ADE_CONFIG).unwrap();
                let c = format!("[azure_crypt_config]\nvolumetype = {}\n", s(st, "volume_type"));
                std::fs::write(Path::new(ADE_CONFIG).join("azure_crypt_config.ini"), c).unwrap();
            }
            "write_marker" => {
                let d = Path::new(ADE_CONFIG).join("os_encryption_markers");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(s(st, "name")), "").unwrap();
            }
            "start_daemon" => {
                if self.daemon.is_none() {
                    let script = self.handler.join("main/handle.py");
                    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
                    std::fs::write(&script, "sleep 100000\nexit 0\n").unwrap();
                    // As ADE's enable starts it, in the scope the agent runs enable in (WALA cgroupapi.py:315,
                    // slice name :76-83): ade-prep recognises ADE's daemon only there (machine::started_as_ade).
                    let slice = "--slice=azure-vmextensions-Microsoft.Azure.Security.AzureDiskEncryptionForLinux.slice";
                    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let unit = format!("--unit=enable_{}_{n}", std::process::id());
                    let mut c = Command::new("systemd-run");
                    c.args(["--scope", slice, &unit, "/bin/sh"]).arg(&script).arg("-daemon");
                    self.daemon = Some(c.spawn().unwrap());
                }
            }
            "stop_daemon" => self.stop_daemon(),
            "daemon_reload" => assert!(sh(&["systemctl", "daemon-reload"]).status.success(), "{ctx}"),
            "pivot_root" => {
                std::fs::create_dir_all("/oldroot").unwrap();
                assert!(sh(&["mount", "-t", "tmpfs", "ramroot", "/oldroot"]).status.success(), "{ctx}");
                self.oldroot = true;
                self.frozen_journal = Some(journal());
                pivoted_run(&ctx);
            }
            "stop_services" => {
                // `systemctl rescue` stops both ade-prep units (FINDINGS 22).
                assert!(sh(&["systemctl", "stop", "ade-prep.service", "ade-prep.path"]).status.success(), "{ctx}");
            }
            "restart_services" => {
                // RHEL restarts every running service into the RAM root (FINDINGS 22).
                if active("ade-prep.service") == "active" {
                    assert!(sh(&["systemctl", "restart", "ade-prep.service"]).status.success(), "{ctx}");
                }
            }
            "reboot" => self.reboot(&ctx),
            "expect" => self.expect(s(st, "window"), &format!("{ctx}: {}", s(st, "why"))),
            "handler_start" | "handler_exit" | "sleep_head_start" | "encrypt_data" | "encrypt_os"
            | "stamp_settings" | "stop_snaps" | "selinux_permissive" | "umount_all" | "stop_agent" | "start_agent"
            | "tmpfs_root" | "swapoff" | "fuser_kill" | "telinit_u" | "umount_oldroot" => {
                println!("  (simulated: nothing to do here)")
            }
            other => panic!("{ctx}: unknown verb {other}"),
        }
    }

    fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn reboot(&mut self, ctx: &str) {
        let _ = sh(&["systemctl", "kill", "-s", "KILL", "ade-prep.service"]);
        let _ = sh(&["systemctl", "stop", "ade-prep.service", "ade-prep.path"]);
        let _ = sh(&["systemctl", "reset-failed", "ade-prep.service"]);
        self.stop_daemon();
        if self.oldroot {
            assert!(sh(&["umount", "/oldroot"]).status.success(), "{ctx}");
            self.oldroot = false;
        }
        self.frozen_journal = None;
        assert!(sh(&["systemctl", "daemon-reload"]).status.success(), "{ctx}");
        assert!(sh(&["systemctl", "start", "ade-prep.path"]).status.success(), "{ctx}");
    }

    fn expect(&mut self, window: &str, ctx: &str) {
        // The real unit runs without the tests' selinuxfs stand-in (the guest has no SELinux): units and journal only.
        let open = || prepared(&MachineState::read());
        let base_back = |b: &MachineState| {
            let s = MachineState::read();
            !s.window_open && s.units == b.units
        };
        match window {
            "closed" => {
                std::thread::sleep(Duration::from_secs(1));
                let s = MachineState::read();
                assert!(!s.window_open && !prepared(&s), "{ctx}: a window opened: {s:?}");
            }
            "opening" => wait_for(&format!("{ctx}: the window open within the head start"), HEAD_START, open),
            "open" => {
                wait_for(&format!("{ctx}: the window open, journal phase open"), HEAD_START, || open() && phase_open());
                // And it stays open (keep waiting): nothing restores it a moment later.
                std::thread::sleep(Duration::from_secs(1));
                assert!(open() && phase_open(), "{ctx}: the window did not stay open: {:?}", MachineState::read());
            }
            "frozen" => {
                std::thread::sleep(Duration::from_secs(1));
                let s = MachineState::read();
                assert!(s.window_open, "{ctx}: the journal on the disk no longer says open: {s:?}");
                assert!(prepared(&s), "{ctx}: something was restored in the RAM root: {s:?}");
                if let Some(j) = &self.frozen_journal {
                    assert_eq!(&journal(), j, "{ctx}: the journal was written while frozen");
                }
            }
            "restored" => {
                let b = BASE.get().unwrap();
                wait_for(&format!("{ctx}: restored"), 30, || base_back(b));
                settle_workloads();
            }
            other => panic!("{ctx}: unknown window {other}"),
        }
    }
}

/// The real pivot: in a private mount namespace, a tmpfs root with copies of /etc and /var/lib (ADE copies more;
/// /usr and the rest are bound, read-only use), `/dev /proc /sys /run` bound, `pivot_root . oldroot`, then `ade-prep
/// run` (the binary the service runs) from that root, stopped with SIGTERM after 4 s as `systemctl rescue` would.
/// It must say it is frozen, and nothing may change on the disk: the journal, the units, the window.
fn pivoted_run(ctx: &str) {
    let before = (journal(), MachineState::read());
    let script = r#"set -e
R=/tmp/tmproot
mkdir -p $R && mount -t tmpfs ramroot $R
for d in etc var/lib; do mkdir -p $R/$d; cp -a /$d/. $R/$d/; done
for d in usr dev proc sys run; do mkdir -p $R/$d; mount --rbind /$d $R/$d; done
for l in bin sbin lib lib64; do [ -L /$l ] && cp -a /$l $R/; done
mkdir -p $R/oldroot $R/tmp
cd $R
pivot_root . oldroot
exec /usr/bin/timeout --preserve-status -s TERM 4 /usr/bin/env RUST_LOG=info /usr/bin/ade-prep run --force distro
"#;
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c", script])
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    println!("  pivoted `ade-prep run`: {}", out.trim().replace('\n', "\n    "));
    assert!(o.status.success(), "{ctx}: ade-prep run after a real pivot_root: {:?}\n{out}", o.status);
    assert!(out.contains("frozen: / is a tmpfs"), "{ctx}: ade-prep run in the pivoted root did not freeze:\n{out}");
    assert_eq!((journal(), MachineState::read()), before, "{ctx}: ade-prep run in the pivoted root changed the disk");
    println!("MEASURED: {ctx}: after a real pivot_root, ade-prep run froze and changed nothing");
}

/// The journal's phase is Open.
fn phase_open() -> bool {
    use ade_prep::window::store::Store;
    ade_prep::window::store::FileStore::new(&Paths::system())
        .load()
        .ok()
        .flatten()
        .is_some_and(|r| r.phase == ade_prep::window::phase::Phase::Open)
}

/// The window is open and every workload unit stopped and runtime-masked.
fn prepared(s: &MachineState) -> bool {
    s.window_open && s.units.iter().all(|(_, a, m, f)| a == "inactive" && *m && *f)
}

static BASE: std::sync::OnceLock<MachineState> = std::sync::OnceLock::new();

/// The real units, as packaging/install.sh installs them, the binary at /usr/bin/ade-prep; `--force distro`
/// through a drop-in (the guest is Debian, which ADE does not support).
fn install_units() {
    let bin = std::env::var("ADE_PREP_BIN").unwrap();
    std::fs::copy(bin, "/usr/bin/ade-prep").unwrap();
    for u in ["ade-prep.service", "ade-prep.path"] {
        std::fs::copy(format!("/work/packaging/usr/lib/systemd/system/{u}"), format!("/etc/systemd/system/{u}"))
            .unwrap();
    }
    std::fs::create_dir_all("/etc/systemd/system/ade-prep.service.d").unwrap();
    std::fs::write(
        "/etc/systemd/system/ade-prep.service.d/replay.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/ade-prep run --force distro\n",
    )
    .unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
}

fn reset() {
    let _ = sh(&["systemctl", "stop", "ade-prep.path", "ade-prep.service"]);
    let _ = sh(&["systemctl", "reset-failed", "ade-prep.service"]);
    if MachineState::read().window_open {
        let _ = sh(&["/usr/bin/ade-prep", "restore"]);
    }
    let _ = std::fs::remove_dir_all("/var/lib/waagent");
    let _ = std::fs::remove_dir_all(ADE_CONFIG);
    let _ = std::fs::remove_file(Paths::system().state_file());
    std::fs::create_dir_all("/var/lib/waagent").unwrap();
    settle_workloads();
    assert!(sh(&["systemctl", "start", "ade-prep.path"]).status.success());
}

#[test]
#[ignore = "runs inside the nspawn container, started by ade_replay_in_nspawn"]
fn in_container_every_replay_flow() {
    if !inside() {
        return;
    }
    setup_workloads();
    settle_workloads();
    install_units();
    let _ = BASE.set(MachineState::baseline());
    let mut names: Vec<String> = std::fs::read_dir("/work/tests/ade/replay")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    for name in names {
        reset();
        let flow = load(&name);
        let handler = if name == "dual-pass" { DP_HANDLER } else { HANDLER };
        let mut r = Replay {
            flow: flow.flow.clone(),
            handler: handler.into(),
            daemon: None,
            frozen_journal: None,
            oldroot: false,
        };
        if let Some(sa) = &flow.starts_after {
            let before = load(&sa.flow);
            let upto = before.steps.iter().position(|t| s(t, "do") == sa.through).unwrap();
            r.flow = format!("{} (prelude from {})", flow.flow, before.flow);
            for st in &before.steps[..=upto] {
                r.step(st);
            }
            r.flow = flow.flow.clone();
        }
        for st in &flow.steps {
            r.step(st);
        }
        if let Some(then) = &flow.then_flow {
            let then = load(then.split_whitespace().next().unwrap());
            let from = then.steps.iter().position(|t| s(t, "do") == "sleep_head_start").unwrap();
            r.flow = format!("{} then {}", flow.flow, then.flow);
            for st in &then.steps[from..] {
                r.step(st);
            }
        }
        r.stop_daemon();
        if r.oldroot {
            let _ = sh(&["umount", "/oldroot"]);
        }
        println!("MEASURED: replay {name} done");
    }
    reset();
}
