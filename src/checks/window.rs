//! What `prepare` acts on during the encryption window (SELinux, workloads holding `/`), and the backup reminder.
//! Pure over the inputs; it must not read files itself.

use std::collections::BTreeMap;

use crate::selinux::{parse_enforce, Mode};

use super::{Check, Flow, Input, Selinux, Status, WorkloadHolder, BACKUP, SELINUX, WORKLOADS, WRITERS};
use crate::classify::Writer;
use crate::config::WritersPolicy;

const SELINUX_TITLE: &str = "SELinux not enforcing";
const SELINUX_FIX: &str = "Let `ade-prep prepare` switch SELinux to permissive for the encryption (it restores \
    enforcing afterwards), or run `setenforce 0` yourself and `setenforce 1` once encryption has finished.";

const WORKLOADS_TITLE: &str = "no workload holding /";
const WORKLOADS_FIX: &str = "Run `ade-prep prepare` (or stop these services yourself) before enabling encryption: ADE \
    cannot stop SAP, MongoDB, Cassandra, Docker and similar workloads, and their open files keep / from being \
    unmounted; prepare restarts them once encryption is done.";

const WRITERS_TITLE: &str = "no other service writing to /";
const WRITERS_FIX: &str = "Stop these services yourself before enabling encryption (and start them again once it is \
    done), or set [policy] writers = \"stop\" in /etc/ade-prep/config.toml to have prepare stop and hold them for the \
    window and restore start them again. A process of a user is never stopped by ade-prep: end it yourself.";

const BACKUP_TITLE: &str = "snapshot or backup first";
const BACKUP_FIX: &str = "Take a snapshot or backup of the VM's disks right before enabling encryption, and restore \
    it if OS disk encryption fails midway or the VM does not come back after the restart it asks for.";

const ONLINE: &str = "ADE encrypts this distribution online and does not unmount /";

/// SELinux enforcing warns (prepare switches it to permissive).
pub fn selinux(s: &Selinux, flow: Flow) -> Check {
    let mk = |r, e: String| Check::new(SELINUX, SELINUX_TITLE, SELINUX_FIX, r, e);
    if flow == Flow::Online {
        return mk(Status::NotApplicable, ONLINE.into());
    }
    match &s.enforce {
        Err(e) => mk(Status::Unknown, e.clone()),
        Ok(None) => mk(Status::Pass, format!("no {}: SELinux is disabled or absent", s.path)),
        // The same reading as the switch's (selinux::parse_enforce).
        Ok(Some(t)) => match parse_enforce(t) {
            Some(Mode::Enforcing) => {
                mk(Status::Warn, format!("SELinux is enforcing ({} is 1); prepare sets it permissive", s.path))
            }
            Some(_) => mk(Status::Pass, format!("SELinux is permissive ({} is 0)", s.path)),
            None => mk(Status::Unknown, format!("{}: unexpected content {:?}", s.path, t.trim())),
        },
    }
}

