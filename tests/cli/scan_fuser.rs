//! Conformance of `ade-prep scan --json` with the real `fuser -vm` (psmisc): processes of our own hold a filesystem
//! we make in every way fuser knows (read fd, write fd, cwd, chroot root, executable, mmap with its fd closed,
//! deleted-but-open file), and both tools must report the same pid → codes map. Also on `/` of this machine, for the
//! pids both saw. Needs root (mount, chroot) and psmisc; without them the tests say SKIPPED and do nothing.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::skip;

pub(crate) fn unusable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (mounts, chroot)");
    }
    if Command::new("fuser").arg("-V").output().is_err() {
        return skip("fuser (psmisc) is not installed");
    }
    false
}

/// fuser -vm PATH → pid → codes (letters sorted), kernel users excluded.
fn fuser(path: &Path) -> BTreeMap<i32, String> {
    // -v prints the pids on stdout and the rest of the table on stderr: one pipe for both keeps the rows whole.
    let out =
        Command::new("sh").args(["-c", "exec fuser -vm \"$1\" 2>&1", "sh"]).arg(path).output().expect("run fuser");
    // Rows: [NAME:] USER PID ACCESS COMMAND, ACCESS as the columns "fFrcem" with '.' for gaps.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with("Cannot stat")) {
        let mut f: Vec<&str> = line.split_whitespace().collect();
        if f.first().is_some_and(|w| w.ends_with(':')) {
            f.remove(0);
        }
        if f.len() < 3 || f[1] == "kernel" {
            continue;
        }
        if let Ok(pid) = f[1].parse::<i32>() {
            map.insert(pid, sorted(&f[2].replace('.', "")));
        }
    }
    map
}

fn sorted(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    c.sort();
    c.into_iter().collect()
}

/// ade-prep scan --mount PATH --json → (pid → codes, pids with unreadable entries).
fn ade_prep(path: &Path) -> (BTreeMap<i32, String>, Vec<i32>, serde_json::Value) {
    let out = Command::new(crate::bin()).args(["scan", "--json", "--mount"]).arg(path).output().expect("run ade-prep");
    assert!(out.status.success(), "ade-prep scan failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("scan --json is JSON");
    let map = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pid"].as_i64().unwrap() as i32, sorted(p["codes"].as_str().unwrap())))
        .collect();
    let unreadable =
        v["unreadable"]["entries"].as_array().unwrap().iter().map(|u| u["pid"].as_i64().unwrap() as i32).collect();
    (map, unreadable, v)
}

/// A mounted filesystem that is unmounted (lazily) when dropped.
pub(crate) struct Mounted {
    dir: tempfile::TempDir,
    loopimg: Option<PathBuf>,
}

impl Mounted {
    pub(crate) fn tmpfs() -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "adeprep-test"]).arg(dir.path()).status();
        assert!(ok.unwrap().success(), "mount tmpfs");
        Mounted { dir, loopimg: None }
    }

    fn ext4_loop() -> Option<Mounted> {
        let dir = tempfile::tempdir().unwrap();
        let img = std::env::temp_dir().join(format!("adeprep-scan-{}.img", std::process::id()));
        let sh = format!(
            "truncate -s 64M {i} && mkfs.ext4 -q -F {i} && mount -o loop {i} {d}",
            i = img.display(),
            d = dir.path().display()
        );
        let ok = Command::new("sh").args(["-c", &sh]).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = std::fs::remove_file(&img);
            skip("cannot make or loop-mount an ext4 image here (e2fsprogs, loop devices)");
            return None;
        }
        Some(Mounted { dir, loopimg: Some(img) })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        if let Some(i) = &self.loopimg {
            let _ = std::fs::remove_file(i);
        }
    }
}

/// Children that hold the filesystem; killed when dropped.
#[derive(Default)]
pub(crate) struct Holders {
    pub(crate) pids: Vec<(i32, &'static str)>,
}

impl Drop for Holders {
    fn drop(&mut self) {
        for (pid, _) in &self.pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid), None);
        }
    }
}

impl Holders {
    /// `sh -c SCRIPT` that ends in `exec sleep`: the fds and cwd it sets up survive the exec.
    pub(crate) fn shell(&mut self, what: &'static str, script: &str) {
        // Reaped by pid in Drop (waitpid), like the forked holders.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sh").args(["-c", script]).spawn().expect("spawn sh");
        self.pids.push((child.id() as i32, what));
    }

