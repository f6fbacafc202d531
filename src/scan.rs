//! The process-table edge: who holds a filesystem, and how (the `/proc` walk behind `ade-prep scan`, with `fuser
//! -m`'s access codes), the one /proc lister and parsers, and ending a stray process. It must not classify.
//!
//! Per process the hot path is: open `/proc/PID`, `fstatat` its `root`, `cwd` and `exe`, list `fd/` and `fstatat`
//! each entry (following the link: the device of the open file), `lstat` only the matching ones (the link's mode says
//! whether the fd is open for writing, as fuser reads it), and read `maps`. Everything else (command line, cgroup,
//! parent) is read only for processes that hold the filesystem, by the walker thread that found them, through the
//! same open `/proc/PID` folder. Processes are spread over a few threads.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use serde::Serialize;

use crate::mountinfo::{self, Mount};

/// How a process holds the filesystem, as fuser's access codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    /// c: current directory.
    pub cwd: bool,
    /// e: executable being run.
    pub exe: bool,
    /// f: open file.
    pub file: bool,
    /// F: open file, for writing.
    pub file_write: bool,
    /// r: root directory.
    pub root: bool,
    /// m: memory-mapped file (or shared library); only looked for when `exe` is false, as fuser shows it.
    pub mmap: bool,
    /// A shared writable mapping of a file on the filesystem (`rw-s` in maps: writes reach the file without a
    /// `write`): looked for only in a process of a system service with no fd open for writing there (see
    /// [`crate::classify::writer`]); fuser has no letter for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mmap_write: bool,
}

impl Access {
    /// fuser's letters, in its order; `m` only when `e` is not there, `F` instead of `f`.
    pub fn codes(&self) -> String {
        let mut s = String::new();
        if self.file_write {
            s.push('F');
        } else if self.file {
            s.push('f');
        }
        if self.root {
            s.push('r');
        }
        if self.cwd {
            s.push('c');
        }
        if self.exe {
            s.push('e');
        }
        if self.mmap && !self.exe {
            s.push('m');
        }
        s
    }

    fn any(&self) -> bool {
        self.cwd || self.exe || self.file || self.root || self.mmap
    }
}

/// A process with a reference on the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Owner of the process (of its `/proc` entry, as `fuser -v` shows). Not a proof of anything: a process that
    /// makes itself non-dumpable has a `/proc` entry owned by root; [`Holder::uids`] is what the trust rule reads.
    pub uid: u32,
    /// Real and effective uid from `/proc/PID/status` (None when unreadable): no process can set these to 0
    /// without being root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uids: Option<[u32; 2]>,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// The command line (empty for kernel threads).
    pub cmdline: Vec<String>,
    /// The executable's path, when readable.
    pub exe: Option<String>,
    /// The current directory, when readable.
    pub cwd: Option<String>,
    /// The systemd unit the process runs in, from its cgroup.
    pub unit: Option<String>,
    /// The cgroup path the unit was taken from.
    pub cgroup: Option<String>,
    /// A kernel thread (never stopped).
    pub kernel_thread: bool,
    /// How it holds the filesystem.
    pub access: Access,
    /// Open fds on the filesystem.
    pub fds: u32,
    /// Of which open for writing.
    pub writable_fds: u32,
    /// When it started: field 22 of `/proc/PID/stat` (clock ticks after boot). With the pid it names the process:
    /// a pid reused after the scan has another start time and is never signalled.
    pub start_time: u64,
    /// The nearest ancestor that is a trusted containerd shim (comm `containerd-shim*`, run by root or in a system
    /// unit: [`crate::trust::trusted`]): the process belongs to a container task, Docker's or containerd's own;
    /// None otherwise. A user's process named containerd-shim is no shim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shim: Option<i32>,
}

/// Something that could not be read, by pid and kind (fd, cwd, root, exe, maps), with the count of entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub pid: i32,
    /// What could not be read.
    pub what: &'static str,
    /// The error.
    pub error: String,
    /// How many entries of that kind failed (fds can fail one by one).
    pub count: u32,
}

/// The filesystem being scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The path asked for.
    pub path: PathBuf,
    /// Its device as "major:minor".
    pub device: String,
    /// The mount point of the filesystem holding it.
    pub mount_point: PathBuf,
    pub fstype: String,
    /// Mount source.
    pub source: String,
    #[serde(skip)]
    dev: u64,
}

