//! [`Systemd`]: the [`ServiceManager`] of the running system, over the system bus.
//! It must not decide what to stop or start; the window does.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zbus::blocking::Connection;
use zbus::export::futures_core::Stream;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedValue;

use super::jobs::{self, JobBus, Pending, Removed};
use super::proxy::{JobRemovedStream, ManagerProxy, ManagerProxyBlocking, PropsProxyBlocking};
use super::{
    ActiveState, DbusError, FileChange, JobCounters, JobError, JobOp, LoadState, Reload, ServiceManager, SystemdError,
    UnitInfo,
};

/// The system bus when DBUS_SYSTEM_BUS_ADDRESS is not set.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";
/// Where runtime masks and runtime unit files live.
const RUNTIME_UNIT_DIR: &str = "/run/systemd/system/";
/// Unit folders that outrank /run/systemd/system (systemd.unit(5), "Unit File Load Path"): a unit file there
/// hides a runtime mask.
const ABOVE_RUNTIME_DIRS: &[&str] = &[
    "/etc/systemd/system.control/",
    "/run/systemd/system.control/",
    "/run/systemd/transient/",
    "/etc/systemd/system/",
];
const SYSTEMD: &str = "org.freedesktop.systemd1";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";

/// systemd's manager over the system bus. Jobs of one batch are followed on one JobRemoved stream, opened (after
/// Subscribe) before the first StartUnit/StopUnit of the batch.
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxyBlocking<'static>,
    address: String,
    subscribed: Mutex<bool>,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd").field("address", &self.address).finish_non_exhaustive()
    }
}

fn call<T>(what: impl FnOnce() -> String, r: zbus::Result<T>) -> Result<T, SystemdError> {
    r.map_err(|e| SystemdError::Call { what: what(), error: e.into() })
}