/// Workloads holding `/` warn, naming the units prepare would stop.
pub fn workloads(w: &Input<Vec<WorkloadHolder>>, flow: Flow) -> Check {
    let mk = |r, e: String| Check::new(WORKLOADS, WORKLOADS_TITLE, WORKLOADS_FIX, r, e);
    if flow == Flow::Online {
        return mk(Status::NotApplicable, ONLINE.into());
    }
    let w = match w {
        Ok(w) => w,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    if w.is_empty() {
        return mk(Status::Pass, "no workload from the catalogue holds /".into());
    }
    let mut units: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut strays = vec![];
    for h in w {
        match &h.unit {
            Some(u) => {
                let e = units.entry(h.workload.as_str()).or_default();
                if !e.contains(&u.as_str()) {
                    e.push(u);
                }
            }
            None => strays.push(format!("pid {} {} ({})", h.pid, h.comm, h.workload)),
        }
    }
    let mut parts = vec![];
    if !units.is_empty() {
        let l: Vec<String> = units.iter().map(|(w, u)| format!("{w}: {}", u.join(", "))).collect();
        parts.push(format!("prepare would stop {}", l.join("; ")));
    }
    if !strays.is_empty() {
        parts.push(format!("processes no unit runs: {}", strays.join(", ")));
    }
    mk(Status::Warn, parts.join("; "))
}

/// Other services writing to files on `/` warn, naming them (unit and pid), what ADE does to them on this
/// distribution (`os_id`, os-release's ID) and what ade-prep does under `policy`.
pub fn writers(w: &Input<Vec<Writer>>, policy: WritersPolicy, os_id: Option<&str>, flow: Flow) -> Check {
    let mk = |r, e: String| Check::new(WRITERS, WRITERS_TITLE, WRITERS_FIX, r, e);
    if flow == Flow::Online {
        return mk(Status::NotApplicable, ONLINE.into());
    }
    match w {
        Err(e) => mk(Status::Unknown, e.clone()),
        Ok(w) if w.is_empty() => mk(Status::Pass, "no other process holds a file on / open for writing".into()),
        Ok(w) => mk(Status::Warn, crate::report::writers_text(w, policy, crate::report::ade_fate(os_id))),
    }
}

/// The reminder to snapshot or back up, always shown.
pub fn backup(flow: Flow) -> Check {
    let e = match flow {
        Flow::Online => "reminder: ADE encrypts online here, a backup is still the way back",
        _ => "reminder: OS disk encryption cannot be undone midway",
    };
    Check::new(BACKUP, BACKUP_TITLE, BACKUP_FIX, Status::Info, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(e: Input<Option<String>>) -> Selinux {
        Selinux { path: "/sys/fs/selinux/enforce".into(), enforce: e }
    }

    #[test]
    fn selinux_modes() {
        assert_eq!(selinux(&sel(Ok(Some("1".into()))), Flow::Unmount).result, Status::Warn);
        assert_eq!(selinux(&sel(Ok(Some("0\n".into()))), Flow::Unmount).result, Status::Pass);
        assert_eq!(selinux(&sel(Ok(None)), Flow::Unmount).result, Status::Pass);
        assert_eq!(selinux(&sel(Ok(Some("yes".into()))), Flow::Unmount).result, Status::Unknown);
        assert_eq!(selinux(&sel(Err("perm".into())), Flow::Unknown).result, Status::Unknown);
        assert_eq!(selinux(&sel(Ok(Some("1".into()))), Flow::Online).result, Status::NotApplicable);
    }

    fn wh(pid: i32, comm: &str, unit: Option<&str>, w: &str) -> WorkloadHolder {
        WorkloadHolder { pid, comm: comm.into(), unit: unit.map(Into::into), workload: w.into() }
    }

    #[test]
    fn workloads_name_their_units() {
        let w = vec![
            wh(10, "dockerd", Some("docker.service"), "docker"),
            wh(11, "containerd", Some("containerd.service"), "docker"),
            wh(12, "dockerd", Some("docker.service"), "docker"),
            wh(20, "mongod", Some("mongod.service"), "mongodb"),
            wh(30, "hdbindexserver", None, "sap"),
        ];
        let c = workloads(&Ok(w), Flow::Unmount);
        assert_eq!(c.result, Status::Warn);
        assert_eq!(
            c.evidence,
            "prepare would stop docker: docker.service, containerd.service; mongodb: mongod.service; \
             processes no unit runs: pid 30 hdbindexserver (sap)"
        );
        assert_eq!(workloads(&Ok(vec![]), Flow::Unmount).result, Status::Pass);
        assert_eq!(workloads(&Err("scan".into()), Flow::Unmount).result, Status::Unknown);
        assert_eq!(workloads(&Err("scan".into()), Flow::Online).result, Status::NotApplicable);
        assert_eq!(backup(Flow::Unmount).result, Status::Info);
    }

    #[test]
    fn writers_are_named_with_what_ade_does_on_this_distribution() {
        let w =
            vec![Writer { pid: 41, comm: "logger".into(), unit: Some("ade-writer.service".into()), report_only: None }];
        let c = writers(&Ok(w.clone()), WritersPolicy::Report, Some("rhel"), Flow::Unmount);
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.starts_with("1 other writer(s) with files open for writing: ade-writer.service (pid 41); "));
        assert!(c.evidence.contains("restarts them into its RAM root"), "{}", c.evidence);
        let u = writers(&Ok(w.clone()), WritersPolicy::Stop, Some("ubuntu"), Flow::Unmount);
        assert!(u.evidence.contains("systemctl rescue") && u.evidence.contains("prepare stops"), "{}", u.evidence);
        assert_eq!(writers(&Ok(vec![]), WritersPolicy::Report, None, Flow::Unmount).result, Status::Pass);
        assert_eq!(writers(&Ok(w), WritersPolicy::Report, None, Flow::Online).result, Status::NotApplicable);
        assert_eq!(writers(&Err("scan".into()), WritersPolicy::Report, None, Flow::Unmount).result, Status::Unknown);
    }
}
