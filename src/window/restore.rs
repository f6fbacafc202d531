//! Restore: undo every change the journal records, from the journal alone (a new process, after a crash or the
//! reboot). Every undo is idempotent, so a change recorded as intended but never done is undone all the same:
//! unmasking a unit that is not masked, or starting one that runs, changes nothing. It must not consult anything but
//! the journal about what to undo.
//!
//! Order: the ground the workloads stood on mounted again (or nothing at all: [`super::ground`]); SELinux back; the
//! hold list removed, then unmask every unit (one call, then Reload; a Reload all the
//! same when there is no runtime mask, so that ade-prep-generator drops its masks); start the stopped units that were running
//! (sockets, then services, then timers and paths, each batch concurrently, each job awaited); start stopped containers, then
//! containerd's own stopped tasks.
//! Units that fail to come back are named and stay in the journal for the next `restore`. Restore cannot fail: what
//! went wrong is in its outcome, [`Restored`]. What both prepare and restore use of one kind of change is in
//! `super::steps` (SELinux's switch and undo, a unit's leftovers, docker's timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::anyhow;

use crate::events::{self, Event};
use crate::failpoint;
use crate::glob;
use crate::mountinfo;
use crate::runner::Runner;
use crate::systemd::{ActiveState, LoadState, UnitKind};
use crate::window::ctr;
use crate::window::ground;
use crate::window::hold;
use crate::window::journal::{Change, Journal};
use crate::window::phase::Phase;
use crate::window::steps::leftovers::kill_leftovers;
use crate::window::steps::{self, docker::docker_timeout};
use crate::window::store::Store;
use crate::window::Machine;

/// What restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Changes undone.
    pub undone: Vec<String>,
    /// Changes that could not be undone, with why.
    pub failed: Vec<String>,
    /// Workloads started again that do not serve: a post-start step that failed, or a readiness probe that did not
    /// answer within its bound, each naming the command. The units are started (systemd's now): the window closes
    /// all the same, and `status` asks the probes again.
    pub not_ready: Vec<String>,
    /// Undos counted done whose target no longer exists (a unit systemd no longer knows, a container the engine
    /// removed, a containerd container deleted): each named. Nothing can bring them back, so the window ends.
    pub warnings: Vec<String>,
}

impl Restored {
    /// One line for the operator.
    pub fn summary(&self) -> String {
        if self.undone.is_empty() && self.failed.is_empty() {
            return "nothing to undo".into();
        }
        let mut s = format!("{} change(s) undone", self.undone.len());
        if !self.warnings.is_empty() {
            s.push_str(&format!(" ({} with a warning: {})", self.warnings.len(), self.warnings.join("; ")));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!(", {} failed: {}", self.failed.len(), self.failed.join("; ")));
        }
        if !self.not_ready.is_empty() {
            s.push_str(&format!("; not ready: {}", self.not_ready.join("; ")));
        }
        s
    }
}

fn hit() {
    failpoint::hit("restore");
}

/// The stop timeout of the workload a unit belongs to, 90 s when none matches.
fn workload_timeout(m: &Machine, unit: &str) -> Duration {
    let secs = m
        .settings
        .workloads
        .values()
        .find(|w| glob::any(&w.units, unit) || w.companion_units.iter().any(|c| c == unit))
        .map_or(90, |w| w.stop_timeout_secs);
    Duration::from_secs(secs)
}

/// How long restore follows a start job: as long as systemd itself lets the unit start (its TimeoutStartSec, plus
/// a margin for the job to end), never less than the workload's stop timeout; a service without a start timeout
/// (infinity) gets [`START_WAIT_CAP`]. A database recovering, or SAP starting its instances, can take minutes: a
/// shorter wait would report a start that is still going well as failed.
pub fn start_wait(workload: Duration, timeout_start_usec: Option<u64>, is_service: bool) -> Duration {
    let systemd = match (is_service, timeout_start_usec) {
        (false, _) => Duration::ZERO,
        (true, None) => START_WAIT_CAP,
        (true, Some(us)) => (Duration::from_micros(us) + START_WAIT_MARGIN).min(START_WAIT_CAP),
    };
    workload.max(systemd)
}

