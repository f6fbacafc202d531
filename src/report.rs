//! What people and scripts see of a scan: the human table and the stable JSON shape (documented in README.md).
//! It owns the JSON shape of `scan`; it must not scan or classify differently from prepare.

use serde::Serialize;

use crate::classify::{classify, Class, Writer};
use crate::config::{Settings, WritersPolicy};
use crate::scan::{Holder, KernelUsers, Scan, Target, Unreadable};
use crate::text::escape_controls;

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
    /// What ADE's unmount would meet (added in 0.1: the verdict `scan` prints first).
    pub verdict: Verdict,
}

/// What ADE's unmount of the filesystem would meet, by kind: the answer `scan` gives first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True when anything but protected processes and kernel threads holds it (workloads, others, kernel users).
    pub holders: bool,
    /// Workload processes ade-prep would stop.
    pub workload_processes: usize,
    /// Their units (what prepare stops), sorted; processes in no unit are counted in `workload_processes` only.
    pub workload_units: Vec<String>,
    /// Other processes: ade-prep leaves them, ADE `kill -9`s them.
    pub other_processes: usize,
    /// Protected processes (kernel threads not included).
    pub protected_processes: usize,
    /// Kernel threads (their root and cwd are on `/`).
    pub kernel_threads: usize,
    /// Other processes with a file there open for writing (added in 0.1, issue 25), each with the service prepare would stop
    /// under `[policy] writers = "stop"` (none: reported only).
    pub writers: Vec<Writer>,
    /// `[policy] writers` (added in 0.1, issue 25).
    pub writers_policy: WritersPolicy,
    /// What ADE does to them on this distribution, with where ADE's code says so (added in 0.1, issue 25).
    pub writers_ade: String,
}

/// Why entries could not be read, for the warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreadableWhy {
    /// The scan did not run as root.
    NotRoot,
    /// Root, in a container: processes outside its user namespace (its host's, or its PID 1) are hidden from it.
    Container,
    /// Root, no container seen: the errors say why.
    Other,
}

/// Unreadable entries.
#[derive(Debug, Serialize)]
pub struct UnreadableReport {
    /// Total entries.
    pub count: u32,
    /// Per process and kind.
    pub entries: Vec<Unreadable>,
    /// Why (added in 0.1): `not_root`, `container` or `other`; null when nothing was unreadable.
    pub why: Option<UnreadableWhy>,
}

/// Builds the report of a scan; `why` says why entries were unreadable (see [`unreadable_why`]); `os_id` is
/// os-release's `ID` (what ADE does to the other writers depends on it).
pub fn scan_report(scan: &Scan, settings: &Settings, why: UnreadableWhy, os_id: Option<&str>) -> ScanReport {
    let processes: Vec<ProcessEntry> = scan
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
    let mut verdict = verdict(&processes, &scan.kernel);
    let classes: Vec<crate::classify::Classification> = processes
        .iter()
        .map(|e| crate::classify::Classification {
            class: e.class,
            workload: e.workload.clone(),
            reason: e.reason.clone(),
        })
        .collect();
    verdict.writers = crate::classify::writers(scan.holders.iter().zip(&classes));
    verdict.writers_policy = settings.policy.writers;
    verdict.writers_ade = ade_fate(os_id).to_string();
    let count = scan.unreadable_count();
    ScanReport {
        version: 1,
        target: scan.target.clone(),
        processes,
        kernel: scan.kernel.clone(),
        unreadable: UnreadableReport { count, entries: scan.unreadable.clone(), why: (count > 0).then_some(why) },
        processes_seen: scan.processes_seen,
        verdict,
    }
}

/// Why entries are unreadable, from who runs the scan and whether it runs in a container.
pub fn unreadable_why(root: bool, in_container: bool) -> UnreadableWhy {
    match (root, in_container) {
        (false, _) => UnreadableWhy::NotRoot,
        (true, true) => UnreadableWhy::Container,
        (true, false) => UnreadableWhy::Other,
    }
}

