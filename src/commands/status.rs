//! `status`: the window (from the journal) and the lock, as text or JSON. Reads only; it must not take the lock.

use anyhow::Context;
use serde::Serialize;

use super::out;
use crate::clock;
use crate::config::Settings;
use crate::datavol::{self, AdeVolumes, DataVolumes, VolumeCheck, VolumeRef};
use crate::exit;
use crate::glob;
use crate::lock::{Lock, LockError, LockState};
use crate::paths::Paths;
use crate::runner::{RealRunner, Runner};
use crate::text::escape_controls as esc;
use crate::window::journal::Change;
use crate::window::journal::Record;
use crate::window::store::{FileStore, Store};
use std::time::Duration;

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The window is open (prepare started and restore has not finished).
    pub window_open: bool,
    /// The journal, when there is one.
    pub journal: Option<Record>,
    /// Who holds the lock: `free`, `held`, `stale`, or `unknown` (not readable by this user).
    pub lock: String,
    /// The holder, when known.
    pub lock_holder: Option<String>,
    /// A hold list on disk while no window is open: the generator masks its units at the next boot or reload
    /// until `ade-prep restore` removes it.
    pub stale_hold_list: Option<std::path::PathBuf>,
    /// The data volumes of the journal's window, each with its verdict once the window is closed (None while it
    /// is open: ADE has not finished).
    pub volumes: Vec<VolumeStatus>,
    /// The workloads of the journal's window that have a readiness probe, each asked once the window is closed.
    pub workloads: Vec<WorkloadReady>,
}

/// A workload of the window and whether it answers its readiness probe.
#[derive(Debug, Serialize)]
pub struct WorkloadReady {
    /// Its name in the catalogue.
    pub workload: String,
    /// Ready or not; None while the window is open (stopped on purpose) or when not root (the probe runs as root
    /// or its user).
    pub ready: Option<bool>,
    /// The probe (argv, user), and when not ready what it answered.
    pub probe: String,
}

/// A data volume of the window and whether it is encrypted.
#[derive(Debug, Serialize)]
pub struct VolumeStatus {
    /// The volume, as the journal records it.
    pub volume: VolumeRef,
    /// Encrypted or not (why); None while the window is open.
    pub check: Option<VolumeCheck>,
}

impl StatusReport {
    /// One line per data volume of a closed window that is not encrypted, naming it.
    pub fn volume_errors(&self) -> Vec<String> {
        let checked: Vec<(VolumeRef, VolumeCheck)> =
            self.volumes.iter().filter_map(|v| v.check.clone().map(|c| (v.volume.clone(), c))).collect();
        datavol::errors(&checked)
    }
}

/// `status`: the window and the lock, the data volumes verified with ADE's own checks, the window's workloads
/// asked their readiness probes (as root).
pub fn status(paths: &Paths) -> anyhow::Result<StatusReport> {
    let root = nix::unistd::geteuid().is_root();
    let settings = crate::config::or_builtin(crate::config::load(paths, root));
    let probes = root.then_some(&RealRunner as &dyn Runner);
    status_with(paths, &AdeVolumes { paths, runner: &RealRunner }, &settings, probes)
}

