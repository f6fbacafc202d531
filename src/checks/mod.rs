//! `ade-prep check`: every precondition of ADE's troubleshooting guide, each with its evidence and its fix, so an
//! operator learns all of them from one command and `prepare` can refuse to start on a known failure. The checks
//! must not change the machine.
//!
//! The machine is read once into [`Inputs`] (through [`Paths`], so fixture trees stand in for it); every check is a
//! small pure function of those inputs; [`run`] puts them together into a [`Report`]. An input that cannot be read
//! or makes no sense turns the checks that need it into [`Status::Unknown`] with the reason, never a panic.
//! The ids and the JSON shape are documented in docs/checks.md.

mod ade;
mod agent;
mod disk;
mod distro;
mod inputs;
mod network;
mod packages;
pub mod render;
mod system;
mod volumes;
mod window;

use serde::Serialize;

use crate::config::Settings;
use crate::paths::Paths;
use crate::scan::{ProcFs, ProcessTable};

pub use crate::procs::Process;
pub use distro::Flow;
pub use inputs::{
    gather, workload_holders, AdeState, AgentVersion, DmDevice, Input, Inputs, Selinux, StaleHold, Waagent,
    WorkloadHolder,
};
pub use volumes::VolumeInputs;

/// os-release's `ID` (lowercase), None when the text has none.
pub fn os_id(os_release: &str) -> Option<String> {
    distro::parse_os_release(os_release).ok().map(|d| d.id)
}

/// The distribution and version against ADE's behaviour.
pub const DISTRO: &str = "distro";
/// MemTotal against the extension's threshold.
pub const MEMORY: &str = "memory";
/// An LVM OS disk outside the supported rootvg layout.
pub const OS_LVM: &str = "os-lvm";
/// The root filesystem of a custom image.
pub const ROOT_FILESYSTEM: &str = "root-filesystem";
/// Ubuntu 14.04's default kernel, whose OOM killer ends ADE's dd.
pub const KERNEL: &str = "kernel";
/// The goal-state guest agent version.
pub const GUEST_AGENT: &str = "guest-agent";
/// The deprecated ADE extension handler.
pub const ADE_EXTENSION: &str = "ade-extension";
/// Data disks under /mnt or mounted below one another.
pub const DATA_MOUNTS: &str = "data-mounts";
/// The data volumes ADE selects against what its in-place path can do.
pub const DATA_VOLUMES: &str = "data-volumes";
/// SELinux enforcing.
pub const SELINUX: &str = "selinux";
/// Workloads holding `/`.
pub const WORKLOADS: &str = "workloads";
/// Other services writing to files on `/`.
pub const WRITERS: &str = "writers";
/// Other extension handlers running.
pub const EXTENSIONS: &str = "extensions";
/// An ADE operation already under way.
pub const ADE_OPERATION: &str = "ade-operation";
/// The extension's last status against what the guest shows.
pub const ENCRYPTION_STATUS: &str = "encryption-status";
/// ADE's packages for this distribution installed (packages.rs).
pub const PACKAGES: &str = "packages";
/// A route to IMDS and to the wire server (network.rs).
pub const NETWORK_ROUTE: &str = "network-route";
/// Proxy settings on ADE's network paths (network.rs).
pub const NETWORK_PROXY: &str = "network-proxy";
/// The wire server address file (network.rs).
pub const WIRE_SERVER: &str = "wire-server";
/// The reminder to snapshot or back up first.
pub const BACKUP: &str = "backup";

/// Every check id, in the order of the report.
pub const ALL_IDS: &[&str] = &[
    DISTRO,
    MEMORY,
    OS_LVM,
    ROOT_FILESYSTEM,
    KERNEL,
    GUEST_AGENT,
    ADE_EXTENSION,
    DATA_MOUNTS,
    DATA_VOLUMES,
    SELINUX,
    WORKLOADS,
    WRITERS,
    EXTENSIONS,
    ADE_OPERATION,
    ENCRYPTION_STATUS,
    PACKAGES,
    NETWORK_ROUTE,
    NETWORK_PROXY,
    WIRE_SERVER,
    BACKUP,
];

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The precondition holds.
    Pass,
    /// Something to know, nothing to fix (the backup reminder).
    Info,
    /// ADE may fail or prepare will act on it; not a blocker.
    Warn,
    /// ADE is known to fail: fix it first (or `prepare --force` it).
    Fail,
    /// The check does not apply to this machine.
    NotApplicable,
    /// An input could not be read or made no sense; the evidence says which and why.
    Unknown,
}