/// What `fuser -v` shows as kernel users of the filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelUsers {
    /// Swap files on the filesystem.
    pub swap_files: Vec<PathBuf>,
    /// Mount points below the filesystem's mount point (they keep it from being unmounted).
    pub mounts_below: Vec<PathBuf>,
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scan {
    pub target: Target,
    /// Processes holding it, by pid.
    pub holders: Vec<Holder>,
    pub kernel: KernelUsers,
    /// Entries that could not be read.
    pub unreadable: Vec<Unreadable>,
    pub processes_seen: usize,
}

impl Scan {
    /// A scan result made by hand, for fake process tables: `holders` on the filesystem mounted at `mount`.
    #[cfg(test)]
    pub fn from_holders(mount: &Path, holders: Vec<Holder>) -> Scan {
        Scan {
            target: Target {
                path: mount.to_path_buf(),
                device: "0:0".into(),
                mount_point: mount.to_path_buf(),
                fstype: String::new(),
                source: String::new(),
                dev: 0,
            },
            holders,
            kernel: KernelUsers::default(),
            unreadable: vec![],
            processes_seen: 0,
        }
    }

    /// Total of unreadable entries.
    pub fn unreadable_count(&self) -> u32 {
        self.unreadable.iter().map(|u| u.count).sum()
    }
}

/// Errors that stop a scan (per-process trouble never does).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The path asked for cannot be resolved.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        source: std::io::Error,
    },
    /// The process table cannot be listed.
    #[error("{path}: {source}")]
    Proc {
        /// The proc folder.
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The process table, behind a trait so that plans can be tested with a fake one and no test signals a real
/// process of the machine.
pub trait ProcessTable {
    /// Every process holding the filesystem that holds `path`.
    fn scan(&self, path: &Path) -> Result<Scan, ScanError>;
    /// Whether the process `pid` that started at `start_time` (a [`Holder`]'s) still exists: a pid now naming
    /// another process is not.
    fn alive(&self, pid: i32, start_time: u64) -> bool;
    /// Ends the process `pid` that started at `start_time`, in no unit: SIGTERM, up to `grace` for it to go, then
    /// SIGKILL. A process already gone, or a pid now naming another process, is left alone and is not an error.
    fn terminate(&self, pid: i32, start_time: u64, grace: Duration);
    /// The units of this process and of each of its ancestors (the unit that runs ade-prep: a `cloud-final`
    /// step, a `systemd-run` unit, the operator's session): never to be stopped by the window.
    fn own_units(&self) -> Vec<String>;
}

/// The units of `pid` and its ancestors up to PID 1, from `/proc/PID/cgroup` and `/proc/PID/stat` under
/// `proc_root`; unreadable ones are skipped. Sorted, without duplicates.
pub fn ancestor_units(proc_root: &Path, pid: i32) -> Vec<String> {
    let mut units = std::collections::BTreeSet::new();
    let mut pid = pid;
    for _ in 0..1024 {
        if pid <= 1 {
            break;
        }
        let dir = proc_root.join(pid.to_string());
        if let Some(u) = std::fs::read_to_string(dir.join("cgroup")).ok().and_then(|t| unit_from_cgroup(&t).0) {
            units.insert(u);
        }
        match std::fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(parse_stat) {
            Some(st) => pid = st.ppid,
            None => break,
        }
    }
    units.into_iter().collect()
}

/// The nearest of `pid` and its ancestors whose comm is `containerd-shim*` (the comm of every shim: `containerd-shim`,
/// and `containerd-shim-runc-v2` cut to 15 characters), read from `/proc/PID/stat` under `proc_root`; None at PID 1.
/// `memo` (pid → answer) keeps the answers found: a thousand holders under the same parents read each parent's stat
/// once, not once per holder. Every pid on the walk gets its answer.
pub fn shim_ancestor(proc_root: &Path, pid: i32, memo: &mut HashMap<i32, Option<i32>>) -> Option<i32> {
    let mut walked = vec![];
    let mut pid = pid;
    let mut answer = None;
    for _ in 0..1024 {
        if pid <= 1 {
            break;
        }
        if let Some(&known) = memo.get(&pid) {
            answer = known;
            break;
        }
        let Some(st) =
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok().and_then(|t| parse_stat(&t))
        else {
            break;
        };
        if st.comm.starts_with("containerd-shim") && trusted_pid(proc_root, pid) {
            answer = Some(pid);
            break;
        }
        walked.push(pid);
        pid = st.ppid;
    }
    for p in walked {
        memo.insert(p, answer);
    }
    answer
}

/// Whether the process `pid` under `proc_root` passes the trust rule ([`crate::trust::trusted`]), from its own
/// `/proc/PID/status` and `/proc/PID/cgroup`: what it claims (its comm) is not read.
fn trusted_pid(proc_root: &Path, pid: i32) -> bool {
    let dir = proc_root.join(pid.to_string());
    let uids = std::fs::read_to_string(dir.join("status")).ok().as_deref().and_then(parse_status_uids);
    let (unit, cgroup) = std::fs::read_to_string(dir.join("cgroup")).map(|t| unit_from_cgroup(&t)).unwrap_or_default();
    crate::trust::trusted(uids, unit.as_deref(), cgroup.as_deref()).is_some()
}

/// The real and effective uid of `/proc/PID/status`'s `Uid:` line (real, effective, saved, filesystem); None when
/// the line is missing or malformed.
pub fn parse_status_uids(status: &str) -> Option<[u32; 2]> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut f = line.split_whitespace().map(|w| w.parse::<u32>());
    match (f.next(), f.next()) {
        (Some(Ok(r)), Some(Ok(e))) => Some([r, e]),
        _ => None,
    }
}