impl Systemd {
    /// The unit whose cgroup holds `pid` (GetUnitByPID); None when systemd knows no unit for it. For the tests
    /// that cross-check the unit read from /proc.
    pub fn unit_by_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        let path = match self.manager.get_unit_by_pid(pid) {
            Ok(p) => p,
            Err(e) => {
                let e = DbusError::from(e);
                if e.is("NoSuchUnit") || e.is("NoUnitForPID") {
                    return Ok(None);
                }
                return Err(SystemdError::Call { what: format!("unit of pid {pid}"), error: e });
            }
        };
        let what = format!("unit of pid {pid}");
        let props = self.props(&what, path)?;
        let u = call(|| what.clone(), props.get_all(UNIT_IFACE))?;
        Props { unit: &what, map: &u }.string("Id").map(Some)
    }

    /// The manager's job counters, for the tests that prove a dry run queued no job.
    pub fn job_counters(&self) -> Result<JobCounters, SystemdError> {
        Ok(JobCounters {
            jobs: call(|| "manager property NJobs".into(), self.manager.n_jobs())?,
            installed_jobs: call(|| "manager property NInstalledJobs".into(), self.manager.n_installed_jobs())?,
        })
    }

    /// Connects to the system bus: DBUS_SYSTEM_BUS_ADDRESS, else [`DEFAULT_SYSTEM_BUS`].
    pub fn system() -> Result<Self, SystemdError> {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_string());
        Self::connect(&address)
    }

    /// Connects to the bus at `address` (a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`).
    pub fn connect(address: &str) -> Result<Self, SystemdError> {
        let err = |e: zbus::Error| SystemdError::Connect { address: address.to_string(), error: e.into() };
        let conn = zbus::blocking::connection::Builder::address(address).and_then(|b| b.build()).map_err(err)?;
        let manager =
            ManagerProxyBlocking::builder(&conn).cache_properties(CacheProperties::No).build().map_err(err)?;
        Ok(Systemd { conn, manager, address: address.to_string(), subscribed: Mutex::new(false) })
    }

    /// The bus address in use.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn props(&self, unit: &str, path: zbus::zvariant::OwnedObjectPath) -> Result<PropsProxyBlocking<'_>, SystemdError> {
        call(
            || format!("properties of {unit}"),
            PropsProxyBlocking::builder(&self.conn)
                .destination(SYSTEMD)
                .and_then(|b| b.path(path))
                .and_then(|b| b.cache_properties(CacheProperties::No).build()),
        )
    }

    fn job_op(&self, op: JobOp, unit: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath> {
        match op {
            JobOp::Start => self.manager.start_unit(unit, "replace"),
            JobOp::Stop => self.manager.stop_unit(unit, "replace"),
        }
    }

    /// Subscribes once per connection (systemd sends JobRemoved only to subscribers), then opens the stream.
    fn job_stream(&self) -> Result<JobRemovedStream, DbusError> {
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if !*subscribed {
            match self.manager.subscribe() {
                Ok(()) => {}
                Err(e) => {
                    let e = DbusError::from(e);
                    if !e.is("AlreadySubscribed") {
                        return Err(e);
                    }
                }
            }
            *subscribed = true;
        }
        zbus::block_on(async {
            let m = ManagerProxy::builder(self.conn.inner()).cache_properties(CacheProperties::No).build().await?;
            m.receive_job_removed().await
        })
        .map_err(DbusError::from)
    }

    fn run_jobs(&self, op: JobOp, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut results: Vec<Option<Result<(), JobError>>> = vec![None; batch.len()];
        let follow = self.job_stream().and_then(|stream| {
            let alarm = Alarm::new()
                .map_err(|e| DbusError { name: None, message: format!("starting the alarm thread: {e}") })?;
            Ok((stream, alarm))
        });
        match follow {
            Err(error) => {
                for (i, (unit, _)) in batch.iter().enumerate() {
                    results[i] = Some(Err(JobError::Follow { op, unit: unit.clone(), error: error.clone() }));
                }
            }
            Ok((stream, alarm)) => {
                let mut pending = Vec::new();
                for (i, (unit, timeout)) in batch.iter().enumerate() {
                    match self.job_op(op, unit) {
                        Ok(job) => {
                            log::debug!("{op} {unit}: queued job {}", job.as_str());
                            pending.push(Pending::new(i, unit.clone(), job.to_string(), Instant::now(), *timeout));
                        }
                        // A unit that is not loaded is not running: a stop of it is done, not refused. A
                        // container's scope ends when `docker stop` stops the container, and systemd unloads it at
                        // once (seen with Docker's systemd cgroup driver: docs/docker.md, bug 1).
                        Err(e) => {
                            let error = DbusError::from(e);
                            results[i] = Some(if matches!(op, JobOp::Stop) && error.is("NoSuchUnit") {
                                log::info!("{op} {unit}: already gone (not loaded)");
                                Ok(())
                            } else {
                                Err(JobError::Call { op, unit: unit.clone(), error })
                            });
                        }
                    }
                }
                let mut bus = RealBus { systemd: self, stream, alarm };
                jobs::wait(&mut bus, op, pending, &mut results);
            }
        }
        batch
            .iter()
            .zip(results)
            .map(|((unit, _), r)| {
                let r = r.unwrap_or_else(|| {
                    Err(JobError::Follow {
                        op,
                        unit: unit.clone(),
                        error: DbusError { name: None, message: "left unresolved".into() },
                    })
                });
                (unit.clone(), r)
            })
            .collect()
    }

    fn change_masks(&self, mask: bool, units: &[String], reload: Reload) -> Result<Vec<FileChange>, SystemdError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let what = || format!("{} (runtime) {}", if mask { "mask" } else { "unmask" }, units.join(" "));
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        let changes = if mask {
            for u in units {
                let info = self.unit(u)?;
                if let Some(reason) = runtime_mask_blocked(&info.fragment_path) {
                    return Err(SystemdError::Refused { what: format!("mask (runtime) {u}"), reason });
                }
            }
            call(what, self.manager.mask_unit_files(&names, true, true))?
        } else {
            call(what, self.manager.unmask_unit_files(&names, true))?
        };
        let changes: Vec<FileChange> =
            changes.into_iter().map(|(kind, path, target)| FileChange { kind, path, target }).collect();
        for c in &changes {
            log::info!("{} {} {}{}", if mask { "masked" } else { "unmasked" }, c.kind, c.path, arrow(&c.target));
        }
        if reload == Reload::Later {
            return Ok(changes);
        }
        self.reload()?;
        if mask {
            // Proof that the masks are in effect: a unit file that outranks /run would keep the unit loaded.
            let mut unmasked = Vec::new();
            for u in units {
                let info = self.unit(u)?;
                if !info.is_masked() {
                    unmasked.push(format!("{u} (LoadState {}, unit file {})", info.load_state, info.fragment_path));
                }
            }
            if !unmasked.is_empty() {
                return Err(SystemdError::Refused {
                    what: what(),
                    reason: format!("the mask is not in effect after the reload for {}", unmasked.join(", ")),
                });
            }
        }
        Ok(changes)
    }
}