impl Status {
    /// The spelling used in JSON and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::NotApplicable => "not-applicable",
            Status::Unknown => "unknown",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id, the one `prepare --force` takes.
    pub id: &'static str,
    /// What is checked, in a few words.
    pub title: &'static str,
    /// The result.
    pub result: Status,
    /// What was found (for unknown: which input and why).
    pub evidence: String,
    /// How to fix it when it does not pass.
    pub fix: String,
}

impl Check {
    fn new(id: &'static str, title: &'static str, fix: &str, result: Status, evidence: impl Into<String>) -> Self {
        Check { id, title, result, evidence: evidence.into(), fix: fix.to_string() }
    }
}

/// Counts of results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Passed.
    pub pass: usize,
    /// Informational.
    pub info: usize,
    /// Warnings.
    pub warn: usize,
    /// Failures.
    pub fail: usize,
    /// Not applicable.
    #[serde(rename = "not-applicable")]
    pub not_applicable: usize,
    /// Unknown.
    pub unknown: usize,
}

/// The whole `check --json` document (shape in docs/checks.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Schema version of this document.
    pub version: u32,
    /// How ADE encrypts this distribution's OS disk, from the distro check.
    pub flow: Flow,
    /// Counts per result.
    pub summary: Summary,
    /// Ids of the failed checks.
    pub failed: Vec<&'static str>,
    /// Every check, in [`ALL_IDS`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when a check failed (exit code 1).
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The check with this id.
    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Runs every check over the inputs: pure.
pub fn run(inp: &Inputs) -> Report {
    let (distro_check, flow) = distro::distro(&inp.os_release, inp.redhat_release.as_deref());
    let checks = vec![
        distro_check,
        system::memory(&inp.meminfo),
        disk::os_lvm(&inp.mounts, &inp.dm),
        disk::root_filesystem(&inp.mounts),
        system::kernel(&inp.os_release, &inp.kernel_release),
        agent::guest_agent(&inp.processes, inp.waagent_version.as_ref()),
        agent::ade_extension(&inp.waagent_entries),
        disk::data_mounts(&inp.mounts, &inp.dm),
        volumes::data_volumes(&inp.volumes, &inp.mounts),
        window::selinux(&inp.selinux, flow),
        window::workloads(&inp.workloads, flow),
        window::writers(
            &inp.writers,
            inp.writers_policy,
            inp.os_release.as_ref().ok().and_then(|t| os_id(t)).as_deref(),
            flow,
        ),
        agent::extensions(&inp.processes),
        ade::with_stale_hold(
            ade::ade_operation(&inp.ade_queue, &inp.ade_markers, &inp.processes, &inp.mounts, inp.os_encrypted),
            &inp.stale_hold,
        ),
        ade::encryption_status(&inp.ade_state, &inp.mounts, &inp.dm, &inp.volumes),
        packages::packages(&inp.os_release, flow, &inp.packages),
        network::route(&inp.network),
        network::proxy(&inp.network),
        network::wire_server(&inp.network),
        window::backup(flow),
    ];
    let mut summary = Summary::default();
    for c in &checks {
        *match c.result {
            Status::Pass => &mut summary.pass,
            Status::Info => &mut summary.info,
            Status::Warn => &mut summary.warn,
            Status::Fail => &mut summary.fail,
            Status::NotApplicable => &mut summary.not_applicable,
            Status::Unknown => &mut summary.unknown,
        } += 1;
    }
    let failed = checks.iter().filter(|c| c.result == Status::Fail).map(|c| c.id).collect();
    Report { version: 1, flow, summary, failed, checks }
}