/// The verdict of a list of classified holders and the kernel's users.
pub fn verdict(processes: &[ProcessEntry], kernel: &KernelUsers) -> Verdict {
    let mut v = Verdict::default();
    let mut units = std::collections::BTreeSet::new();
    for e in processes {
        match e.class {
            _ if e.holder.kernel_thread => v.kernel_threads += 1,
            Class::Workload => {
                v.workload_processes += 1;
                if let Some(u) = &e.holder.unit {
                    units.insert(u.clone());
                }
            }
            Class::Other => v.other_processes += 1,
            Class::Protected => v.protected_processes += 1,
        }
    }
    v.workload_units = units.into_iter().collect();
    v.holders = v.workload_processes + v.other_processes > 0
        || !kernel.swap_files.is_empty()
        || kernel.mounts_below.iter().any(|m| !moved_by_ade(m));
    v
}

/// What ADE's OS pass does to a service still running (and to any process still holding the old root), by
/// os-release's `ID`: Ubuntu isolates rescue.target, which stops every service it does not want, and restarts the
/// units still running (`ubuntu_2004/encryptstates/UnmountOldrootState.py:50-69`, `ubuntu_1604/...:54-73`); RHEL 7
/// `systemctl restart`s every running service into the RAM root, before and after the unmount
/// (`rhel_72/encryptstates/UnmountOldrootState.py:50-67`, `:79`, `:119`), where what it writes is in a tmpfs that
/// ADE's reboot discards. Both then `kill -9` every process `fuser -vm /oldroot` lists (ubuntu_2004 `:89-120`,
/// rhel_72 `:85-113`). Branch ade-sp-release-1.4.0.12, VMEncryption/main/oscrypto; tests/ade/FINDINGS.md item 22.
pub fn ade_fate(os_id: Option<&str>) -> &'static str {
    match os_id {
        Some("ubuntu") => {
            "ADE stops them with `systemctl rescue` (ubuntu_2004 UnmountOldrootState.py:50), then kill -9s whatever \
             still holds the old root (:89-120)"
        }
        Some("rhel" | "centos") => {
            "ADE restarts them into its RAM root (rhel_72 UnmountOldrootState.py:50-67, :79, :119), where what they \
             write is lost at ADE's reboot, and kill -9s whatever still holds the old root (:85-113)"
        }
        _ => {
            "ADE stops them with `systemctl rescue` (Ubuntu) or restarts them into its RAM root, their writes lost \
             (RHEL/CentOS 7), then kill -9s whatever still holds the old root (UnmountOldrootState.py)"
        }
    }
}

/// One writer for the operator: `UNIT (pid N)` or `pid N COMM (why reported only)`.
pub fn describe_writer(w: &Writer) -> String {
    match (&w.unit, &w.report_only) {
        (Some(u), _) => format!("{} (pid {})", escape_controls(u), w.pid),
        (None, why) => format!(
            "pid {} {} ({})",
            w.pid,
            escape_controls(&w.comm),
            why.as_deref().map(escape_controls).unwrap_or_default()
        ),
    }
}

/// The writers' line of the verdict and of `check`: who, what ADE does, what ade-prep does.
pub fn writers_text(writers: &[Writer], policy: WritersPolicy, ade: &str) -> String {
    let names: Vec<String> = writers.iter().map(describe_writer).collect();
    let stoppable = writers.iter().any(|w| w.unit.is_some());
    let ours = match policy {
        WritersPolicy::Report => {
            "[policy] writers = \"report\": ade-prep leaves them to ADE (\"stop\" has prepare \
                                  stop and hold their units and restore start them again)"
        }
        WritersPolicy::Stop if stoppable => {
            "[policy] writers = \"stop\": prepare stops and holds their units (those named by a unit) and restore \
             starts again those that were active"
        }
        WritersPolicy::Stop => "[policy] writers = \"stop\", but none runs in a system service prepare can stop",
    };
    format!("{} other writer(s) with files open for writing: {}; {ade}; {ours}", writers.len(), some_of(&names, 8))
}