/// Why a runtime mask cannot work for a unit loaded from `fragment`, if it cannot.
fn runtime_mask_blocked(fragment: &str) -> Option<String> {
    if fragment.starts_with(RUNTIME_UNIT_DIR) {
        return Some(format!("its unit file is {fragment}, which a runtime mask would replace"));
    }
    let dir = ABOVE_RUNTIME_DIRS.iter().find(|d| fragment.starts_with(*d))?;
    Some(format!(
        "its unit file is {fragment}, and {dir} takes precedence over a mask in {RUNTIME_UNIT_DIR}, so the mask \
         would have no effect"
    ))
}

fn arrow(target: &str) -> String {
    if target.is_empty() {
        String::new()
    } else {
        format!(" → {target}")
    }
}

impl ServiceManager for Systemd {
    fn unit(&self, name: &str) -> Result<UnitInfo, SystemdError> {
        let path = call(|| format!("load unit {name}"), self.manager.load_unit(name))?;
        let props = self.props(name, path)?;
        let u = call(|| format!("properties of {name}"), props.get_all(UNIT_IFACE))?;
        let p = Props { unit: name, map: &u };
        let mut info = UnitInfo {
            id: p.string("Id")?,
            load_state: LoadState::parse(&p.string("LoadState")?),
            active_state: ActiveState::parse(&p.string("ActiveState")?),
            sub_state: p.string("SubState")?,
            unit_file_state: p.opt_string("UnitFileState")?.unwrap_or_default(),
            fragment_path: p.opt_string("FragmentPath")?.unwrap_or_default(),
            triggered_by: p.strings("TriggeredBy")?,
            triggers: p.strings("Triggers")?,
            requires: p.strings("Requires")?,
            wants: p.strings("Wants")?,
            binds_to: p.strings("BindsTo")?,
            required_by: p.strings("RequiredBy")?,
            bound_by: p.strings("BoundBy")?,
            consists_of: p.strings("ConsistsOf")?,
            after: p.strings("After")?,
            before: p.strings("Before")?,
            refuse_manual_stop: p.opt_bool("RefuseManualStop")?.unwrap_or(false),
            transient: p.opt_bool("Transient")?.unwrap_or(false),
            ..UnitInfo::default()
        };
        // ControlGroup, KillMode, MainPID and Restart live on the type's own interface (in 219 as in 252).
        let Some(iface) = type_interface(&info.id) else {
            return Ok(info);
        };
        let t = match props.get_all(iface) {
            Ok(t) => t,
            // A unit that failed to load may lack its type's interface.
            Err(e) if info.load_state != LoadState::Loaded => {
                log::debug!("{name}: no {iface} properties: {e}");
                return Ok(info);
            }
            Err(e) => return call(|| format!("{iface} properties of {name}"), Err(e)),
        };
        let p = Props { unit: name, map: &t };
        info.control_group = p.opt_string("ControlGroup")?.filter(|s| !s.is_empty());
        info.kill_mode = p.opt_string("KillMode")?;
        info.main_pid = p.opt_u32("MainPID")?.filter(|&pid| pid != 0);
        info.restart = p.opt_string("Restart")?;
        // USEC_INFINITY (u64::MAX) or 0: no start timeout.
        info.timeout_start_usec = p.opt_u64("TimeoutStartUSec")?.filter(|&t| t != 0 && t != u64::MAX);
        Ok(info)
    }

    fn mask_runtime(&self, units: &[String], reload: Reload) -> Result<Vec<FileChange>, SystemdError> {
        self.change_masks(true, units, reload)
    }