/// The real process table under a proc root.
#[derive(Debug, Clone)]
pub struct ProcFs {
    proc_root: PathBuf,
    threads: usize,
}

impl ProcFs {
    /// `/proc` (or a proc mounted elsewhere).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        ProcFs { proc_root: proc_root.into(), threads }
    }
}

fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

fn dev_string(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

impl ProcFs {
    fn target(&self, path: &Path) -> Result<(Target, Vec<Mount>), ScanError> {
        let perr = |source| ScanError::Path { path: path.to_path_buf(), source };
        let canon = std::fs::canonicalize(path).map_err(perr)?;
        let md = std::fs::metadata(&canon).map_err(perr)?;
        let dev = std::os::unix::fs::MetadataExt::dev(&md);
        let mounts = mountinfo::read_in(&self.proc_root)
            .map_err(|mountinfo::ReadError { path, source }| ScanError::Proc { path, source })?;
        // The mount holding the path with the same device (bind mounts and btrfs subvolumes make the device the
        // better witness); fall back to the longest prefix.
        let m = mounts
            .iter()
            .filter(|m| makedev(m.dev.0, m.dev.1) == dev && canon.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .or_else(|| mountinfo::mount_of(&mounts, &canon));
        let target = Target {
            path: path.to_path_buf(),
            device: dev_string(dev),
            mount_point: m.map_or_else(|| canon.clone(), |m| m.mount_point.clone()),
            fstype: m.map_or_else(String::new, |m| m.fstype.clone()),
            source: m.map_or_else(String::new, |m| m.source.clone()),
            dev,
        };
        Ok((target, mounts))
    }

    fn kernel_users(&self, target: &Target, mounts: &[Mount]) -> KernelUsers {
        let mut k = KernelUsers {
            mounts_below: mountinfo::below(mounts, &target.mount_point)
                .into_iter()
                .map(|m| m.mount_point.clone())
                .collect(),
            ..Default::default()
        };
        if let Ok(text) = std::fs::read_to_string(self.proc_root.join("swaps")) {
            for line in text.lines().skip(1) {
                let mut f = line.split_whitespace();
                if let (Some(name), Some("file")) = (f.next(), f.next()) {
                    let name = mountinfo::unescape(name);
                    if let Ok(md) = std::fs::metadata(&name) {
                        if std::os::unix::fs::MetadataExt::dev(&md) == target.dev {
                            k.swap_files.push(PathBuf::from(name));
                        }
                    }
                }
            }
        }
        k
    }
}

/// What the hot walk found for one process, before its details are read.
struct Hit {
    pid: i32,
    uid: u32,
    access: Access,
    fds: u32,
    writable_fds: u32,
}

#[derive(Default)]
struct Partial {
    holders: Vec<Holder>,
    /// The walker thread's `getdents64` buffer.
    dirents: Vec<u8>,
    unreadable: Vec<Unreadable>,
    seen: usize,
}

fn io_err(e: Errno) -> String {
    std::io::Error::from_raw_os_error(e as i32).to_string()
}

/// True for errors meaning the process (or the fd) went away: skipped, not reported.
fn gone(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ESRCH)
}

/// `mnt_ids`: the mounts of the filesystem (every mountinfo line with its device), by which an fd open for writing on
/// a regular file that reports another device is attributed (see [`fd_mount`]).
fn walk_one(proc_fd: &OwnedFd, pid: i32, dev: u64, mnt_ids: &[u32], out: &mut Partial) {
    let name = pid.to_string();
    let dirfd = match nix::fcntl::openat(
        proc_fd.as_fd(),
        name.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(_) => return, // exited
    };
    out.seen += 1;
    let uid = match fstat(&dirfd) {
        Ok(st) => st.st_uid,
        Err(_) => return,
    };
    let mut acc = Access::default();
    let unread = |what: &'static str, e: Errno, out: &mut Partial| {
        out.unreadable.push(Unreadable { pid, what, error: io_err(e), count: 1 });
    };
    for (what, link) in [("root", c"root"), ("cwd", c"cwd"), ("exe", c"exe")] {
        match fstatat(&dirfd, link, AtFlags::empty()) {
            Ok(st) if st.st_dev == dev => match what {
                "root" => acc.root = true,
                "cwd" => acc.cwd = true,
                _ => acc.exe = true,
            },
            Ok(_) => {}
            Err(e) if gone(e) => {} // kernel threads have no exe; the process may have exited
            Err(e) => unread(what, e, out),
        }
    }
    let (mut fds, mut wfds) = (0u32, 0u32);
    match nix::fcntl::openat(&dirfd, c"fd", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd_dir) => {
            let mut failed: Option<(Errno, u32)> = None;
            let listed = each_entry(&fd_dir, &mut out.dirents, |fname| {
                if fname.to_bytes().first() == Some(&b'.') {
                    return;
                }
                match fstatat(&fd_dir, fname, AtFlags::empty()) {
                    Ok(st) if st.st_dev == dev => {
                        fds += 1;
                        // The link's own mode carries the open mode: write bit set when open for writing.
                        if let Ok(l) = fstatat(&fd_dir, fname, AtFlags::AT_SYMLINK_NOFOLLOW) {
                            if l.st_mode & libc::S_IWUSR != 0 {
                                wfds += 1;
                            }
                        }
                    }
                    // A regular file reporting another device, open for writing: on an overlayfs root (or a btrfs
                    // subvolume) a file's st_dev is its layer's, not the mount's; the mount it was opened through
                    // (fdinfo's mnt_id) says whether it pins the filesystem. Read only for these few fds.
                    Ok(st) if !mnt_ids.is_empty() && st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                        let writable = fstatat(&fd_dir, fname, AtFlags::AT_SYMLINK_NOFOLLOW)
                            .is_ok_and(|l| l.st_mode & libc::S_IWUSR != 0);
                        if writable && fd_mount(&dirfd, fname).is_some_and(|id| mnt_ids.contains(&id)) {
                            fds += 1;
                            wfds += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(e) if gone(e) => {}
                    Err(e) => {
                        let f = failed.get_or_insert((e, 0));
                        f.1 += 1;
                    }
                }
            });
            match listed {
                Ok(()) => {}
                Err(e) if gone(e) => return,
                Err(e) => unread("fd", e, out),
            }
            if let Some((e, n)) = failed {
                out.unreadable.push(Unreadable { pid, what: "fd", error: io_err(e), count: n });
            }
        }
        Err(e) if gone(e) => return,
        Err(e) => unread("fd", e, out),
    }
    acc.file = fds > 0;
    acc.file_write = wfds > 0;
    // fuser shows `m` only when `e` is not there: when the executable is on the filesystem, maps (the costliest
    // file of the walk) need not be read.
    if !acc.exe {
        match read_at(&dirfd, c"maps") {
            Ok(text) => acc.mmap = maps_hit(&text, dev),
            Err(e) if gone(e) => {}
            Err(e) => unread("maps", e, out),
        }
    }
    if acc.any() {
        // A process that exits before its details are read is skipped, as one that exits mid-walk.
        if let Some(mut h) = details(&dirfd, &Hit { pid, uid, access: acc, fds, writable_fds: wfds }) {
            // A system service's process that writes through a shared mapping only: maps read again, for these
            // few (every other process skips it, as fuser's `m` does when `e` is there).
            if wfds == 0 && crate::trust::system_service(h.unit.as_deref(), h.cgroup.as_deref()).is_some() {
                h.access.mmap_write = read_at(&dirfd, c"maps").is_ok_and(|t| maps_write_hit(&t, dev));
            }
            out.holders.push(h);
        }
    }
}