/// Reads this machine (or the tree under `paths`) and runs every check: the workloads come from a `/proc` scan of
/// the root filesystem classified with `settings`; the guest agent's version from `agent` when no
/// `-run-exthandlers` process names it.
pub fn check_machine(paths: &Paths, settings: &Settings, agent: &dyn AgentVersion) -> Report {
    let scan =
        ProcFs::new(paths.proc()).scan(paths.root()).map_err(|e| format!("scanning {}: {e}", paths.root().display()));
    let workloads = scan.as_ref().map(|s| workload_holders(s, settings)).map_err(String::clone);
    let mut inputs = gather(paths, agent, workloads);
    inputs.writers = scan.map(|s| {
        let classes: Vec<_> = s.holders.iter().map(|h| crate::classify::classify(h, settings)).collect();
        crate::classify::writers(s.holders.iter().zip(&classes))
    });
    inputs.writers_policy = settings.policy.writers;
    inputs.volumes = if paths.is_system() {
        inputs::gather_volumes(paths, &crate::runner::RealRunner, &inputs.ade_state)
    } else {
        VolumeInputs::not_read(&format!("lsblk is not run under another root ({})", paths.root().display()))
    };
    run(&inputs)
}

/// Why `prepare` refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Checks failed and `--force` does not name them.
    #[error("checks failed: {} (see `ade-prep check`; override with --force {})", ids.join(", "), ids.join(","))]
    Failed {
        /// The failing ids not forced.
        ids: Vec<String>,
    },
    /// `--force` names an id that is not a check.
    #[error("--force {id}: no such check (known: {})", ALL_IDS.join(", "))]
    UnknownId {
        /// The id as given.
        id: String,
    },
}