/// The longest restore follows one start job.
pub const START_WAIT_CAP: Duration = Duration::from_secs(30 * 60);
const START_WAIT_MARGIN: Duration = Duration::from_secs(15);

fn start_timeout(m: &Machine, unit: &str) -> Duration {
    let info = m.systemd.unit(unit).ok();
    let usec = info.as_ref().and_then(|i| i.timeout_start_usec);
    start_wait(workload_timeout(m, unit), usec, unit.ends_with(".service") && info.is_some())
}

/// Undoes what the journal records and closes the window. A journal that cannot be written does not stop the undo:
/// the machine is restored all the same and each unrecorded outcome is named in `failed` ("journal: ..."), so the
/// window stays open and the next `restore` records it (every undo is idempotent). It cannot fail: what went wrong
/// is in the outcome.
pub fn restore<S: Store>(m: &Machine, j: &mut Journal<S>) -> Restored {
    let mut out = Restored::default();
    let todo: Vec<(u32, Change)> = j.to_undo().map(|e| (e.seq, e.change.clone())).collect();
    if todo.is_empty() && j.record().phase == Phase::Closed {
        return out;
    }
    let unrecorded = |out: &mut Restored, what: &str, e: &dyn std::fmt::Display| {
        log::error!("restore: the journal could not record {what}: {e}; undoing the rest all the same");
        out.failed.push(format!("journal: could not record {what}: {e}"));
    };
    // The ground first: every filesystem the workloads stood on is mounted again before anything is undone; one
    // that cannot be leaves the window as it is (a database would write into the empty mount-point folder on `/`).
    // The next restore tries again.
    if let Some(ground) = j.record().ground.clone() {
        let lost = ground_back(m, &ground);
        if !lost.is_empty() {
            for l in &lost {
                log::error!("restore: {l}");
            }
            out.failed.extend(lost);
            out.failed.push(
                "nothing was undone: mount the filesystems above (or fix /etc/fstab) and run `ade-prep restore` again"
                    .into(),
            );
            events::emit(Event::RestoreIncomplete(&out.failed));
            return out;
        }
    }
    if let Err(e) = j.set_phase(Phase::Restoring) {
        unrecorded(&mut out, "the start of the restore", &e);
    }
    hit();
    let ok = |j: &mut Journal<S>, seq: u32, what: String, out: &mut Restored| {
        if let Err(e) = j.undone(seq) {
            unrecorded(out, &what, &e);
        }
        hit();
        out.undone.push(what);
    };
    let bad = |j: &mut Journal<S>, seq: u32, what: String, out: &mut Restored| {
        if let Err(e) = j.undo_failed(seq, what.clone()) {
            unrecorded(out, &what, &e);
        }
        hit();
        log::error!("restore: {what}");
        out.failed.push(what);
    };

    // 1. SELinux.
    for (seq, c) in &todo {
        if let Change::SelinuxPermissive { previous } = c {
            match steps::selinux::undo(m, *previous) {
                Ok(what) => ok(j, *seq, what, &mut out),
                Err(what) => bad(j, *seq, what, &mut out),
            }
        }
    }
    // 2. The hold list, then unmask in one call (with its Reload): no start before the generator's masks are gone.
    let hold_err = match hold::clear_list(m.paths) {
        Ok(_) => None,
        Err(e) => Some(format!("{e:#}")),
    };
    let masks: Vec<(u32, String)> = todo
        .iter()
        .filter_map(|(s, c)| if let Change::MaskUnit { unit } = c { Some((*s, unit.clone())) } else { None })
        .collect();
    if masks.is_empty() {
        // Units in /etc (or a boot that ran the generator) are held by the generator alone: reload always.
        if let Err(e) = m.systemd.reload() {
            out.failed.push(format!("reloading systemd to drop the generator's masks: {e}"));
            log::error!("restore: reloading systemd to drop the generator's masks: {e}");
        }
    } else {
        let units: Vec<String> = masks.iter().map(|(_, u)| u.clone()).collect();
        match m.systemd.unmask_runtime(&units) {
            Ok(_) => {
                for (seq, u) in &masks {
                    log::info!("unmasked {u}");
                    ok(j, *seq, format!("unmask {u}"), &mut out);
                }
            }
            Err(e) => {
                for (seq, u) in &masks {
                    bad(j, *seq, format!("unmask {u}: {e}"), &mut out);
                }
            }
        }
    }
    if let Some(e) = hold_err {
        // The list is still there: a reload would mask the units again; the next restore retries.
        log::error!("restore: removing the hold list: {e}");
        out.failed.push(format!("removing the hold list: {e}"));
    }
    // 3. Start what was running, newest stop first.
    let stops: Vec<(u32, String, ActiveState)> = todo
        .iter()
        .filter_map(|(s, c)| match c {
            Change::StopUnit { unit, active_state_before } => Some((*s, unit.clone(), active_state_before.clone())),
            _ => None,
        })
        .collect();
    end_leftovers(m, j, &stops, &mut out, &unrecorded);
    let mut started: Vec<String> = vec![];
    // Sockets first, as at boot (sockets.target): a service that binds its socket's address itself when started
    // without it (mariadbd: no Requires= on mariadb.socket) would make the socket's start fail after it (EADDRINUSE,
    // found with Debian 12's mariadb-server, tests/nspawn/workloads.rs). Then services, then timers and paths.
    let wave_of = |u: &str| match UnitKind::of(u) {
        UnitKind::Trigger if u.ends_with(".socket") => 0,
        UnitKind::Trigger => 2,
        _ => 1,
    };
    for n in [0, 1, 2] {
        let wave: Vec<&(u32, String, ActiveState)> = stops.iter().filter(|(_, u, _)| wave_of(u) == n).collect();
        let (start, skip): (Vec<_>, Vec<_>) =
            wave.into_iter().partition(|(_, u, before)| before.is_running() && UnitKind::of(u) != UnitKind::Scope);
        for (seq, u, before) in skip {
            ok(j, *seq, format!("{u} left stopped (was {before})"), &mut out);
        }
        if start.is_empty() {
            continue;
        }
        let batch: Vec<(String, Duration)> = start.iter().map(|(_, u, _)| (u.clone(), start_timeout(m, u))).collect();
        events::emit(Event::Starting(&batch));
        let results = m.systemd.start_units(&batch);
        for ((seq, u, _), (_, r)) in start.iter().zip(results) {
            match r {
                Ok(()) => {
                    started.push(u.clone());
                    events::emit(Event::Started(u));
                    ok(j, *seq, format!("start {u}"), &mut out)
                }
                // A unit systemd no longer knows (removed by a package upgrade, a transient unit collected after
                // its stop): nothing can start it. Asked by its LoadState, as 219 and 252 name the start's error
                // differently (LoadFailed, NoSuchUnit).
                Err(e) if unit_gone(m, u) => {
                    let w = format!("{u} no longer exists (LoadState not-found): not started ({e})");
                    log::warn!("restore: {w}");
                    out.warnings.push(w);
                    ok(j, *seq, format!("start {u}: gone"), &mut out)
                }
                Err(e) => {
                    events::emit(Event::StartFailed(u, &e.to_string()));
                    bad(j, *seq, format!("{u} failed to come back: {e}"), &mut out)
                }
            }
        }
    }
    // 4. Containers, once dockerd is back.
    for (seq, c) in &todo {
        if let Change::StopContainers { ids } = c {
            match start_containers(m.runner, ids) {
                Ok(gone) if gone.is_empty() => ok(j, *seq, format!("started {} container(s)", ids.len()), &mut out),
                Ok(gone) => {
                    let w = format!(
                        "docker container(s) {} no longer exist (removed by the engine: `docker run --rm`): not started",
                        gone.join(" ")
                    );
                    log::warn!("restore: {w}");
                    out.warnings.push(w);
                    ok(j, *seq, format!("started {} container(s)", ids.len() - gone.len()), &mut out)
                }
                Err(e) => bad(j, *seq, format!("docker start: {e}"), &mut out),
            }
        }
    }
    // 4b. containerd's own tasks, once containerd is back: exactly the recorded ones, running (a paused one too, as
    // `docker start` brings a paused container back running).
    for (seq, c) in &todo {
        if let Change::StopTask { namespace, id, state } = c {
            let t = ctr::Task { namespace: namespace.clone(), id: id.clone(), state: state.clone() };
            if ctr::left_to_kubelet(&t) {
                // kubelet's pods: kubelet recreates them through the CRI once it runs again (docs/workloads.md).
                log::info!("restore: containerd {t} left to kubelet: not started with ctr");
                ok(j, *seq, format!("containerd {t}: left to kubelet"), &mut out);
                continue;
            }
            match ctr::start(m.runner, &t) {
                Ok(()) => {
                    log::info!("started containerd {t}");
                    ok(j, *seq, format!("started containerd {t}"), &mut out)
                }
                Err(e) if ctr::container_gone(m.runner, &t) => {
                    let w = format!("containerd {t}: its container no longer exists: not started ({e})");
                    log::warn!("restore: {w}");
                    out.warnings.push(w);
                    ok(j, *seq, format!("start containerd {t}: gone"), &mut out)
                }
                Err(e) => bad(j, *seq, e, &mut out),
            }
        }
    }
    // 4c. The workloads started again: their post-start steps, then their readiness, each within its bound. Also
    // those whose pre-stop ran although none of their units was stopped (a rollback after an Elasticsearch node's
    // allocation was limited, before its stop): a post-start undoes what the pre-stop set on the service.
    let pre_stopped: BTreeSet<&str> = todo
        .iter()
        .filter_map(|(_, c)| match c {
            Change::PreStop { workload, .. } => Some(workload.as_str()),
            _ => None,
        })
        .collect();
    for (name, w) in &m.settings.workloads {
        let was_started = started.iter().any(|u| glob::any(&w.units, u) || w.companion_units.contains(u));
        let undoes_pre_stop = pre_stopped.contains(name.as_str()) && !w.post_start.is_empty();
        if !was_started && !undoes_pre_stop {
            continue;
        }
        if let Err(e) = bring_up(m, name, w) {
            log::error!("restore: {e}");
            out.not_ready.push(e);
        }
    }
    // 5. Nothing to undo for the rest; the lock goes with the window.
    for (seq, c) in &todo {
        match c {
            Change::PreStop { .. } | Change::TerminateProcess { .. } | Change::LockHeld {} => {
                ok(j, *seq, c.to_string(), &mut out)
            }
            _ => {}
        }
    }
    if out.failed.is_empty() {
        if let Err(e) = j.set_phase(Phase::Closed) {
            unrecorded(&mut out, "the end of the window", &e);
            return out;
        }
        hit();
        events::emit(Event::WindowClosed(&out.summary()));
    } else {
        events::emit(Event::RestoreIncomplete(&out.failed));
    }
    out
}