/// The mount an fd was opened through: `mnt_id:` of `/proc/PID/fdinfo/FD` (Linux 3.15 and later; None before, or
/// when it cannot be read).
fn fd_mount(dirfd: &OwnedFd, fd: &CStr) -> Option<u32> {
    let mut path = b"fdinfo/".to_vec();
    path.extend_from_slice(fd.to_bytes());
    let path = std::ffi::CString::new(path).ok()?;
    parse_fdinfo_mnt_id(&read_at(dirfd, &path).ok()?)
}

/// `mnt_id:` of fdinfo text.
fn parse_fdinfo_mnt_id(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines().find_map(|l| l.strip_prefix("mnt_id:"))?.trim().parse().ok()
}

/// True when a line of maps text is a mapping of a file on `dev`.
fn maps_hit(text: &[u8], dev: u64) -> bool {
    maps_any(text, dev, |_| true)
}

/// True when a line of maps text is a shared writable mapping (`rw-s`, `-w-s`) of a file on `dev`: its stores
/// reach the file (a private one, `rw-p`, is copy-on-write and never does).
fn maps_write_hit(text: &[u8], dev: u64) -> bool {
    maps_any(text, dev, |perms| perms.get(1) == Some(&b'w') && perms.get(3) == Some(&b's'))
}