/// The API filesystems ADE moves to its RAM root after its pivot_root, with everything mounted below them
/// (`ubuntu_2004/.../StripdownState.py:48-67`, `rhel_72/...:50-63`; tests/ade/FINDINGS.md item 21): they do not
/// keep the old `/` busy.
pub const MOVED_BY_ADE: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// Whether a mount point is one ADE moves ([`MOVED_BY_ADE`], or below one).
pub fn moved_by_ade(m: &std::path::Path) -> bool {
    MOVED_BY_ADE.iter().any(|p| m.starts_with(p))
}

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Workload => "workload",
        Class::Protected => "protected",
        Class::Other => "other",
    }
}

fn class_rank(c: Class) -> u8 {
    match c {
        Class::Workload => 0,
        Class::Other => 1,
        Class::Protected => 2,
    }
}

/// At most `n` items joined, with how many more.
fn some_of(items: &[String], n: usize) -> String {
    let mut s = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        s.push_str(&format!(" and {} more", items.len() - n));
    }
    s
}

fn describe(e: &ProcessEntry) -> String {
    format!("pid {} {}", e.holder.pid, escape_controls(&e.holder.comm))
}

/// The verdict, as the lines `scan` starts with.
pub fn verdict_text(r: &ScanReport) -> String {
    use std::fmt::Write;
    let v = &r.verdict;
    let mp = r.target.mount_point.display();
    let mut o = String::new();
    if v.holders {
        let _ = writeln!(o, "verdict: ADE's unmount of {mp} would meet holders:");
    } else {
        let _ = writeln!(
            o,
            "verdict: nothing that ade-prep or ADE would stop holds {mp}: no workload, no other process, no kernel user"
        );
    }
    let of = |c: Class| -> Vec<String> {
        r.processes.iter().filter(|e| e.class == c && !e.holder.kernel_thread).map(describe).collect()
    };
    if v.workload_processes > 0 {
        let mut names: Vec<&str> = r.processes.iter().filter_map(|e| e.workload.as_deref()).collect();
        names.sort_unstable();
        names.dedup();
        let units = if v.workload_units.is_empty() { "no unit".to_string() } else { v.workload_units.join(", ") };
        let _ = writeln!(
            o,
            "  - {} workload process(es) ({}) that prepare would stop, through {}",
            v.workload_processes,
            names.join(", "),
            escape_controls(&units)
        );
    }
    if v.other_processes > 0 {
        let _ = writeln!(
            o,
            "  - {} other process(es) that ade-prep leaves alone and ADE would kill -9: {}",
            v.other_processes,
            some_of(&of(Class::Other), 5)
        );
    }
    if !v.writers.is_empty() {
        let _ = writeln!(o, "  - {}", writers_text(&v.writers, v.writers_policy, &v.writers_ade));
    }
    if !r.kernel.swap_files.is_empty() {
        let _ = writeln!(o, "  - {} swap file(s) on it (ADE runs swapoff -a first)", r.kernel.swap_files.len());
    }
    let (moved, busy): (Vec<_>, Vec<_>) = r.kernel.mounts_below.iter().partition(|m| moved_by_ade(m));
    if !busy.is_empty() {
        let _ = writeln!(
            o,
            "  - {} mount(s) below it that keep it busy: {}",
            busy.len(),
            some_of(&busy.iter().map(|m| m.display().to_string()).collect::<Vec<_>>(), 5)
        );
    }
    if !moved.is_empty() {
        let _ = writeln!(
            o,
            "  - {} mount(s) under /dev, /proc, /sys or /run: ADE moves them to its RAM root (they do not keep it busy)",
            moved.len()
        );
    }
    if v.protected_processes > 0 {
        let _ = writeln!(
            o,
            "  - {} protected process(es) that ade-prep never stops (ADE restarts or kills them itself): {}",
            v.protected_processes,
            some_of(&of(Class::Protected), 5)
        );
    }
    o
}