/// Mounts the recorded ground that is not mounted now as the boot would (its mount unit, from the fstab generator),
/// each start awaited; what is still not mounted, each named with why. Empty when all of it is there.
pub(crate) fn ground_back(m: &Machine, ground: &[ground::Ground]) -> Vec<String> {
    let now = match mountinfo::read(m.paths) {
        Ok(now) => now,
        Err(e) => return vec![format!("the ground cannot be checked: {e}")],
    };
    let missing = ground::missing(ground, &now);
    if missing.is_empty() {
        return vec![];
    }
    // The fstab generator runs again first: ADE rewrote /etc/fstab for a volume it encrypted
    // (`CryptMountConfigUtil.py:702-747`) and reloads nothing. The hold list keeps the workloads masked meanwhile.
    if let Err(e) = m.systemd.reload() {
        return vec![format!("the ground cannot be mounted again: reloading systemd: {e}")];
    }
    let batch: Vec<(String, Duration)> =
        missing.iter().map(|(g, _)| (ground::mount_unit(&g.mount_point), Duration::from_secs(90))).collect();
    for (unit, _) in &batch {
        log::info!("restore: mounting {unit} again (it was mounted when the window opened)");
    }
    let results = m.systemd.start_units(&batch);
    let now = mountinfo::read(m.paths).unwrap_or_default();
    let still = ground::missing(ground, &now);
    still
        .iter()
        .map(|(g, instead)| {
            let unit = ground::mount_unit(&g.mount_point);
            let why = results
                .iter()
                .find(|(u, _)| *u == unit)
                .and_then(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
                .unwrap_or_else(|| match instead {
                    Some(src) => format!("mounted from {src}, not a block device"),
                    None => "started, yet not mounted".into(),
                });
            format!("{} ({} when the window opened) is not mounted: {unit}: {why}", g.mount_point.display(), g.source)
        })
        .collect()
}

/// Before the starts: processes of a stopped unit's old instance that still run in its cgroup (KillMode=process
/// leftovers a crash kept prepare from ending) would hold the unit's resources (a listening socket) and fail its
/// start. They were to end with the window anyway: KillUnit, as prepare does ([`kill_leftovers`]), each
/// recorded. Only units that are not running now (a running unit's processes are its live instance).
fn end_leftovers<S: Store>(
    m: &Machine,
    j: &mut Journal<S>,
    stops: &[(u32, String, ActiveState)],
    out: &mut Restored,
    unrecorded: &dyn Fn(&mut Restored, &str, &dyn std::fmt::Display),
) {
    let to_start: BTreeSet<&str> = stops
        .iter()
        .filter(|(_, u, before)| before.is_running() && UnitKind::of(u) != UnitKind::Scope)
        .map(|(_, u, _)| u.as_str())
        .collect();
    if to_start.is_empty() {
        return;
    }
    // Every filesystem the window freed (a data volume ADE encrypted is mounted again through its mapper, at the
    // same mount point); one that cannot be scanned is skipped with a warning.
    let mut holders = vec![];
    for mount in j.record().mounts() {
        match super::snapshot::scan_mounts(m.procs, std::slice::from_ref(&mount)) {
            Ok((found, _)) => {
                for h in found {
                    if !holders.iter().any(|o: &crate::scan::Holder| o.pid == h.pid) {
                        holders.push(h);
                    }
                }
            }
            Err(e) => {
                log::warn!("restore: could not look for leftovers of the stopped units on {}: {e}", mount.display())
            }
        }
    }
    // A container task's process, and the shim of one that runs, are never ended: containerd reconnects to a live
    // shim when it starts (docs/docker.md, bug 2); ending either would lose the task.
    let live_shims: BTreeSet<i32> = holders.iter().filter_map(|h| h.shim).collect();
    let mut by_unit: BTreeMap<String, Vec<(i32, u64, String)>> = BTreeMap::new();
    for h in holders {
        if h.shim.is_some() || live_shims.contains(&h.pid) {
            log::info!("restore: pid {} {} belongs to a running container task: left alone", h.pid, h.comm);
            continue;
        }
        if let Some(u) = h.unit.filter(|u| to_start.contains(u.as_str())) {
            by_unit.entry(u).or_default().push((h.pid, h.start_time, h.comm));
        }
    }
    let grace = Duration::from_secs(m.settings.stray.grace_secs);
    for (unit, procs) in by_unit {
        if m.systemd.unit(&unit).is_ok_and(|i| i.is_running()) {
            continue;
        }
        let mut seqs = vec![];
        for (pid, _, comm) in &procs {
            let change = Change::TerminateProcess { pid: *pid, comm: comm.clone(), unit: Some(unit.clone()) };
            match j.intend(change) {
                Ok(seq) => seqs.push(seq),
                Err(e) => unrecorded(out, &format!("the end of pid {pid} {comm} ({unit})"), &e),
            }
        }
        let pids: Vec<i32> = procs.iter().map(|(p, _, _)| *p).collect();
        let what = format!("ended what {unit}'s old instance left (pid {pids:?})");
        let seen: Vec<(i32, u64)> = procs.iter().map(|(p, s, _)| (*p, *s)).collect();
        match kill_leftovers(m, &unit, &seen, grace) {
            Ok(()) => {
                log::info!("restore: {what}");
                for seq in seqs {
                    if let Err(e) = j.undone(seq) {
                        unrecorded(out, &what, &e);
                    }
                }
                out.undone.push(what);
            }
            Err(e) => {
                let what = format!("{unit}: could not end its old instance's leftovers (pid {pids:?}): {e:#}");
                log::error!("restore: {what}");
                for seq in seqs {
                    if let Err(e) = j.undo_failed(seq, what.clone()) {
                        unrecorded(out, &what, &e);
                    }
                }
                out.failed.push(what);
            }
        }
    }
}

/// A workload's post-start steps, in order, then its readiness probe until it answers: Err names the step or the
/// probe that did not.
fn bring_up(m: &Machine, name: &str, w: &crate::config::Workload) -> Result<(), String> {
    for p in &w.post_start {
        let what = format!("workload {name}: post-start {:?} as {}", crate::bundle::redact_argv(&p.argv).0, p.user);
        log::info!("{what}");
        // `retry_secs`: run again every second while it fails, within that bound (the cluster tools of a cluster
        // whose daemons were just started cannot reach it for the first seconds).
        let t = std::time::Instant::now();
        loop {
            let r = post_start_once(m.runner, p).map_err(|e| format!("{what}: {e}"));
            if r.is_ok() || t.elapsed() >= Duration::from_secs(p.retry_secs) || crate::signals::stop_now() {
                r?;
                break;
            }
            log::debug!("{}; again in 1 s", r.unwrap_err());
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let Some(p) = &w.ready else { return Ok(()) };
    let bound = Duration::from_secs(p.timeout_secs);
    let what = format!("readiness of {name}");
    events::emit(Event::Waiting { what: &what, left: Some(bound) });
    let t = std::time::Instant::now();
    let r = loop {
        let left = bound.saturating_sub(t.elapsed());
        let ask = left.min(Duration::from_secs(crate::config::PROBE_ASK_SECS)).max(Duration::from_secs(1));
        let last = probe(m.runner, p, ask);
        if last.is_ok() || t.elapsed() >= bound || crate::signals::stop_now() {
            break last;
        }
        std::thread::sleep(Duration::from_secs(crate::config::PROBE_INTERVAL_SECS).min(left));
    };
    events::emit(Event::WaitOver);
    match r {
        Ok(()) => {
            log::info!("workload {name} is ready ({})", p.argv.join(" "));
            Ok(())
        }
        Err(e) => Err(format!("workload {name} not ready after {} s: {e}", p.timeout_secs)),
    }
}

/// One run of a post-start step: Err says how it failed.
fn post_start_once(runner: &dyn Runner, p: &crate::config::PreStop) -> Result<(), String> {
    let o = runner.run(&p.argv, &p.user, Duration::from_secs(p.timeout_secs)).map_err(|e| e.to_string())?;
    if o.timed_out {
        return Err(format!("timed out after {} s", p.timeout_secs));
    }
    if !o.code.is_some_and(|c| p.ok_exit_codes.contains(&c)) {
        return Err(format!("exited {:?} (expected {:?}): {}", o.code, p.ok_exit_codes, o.stderr_tail));
    }
    Ok(())
}

/// One ask of a readiness probe: Err names the probe and its answer.
pub fn probe(runner: &dyn Runner, p: &crate::config::Probe, ask: Duration) -> Result<(), String> {
    let cmd = format!("probe {:?} as {}", p.argv, p.user);
    let o = runner.run(&p.argv, &p.user, ask).map_err(|e| format!("{cmd}: {e}"))?;
    if o.timed_out {
        return Err(format!("{cmd}: no answer within {} s", ask.as_secs()));
    }
    if o.code != Some(0) {
        let code = o.code.map_or("by a signal".into(), |c| c.to_string());
        return Err(format!("{cmd}: exited {code}: {}{}", o.stdout.trim(), o.stderr_tail));
    }
    match &p.expect_stdout {
        Some(want) if o.stdout.trim() != want => Err(format!("{cmd}: answered {:?}, not {want:?}", o.stdout.trim())),
        _ => Ok(()),
    }
}

/// Whether systemd no longer knows `unit`: its LoadState is `not-found` (a property 219 has).
fn unit_gone(m: &Machine, unit: &str) -> bool {
    m.systemd.unit(unit).is_ok_and(|i| i.load_state == LoadState::NotFound)
}

/// `docker start` of the stopped containers; Ok with the ids the engine no longer has (a `--rm` container is
/// removed by its stop), the others started.
fn start_containers(runner: &dyn Runner, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let start = |ids: &[String]| -> anyhow::Result<()> {
        let mut argv: Vec<String> = vec!["docker".into(), "start".into()];
        argv.extend(ids.iter().cloned());
        // The CLI starts them one after another: 20 took 298 s under TCG (docs/docker.md, bug 4).
        let timeout = docker_timeout(240, ids.len()).max(Duration::from_secs(300));
        let o = runner.run(&argv, "root", timeout)?;
        if o.code == Some(0) {
            Ok(())
        } else if o.timed_out {
            Err(anyhow!("timed out after {} s ({} containers)", timeout.as_secs(), ids.len()))
        } else {
            Err(anyhow!("exit {:?}: {}", o.code, o.stderr_tail))
        }
    };
    let Err(e) = start(ids) else { return Ok(vec![]) };
    // Which of them the engine still has: every container's full id (`docker ps -a`); a recorded id is a prefix.
    let argv: Vec<String> = ["docker", "ps", "-a", "-q", "--no-trunc"].iter().map(|s| s.to_string()).collect();
    let all = match runner.run(&argv, "root", Duration::from_secs(60)) {
        Ok(o) if o.code == Some(0) => o.stdout,
        _ => return Err(e),
    };
    let (left, gone): (Vec<String>, Vec<String>) =
        ids.iter().cloned().partition(|id| all.lines().any(|l| l.trim().starts_with(id.as_str())));
    if gone.is_empty() {
        return Err(e);
    }
    if !left.is_empty() {
        start(&left)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_followed_as_long_as_systemd_lets_the_unit_start() {
        let s = Duration::from_secs;
        // A service with TimeoutStartSec=300 whose workload stops within 30 s: 300 s + the margin.
        assert_eq!(start_wait(s(30), Some(300_000_000), true), s(315));
        // The workload's stop timeout is the floor.
        assert_eq!(start_wait(s(120), Some(5_000_000), true), s(120));
        // No start timeout (infinity): the cap; a huge one is capped too.
        assert_eq!(start_wait(s(30), None, true), START_WAIT_CAP);
        assert_eq!(start_wait(s(30), Some(10 * 3600 * 1_000_000), true), START_WAIT_CAP);
        // Sockets, timers (or a unit that could not be read): the workload's timeout.
        assert_eq!(start_wait(s(30), None, false), s(30));
    }
}