fn maps_any(text: &[u8], dev: u64, perms_ok: impl Fn(&[u8]) -> bool) -> bool {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    for line in text.split(|&b| b == b'\n') {
        // address perms offset dev inode path
        let mut f = line.split(|&b| b == b' ').filter(|s| !s.is_empty());
        let (Some(_), Some(perms), Some(_), Some(d), Some(inode)) = (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !perms_ok(perms) {
            continue;
        }
        if inode == b"0" {
            continue;
        }
        if let Some(pos) = d.iter().position(|&b| b == b':') {
            let hex = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| u32::from_str_radix(s, 16).ok());
            if hex(&d[..pos]) == Some(maj) && hex(&d[pos + 1..]) == Some(min) {
                return true;
            }
        }
    }
    false
}

/// The whole of a (proc) file below `dirfd`: open, read until end, close. Plain reads: std's `read_to_end` would
/// add a `statx` and an `lseek` per file to size its buffer, which proc files do not answer usefully.
fn read_at(dirfd: &OwnedFd, name: &CStr) -> Result<Vec<u8>, Errno> {
    let fd = nix::fcntl::openat(dirfd.as_fd(), name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut buf = Vec::new();
    loop {
        let len = buf.len();
        buf.resize(len + 8192, 0);
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Ok(n) => buf.truncate(len + n),
            Err(Errno::EINTR) => buf.truncate(len),
            Err(e) => return Err(e),
        }
    }
}

/// Calls `f` with the name of every entry of the directory `dir` (`.` and `..` included), listed with raw
/// `getdents64` into `buf` (kept by the walker thread): no `opendir` bookkeeping (`fcntl`, `lseek`, allocation) per
/// process.
fn each_entry(dir: &OwnedFd, buf: &mut Vec<u8>, mut f: impl FnMut(&CStr)) -> Result<(), Errno> {
    if buf.len() < 32 * 1024 {
        buf.resize(32 * 1024, 0);
    }
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf, which lives for the call.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(Errno::last());
        }
        if n == 0 {
            return Ok(());
        }
        let mut off = 0usize;
        while off < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let rec = &buf[off..n as usize];
            let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
            if reclen < 20 || reclen > rec.len() {
                return Err(Errno::EIO);
            }
            if let Ok(name) = CStr::from_bytes_until_nul(&rec[19..reclen]) {
                f(name);
            }
            off += reclen;
        }
    }
}

/// The systemd unit of a process from its `/proc/PID/cgroup` text: the v2 (`0::`) path when it says more than
/// `/`, else cgroup v1's `name=systemd` path; the unit is its first component that is not a slice.
pub fn unit_from_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if ctrl.is_empty() {
            v2 = Some(path);
        } else if ctrl == "name=systemd" {
            v1 = Some(path);
        }
    }
    let path = match (v2, v1) {
        (Some(p), _) if p != "/" => p,
        (_, Some(p)) => p,
        (Some(p), None) => p,
        (None, None) => return (None, None),
    };
    (unit_of_path(path), Some(path.to_string()))
}

const UNIT_SUFFIXES: &[&str] =
    &[".service", ".scope", ".socket", ".mount", ".swap", ".timer", ".path", ".target", ".device", ".automount"];

fn unit_of_path(path: &str) -> Option<String> {
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if comp.ends_with(".slice") {
            continue;
        }
        return UNIT_SUFFIXES.iter().any(|s| comp.ends_with(s)).then(|| comp.to_string());
    }
    None
}

/// The numeric entries of a proc folder: the one /proc lister of the scan and the checks.
pub fn list_pids(proc_root: &Path) -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read_dir(proc_root)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).collect())
}

