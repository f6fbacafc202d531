//! What people and scripts see of a scan: the human table and the stable JSON shape (documented in README.md).
//! It owns the JSON shape of `scan`; it must not scan or classify differently from prepare.

use serde::Serialize;

use crate::classify::{classify, Class};
use crate::config::Settings;
use crate::scan::{Holder, KernelUsers, Scan, Target, Unreadable};

/// One process in `scan --json`: the holder's fields, its codes and its class.
#[derive(Debug, Serialize)]
pub struct ProcessEntry {
    /// What the scan found.
    #[serde(flatten)]
    pub holder: Holder,
    /// fuser's access codes (`fFrcem`).
    pub codes: String,
    /// workload, protected or other.
    pub class: Class,
    /// Workload name.
    pub workload: Option<String>,
    /// Why this class.
    pub reason: String,
}

/// The whole `scan --json` document.
#[derive(Debug, Serialize)]
pub struct ScanReport {
    /// Schema version of this document.
    pub version: u32,
    pub target: Target,
    /// Holders.
    pub processes: Vec<ProcessEntry>,
    pub kernel: KernelUsers,
    /// Entries not readable (count and details).
    pub unreadable: UnreadableReport,
    pub processes_seen: usize,
}

/// Unreadable entries.
#[derive(Debug, Serialize)]
pub struct UnreadableReport {
    /// Total entries.
    pub count: u32,
    /// Per process and kind.
    pub entries: Vec<Unreadable>,
}

/// Builds the report of a scan.
pub fn scan_report(scan: &Scan, settings: &Settings) -> ScanReport {
    let processes = scan
        .holders
        .iter()
        .map(|h| {
            let c = classify(h, settings);
            ProcessEntry {
                holder: h.clone(),
                codes: h.access.codes(),
                class: c.class,
                workload: c.workload,
                reason: c.reason,
            }
        })
        .collect();
    ScanReport {
        version: 1,
        target: scan.target.clone(),
        processes,
        kernel: scan.kernel.clone(),
        unreadable: UnreadableReport { count: scan.unreadable_count(), entries: scan.unreadable.clone() },
        processes_seen: scan.processes_seen,
    }
}

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Workload => "workload",
        Class::Protected => "protected",
        Class::Other => "other",
    }
}

/// The human table.
pub fn scan_text(r: &ScanReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let t = &r.target;
    let _ = writeln!(
        o,
        "{}: {} on {} ({}, device {}), {} processes hold it, {} looked at",
        t.path.display(),
        t.source,
        t.mount_point.display(),
        t.fstype,
        t.device,
        r.processes.len(),
        r.processes_seen
    );
    let _ = writeln!(
        o,
        "{:>7} {:>6} {:<5} {:>9} {:<9} {:<10} {:<28} COMMAND",
        "PID", "UID", "CODES", "FDS(W)", "CLASS", "WORKLOAD", "UNIT"
    );
    for e in &r.processes {
        let p = &e.holder;
        let cmd = if p.cmdline.is_empty() { format!("[{}]", p.comm) } else { p.cmdline.join(" ") };
        let cmd: String = cmd.chars().take(80).collect();
        let cmd = crate::text::escape_controls(&cmd);
        let _ = writeln!(
            o,
            "{:>7} {:>6} {:<5} {:>9} {:<9} {:<10} {:<28} {}",
            p.pid,
            p.uid,
            e.codes,
            format!("{}({})", p.fds, p.writable_fds),
            class_name(e.class),
            e.workload.as_deref().unwrap_or("-"),
            crate::text::escape_controls(p.unit.as_deref().unwrap_or("-")),
            cmd
        );
    }
    for m in &r.kernel.mounts_below {
        let _ = writeln!(o, "kernel: mount {} below {}", m.display(), t.mount_point.display());
    }
    for s in &r.kernel.swap_files {
        let _ = writeln!(o, "kernel: swap file {}", s.display());
    }
    if r.unreadable.count > 0 {
        let pids: std::collections::BTreeSet<i32> = r.unreadable.entries.iter().map(|u| u.pid).collect();
        let _ = writeln!(
            o,
            "warning: {} entries of {} processes could not be read (first: pid {} {}: {}); run as root to see them",
            r.unreadable.count,
            pids.len(),
            r.unreadable.entries[0].pid,
            r.unreadable.entries[0].what,
            r.unreadable.entries[0].error
        );
    }
    o
}
