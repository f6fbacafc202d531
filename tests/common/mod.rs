//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Whether a test that cannot run must fail instead of skipping: always under the test command (tests/run.sh sets
/// `ADE_TEST_COMMAND=1`) and in CI (`CI=true`, which .ci/run exports), since both install everything the tests
/// need; also under `ADE_REQUIRE_NSPAWN=1`, for a hand run of one suite. Only a hand run of `cargo test` skips.
pub fn skips_fail() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("ADE_TEST_COMMAND").as_deref() == Ok("1")
        || std::env::var("ADE_REQUIRE_NSPAWN").as_deref() == Ok("1")
}

/// Reports that a test cannot run here: a failure where [`skips_fail`], else `SKIPPED: why` on the terminal (past
/// libtest's capture) and the test returns early. The one skip policy of every test.
pub fn skip(why: &str) -> bool {
    if skips_fail() {
        panic!("cannot run under the test command or CI, where a skip is a failure: {why}");
    }
    visible(&format!("SKIPPED: {why}"));
    true
}

/// True (after reporting a skip) unless running as root.
pub fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        false
    } else {
        skip("needs root")
    }
}

// ---- the nspawn harness, for tests that act on a real systemd ----------------------------------------------

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Set (to 1) only inside the container, by [`nspawn_suite`]: the `in_container_*` tests change the machine.
pub const IN_CONTAINER: &str = "ADE_IN_CONTAINER";

/// Writes past libtest's output capture, so that skips and measurements show on a normal `cargo test`.
pub fn visible(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A skip of an nspawn suite: [`skip`], naming the suite.
pub fn skip_nspawn(suite: &str, why: &str) {
    skip(&format!("{suite}: {why}"));
}

/// Where a host file of this build is seen inside the container: under /work when it is in the worktree, else
/// in its folder bound read-only at `mount`.
fn inner_path(file: &Path, mount: &str, binds: &mut Vec<String>) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match file.strip_prefix(manifest) {
        Ok(rel) => Path::new("/work").join(rel),
        Err(_) => {
            binds.push(format!("{}:{mount}", file.parent().expect("a folder").display()));
            Path::new(mount).join(file.file_name().expect("a file name"))
        }
    }
}

/// One guest (nspawn container or qemu VM) at a time per test binary: the suites grouped into one binary ran one
/// after the other as separate binaries, and their timeouts assume a machine not shared with another guest.
pub fn one_guest() -> std::sync::MutexGuard<'static, ()> {
    static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guests an nspawn suite runs on, each in turn: `ADE_NSPAWN_GUESTS` (space-separated), default `252 219`.
/// 252 is Debian 12's systemd (harness rootfs-ns), 219 RHEL 7's (rootfs-219, built from source by
/// tests/harness/build-guest.sh); see `nspawn-run.sh -g`.
pub fn nspawn_guests() -> Vec<String> {
    let v = std::env::var("ADE_NSPAWN_GUESTS").unwrap_or_else(|_| "252 219".into());
    v.split_whitespace().map(String::from).collect()
}

/// Runs the suite on each of [`nspawn_guests`] (see [`nspawn_suite_on`]), the guests at the same time (their
/// containers are independent, and the suites mostly wait on timeouts: in sequence the second guest would add its
/// whole run to the test command); then the failures of all of them are reported together.
pub fn nspawn_suite(suite: &str, expected: usize, timeout_secs: u64) {
    nspawn_suite_each(suite, |g| nspawn_suite_on(suite, g, expected, timeout_secs));
}