/// What ade-prep reads of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// comm, from between the parentheses.
    pub comm: String,
    /// The parent's pid.
    pub ppid: i32,
    /// The flags field (PF_KTHREAD...).
    pub flags: u64,
    /// Field 22, starttime (clock ticks after boot).
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`; comm is in parentheses and may contain anything: split at the last ')'.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        flags: rest.get(6)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/cmdline`'s NUL-separated words (empty ones left out).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// PF_KTHREAD in the flags field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The rest of a holder's description, read through its already open `/proc/PID` folder (no path lookups from
/// `/proc` again) by the walker thread that found it.
fn details(dirfd: &OwnedFd, hit: &Hit) -> Option<Holder> {
    let Stat { comm, ppid, flags, start_time } = parse_stat(&String::from_utf8_lossy(&read_at(dirfd, c"stat").ok()?))?;
    let cmdline = read_at(dirfd, c"cmdline").map(|b| parse_cmdline(&b)).unwrap_or_default();
    let link = |n: &CStr| nix::fcntl::readlinkat(dirfd, n).ok().map(|p| p.to_string_lossy().into_owned());
    let (exe, cwd) = (link(c"exe"), link(c"cwd"));
    let (unit, cgroup) =
        read_at(dirfd, c"cgroup").map(|t| unit_from_cgroup(&String::from_utf8_lossy(&t))).unwrap_or_default();
    let uids = read_at(dirfd, c"status").ok().and_then(|t| parse_status_uids(&String::from_utf8_lossy(&t)));
    Some(Holder {
        pid: hit.pid,
        ppid,
        uid: hit.uid,
        uids,
        comm,
        cmdline,
        exe,
        cwd,
        unit,
        cgroup,
        kernel_thread: flags & PF_KTHREAD != 0,
        access: hit.access,
        fds: hit.fds,
        writable_fds: hit.writable_fds,
        start_time,
        shim: None,
    })
}

impl ProcessTable for ProcFs {
    fn own_units(&self) -> Vec<String> {
        ancestor_units(&self.proc_root, std::process::id() as i32)
    }

    fn alive(&self, pid: i32, start_time: u64) -> bool {
        crate::pidref::PidRef::open_started(&self.proc_root, pid, start_time).is_ok_and(|r| !r.exited())
    }

    fn terminate(&self, pid: i32, start_time: u64, grace: Duration) {
        // Through a pidfd (or pid + start time on kernels without) checked against the scan's start time: a pid
        // reused since the scan, or during the grace, is never killed.
        crate::pidref::terminate(&self.proc_root, pid, start_time, grace);
    }

    fn scan(&self, path: &Path) -> Result<Scan, ScanError> {
        let (target, mounts) = self.target(path)?;
        let kernel = self.kernel_users(&target, &mounts);
        let mnt_ids: Vec<u32> =
            mounts.iter().filter(|m| makedev(m.dev.0, m.dev.1) == target.dev).map(|m| m.id).collect();
        let perr = |source| ScanError::Proc { path: self.proc_root.clone(), source };
        let proc_fd =
            nix::fcntl::open(&self.proc_root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| perr(e.into()))?;
        let me = std::process::id() as i32;
        let mut pids = list_pids(&self.proc_root).map_err(perr)?;
        pids.retain(|&p| p != me);
        let next = AtomicUsize::new(0);
        let merged = Mutex::new(Partial::default());
        std::thread::scope(|s| {
            for _ in 0..self.threads.min(pids.len().max(1)) {
                s.spawn(|| {
                    let mut part = Partial::default();
                    loop {
                        // Small batches: cheap on the shared counter, fair between threads.
                        let i = next.fetch_add(16, Ordering::Relaxed);
                        if i >= pids.len() {
                            break;
                        }
                        for &pid in &pids[i..(i + 16).min(pids.len())] {
                            walk_one(&proc_fd, pid, target.dev, &mnt_ids, &mut part);
                        }
                    }
                    let mut m = merged.lock().unwrap_or_else(|p| p.into_inner());
                    m.holders.append(&mut part.holders);
                    m.unreadable.append(&mut part.unreadable);
                    m.seen += part.seen;
                });
            }
        });
        let part = merged.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut holders = part.holders;
        holders.sort_by_key(|h| h.pid);
        let mut memo = HashMap::new();
        for h in &mut holders {
            h.shim = shim_ancestor(&self.proc_root, h.ppid, &mut memo);
        }
        let mut unreadable = part.unreadable;
        unreadable.sort_by(|a, b| (a.pid, a.what).cmp(&(b.pid, b.what)));
        Ok(Scan { target, holders, kernel, unreadable, processes_seen: part.seen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_ancestor_finds_the_nearest_containerd_shim_up_to_pid_1() {
        let d = tempfile::tempdir().unwrap();
        let owned = |pid: i32, ppid: i32, comm: &str, uid: u32, cgroup: &str| {
            let dir = d.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let stat = format!("{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0");
            std::fs::write(dir.join("stat"), stat).unwrap();
            std::fs::write(dir.join("status"), format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")).unwrap();
            std::fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        };
        let proc = |pid: i32, ppid: i32, comm: &str| owned(pid, ppid, comm, 0, "/system.slice/containerd.service");
        proc(10, 1, "containerd-shim"); // containerd-shim-runc-v2, its comm cut to 15 characters
        proc(11, 10, "sh");
        proc(12, 11, "sleep");
        proc(20, 1, "containerd");
        proc(21, 20, "containerd-shim"); // shim v1, a child of containerd
        proc(30, 1, "bash");
        // A user's copy of a binary named containerd-shim, with a child, in the user's session: no shim.
        let session = "/user.slice/user-1000.slice/session-3.scope";
        owned(40, 1, "containerd-shim", 1000, session);
        owned(41, 40, "sleep", 1000, session);
        // Under a user's own manager (a transient scope the user named): no shim either.
        owned(42, 1, "containerd-shim", 1000, "/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope");
        owned(43, 42, "sleep", 1000, session);
        // A process named containerd-shim inside a container task (a system unit, whoever runs it): a container task
        // either way.
        owned(13, 12, "containerd-shim", 1000, "/system.slice/docker-ab.scope");
        owned(14, 13, "sleep", 1000, "/system.slice/docker-ab.scope");
        // Each answer alone, then all through one memo (as a scan asks them): the same answers, and the memo does
        // not carry one process's answer to another.
        let cases = [
            (11, Some(10), "a child of the shim"),
            (12, Some(10), "a grandchild of the shim"),
            (20, None, "containerd is no task"),
            (30, None, "bash"),
            (99, None, "gone"),
            (21, Some(21), "the shim itself"),
            (41, None, "a user's process named containerd-shim in a session"),
            (43, None, "a user's process named containerd-shim under the user's manager"),
            (14, Some(13), "a container task's own process, even when run by a user (a system unit)"),
        ];
        let mut memo = HashMap::new();
        for (pid, want, what) in cases {
            assert_eq!(shim_ancestor(d.path(), pid, &mut HashMap::new()), want, "{what}");
        }
        for (pid, want, what) in cases.iter().rev().chain(cases.iter()) {
            assert_eq!(shim_ancestor(d.path(), *pid, &mut memo), *want, "{what}, through the memo");
        }
        // Answers are remembered for the walk's pids: a process ended since reads from the memo.
        std::fs::remove_dir_all(d.path().join("11")).unwrap();
        assert_eq!(shim_ancestor(d.path(), 12, &mut memo), Some(10));
    }

    #[test]
    fn ancestor_units_walk_the_parents_to_pid_1() {
        let root = tempfile::tempdir().unwrap();
        let proc = |pid: i32, ppid: i32, cgroup: &str| {
            let d = root.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} (x) S {ppid} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0"),
            )
            .unwrap();
            std::fs::write(d.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        };
        proc(30, 20, "/system.slice/run-u7.service");
        proc(20, 10, "/system.slice/cloud-final.service");
        proc(10, 1, "/system.slice/cloud-final.service");
        proc(1, 0, "/init.scope");
        assert_eq!(ancestor_units(root.path(), 30), ["cloud-final.service", "run-u7.service"]);
        assert_eq!(ancestor_units(root.path(), 99), Vec::<String>::new(), "gone: nothing");
    }

    #[test]
    fn unit_from_v2_v1_and_hybrid() {
        assert_eq!(unit_from_cgroup("0::/system.slice/docker.service\n").0.as_deref(), Some("docker.service"));
        assert_eq!(
            unit_from_cgroup("12:pids:/x\n1:name=systemd:/system.slice/mongod.service\n").0.as_deref(),
            Some("mongod.service")
        );
        // hybrid: 0:: carries the same path
        let hybrid = "1:name=systemd:/system.slice/cassandra.service\n0::/system.slice/cassandra.service\n";
        assert_eq!(unit_from_cgroup(hybrid).0.as_deref(), Some("cassandra.service"));
        // hybrid where the unified hierarchy is unused: fall back to name=systemd
        assert_eq!(unit_from_cgroup("1:name=systemd:/system.slice/a.service\n0::/\n").0.as_deref(), Some("a.service"));
        // delegated subtrees below a service belong to the service
        assert_eq!(
            unit_from_cgroup("0::/system.slice/containerd.service/k8s.io/abc\n").0.as_deref(),
            Some("containerd.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n").0.as_deref(),
            Some("session-3.scope")
        );
        // Docker's cgroupfs driver: no unit, the path is kept for classification
        let (u, p) = unit_from_cgroup("4:memory:/docker/abc\n1:name=systemd:/docker/abc\n");
        assert_eq!((u, p.as_deref()), (None, Some("/docker/abc")));
        assert_eq!(unit_from_cgroup("0::/init.scope\n").0.as_deref(), Some("init.scope"));
        assert_eq!(unit_from_cgroup("").0, None);
    }

    #[test]
    fn codes_follow_fuser() {
        let a = Access { file: true, file_write: true, root: true, cwd: true, exe: true, mmap: true, mmap_write: true };
        assert_eq!(a.codes(), "Frce");
        let b = Access { file: true, mmap: true, ..Default::default() };
        assert_eq!(b.codes(), "fm");
    }

    #[test]
    fn each_entry_lists_what_read_dir_lists_and_read_at_reads_past_one_buffer() {
        let d = tempfile::tempdir().unwrap();
        // Enough long names to need several getdents64 calls into the 32 KiB buffer.
        let mut want: Vec<String> = (0..1500).map(|i| format!("entry-with-a-rather-long-name-{i:05}")).collect();
        for n in &want {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join("big"), &big).unwrap();
        want.push("big".into());
        let dir = nix::fcntl::open(d.path(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let mut got = vec![];
        let mut buf = vec![];
        each_entry(&dir, &mut buf, |n| got.push(n.to_str().unwrap().to_string())).unwrap();
        got.retain(|n| n != "." && n != "..");
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(read_at(&dir, c"big").unwrap(), big);
        assert_eq!(read_at(&dir, c"missing"), Err(Errno::ENOENT));
    }

    #[test]
    fn fdinfo_names_the_mount_an_fd_was_opened_through() {
        assert_eq!(parse_fdinfo_mnt_id(b"pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t3\n"), Some(24));
        assert_eq!(parse_fdinfo_mnt_id(b"pos:\t0\nflags:\t0100002\n"), None, "before Linux 3.15");
    }

    #[test]
    fn an_fd_open_for_writing_on_an_overlay_root_is_attributed_by_its_mount() {
        // This test's own fd on a file of the folder's filesystem, open for writing: found through the mount ids of
        // the filesystem even when the device given to the walk is another (as an overlay's layers report).
        let d = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let f = std::fs::OpenOptions::new().create(true).append(true).open(d.path().join("w")).unwrap();
        let fs = ProcFs::new("/proc");
        let (target, mounts) = fs.target(d.path()).unwrap();
        let ids: Vec<u32> = mounts.iter().filter(|m| makedev(m.dev.0, m.dev.1) == target.dev).map(|m| m.id).collect();
        let proc_fd = nix::fcntl::open("/proc", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let me = std::process::id() as i32;
        let walk = |dev: u64, ids: &[u32]| {
            let mut part = Partial::default();
            walk_one(&proc_fd, me, dev, ids, &mut part);
            part.holders.into_iter().next().map_or(0, |h| h.writable_fds)
        };
        let other_dev = libc::makedev(4095, 4095);
        assert!(walk(target.dev, &[]) >= 1, "by its device");
        assert_eq!(walk(other_dev, &[]), 0, "another device, no mount ids: not attributed");
        assert!(walk(other_dev, &ids) >= 1, "another device, the mount it was opened through: attributed");
        drop(f);
    }

    #[test]
    fn maps_device_field_is_matched_in_hex() {
        let dev = libc::makedev(0xfe, 0x1);
        let text = b"55d0-55d1 r--p 00000000 fe:01 1234 /usr/bin/x\n";
        assert!(maps_hit(text, dev));
        assert!(!maps_hit(b"55d0-55d1 r--p 00000000 fe:02 1234 /x\n", dev));
        assert!(!maps_hit(b"55d0-55d1 rw-p 00000000 00:00 0 \n", libc::makedev(0, 0)));
        // Only a shared writable mapping of a file there writes to it.
        assert!(maps_write_hit(b"7f00-7f01 rw-s 00000000 fe:01 99 /var/lib/x/db.mmap\n", dev));
        assert!(!maps_write_hit(b"7f00-7f01 rw-p 00000000 fe:01 99 /usr/lib/libc.so\n", dev), "private: copy on write");
        assert!(!maps_write_hit(b"7f00-7f01 r--s 00000000 fe:01 99 /var/lib/x/ro\n", dev), "read-only");
        assert!(!maps_write_hit(b"7f00-7f01 rw-s 00000000 fe:02 99 /data/x\n", dev), "another device");
    }
}
