//! The process list as the checks read it: each process's pid, parent, comm, command line and current directory
//! from `/proc` under a root, best effort per process. It owns that reading; it must not judge a process (the checks
//! do). Scan's walk of the holders (`crate::scan`) stays apart: it is the hot path and reads other files.

use std::path::Path;

/// A process, as much as the checks need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    /// Parent pid, from `stat` (None when unreadable).
    pub ppid: Option<i32>,
    /// `comm`.
    pub comm: String,
    /// The command line.
    pub cmdline: Vec<String>,
    /// The current directory (None when unreadable).
    pub cwd: Option<String>,
}

/// The processes under `proc_root`, sorted by pid; one that exits meanwhile is left out. Err names `proc_root`.
pub fn list(proc_root: &Path) -> Result<Vec<Process>, String> {
    let pids = crate::scan::list_pids(proc_root).map_err(|e| format!("{}: {e}", proc_root.display()))?;
    let mut out = vec![];
    for pid in pids {
        let d = proc_root.join(pid.to_string());
        // A process that exits meanwhile just disappears.
        let Ok(comm) = std::fs::read_to_string(d.join("comm")) else { continue };
        let cmdline = std::fs::read(d.join("cmdline")).map(|b| crate::scan::parse_cmdline(&b)).unwrap_or_default();
        let cwd = std::fs::read_link(d.join("cwd")).ok().map(|p| p.to_string_lossy().into_owned());
        let ppid =
            std::fs::read_to_string(d.join("stat")).ok().and_then(|s| crate::scan::parse_stat(&s)).map(|s| s.ppid);
        out.push(Process { pid, ppid, comm: comm.trim_end_matches('\n').to_string(), cmdline, cwd });
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}