/// The warning about unreadable entries, with why; None when everything was read.
pub fn unreadable_text(r: &ScanReport) -> Option<String> {
    let u = &r.unreadable;
    let first = u.entries.first()?;
    let pids: std::collections::BTreeSet<i32> = u.entries.iter().map(|u| u.pid).collect();
    let why = match u.why {
        Some(UnreadableWhy::NotRoot) => "not root: run as root to see them",
        Some(UnreadableWhy::Container) => {
            "root in a container: the container hides processes outside its user namespace (its PID 1's files \
             among them); scan from the host to see them"
        }
        _ => "unreadable even as root",
    };
    Some(format!(
        "warning: {} entries of {} processes could not be read (first: pid {} {}: {}); {why}",
        u.count,
        pids.len(),
        first.pid,
        first.what,
        first.error
    ))
}

/// The human form: the verdict, then the holders (workloads, others, protected; kernel threads only with `all`), the
/// kernel's users and the unreadable entries.
pub fn scan_text(r: &ScanReport, all: bool) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let t = &r.target;
    let _ = writeln!(
        o,
        "{}: {} on {} ({}, device {}), {} processes hold it, {} looked at",
        t.path.display(),
        escape_controls(&t.source),
        t.mount_point.display(),
        t.fstype,
        t.device,
        r.processes.len(),
        r.processes_seen
    );
    o.push_str(&verdict_text(r));
    let mut shown: Vec<&ProcessEntry> = r.processes.iter().filter(|e| all || !e.holder.kernel_thread).collect();
    if !all {
        // Stable: pids stay in order within a class.
        shown.sort_by_key(|e| class_rank(e.class));
    }
    if !shown.is_empty() {
        o.push('\n');
        let _ = writeln!(
            o,
            "{:>7} {:>6} {:<5} {:>9} {:<9} {:<10} {:<28} COMMAND",
            "PID", "UID", "CODES", "FDS(W)", "CLASS", "WORKLOAD", "UNIT"
        );
    }
    for e in shown {
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
            escape_controls(p.unit.as_deref().unwrap_or("-")),
            cmd
        );
    }
    if !all && r.verdict.kernel_threads > 0 {
        let _ = writeln!(
            o,
            "{:>7} kernel threads (protected; their root and cwd): --all lists them",
            r.verdict.kernel_threads
        );
    }
    for m in &r.kernel.mounts_below {
        let _ = writeln!(o, "kernel: mount {} below {}", m.display(), t.mount_point.display());
    }
    for s in &r.kernel.swap_files {
        let _ = writeln!(o, "kernel: swap file {}", s.display());
    }
    if let Some(w) = unreadable_text(r) {
        let _ = writeln!(o, "{w}");
    }
    o
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scan::Scan;
    use crate::testing::procs::holder;

    fn report() -> ScanReport {
        let mut kthread = holder(2, "kthreadd", None);
        kthread.kernel_thread = true;
        kthread.cmdline.clear();
        let mut kworker = holder(9, "kworker/0:1", None);
        kworker.kernel_thread = true;
        kworker.cmdline.clear();
        let mut writer = holder(900, "python3", Some("nginx.service"));
        writer.writable_fds = 2;
        let holders = vec![
            holder(1, "systemd", Some("init.scope")),
            kthread,
            kworker,
            holder(812, "dockerd", Some("docker.service")),
            writer,
            holder(901, "evil\x1b[2J", None),
        ];
        scan_report(&Scan::from_holders(Path::new("/"), holders), &Settings::default(), UnreadableWhy::Other, None)
    }

    #[test]
    fn the_api_mounts_ade_moves_do_not_keep_root_busy_others_do() {
        let mut k = KernelUsers {
            mounts_below: ["/proc", "/sys/fs/cgroup", "/dev/pts", "/run/user/1000", "/dev"].map(Into::into).to_vec(),
            ..Default::default()
        };
        assert!(!verdict(&[], &k).holders, "only what ADE moves");
        k.mounts_below.push("/data".into());
        assert!(verdict(&[], &k).holders, "/data keeps / busy");
        assert!(!moved_by_ade(std::path::Path::new("/running")), "a path prefix is not a parent");
    }

    #[test]
    fn verdict_counts_each_kind_and_kernel_threads_apart() {
        let r = report();
        assert_eq!(
            r.verdict,
            Verdict {
                holders: true,
                workload_processes: 1,
                workload_units: vec!["docker.service".into()],
                other_processes: 2,
                protected_processes: 1,
                kernel_threads: 2,
                writers: vec![Writer {
                    pid: 900,
                    comm: "python3".into(),
                    unit: Some("nginx.service".into()),
                    report_only: None
                }],
                writers_policy: WritersPolicy::Report,
                writers_ade: ade_fate(None).into(),
            }
        );
    }

    #[test]
    fn text_puts_the_verdict_first_and_folds_kernel_threads() {
        let r = report();
        let t = scan_text(&r, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "verdict: ADE's unmount of / would meet holders:");
        assert!(lines[2].contains("1 workload process(es) (docker) that prepare would stop, through docker.service"));
        assert!(lines[3].contains("2 other process(es)") && lines[3].contains("pid 900 python3"), "{t}");
        assert!(
            lines[4].starts_with("  - 1 other writer(s) with files open for writing: nginx.service (pid 900); "),
            "{t}"
        );
        assert!(!t.contains("kworker"), "{t}");
        assert!(t.contains("      2 kernel threads (protected"), "{t}");
        assert!(!t.contains('\x1b') && t.contains("evil\\e[2J"), "{t}");
        // Workloads, then others, then protected.
        let row = |pid: &str| lines.iter().position(|l| l.split_whitespace().next() == Some(pid)).unwrap();
        assert!(row("812") < row("900") && row("900") < row("901") && row("901") < row("1"), "{t}");
        let all = scan_text(&r, true);
        assert!(all.contains("[kworker/0:1]") && !all.contains("kernel threads (protected"), "{all}");
    }

    #[test]
    fn writers_are_named_with_what_ade_does_here_and_what_the_policy_does() {
        let w = |pid, unit: Option<&str>| Writer {
            pid,
            comm: "x".into(),
            unit: unit.map(Into::into),
            report_only: unit.is_none().then(|| "a user's process (cgroup /user.slice/u)".into()),
        };
        let ws = [w(900, Some("nginx.service")), w(901, None)];
        let ubuntu = writers_text(&ws, WritersPolicy::Report, ade_fate(Some("ubuntu")));
        assert_eq!(
            ubuntu,
            "2 other writer(s) with files open for writing: nginx.service (pid 900), pid 901 x (a user's process \
             (cgroup /user.slice/u)); ADE stops them with `systemctl rescue` (ubuntu_2004 UnmountOldrootState.py:50), \
             then kill -9s whatever still holds the old root (:89-120); [policy] writers = \"report\": ade-prep \
             leaves them to ADE (\"stop\" has prepare stop and hold their units and restore start them again)"
        );
        let rhel = writers_text(&ws, WritersPolicy::Stop, ade_fate(Some("centos")));
        assert!(rhel.contains("restarts them into its RAM root") && rhel.contains("lost at ADE's reboot"), "{rhel}");
        assert!(rhel.contains("prepare stops and holds their units"), "{rhel}");
        assert!(writers_text(&ws[1..], WritersPolicy::Stop, "").contains("none runs in a system service"));
    }

    #[test]
    fn the_warning_says_why_entries_were_unreadable() {
        let mut r = report();
        r.unreadable.entries = vec![Unreadable { pid: 1, what: "fd", error: "Permission denied".into(), count: 3 }];
        r.unreadable.count = 3;
        for (why, says) in [
            (UnreadableWhy::NotRoot, "not root: run as root"),
            (UnreadableWhy::Container, "root in a container"),
            (UnreadableWhy::Other, "unreadable even as root"),
        ] {
            r.unreadable.why = Some(why);
            let w = unreadable_text(&r).unwrap();
            assert!(w.starts_with("warning: 3 entries of 1 processes could not be read") && w.contains(says), "{w}");
        }
        assert_eq!(unreadable_why(false, true), UnreadableWhy::NotRoot);
        assert_eq!(unreadable_why(true, true), UnreadableWhy::Container);
    }
}