/// Whether `prepare` may go on: `Ok` when every failed check is named in `forced` (ids as given to
/// `--force CHECK_ID,...`; each entry may itself hold comma-separated ids), `Refusal::Failed` listing the failed
/// ids not forced, `Refusal::UnknownId` for the first forced id that is no check. Warnings and unknowns never
/// refuse; forcing a check that passed is allowed. `encryption-status` never refuses: it judges ADE's last run (a
/// data volume it skipped), which the next window is there to fix, not a precondition of it.
pub fn refuse(report: &Report, forced: &[String]) -> Result<(), Refusal> {
    let forced: Vec<&str> = forced.iter().flat_map(|f| f.split(',')).map(str::trim).filter(|f| !f.is_empty()).collect();
    if let Some(bad) = forced.iter().find(|f| !ALL_IDS.contains(f)) {
        return Err(Refusal::UnknownId { id: bad.to_string() });
    }
    let ids: Vec<String> = report
        .failed
        .iter()
        .filter(|id| !forced.contains(id) && **id != ENCRYPTION_STATUS)
        .map(|s| s.to_string())
        .collect();
    if ids.is_empty() {
        Ok(())
    } else {
        Err(Refusal::Failed { ids })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Inputs where every read failed with `reason`.
    pub(crate) fn unreadable_inputs(reason: &str) -> Inputs {
        fn err<T>(r: &str) -> Input<T> {
            Err(r.to_string())
        }
        Inputs {
            os_release: err(reason),
            redhat_release: None,
            kernel_release: err(reason),
            meminfo: err(reason),
            mounts: err(reason),
            dm: err(reason),
            processes: err(reason),
            waagent_version: Some(err(reason)),
            waagent_entries: err(reason),
            ade_queue: err(reason),
            ade_markers: err(reason),
            os_encrypted: false,
            ade_state: err(reason),
            selinux: Selinux { path: "/sys/fs/selinux/enforce".into(), enforce: err(reason) },
            workloads: err(reason),
            writers: err(reason),
            writers_policy: Default::default(),
            stale_hold: err(reason),
            volumes: VolumeInputs::not_read(reason),
            packages: packages::PackageFacts { dpkg: err(reason), rpm: err(reason), pythons: Default::default() },
            network: network::NetFacts {
                agent: None,
                waagent_conf: err(reason),
                wire_file: err(reason),
                proxy_vars: vec![],
                routes: err(reason),
            },
        }
    }

    fn report_with(results: &[(&'static str, Status)]) -> Report {
        let checks: Vec<Check> = results.iter().map(|&(id, r)| Check::new(id, "t", "f", r, "e")).collect::<Vec<_>>();
        let failed = checks.iter().filter(|c| c.result == Status::Fail).map(|c| c.id).collect();
        Report { version: 1, flow: Flow::Unmount, summary: Summary::default(), failed, checks }
    }

    #[test]
    fn refuse_lists_failures_not_forced() {
        let r = report_with(&[
            (DISTRO, Status::Pass),
            (MEMORY, Status::Fail),
            (OS_LVM, Status::Fail),
            (SELINUX, Status::Warn),
        ]);
        assert_eq!(refuse(&r, &[]), Err(Refusal::Failed { ids: vec!["memory".into(), "os-lvm".into()] }));
        assert_eq!(refuse(&r, &["memory".into()]), Err(Refusal::Failed { ids: vec!["os-lvm".into()] }));
        assert_eq!(refuse(&r, &["memory,os-lvm".into()]), Ok(()));
        assert_eq!(refuse(&r, &["os-lvm".into(), " memory ".into(), "distro".into()]), Ok(()));
        assert_eq!(refuse(&r, &["memory".into(), "os_lvm".into()]), Err(Refusal::UnknownId { id: "os_lvm".into() }));
        let ok = report_with(&[(DISTRO, Status::Pass), (SELINUX, Status::Warn), (MEMORY, Status::Unknown)]);
        assert_eq!(refuse(&ok, &[]), Ok(()));
        // ADE's last run skipping a data volume does not stop the window that frees it
        let last_run = report_with(&[(DISTRO, Status::Pass), (ENCRYPTION_STATUS, Status::Fail)]);
        assert!(last_run.has_failures());
        assert_eq!(refuse(&last_run, &[]), Ok(()));
        // an unknown id is an error even when nothing fails: a typo must not go unnoticed
        assert!(matches!(refuse(&ok, &["nope".into()]), Err(Refusal::UnknownId { .. })));
        let msg = refuse(&r, &[]).unwrap_err().to_string();
        assert!(msg.contains("memory, os-lvm") && msg.contains("--force memory,os-lvm"), "{msg}");
    }

    #[test]
    fn docs_list_every_id_and_result() {
        let doc = include_str!("../../docs/checks.md");
        for id in ALL_IDS {
            assert!(doc.contains(&format!("| `{id}` |")), "docs/checks.md has no row for {id}");
        }
        for s in [Status::Pass, Status::Info, Status::Warn, Status::Fail, Status::NotApplicable, Status::Unknown] {
            assert!(doc.contains(&format!("| `{}` |", s.as_str())), "docs/checks.md does not explain {s:?}");
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn ids_are_unique_and_in_report_order() {
        let mut ids = ALL_IDS.to_vec();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL_IDS.len());
        let r = run(&unreadable_inputs("test"));
        let got: Vec<&str> = r.checks.iter().map(|c| c.id).collect();
        assert_eq!(got, ALL_IDS);
    }

    #[test]
    fn nothing_readable_gives_unknowns_not_failures() {
        let r = run(&unreadable_inputs("no such tree"));
        assert!(!r.has_failures(), "{:#?}", r.checks);
        for c in &r.checks {
            assert!(
                matches!(c.result, Status::Unknown | Status::NotApplicable | Status::Info),
                "{} gave {:?}: {}",
                c.id,
                c.result,
                c.evidence
            );
            assert!(!c.fix.is_empty(), "{} has no fix", c.id);
        }
        assert_eq!(r.get(MEMORY).unwrap().result, Status::Unknown);
        assert!(r.get(MEMORY).unwrap().evidence.contains("no such tree"));
    }
}