/// Runs `on_guest` for each of [`nspawn_guests`] at the same time (one suite at a time in this binary), then
/// reports the failures of all of them together.
pub fn nspawn_suite_each(suite: &str, on_guest: impl Fn(&str) -> Result<(), String> + Sync) {
    if std::env::var(IN_CONTAINER).is_ok() {
        return;
    }
    let _one = one_guest();
    let on_guest = &on_guest;
    let failed: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = nspawn_guests().into_iter().map(|g| (g.clone(), s.spawn(move || on_guest(&g)))).collect();
        runs.into_iter()
            .filter_map(|(g, h)| match h.join() {
                Ok(r) => r.err().map(|e| format!("[guest {g}] {e}")),
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    assert!(failed.is_empty(), "{suite} failed on {} guest(s):\n{}", failed.len(), failed.join("\n\n"));
}

/// Boots the harness container of `guest` once (this worktree at /work) and runs this test binary inside it with
/// `--ignored in_container_`, the ade-prep binary of this build in ADE_PREP_BIN and the guest in ADE_GUEST; Err
/// unless exactly `expected` in-container tests passed. Skips (see [`skip_nspawn`]) when not root or when the
/// guest's root is missing from the harness cache.
pub fn nspawn_suite_on(suite: &str, guest: &str, expected: usize, timeout_secs: u64) -> Result<(), String> {
    nspawn_suite_on_with(suite, guest, expected, timeout_secs, &[])
}

/// [`nspawn_suite_on`] with host folders bound read-write into the container (`HOST:GUEST`, nspawn's --bind).
pub fn nspawn_suite_on_with(
    suite: &str,
    guest: &str,
    expected: usize,
    timeout_secs: u64,
    rw_binds: &[String],
) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        skip_nspawn(suite, "not root (systemd-nspawn needs root)");
        return Ok(());
    }
    let harness_dir = std::env::var("ADE_HARNESS_DIR").unwrap_or_else(|_| "/var/cache/ade-prep-harness".into());
    // As nspawn-run.sh maps them: 252 is rootfs-ns, docker rootfs-docker-ns (rootfs-docker is build-guest.sh's docker
    // step's scratch copy), every other guest rootfs-GUEST.
    let root = match guest {
        "252" => "rootfs-ns".to_string(),
        "docker" => "rootfs-docker-ns".to_string(),
        _ => format!("rootfs-{guest}"),
    };
    if !Path::new(&harness_dir).join(&root).join("usr/lib/systemd/systemd").exists() {
        skip_nspawn(
            suite,
            &format!("no {root} in {harness_dir} (build it with tests/harness/build-guest.sh --nspawn-only)"),
        );
        return Ok(());
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut binds = vec![];
    let test_bin = inner_path(&std::env::current_exe().expect("test binary"), "/ade-test-bin", &mut binds);
    let ade_bin = inner_path(Path::new(env!("CARGO_BIN_EXE_ade-prep")), "/ade-bin", &mut binds);
    let cmd = format!(
        "{IN_CONTAINER}=1 ADE_GUEST={guest} ADE_PREP_BIN={} ADE_SCENARIOS=/work/tests/scenarios RUST_BACKTRACE=1 {} \
         --ignored --test-threads=1 --nocapture {suite}::in_container_",
        ade_bin.display(),
        test_bin.display()
    );
    let mut c = Command::new(manifest.join("tests/harness/nspawn-run.sh"));
    c.args(["-t", &timeout_secs.to_string(), "-g", guest]).arg(manifest).arg(&cmd).env("NSPAWN_TIMING", "1");
    if !binds.is_empty() {
        c.env("NSPAWN_BIND_RO", binds.join(" "));
    }
    if !rw_binds.is_empty() {
        c.env("NSPAWN_BIND", rw_binds.join(" "));
    }
    let t = Instant::now();
    let out = c.output().expect("running tests/harness/nspawn-run.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tag = format!("{suite} [systemd {guest}]");
    for l in stdout.lines().chain(stderr.lines()) {
        if let Some(i) = l.find("MEASURED:") {
            visible(&format!("{tag}: {}", &l[i..]));
        } else if l.starts_with("nspawn-run: booted") || l.starts_with("test result:") {
            visible(&format!("{tag}: {l}"));
        }
    }
    visible(&format!("{tag}: whole run {:.1}s", t.elapsed().as_secs_f64()));
    let want = format!("test result: ok. {expected} passed; 0 failed");
    if !out.status.success() || !stdout.contains("test result: ok") {
        Err(format!("in-container tests failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status))
    } else if !stdout.contains(&want) {
        Err(format!("expected {expected} in-container tests to pass:\n{stdout}"))
    } else if stdout.contains("SKIPPED") || stderr.contains("SKIPPED") {
        // A skip inside the container prints on stderr (see [`skip`]): both streams are read.
        Err(format!("an in-container test skipped:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"))
    } else {
        Ok(())
    }
}

/// True inside the harness container; prints a skip elsewhere (these tests change units).
pub fn inside() -> bool {
    if std::env::var(IN_CONTAINER).as_deref() == Ok("1") {
        return true;
    }
    visible("SKIPPED: in_container_* tests run only inside the nspawn container (started by the suite's host test)");
    false
}

/// [`inside`], and the scenario units of tests/scenarios installed (once per test binary).
pub fn inside_with_scenarios() -> bool {
    if !inside() {
        return false;
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let dir = PathBuf::from(std::env::var("ADE_SCENARIOS").expect("ADE_SCENARIOS"));
        let st = Command::new(dir.join("install.sh")).status().expect("install.sh");
        assert!(st.success(), "install.sh: {st}");
    });
    true
}

/// The container's systemd over its system bus.
pub fn sd() -> ade_prep::systemd::Systemd {
    ade_prep::systemd::Systemd::system().expect("system bus")
}

/// Polls `f` every 50 ms until it holds; panics after `secs`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unit's property as `systemctl show` prints it, without the `NAME=` (`show -P`/`--value` are newer than 219).
pub fn unit_prop(unit: &str, prop: &str) -> String {
    let o = sh(&["systemctl", "show", "-p", prop, unit]);
    let s = String::from_utf8_lossy(&o.stdout);
    s.trim().strip_prefix(&format!("{prop}=")).unwrap_or(s.trim()).to_string()
}

/// Watches `units` from another thread until every one of them is `deactivating` at the same moment: the proof,
/// read from systemd itself rather than from a clock, that their stops ran together (one after another, at most
/// one is ever deactivating). Start it before the stops; [`StopsTogether::seen`] after them. Load on the machine
/// stretches the stops, so it cannot make this fail for stops that really ran together. (systemd's own
/// ActiveExit/InactiveEnter timestamps cannot serve: a stopped unit is unloaded and shows them as 0.)
pub struct StopsTogether {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: std::thread::JoinHandle<bool>,
}

impl StopsTogether {
    pub fn watch(units: &[&str]) -> StopsTogether {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, units): (_, Vec<String>) = (done.clone(), units.iter().map(|u| u.to_string()).collect());
        let watcher = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let o = Command::new("systemctl").args(["show", "-p", "ActiveState"]).args(&units).output();
                let text = o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                if text.lines().filter(|l| l.trim() == "ActiveState=deactivating").count() == units.len() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        StopsTogether { done, watcher }
    }

    /// Whether all the units were seen deactivating at once (call after the stops ended).
    pub fn seen(self) -> bool {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.watcher.join().expect("the watcher thread")
    }
}

/// Asserts that `f` holds throughout `millis` (polled every 50 ms, failing at the first moment it does not): for
/// what must NOT happen within a time (a masked unit restarted by Restart=, a socket activation), which a single
/// look after a sleep would miss when the thing came and went in between.
pub fn holds_for(what: &str, millis: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    loop {
        assert!(f(), "{what}: no longer true after {:?}", t.elapsed());
        if t.elapsed() >= Duration::from_millis(millis) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command, panicking when it cannot start.
pub fn sh(argv: &[&str]) -> Output {
    Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// [`sh`] that must succeed; its stdout.
pub fn sh_ok(argv: &[&str]) -> String {
    let o = sh(argv);
    assert!(o.status.success(), "{argv:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The folder holding the selinuxfs stand-in (`enforce`), bound at /sys/fs/selinux for ade-prep (see
/// [`ade_prep_cmd`]): the container has no SELinux, and its /sys/fs is a read-only sysfs with no selinux folder.
pub const FAKE_SELINUXFS: &str = "/run/ade-fake-selinuxfs";

/// The ade-prep of this build, run in a private mount namespace where a tmpfs on /sys/fs holds only
/// /sys/fs/selinux, bound to [`FAKE_SELINUXFS`]: SelinuxFs finds no selinuxfs in mountinfo and falls back to
/// /sys/fs/selinux/enforce, as on a machine whose mountinfo it cannot read.
pub fn ade_prep_cmd(args: &[&str]) -> Command {
    let bin = std::env::var("ADE_PREP_BIN").expect("ADE_PREP_BIN");
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"]).arg(format!(
        "mount -t tmpfs -o mode=0755 tmpfs /sys/fs && mkdir /sys/fs/selinux && mount --bind {FAKE_SELINUXFS} \
         /sys/fs/selinux && exec \"$0\" \"$@\""
    ));
    c.arg(bin).args(args);
    c
}

/// Installs the scenario units, starts the two workloads (ade-db; fake-docker.socket + .service, KillMode=process
/// with a shim), declares them in config.d (db with a pre-stop), and sets the selinuxfs stand-in to enforcing.
pub fn setup_workloads() {
    let dir = PathBuf::from(std::env::var("ADE_SCENARIOS").expect("ADE_SCENARIOS"));
    let st = Command::new(dir.join("install.sh")).status().expect("install.sh");
    assert!(st.success(), "install.sh: {st}");
    let o = sh(&["systemctl", "start", "ade-db.service", "fake-docker.socket", "fake-docker.service"]);
    assert!(o.status.success(), "{o:?}");
    std::fs::create_dir_all("/etc/ade-prep/config.d").unwrap();
    std::fs::write(
        "/etc/ade-prep/config.d/50-test.toml",
        "[workloads.db]\nunits = [\"ade-db.service\"]\npre_stop = [{ argv = [\"/bin/true\"] }]\n\n\
         [workloads.fakedocker]\nunits = [\"fake-docker.service\"]\ncompanion_units = [\"fake-docker.socket\"]\n\
         stop_timeout_secs = 30\n",
    )
    .unwrap();
    std::fs::create_dir_all(FAKE_SELINUXFS).unwrap();
    std::fs::write(Path::new(FAKE_SELINUXFS).join("enforce"), "1").unwrap();
}

/// The units the tests declare as workloads.
pub const WORKLOAD_UNITS: [&str; 3] = ["ade-db.service", "fake-docker.service", "fake-docker.socket"];

/// What the crash and daemon tests compare: the workload units, their runtime masks, the SELinux stand-in, the
/// lock, the window, the hold list and the generator's masks (a kill that leaves a hold list behind shows here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    /// (unit, ActiveState, mask in effect, mask file in /run/systemd/system).
    pub units: Vec<(String, String, bool, bool)>,
    /// The content of the stand-in's `enforce`.
    pub enforce: String,
    /// free, held or stale.
    pub lock: String,
    /// The journal says the window is open.
    pub window_open: bool,
    /// The hold list's units (/etc/ade-prep/hold; empty when there is none): what the generator masks at a boot.
    pub hold: Vec<String>,
    /// The units the generator masks now (links to /dev/null in /run/systemd/generator.early).
    pub generator_masks: Vec<String>,
}

impl MachineState {
    /// Reads it (inside the container).
    pub fn read() -> MachineState {
        use ade_prep::systemd::ServiceManager;
        let paths = ade_prep::paths::Paths::system();
        let sd = ade_prep::systemd::Systemd::system().expect("system bus");
        let units = WORKLOAD_UNITS
            .iter()
            .map(|u| {
                let i = sd.unit(u).expect("unit");
                let file = Path::new("/run/systemd/system").join(u).exists();
                (u.to_string(), i.active_state.to_string(), i.is_masked(), file)
            })
            .collect();
        let enforce = std::fs::read_to_string(Path::new(FAKE_SELINUXFS).join("enforce")).unwrap().trim().to_string();
        let lock = match ade_prep::lock::Lock::new(&paths).state().expect("lock state") {
            ade_prep::lock::LockState::Free => "free",
            ade_prep::lock::LockState::Held(_) => "held",
            ade_prep::lock::LockState::Stale(_) => "stale",
        };
        use ade_prep::window::store::Store;
        let window_open = ade_prep::window::store::FileStore::new(&paths)
            .load()
            .expect("journal")
            .is_some_and(|r| r.is_window_open());
        let mut hold: Vec<String> = std::fs::read_to_string(paths.hold_file())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        hold.sort();
        let mut generator_masks: Vec<String> = std::fs::read_dir("/run/systemd/generator.early")
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                (std::fs::read_link(e.path()).ok()? == Path::new("/dev/null"))
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        generator_masks.sort();
        MachineState { units, enforce, lock: lock.into(), window_open, hold, generator_masks }
    }

    /// Everything as the tests start it: units active and unmasked, enforcing, lock free, no window.
    pub fn baseline() -> MachineState {
        MachineState {
            units: WORKLOAD_UNITS.iter().map(|u| (u.to_string(), "active".to_string(), false, false)).collect(),
            enforce: "1".into(),
            lock: "free".into(),
            window_open: false,
            hold: vec![],
            generator_masks: vec![],
        }
    }

    /// Everything the window changes is in place: units inactive and masked, permissive, window open, and every
    /// workload unit on the hold list (so that a reboot keeps it down).
    pub fn is_fully_prepared(&self) -> bool {
        self.units.iter().all(|(_, a, m, f)| a == "inactive" && *m && *f)
            && self.enforce == "0"
            && self.window_open
            && WORKLOAD_UNITS.iter().all(|u| self.hold.iter().any(|h| h == u))
    }
}

/// Waits until the workloads hold their files on / again after a start: a process between systemd's fork and its
/// exec is not yet what a scan recognises, and a prepare right then plans without it (and then refuses at its
/// re-scan, rolling back).
pub fn settle_workloads() {
    let held = |pid: &str, file: &str| {
        std::fs::read_link(format!("/proc/{}/fd/3", pid.trim())).is_ok_and(|p| p == Path::new(file))
    };
    wait_for("ade-db to hold its data file", 10, || {
        held(&unit_prop("ade-db.service", "MainPID"), "/var/lib/ade-db/data.log")
    });
    // fake-dockerd.sh writes the shim's pid before its main process holds dockerd.log.
    let show = |p: &str| unit_prop("fake-docker.service", p);
    wait_for("fake-docker to hold its file", 10, || held(&show("MainPID"), "/var/lib/fake-docker/dockerd.log"));
    // A shim left behind by an earlier stop (a kill before prepare terminated it) is killed here, so that every
    // prepare meets the same processes and visits the same failpoints.
    let (main, cg) = (show("MainPID"), show("ControlGroup"));
    let shim = std::fs::read_to_string("/run/fake-docker/shim.pid").unwrap_or_default().trim().to_string();
    for v in ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let Ok(procs) = std::fs::read_to_string(format!("{v}{cg}/cgroup.procs")) else { continue };
        for pid in procs.lines().filter(|p| *p != main && *p != shim) {
            let _ = sh(&["kill", "-9", pid]);
        }
        break;
    }
    wait_for("fake-docker's shim to hold its file", 10, || held(&shim, "/var/lib/fake-docker/shim.log"));
}

pub mod packages;
