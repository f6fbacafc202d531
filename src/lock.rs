//! The serialisation lock ([`crate::paths::LOCK_FILE`]): an flock that keeps ade-prep, custom scripts (`ade-prep lock --
//! CMD`) and golden-image steps from changing the machine at the same time. It owns the lock protocol; it must not
//! run commands (commands::lock does) nor know exit codes (exit does).
//!
//! The holder writes who it is (pid, command, since) into the lock file, so a waiter can say whom it waits for; a
//! clean release empties the file, so information left in a file whose flock is free comes from a holder that died
//! (stale) and is reported as such. The flock only lives as long as its process: across processes and the reboot
//! the journal holds the window, and [`Lock::acquire_when_closed`] waits for both.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::paths::Paths;
use crate::window::journal::StateError;
use crate::window::store::Store;

/// Why an open window forbids going on, read from the journal (with the lock held).
fn open_window(store: &dyn Store) -> Result<Option<String>, LockError> {
    let record = store.load().map_err(LockError::Journal)?;
    Ok(record.filter(|r| r.is_window_open()).map(|r| {
        format!(
            "the encryption window is {} since {} ({}; `ade-prep restore` closes it)",
            r.phase,
            clock::format_utc(r.opened_at),
            store.location().display()
        )
    }))
}

/// Who holds (or held) the lock, as its holder wrote it into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderInfo {
    /// Its pid: a holder that no longer runs leaves a stale lock, taken over.
    pub pid: i32,
    /// What it runs (`ade-prep prepare`, `ade-prep lock -- /opt/golden/step.sh`).
    pub command: String,
    /// When it took the lock (unix seconds).
    pub since: u64,
    /// The command `lock -- CMD` runs, as (pid, start time): it holds no lock fd, and dies with its wrapper
    /// (PR_SET_PDEATHSIG), a moment after the wrapper's death released the lock; the next holder waits for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<(i32, u64)>,
}

impl fmt::Display for HolderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}) since {}", self.pid, self.command, clock::format_utc(self.since))
    }
}

/// The lock as a bystander sees it (`ade-prep status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Nobody holds it.
    Free,
    /// Held; by whom, when the holder has written it yet.
    Held(Option<HolderInfo>),
    /// Nobody holds it, but this holder ended without releasing it (killed): its information is left behind.
    Stale(HolderInfo),
}

/// What went wrong, naming the lock file.
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Creating, opening or writing the lock file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The lock file is not a regular file owned by this user.
    #[error("{path}: refused: {why}")]
    Insecure { path: PathBuf, why: String },
    /// The wait ran out.
    #[error("busy after waiting {:.1} s: {what}", waited.as_secs_f64())]
    Busy {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The journal could not be read: whether the window is open is unknown.
    #[error(transparent)]
    Journal(StateError),
    /// A stop signal came while waiting.
    #[error("{0} (while waiting for the lock)")]
    Stopped(crate::signals::Stopped),
}

/// The serialisation lock of the system (or fixture tree) under a [`Paths`] root.
#[derive(Debug, Clone)]
pub struct Lock {
    path: PathBuf,
    proc: PathBuf,
}

/// The lock, held: dropping it releases it (and empties the holder information).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    info: HolderInfo,
    stale: Option<HolderInfo>,
    announced: bool,
    /// The holder `run` went on without (the lock is not held then).
    overrode: Option<String>,
}

impl LockGuard {
    /// Records the command this holder runs (`lock -- CMD`): a later holder waits until it has died too.
    pub fn set_child(&mut self, pid: i32, start_time: u64) -> Result<(), LockError> {
        self.info.child = Some((pid, start_time));
        let mut text = serde_json::to_string(&self.info)
            .map_err(|e| LockError::Io { path: self.path.clone(), source: e.into() })?;
        text.push('\n');
        self.file
            .set_len(0)
            .and_then(|_| self.file.write_all_at(text.as_bytes(), 0))
            .map_err(|source| LockError::Io { path: self.path.clone(), source })
    }