    /// Forks a child that runs `f` (raw syscalls only) and then sleeps forever.
    fn fork(&mut self, what: &'static str, f: impl FnOnce()) {
        // SAFETY: the child only makes async-signal-safe system calls (open, mmap, close, chroot, unlink, pause).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                f();
                loop {
                    // SAFETY: pause has no preconditions.
                    unsafe { libc::pause() };
                }
            }
            nix::unistd::ForkResult::Parent { child } => self.pids.push((child.as_raw(), what)),
        }
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// Starts one holder of each kind on `fs` and returns them with the codes fuser gives each.
fn start_holders(fs: &Path) -> (Holders, BTreeMap<i32, &'static str>) {
    let d = fs.display();
    std::fs::write(fs.join("data"), vec![7u8; 8192]).unwrap();
    std::fs::write(fs.join("mapped"), vec![7u8; 8192]).unwrap();
    std::fs::write(fs.join("doomed"), b"x").unwrap();
    std::fs::copy("/bin/sleep", fs.join("sleep-copy")).unwrap();
    let mut h = Holders::default();
    h.shell("f", &format!("exec 3<{d}/data; exec sleep 1000"));
    h.shell("F", &format!("exec 3>>{d}/data; exec sleep 1000"));
    h.shell("c", &format!("cd {d} && exec sleep 1000"));
    h.shell("e", &format!("exec {d}/sleep-copy 1000"));
    let root = cstr(fs);
    h.fork("r", move || {
        // SAFETY: plain system calls on a valid C string.
        unsafe { libc::chroot(root.as_ptr()) };
    });
    let mapped = cstr(&fs.join("mapped"));
    h.fork("m", move || {
        // SAFETY: plain system calls; the mapping is never touched.
        unsafe {
            let fd = libc::open(mapped.as_ptr(), libc::O_RDONLY);
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
            libc::close(fd);
        }
    });
    let doomed = cstr(&fs.join("doomed"));
    h.fork("f", move || {
        // SAFETY: plain system calls on a valid C string.
        unsafe {
            libc::open(doomed.as_ptr(), libc::O_RDONLY);
            libc::unlink(doomed.as_ptr());
        }
    });
    let expect: BTreeMap<i32, &'static str> = h.pids.iter().copied().collect();
    // Until the shells reach their exec and the forks their pause, fuser sees them otherwise.
    crate::common::wait_for("every holder to hold the filesystem as fuser sees it", 30, || {
        let seen = fuser(fs);
        expect.iter().all(|(pid, code)| seen.get(pid).map(String::as_str) == Some(*code))
    });
    (h, expect)
}

fn conformance_on(fs: &Path) {
    let (holders, expect) = start_holders(fs);
    let theirs = fuser(fs);
    let (ours, _, json) = ade_prep(fs);
    // Our own children are there with the code we made them hold with, in both views.
    for (pid, code) in &expect {
        assert_eq!(theirs.get(pid).map(String::as_str), Some(*code), "fuser on pid {pid} (expected {code})");
    }
    assert_eq!(ours, theirs, "ade-prep and fuser disagree on {}", fs.display());
    // The deleted-but-open file is still counted as an fd, the write fd as writable.
    let procs = json["processes"].as_array().unwrap();
    let by_pid = |pid: i32| procs.iter().find(|p| p["pid"] == pid).unwrap();
    let writer = holders.pids.iter().find(|(_, w)| *w == "F").unwrap().0;
    assert_eq!(by_pid(writer)["writable_fds"], 1);
    drop(holders);
}

#[test]
fn same_codes_as_fuser_on_tmpfs() {
    if unusable() {
        return;
    }
    let m = Mounted::tmpfs();
    conformance_on(m.path());
}

#[test]
fn same_codes_as_fuser_on_ext4_loop() {
    if unusable() {
        return;
    }
    if let Some(m) = Mounted::ext4_loop() {
        conformance_on(m.path());
    }
}

/// The pids of every process now.
fn live_pids() -> std::collections::BTreeSet<i32> {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

#[test]
fn same_holders_and_codes_as_fuser_on_root_both_ways() {
    if unusable() {
        return;
    }
    // fuser before and after our scan, and the process table around all three: a process that started, ended or
    // changed its codes in between (a compiler opening files) is not comparable; every other one must be in both
    // views with the same codes. Both ways: a holder fuser lists and ade-prep misses (the scanner's worst failure)
    // fails as surely as one ade-prep lists and fuser does not.
    let alive_before = live_pids();
    let before = fuser(Path::new("/"));
    let (ours, unreadable, _) = ade_prep(Path::new("/"));
    let after = fuser(Path::new("/"));
    let alive_after = live_pids();
    let stable = |pid: &i32| alive_before.contains(pid) && alive_after.contains(pid) && !unreadable.contains(pid);
    let mut compared = 0;
    // fuser's stable holders are ade-prep's, with the same codes.
    for (pid, code) in before.iter().filter(|(p, _)| stable(p)) {
        if after.get(pid) == Some(code) {
            assert_eq!(ours.get(pid), Some(code), "pid {pid}: fuser lists it with {code} before and after our scan");
            compared += 1;
        }
    }
    // ade-prep's holders are fuser's, unless fuser's view of them changed around the scan.
    for (pid, code) in ours.iter().filter(|(p, _)| stable(p)) {
        match (before.get(pid), after.get(pid)) {
            (None, None) => panic!("pid {pid}: ade-prep lists it ({code}), fuser does not, before or after"),
            (Some(b), Some(a)) if a == b => assert_eq!(code, b, "pid {pid}"),
            _ => {}
        }
    }
    assert!(compared >= 5, "only {compared} pids compared");
    crate::common::visible(&format!("scan_fuser: {compared} holders of / compared both ways"));
}
