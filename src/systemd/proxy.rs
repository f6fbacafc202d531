//! The part of systemd's D-Bus API ade-prep uses, all of it present in systemd 219 (RHEL/CentOS 7).
//! Declarations only; it must not hold logic.

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// `(type, symlink, destination)` as MaskUnitFiles and UnmaskUnitFiles report each change.
pub type RawChange = (String, String, String);

/// The manager object: units, jobs, unit files.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = true,
    gen_blocking = true
)]
pub trait Manager {
    /// Loads the unit (if needed) and returns its object, even for a unit that does not exist (LoadState not-found).
    #[zbus(name = "LoadUnit")]
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// The unit whose cgroup holds the process.
    #[zbus(name = "GetUnitByPID")]
    fn get_unit_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
    /// The job's object; fails with NoSuchJob once the job is gone.
    #[zbus(name = "GetJob")]
    fn get_job(&self, id: u32) -> zbus::Result<OwnedObjectPath>;
    /// Cancels a queued or running job.
    #[zbus(name = "CancelJob")]
    fn cancel_job(&self, id: u32) -> zbus::Result<()>;
    /// Enqueues a start job; returns its object.
    #[zbus(name = "StartUnit")]
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enqueues a stop job; returns its object.
    #[zbus(name = "StopUnit")]
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Sends a signal to the unit's processes (`who`: main, control or all).
    #[zbus(name = "KillUnit")]
    fn kill_unit(&self, name: &str, who: &str, signal: i32) -> zbus::Result<()>;
    /// Asks for the Job* and Unit* signals, which systemd sends only to subscribed clients.
    #[zbus(name = "Subscribe")]
    fn subscribe(&self) -> zbus::Result<()>;
    /// Reloads unit files (daemon-reload); replies once the reload is done.
    #[zbus(name = "Reload")]
    fn reload(&self) -> zbus::Result<()>;
    /// Links unit files to /dev/null (in /run when `runtime`).
    #[zbus(name = "MaskUnitFiles")]
    fn mask_unit_files(&self, files: &[&str], runtime: bool, force: bool) -> zbus::Result<Vec<RawChange>>;
    /// Removes the /dev/null links (those in /run when `runtime`).
    #[zbus(name = "UnmaskUnitFiles")]
    fn unmask_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<RawChange>>;
    /// A job finished, with its result (done, canceled, timeout, failed, dependency, skipped).
    #[zbus(signal, name = "JobRemoved")]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;
    /// Jobs queued now.
    #[zbus(property, name = "NJobs")]
    fn n_jobs(&self) -> zbus::Result<u32>;
    /// Jobs installed since boot.
    #[zbus(property, name = "NInstalledJobs")]
    fn n_installed_jobs(&self) -> zbus::Result<u32>;
}

/// org.freedesktop.DBus.Properties.GetAll on one interface of an object, without zbus' property cache.
#[zbus::proxy(
    interface = "org.freedesktop.DBus.Properties",
    gen_async = false,
    gen_blocking = true,
    blocking_name = "PropsProxyBlocking"
)]
pub trait Props {
    /// Every property of the interface.
    #[zbus(name = "GetAll")]
    fn get_all(&self, interface: &str) -> zbus::Result<HashMap<String, OwnedValue>>;
}