/// The workloads of the journal's stopped units that have a readiness probe, each asked once through `probes`
/// when the window is closed.
fn workloads_ready(
    journal: Option<&Record>,
    open: bool,
    settings: &Settings,
    probes: Option<&dyn Runner>,
) -> Vec<WorkloadReady> {
    let Some(r) = journal else { return vec![] };
    let units: Vec<&str> = r
        .entries
        .iter()
        .filter_map(|e| match &e.change {
            Change::StopUnit { unit, .. } => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    let mut out = vec![];
    for (name, w) in &settings.workloads {
        let Some(p) = &w.ready else { continue };
        if !units.iter().any(|u| glob::any(&w.units, u) || w.companion_units.iter().any(|c| c == u)) {
            continue;
        }
        let what = format!("{:?} as {}", p.argv, p.user);
        let (ready, probe) = match (open, probes) {
            (true, _) | (_, None) => (None, what),
            (false, Some(runner)) => {
                match crate::window::restore::probe(runner, p, Duration::from_secs(crate::config::PROBE_ASK_SECS)) {
                    Ok(()) => (Some(true), what),
                    Err(e) => (Some(false), e),
                }
            }
        };
        out.push(WorkloadReady { workload: name.clone(), ready, probe });
    }
    out
}

/// `status` with the data volumes verified through `vols` and the readiness probes run through `probes` (None:
/// not asked).
pub(crate) fn status_with(
    paths: &Paths,
    vols: &dyn DataVolumes,
    settings: &Settings,
    probes: Option<&dyn Runner>,
) -> anyhow::Result<StatusReport> {
    let store = FileStore::new(paths);
    let journal = store.load().with_context(|| "reading the journal".to_string())?;
    let (lock, lock_holder) = match Lock::new(paths).state() {
        Ok(LockState::Free) => ("free", None),
        Ok(LockState::Held(h)) => ("held", h.map(|h| h.to_string())),
        Ok(LockState::Stale(h)) => ("stale", Some(h.to_string())),
        // The lock file is root's, mode 0600: a user other than root cannot look (status reads only).
        Err(LockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            ("unknown", Some("the lock file is readable by root only".to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let window_open = journal.as_ref().is_some_and(|r| r.is_window_open());
    let recorded = journal.as_ref().map(|r| r.data_volumes().to_vec()).unwrap_or_default();
    let volumes = if window_open {
        recorded.into_iter().map(|volume| VolumeStatus { volume, check: None }).collect()
    } else {
        datavol::verify_all(vols, &recorded)
            .0
            .into_iter()
            .map(|(volume, c)| VolumeStatus { volume, check: Some(c) })
            .collect()
    };
    let workloads = workloads_ready(journal.as_ref(), window_open, settings, probes);
    Ok(StatusReport {
        workloads,
        volumes,
        window_open,
        stale_hold_list: crate::window::hold::stale_list(paths, window_open),
        journal,
        lock: lock.into(),
        lock_holder,
    })
}

/// The human form of `status`.
pub fn status_text(s: &StatusReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    match &s.journal {
        None => o.push_str("window: closed (no journal)\n"),
        Some(r) => {
            let _ = writeln!(
                o,
                "window: {} (phase {}, opened {}, mount {}, driven by pid {})",
                if s.window_open { "open" } else { "closed" },
                r.phase,
                clock::format_utc(r.opened_at),
                esc(&r.mount.display().to_string()),
                r.owner_pid
            );
            if let (true, Some(d)) = (s.window_open, r.deadline) {
                let _ = writeln!(o, "deadline: {} (restored then without word from ADE)", clock::format_utc(d));
            }
            if let Some(a) = &r.ade {
                let _ = writeln!(o, "ADE: {} seq {}", esc(&a.handler_dir.display().to_string()), a.seq);
            }
            let _ = writeln!(o, "in effect: {}", r.summary());
            use crate::window::record::Status;
            for e in &r.entries {
                let _ = writeln!(o, "  {:>3} {:<12} {}", e.seq, e.status.to_string(), esc(&e.change.to_string()));
                if let Some(n) = &e.note {
                    let _ = writeln!(o, "      {}", esc(n));
                }
                if s.window_open && e.status == Status::UndoFailed {
                    let _ = writeln!(
                        o,
                        "      to do: fix it and run `ade-prep restore`; if it can never succeed, `ade-prep restore \
                         --abandon {}`",
                        e.seq
                    );
                }
            }
        }
    }
    for v in &s.volumes {
        let name = esc(&v.volume.to_string()).into_owned();
        let _ = match &v.check {
            None => writeln!(o, "data volume {name}: freed for ADE (verified once ADE reports success)"),
            Some(VolumeCheck::Encrypted { mapper }) => {
                writeln!(o, "data volume {name}: encrypted ({})", esc(mapper))
            }
            Some(VolumeCheck::NotEncrypted { .. }) => Ok(()),
        };
    }
    for e in s.volume_errors() {
        let _ = writeln!(o, "error: {}", esc(&e));
    }
    for w in &s.workloads {
        let _ = match w.ready {
            None => writeln!(o, "workload {}: not asked (probe {})", w.workload, esc(&w.probe)),
            Some(true) => writeln!(o, "workload {}: ready (probe {})", w.workload, esc(&w.probe)),
            Some(false) => writeln!(o, "workload {}: NOT READY: {}", w.workload, esc(&w.probe)),
        };
    }
    if let Some(p) = &s.stale_hold_list {
        let _ = writeln!(
            o,
            "stale hold list: {} with no window open: its units are masked at the next boot or reload; \
             run `ade-prep restore` to remove it",
            p.display()
        );
    }
    let holder = s.lock_holder.as_deref().map(|h| format!(", {}", esc(h))).unwrap_or_default();
    let _ = writeln!(o, "lock: {}{holder}", s.lock);
    o
}

/// `status` from the command line.
pub fn run(paths: &Paths, json: bool) -> anyhow::Result<u8> {
    let s = status(paths)?;
    if json {
        out(&(serde_json::to_string_pretty(&s)? + "\n"))?;
    } else {
        out(&status_text(&s))?;
    }
    // A data volume ADE skipped is an error (ADE itself reported success). A workload not ready is shown, not an
    // error: the window's workloads are asked as long as its journal is there, also after an operator stopped one
    // on purpose (restore, which started them, exits 1 for one that does not answer).
    Ok(if s.volume_errors().is_empty() { exit::OK } else { exit::FAILED })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::volumes::{volume, FakeVolumes};
    use crate::window::journal::Journal;
    use crate::window::phase::Phase;
    use std::path::Path;

    #[test]
    fn status_verifies_the_data_volumes_of_a_closed_window_and_names_one_ade_skipped() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let mut j = Journal::open(FileStore::new(&paths), Path::new("/"), "b").unwrap();
        j.set_volumes(vec![volume("/data", "/dev/sdc1"), volume("/logs", "/dev/sdd1")]).unwrap();
        let mut vols = FakeVolumes::default();
        vols.encrypted.insert("/data".into(), "/dev/mapper/uuid-of-sdc1".into());

        // Open: listed, not judged (ADE has not finished).
        let s = status_with(&paths, &vols, &Settings::default(), None).unwrap();
        assert!(s.volumes.iter().all(|v| v.check.is_none()));
        assert!(s.volume_errors().is_empty());
        let text = status_text(&s);
        assert!(text.contains("data volume /logs (/dev/sdd1): freed for ADE (verified once ADE reports success)\n"));

        j.set_phase(Phase::Restoring).unwrap();
        j.set_phase(Phase::Closed).unwrap();
        let s = status_with(&paths, &vols, &Settings::default(), None).unwrap();
        let text = status_text(&s);
        assert!(text.contains("data volume /data (/dev/sdc1): encrypted (/dev/mapper/uuid-of-sdc1)\n"), "{text}");
        assert!(
            text.contains(
                "error: data volume /logs (/dev/sdd1) is not encrypted: no LUKS header on /dev/sdd1 (ADE skips a \
                 data volume it cannot unmount, or its data step failed)\n"
            ),
            "{text}"
        );
        assert_eq!(s.volume_errors().len(), 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["volumes"][1]["volume"]["mount_point"], "/logs");
        assert_eq!(json["volumes"][1]["check"]["verdict"], "not_encrypted");
        assert_eq!(json["volumes"][0]["check"]["mapper"], "/dev/mapper/uuid-of-sdc1");

        vols.encrypted.insert("/logs".into(), "/dev/mapper/uuid-of-sdd1".into());
        let s = status_with(&paths, &vols, &Settings::default(), None).unwrap();
        assert!(s.volume_errors().is_empty() && !status_text(&s).contains("error:"));
    }

    #[test]
    fn status_asks_the_windows_workloads_their_probes_once_it_is_closed_and_names_a_failing_one() {
        use crate::testing::runner::FakeRunner;
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let mut j = Journal::open(FileStore::new(&paths), Path::new("/"), "b").unwrap();
        for u in ["postgresql@15-main.service", "redis-server.service", "mongod.service"] {
            let seq = j.intend(Change::StopUnit { unit: u.into(), active_state_before: "active".into() }).unwrap();
            j.done(seq).unwrap();
        }
        let mut runner = FakeRunner::default();
        runner.codes.insert("pg_isready".into(), 2);
        runner.stdouts.insert("redis-cli ping".into(), "PONG\n".into());
        let s = status_with(&paths, &FakeVolumes::default(), &Settings::default(), Some(&runner)).unwrap();
        assert!(s.workloads.iter().all(|w| w.ready.is_none()), "open: stopped on purpose, not asked");
        assert!(runner.calls.borrow().is_empty());
        j.set_phase(Phase::Restoring).unwrap();
        j.set_phase(Phase::Closed).unwrap();
        let s = status_with(&paths, &FakeVolumes::default(), &Settings::default(), Some(&runner)).unwrap();
        let got: Vec<(&str, Option<bool>)> = s.workloads.iter().map(|w| (w.workload.as_str(), w.ready)).collect();
        assert_eq!(got, [("postgresql", Some(false)), ("redis", Some(true))], "mongodb has no probe");
        let text = status_text(&s);
        assert!(
            text.contains(
                "workload postgresql: NOT READY: probe [\"pg_isready\", \"-q\"] as postgres: exited 2: boom\n"
            ),
            "{text}"
        );
        assert!(text.contains("workload redis: ready (probe [\"redis-cli\", \"ping\"] as root)\n"), "{text}");
    }

    #[test]
    fn an_os_only_journal_shows_no_data_volume() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        Journal::open(FileStore::new(&paths), Path::new("/"), "b").unwrap();
        let s = status_with(&paths, &FakeVolumes::default(), &Settings::default(), None).unwrap();
        assert!(s.volumes.is_empty());
        assert!(!status_text(&s).contains("data volume"));
    }
}