    fn unmask_runtime(&self, units: &[String]) -> Result<Vec<FileChange>, SystemdError> {
        self.change_masks(false, units, Reload::Now)
    }

    fn reload(&self) -> Result<(), SystemdError> {
        call(|| "reload (daemon-reload)".into(), self.manager.reload())?;
        log::info!("reloaded systemd unit files");
        Ok(())
    }

    fn stop_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        self.run_jobs(JobOp::Stop, batch)
    }

    fn start_units(&self, batch: &[(String, Duration)]) -> Vec<(String, Result<(), JobError>)> {
        self.run_jobs(JobOp::Start, batch)
    }

    fn kill_unit(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        call(|| format!("kill {unit} (signal {signal})"), self.manager.kill_unit(unit, "all", signal))?;
        log::info!("{unit}: sent signal {signal} to its processes");
        Ok(())
    }
}

/// The D-Bus interface holding a unit type's cgroup and kill settings; None for types without processes.
fn type_interface(unit: &str) -> Option<&'static str> {
    Some(match unit.rsplit_once('.')?.1 {
        "service" => "org.freedesktop.systemd1.Service",
        "socket" => "org.freedesktop.systemd1.Socket",
        "scope" => "org.freedesktop.systemd1.Scope",
        "mount" => "org.freedesktop.systemd1.Mount",
        "swap" => "org.freedesktop.systemd1.Swap",
        "slice" => "org.freedesktop.systemd1.Slice",
        _ => return None,
    })
}

/// Typed reads of a GetAll answer, with errors naming the unit and the property.
struct Props<'a> {
    unit: &'a str,
    map: &'a HashMap<String, OwnedValue>,
}

impl Props<'_> {
    fn bad(&self, property: &str, detail: impl std::fmt::Display) -> SystemdError {
        SystemdError::Property {
            unit: self.unit.to_string(),
            property: property.to_string(),
            detail: detail.to_string(),
        }
    }
    fn opt<T>(&self, key: &str) -> Result<Option<T>, SystemdError>
    where
        T: TryFrom<OwnedValue, Error = zbus::zvariant::Error>,
    {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let v = v.try_clone().map_err(|e| self.bad(key, e))?;
        T::try_from(v).map(Some).map_err(|e| self.bad(key, e))
    }
    fn opt_string(&self, key: &str) -> Result<Option<String>, SystemdError> {
        self.opt::<String>(key)
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, SystemdError> {
        self.opt::<bool>(key)
    }
    fn opt_u32(&self, key: &str) -> Result<Option<u32>, SystemdError> {
        self.opt::<u32>(key)
    }
    fn opt_u64(&self, key: &str) -> Result<Option<u64>, SystemdError> {
        self.opt::<u64>(key)
    }
    fn string(&self, key: &str) -> Result<String, SystemdError> {
        self.opt_string(key)?.ok_or_else(|| self.bad(key, "missing"))
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, SystemdError> {
        Ok(self.opt::<Vec<String>>(key)?.unwrap_or_default())
    }
}

/// The real [`JobBus`]: the batch's JobRemoved stream, GetJob, CancelJob, the unit's ActiveState.
struct RealBus<'a> {
    systemd: &'a Systemd,
    stream: JobRemovedStream,
    alarm: Alarm,
}