    /// True when this guard overrode a holder instead of taking the lock (`run` past its bound).
    pub fn overridden(&self) -> bool {
        self.overrode.is_some()
    }

    /// What this holder wrote into the lock file.
    pub fn holder(&self) -> &HolderInfo {
        &self.info
    }

    /// The information a dead holder left behind, if the lock was taken over from one.
    pub fn stale(&self) -> Option<&HolderInfo> {
        self.stale.as_ref()
    }

    /// The lock file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.overrode.is_some() {
            // Not ours: the holder's information stays.
            return;
        }
        // Empty first, so that information in a file nobody locks always means a holder that died.
        let _ = self.file.set_len(0);
        if self.announced {
            log::info!("lock: released {}", self.path.display());
        }
        // Closing the file releases the flock.
    }
}

fn flock(file: &File, op: libc::c_int) -> nix::Result<()> {
    // SAFETY: flock(2) on a descriptor the File owns for the duration of the call.
    Errno::result(unsafe { libc::flock(file.as_raw_fd(), op) }).map(drop)
}

fn read_info(file: &File) -> Option<HolderInfo> {
    let mut text = String::new();
    (&*file).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

impl Lock {
    /// The lock under `paths`.
    pub fn new(paths: &Paths) -> Self {
        Lock { path: paths.lock_file(), proc: paths.proc() }
    }

    /// The lock file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> LockError {
        let path = path.to_path_buf();
        move |source| LockError::Io { path, source }
    }

    /// Opens (creating it 0600, its folder 0755) the lock file, refusing symlinks and files not ours.
    fn open(&self) -> Result<File, LockError> {
        if let Some(dir) = self.path.parent() {
            if !dir.is_dir() {
                std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(self.io(dir))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(self.io(dir))?;
            }
            // The runtime folder like the file: not a symlink, ours, not writable by others (who could swap the
            // lock file for their own).
            let md = std::fs::symlink_metadata(dir).map_err(self.io(dir))?;
            let refuse = |why: String| Err(LockError::Insecure { path: dir.to_path_buf(), why });
            let me = nix::unistd::geteuid().as_raw();
            if md.file_type().is_symlink() {
                return refuse("a symlink (the runtime folder must be a real folder)".into());
            }
            if md.uid() != me {
                return refuse(format!("owned by uid {}, not {me}", md.uid()));
            }
            if md.mode() & 0o022 != 0 {
                return refuse(format!("mode {:04o}, writable by group or others", md.mode() & 0o7777));
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            // No symlink, no FIFO left to block on, not inherited by the command run under the lock.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(self.io(&self.path))?;
        let md = file.metadata().map_err(self.io(&self.path))?;
        let insecure = |why: String| LockError::Insecure { path: self.path.clone(), why };
        if !md.file_type().is_file() {
            return Err(insecure("not a regular file".into()));
        }
        let me = nix::unistd::geteuid().as_raw();
        if md.uid() != me {
            return Err(insecure(format!("owned by uid {}, not {me}", md.uid())));
        }
        if md.mode() & 0o777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(self.io(&self.path))?;
        }
        Ok(file)
    }

    /// Whether `pid` is a live process (under the [`Paths`] root's `/proc`).
    fn alive(&self, pid: i32) -> bool {
        self.proc.join(pid.to_string()).exists()
    }

    /// Takes the lock if it is free; `None` when someone holds it. Writes `command` as the holder information.
    pub fn try_acquire(&self, command: &str) -> Result<Option<LockGuard>, LockError> {
        let file = self.open()?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => return Ok(None),
            Err(e) => return Err(LockError::Io { path: self.path.clone(), source: e.into() }),
        }
        let stale = read_info(&file);
        // The command of a `lock --` wrapper that was killed: it dies a moment after its wrapper (PDEATHSIG); until
        // it has, the lock is not free (CMD never runs unlocked, and holds no lock fd that would outlive it).
        if let Some((pid, start)) = stale.as_ref().and_then(|s| s.child) {
            if crate::pidref::PidRef::open_started(&self.proc, pid, start).is_ok_and(|r| !r.exited()) {
                return Ok(None);
            }
        }
        let info = HolderInfo {
            pid: std::process::id() as i32,
            command: command.to_string(),
            since: clock::now(),
            child: None,
        };
        let mut text = serde_json::to_string(&info).map_err(|e| self.io(&self.path)(e.into()))?;
        text.push('\n');
        file.set_len(0).and_then(|_| file.write_all_at(text.as_bytes(), 0)).map_err(self.io(&self.path))?;
        Ok(Some(LockGuard { file, path: self.path.clone(), info, stale, announced: false, overrode: None }))
    }

    /// The lock as a bystander sees it, without taking it.
    pub fn state(&self) -> Result<LockState, LockError> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => Ok(read_info(&file).map_or(LockState::Free, LockState::Stale)),
            Err(Errno::EWOULDBLOCK) => Ok(LockState::Held(read_info(&file))),
            Err(e) => Err(LockError::Io { path: self.path.clone(), source: e.into() }),
        }
    }

    /// Who holds the lock, in words, for waiting messages.
    fn describe_holder(&self) -> String {
        match self.state() {
            Ok(LockState::Held(Some(h))) if !self.alive(h.pid) => {
                format!(
                    "{} is held; its recorded holder {h} is gone (another process keeps it open)",
                    self.path.display()
                )
            }
            Ok(LockState::Held(Some(h))) => format!("{} is held by {h}", self.path.display()),
            Ok(_) => format!("{} is held (holder not recorded yet)", self.path.display()),
            Err(e) => format!("{} is held ({e})", self.path.display()),
        }
    }

    /// Takes the lock, waiting at most `wait` (`None`: as long as it takes; zero: one try), saying who holds it
    /// while waiting. [`LockError::Busy`] when the wait runs out.
    pub fn acquire(&self, command: &str, wait: Option<Duration>) -> Result<LockGuard, LockError> {
        self.acquire_unless(command, wait, |_| Ok(None))
    }

    /// Takes the lock once it is free and the journal in `store` has no open window; the window is checked with
    /// the lock held (prepare opens it holding the lock), so the two cannot race.
    pub fn acquire_when_closed(
        &self,
        command: &str,
        store: &dyn Store,
        wait: Option<Duration>,
    ) -> Result<LockGuard, LockError> {
        self.acquire_unless(command, wait, |_| open_window(store))
    }

    /// For `prepare`: the lock, waited for up to `wait` (as long as it takes without); with it held, an open window
    /// refuses at once ([`LockError::Busy`], exit 5) unless `wait` was given: a second prepare never queues behind
    /// a window that stays open for hours, and decides with the lock held (issue 12).
    pub fn acquire_for_prepare(
        &self,
        command: &str,
        store: &dyn Store,
        wait: Option<Duration>,
    ) -> Result<LockGuard, LockError> {
        if wait.is_some() {
            return self.acquire_when_closed(command, store, wait);
        }
        self.acquire_unless(command, None, |_| match open_window(store)? {
            Some(why) => Err(LockError::Busy { what: format!("{why}; or give --wait SECS"), waited: Duration::ZERO }),
            None => Ok(None),
        })
    }

    /// `run`'s prepare: as [`Lock::acquire_for_prepare`] without `--wait`, but the wait for another holder is
    /// bounded by what is left of ADE's head start (`bound`): ADE will not wait for that holder either, so past it
    /// `run` prepares anyway, without the lock, and says which holder it overrode.
    pub fn acquire_for_run(&self, command: &str, store: &dyn Store, bound: Duration) -> Result<LockGuard, LockError> {
        let r = self.acquire_unless(command, Some(bound), |_| match open_window(store)? {
            Some(why) => Err(LockError::Busy { what: format!("{why}; or give --wait SECS"), waited: Duration::ZERO }),
            None => Ok(None),
        });
        match r {
            Err(LockError::Busy { what, waited }) if waited >= bound && open_window(store)?.is_none() => {
                log::warn!(
                    "lock: overridden after {:.0} s, ADE's head start being nearly over: {what}; preparing anyway \
                     (ADE will not wait for it either)",
                    waited.as_secs_f64()
                );
                let file = self.open()?;
                let info = HolderInfo {
                    pid: std::process::id() as i32,
                    command: command.to_string(),
                    since: clock::now(),
                    child: None,
                };
                Ok(LockGuard {
                    file,
                    path: self.path.clone(),
                    info,
                    stale: None,
                    announced: true,
                    overrode: Some(what),
                })
            }
            r => r,
        }
    }

    /// The waiting loop: `blocked` is asked, with the lock held, whether something else still forbids going on.
    fn acquire_unless(
        &self,
        command: &str,
        wait: Option<Duration>,
        mut blocked: impl FnMut(&LockGuard) -> Result<Option<String>, LockError>,
    ) -> Result<LockGuard, LockError> {
        let start = Instant::now();
        let mut said: Option<(String, Instant)> = None;
        loop {
            let (why, poll) = match self.try_acquire(command)? {
                Some(mut guard) => match blocked(&guard)? {
                    None => {
                        if let Some(s) = &guard.stale {
                            let fate = if self.alive(s.pid) { "no longer holds it" } else { "is gone" };
                            log::warn!("lock: stale holder information in {}: {s} {fate}", self.path.display());
                        }
                        log::info!("lock: taken {} by {}", self.path.display(), guard.info);
                        guard.announced = true;
                        crate::events::emit(crate::events::Event::WaitOver);
                        return Ok(guard);
                    }
                    Some(why) => (why, Duration::from_secs(1)),
                },
                None => (self.describe_holder(), Duration::from_millis(200)),
            };
            let waited = start.elapsed();
            crate::signals::check(|| format!("after {} s: {why}", waited.as_secs())).map_err(LockError::Stopped)?;
            let left = match wait {
                Some(w) if waited >= w => {
                    crate::events::emit(crate::events::Event::WaitOver);
                    return Err(LockError::Busy { what: why, waited });
                }
                Some(w) => w - waited,
                None => Duration::MAX,
            };
            crate::events::emit(crate::events::Event::Waiting { what: &why, left: wait.map(|_| left) });
            let repeat = !matches!(&said, Some((w, at)) if *w == why && at.elapsed() < Duration::from_secs(60));
            if repeat {
                log::warn!("waiting ({} s so far): {why}", waited.as_secs());
                said = Some((why, Instant::now()));
            }
            std::thread::sleep(poll.min(left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::store::FileStore;

    #[test]
    fn a_second_open_sees_the_holder_and_the_guard_releases() {
        let d = tempfile::tempdir().unwrap();
        let lock = Lock::new(&Paths::under(d.path()));
        assert_eq!(lock.state().unwrap(), LockState::Free);
        let g = lock.try_acquire("test one").unwrap().unwrap();
        assert!(g.stale().is_none());
        // flock belongs to the open file: a second open in the same process conflicts like another process.
        assert!(lock.try_acquire("test two").unwrap().is_none());
        match lock.state().unwrap() {
            LockState::Held(Some(h)) => {
                assert_eq!((h.pid, h.command.as_str()), (std::process::id() as i32, "test one"));
            }
            other => panic!("{other:?}"),
        }
        drop(g);
        assert_eq!(lock.state().unwrap(), LockState::Free);
        assert!(lock.try_acquire("test two").unwrap().is_some());
    }

    #[test]
    fn file_and_folder_get_their_modes() {
        let d = tempfile::tempdir().unwrap();
        let lock = Lock::new(&Paths::under(d.path()));
        let _g = lock.try_acquire("t").unwrap().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(lock.path()), 0o600);
        assert_eq!(mode(lock.path().parent().unwrap()), 0o755);
    }

    #[test]
    fn information_left_by_a_dead_holder_is_stale() {
        let d = tempfile::tempdir().unwrap();
        let lock = Lock::new(&Paths::under(d.path()));
        drop(lock.try_acquire("t").unwrap().unwrap());
        let dead = HolderInfo { pid: 999_999, command: "ade-prep prepare".into(), since: 1_714_564_700, child: None };
        std::fs::write(lock.path(), serde_json::to_string(&dead).unwrap()).unwrap();
        assert_eq!(lock.state().unwrap(), LockState::Stale(dead.clone()));
        let g = lock.acquire("t", Some(Duration::ZERO)).unwrap();
        assert_eq!(g.stale(), Some(&dead));
        drop(g);
        assert_eq!(lock.state().unwrap(), LockState::Free);
    }

    #[test]
    fn a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let lock = Lock::new(&Paths::under(d.path()));
        std::fs::create_dir_all(lock.path().parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), lock.path()).unwrap();
        let e = lock.try_acquire("t").unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", lock.path().display())), "{e}");
        assert!(!d.path().join("elsewhere").exists());
    }

    #[test]
    fn busy_names_the_holder_after_the_wait() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc", d.path().join("proc")).unwrap();
        let lock = Lock::new(&Paths::under(d.path()));
        let _g = lock.try_acquire("ade-prep prepare").unwrap().unwrap();
        let t = Instant::now();
        let e = lock.acquire("t", Some(Duration::from_millis(300))).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        let e = anyhow::Error::from(e);
        assert_eq!(crate::exit::code_of(&e), crate::exit::BUSY);
        let e = e.to_string();
        assert!(e.contains(&format!("held by pid {} (ade-prep prepare)", std::process::id())), "{e}");
    }

    #[test]
    fn an_open_window_blocks_even_a_free_lock() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let store = FileStore::new(&paths);
        let mut j = crate::window::journal::Journal::open(&store, Path::new("/"), "b").unwrap();
        let lock = Lock::new(&paths);
        let e = lock.acquire_when_closed("t", &store, Some(Duration::ZERO)).unwrap_err().to_string();
        assert!(e.contains("the encryption window is preparing since"), "{e}");
        // The lock itself was not kept.
        assert_eq!(lock.state().unwrap(), LockState::Free);
        j.set_phase(crate::window::phase::Phase::Restoring).unwrap();
        j.set_phase(crate::window::phase::Phase::Closed).unwrap();
        assert!(lock.acquire_when_closed("t", &store, Some(Duration::ZERO)).is_ok());
    }

    #[test]
    fn a_second_prepare_is_refused_at_once_while_a_window_is_open_unless_it_waits() {
        use crate::window::journal::Journal;
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let lock = Lock::new(&paths);
        let store = FileStore::new(&paths);
        lock.acquire_for_prepare("prepare", &store, None).unwrap(); // no window: taken (and released)
        let _window = Journal::open(FileStore::new(&paths), Path::new("/"), "boot-1").unwrap();
        let t = Instant::now();
        let e = lock.acquire_for_prepare("prepare", &store, None).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }) && e.to_string().contains("--wait"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "refused at once, not after a wait");
        assert_eq!(lock.state().unwrap(), LockState::Free, "the lock is released with the refusal");
        let e = lock.acquire_for_prepare("prepare", &store, Some(Duration::ZERO)).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
    }

    #[test]
    fn a_corrupt_journal_is_not_taken_for_a_closed_window() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        std::fs::create_dir_all(paths.state_file().parent().unwrap()).unwrap();
        std::fs::write(paths.state_file(), "{\"version\": 1, \"pha").unwrap();
        let store = FileStore::new(&paths);
        let e = Lock::new(&paths).acquire_when_closed("t", &store, None).unwrap_err();
        let e = anyhow::Error::from(e);
        assert_eq!(crate::exit::code_of(&e), crate::exit::USAGE);
        assert!(e.to_string().starts_with(&format!("{}: corrupt journal", paths.state_file().display())));
    }
}