impl JobBus for RealBus<'_> {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn next_removed(&mut self, until: Instant) -> Result<Option<Removed>, DbusError> {
        self.alarm.set(until);
        let (stream, alarm) = (&mut self.stream, &self.alarm);
        zbus::block_on(std::future::poll_fn(|cx| loop {
            match Pin::new(&mut *stream).poll_next(cx) {
                Poll::Ready(Some(signal)) => match signal.args() {
                    Ok(a) => {
                        return Poll::Ready(Ok(Some(Removed {
                            job: a.job.to_string(),
                            unit: a.unit.clone(),
                            result: a.result.clone(),
                        })))
                    }
                    Err(e) => log::debug!("unreadable JobRemoved: {e}"),
                },
                Poll::Ready(None) => {
                    return Poll::Ready(Err(DbusError { name: None, message: "the JobRemoved stream ended".into() }))
                }
                Poll::Pending => {
                    return if alarm.poll(cx, until) { Poll::Ready(Ok(None)) } else { Poll::Pending };
                }
            }
        }))
    }

    fn job_exists(&mut self, id: u32) -> Result<bool, DbusError> {
        match self.systemd.manager.get_job(id) {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = DbusError::from(e);
                if e.is("NoSuchJob") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn active_state(&mut self, unit: &str) -> Result<ActiveState, DbusError> {
        self.systemd.unit(unit).map(|u| u.active_state).map_err(|e| match e {
            SystemdError::Call { error, .. } | SystemdError::Connect { error, .. } => error,
            e => DbusError { name: None, message: e.to_string() },
        })
    }

    fn cancel(&mut self, id: u32) -> Result<(), DbusError> {
        self.systemd.manager.cancel_job(id).map_err(DbusError::from)
    }

    fn stop_requested(&mut self) -> bool {
        crate::signals::stop_now()
    }
}

/// A wake-up at an instant for a future polled by `zbus::block_on`, without an async runtime: one thread per batch
/// sleeps on a condvar until the instant set last, then wakes the waker stored last.
struct Alarm {
    shared: Arc<(Mutex<AlarmState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct AlarmState {
    deadline: Option<Instant>,
    waker: Option<Waker>,
    quit: bool,
}

impl Alarm {
    fn new() -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(AlarmState::default()), Condvar::new()));
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("ade-prep-alarm".into()).spawn(move || {
            let (lock, cv) = &*s;
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !st.quit {
                let now = Instant::now();
                st = match st.deadline {
                    Some(d) if now >= d => {
                        st.deadline = None;
                        if let Some(w) = st.waker.take() {
                            w.wake();
                        }
                        st
                    }
                    Some(d) => cv.wait_timeout(st, d - now).unwrap_or_else(|e| e.into_inner()).0,
                    None => cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            }
        })?;
        Ok(Alarm { shared, thread: Some(thread) })
    }

    fn set(&self, until: Instant) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).deadline = Some(until);
        cv.notify_one();
    }

    /// True once `until` has passed; otherwise arranges for `cx` to be woken then.
    fn poll(&self, cx: &mut Context<'_>, until: Instant) -> bool {
        let (lock, _) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= until {
            return true;
        }
        st.waker = Some(cx.waker().clone());
        false
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).quit = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_masks_only_shadow_unit_files_below_run() {
        assert_eq!(runtime_mask_blocked(""), None);
        assert_eq!(runtime_mask_blocked("/lib/systemd/system/docker.service"), None);
        assert_eq!(runtime_mask_blocked("/usr/local/lib/systemd/system/x.service"), None);
        assert_eq!(runtime_mask_blocked("/run/systemd/generator/x.service"), None);
        let e = runtime_mask_blocked("/etc/systemd/system/sapinit.service").unwrap();
        assert!(e.contains("/etc/systemd/system/ takes precedence"), "{e}");
        assert!(runtime_mask_blocked("/run/systemd/transient/docker-1.scope").is_some());
        assert!(runtime_mask_blocked("/run/systemd/system/x.service").unwrap().contains("would replace"));
    }

    #[test]
    fn type_interfaces() {
        assert_eq!(type_interface("docker.service"), Some("org.freedesktop.systemd1.Service"));
        assert_eq!(type_interface("docker.socket"), Some("org.freedesktop.systemd1.Socket"));
        assert_eq!(type_interface("backup.timer"), None);
        assert_eq!(type_interface("noext"), None);
    }

    #[test]
    fn alarm_wakes_a_blocked_future_at_its_deadline() {
        let alarm = Alarm::new().unwrap();
        let t = Instant::now();
        let until = t + Duration::from_millis(150);
        alarm.set(until);
        zbus::block_on(std::future::poll_fn(|cx| if alarm.poll(cx, until) { Poll::Ready(()) } else { Poll::Pending }));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        // A wide margin (33 times the alarm) for a loaded machine: this only tells a wake at the deadline from none.
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn connecting_to_a_missing_bus_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix:path={}/no-bus", dir.path().display());
        let e = Systemd::connect(&addr).unwrap_err().to_string();
        assert!(e.starts_with(&format!("connecting to the system bus at {addr}: ")), "{e}");
    }
}
