//! What each holder is: a workload to stop (and which), protected (never stopped), or other (left alone).
//! The catalogue of workloads is data ([`crate::config::Settings::workloads`]); the protected list is built in and
//! can only be extended. Pure; it must not read the machine or know about units' states.

use serde::Serialize;

use crate::config::Settings;
use crate::glob;
use crate::scan::Holder;

/// The class of a holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A known workload: its units are stopped for the window.
    Workload,
    /// Never stopped.
    Protected,
    /// Shown, left alone by default.
    Other,
}

/// A holder's class, with the workload name and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The class.
    pub class: Class,
    /// The workload's name in the catalogue.
    pub workload: Option<String>,
    /// What matched, for the operator.
    pub reason: String,
}

/// Units never stopped.
pub const PROTECTED_UNITS: &[&str] = &[
    "init.scope",
    "systemd-journald.service",
    "dbus.service",
    "dbus-broker.service",
    "systemd-udevd.service",
    "systemd-logind.service",
    "ssh.service",
    "sshd.service",
    "walinuxagent.service",
    "waagent.service",
    "ade-prep*.service",
    "ade-prep*.scope",
];

/// Command names never stopped.
pub const PROTECTED_COMMS: &[&str] = &[
    "systemd",
    "systemd-journal",
    "dbus-daemon",
    "dbus-broker*",
    "systemd-udevd",
    "systemd-logind",
    "sshd",
    "ade-prep",
];

/// Executable paths never stopped (the guest agent and the extension handlers it runs, ade-prep).
pub const PROTECTED_EXES: &[&str] =
    &["/var/lib/waagent/*", "/usr/sbin/waagent", "/usr/bin/ade-prep", "/usr/sbin/ade-prep"];

/// The slice the guest agent runs extension handlers in.
const EXTENSION_CGROUP: &str = "*/azure-vmextensions*";

fn protected_reason(h: &Holder, s: &Settings) -> Option<String> {
    if h.pid == 1 {
        return Some("PID 1".into());
    }
    if h.kernel_thread {
        return Some("kernel thread".into());
    }
    let m = |pats: &[&str], v: &str| pats.iter().find(|p| glob::matches(p, v)).map(|p| p.to_string());
    if let Some(u) = &h.unit {
        if let Some(p) =
            m(PROTECTED_UNITS, u).or_else(|| s.protected.units.iter().find(|p| glob::matches(p, u)).cloned())
        {
            return Some(format!("unit {u} matches {p}"));
        }
    }
    if let Some(p) =
        m(PROTECTED_COMMS, &h.comm).or_else(|| s.protected.comms.iter().find(|p| glob::matches(p, &h.comm)).cloned())
    {
        return Some(format!("comm {} matches {p}", h.comm));
    }
    if let Some(e) = &h.exe {
        if let Some(p) = m(PROTECTED_EXES, e).or_else(|| s.protected.exes.iter().find(|p| glob::matches(p, e)).cloned())
        {
            return Some(format!("exe {e} matches {p}"));
        }
    }
    // The guest agent is a Python script; its handlers run scripts from /var/lib/waagent, or with their cwd there.
    for a in h.cmdline.iter().take(3) {
        let base = a.rsplit('/').next().unwrap_or(a);
        if base == "waagent" || base.starts_with("WALinuxAgent-") || a.starts_with("/var/lib/waagent/") {
            return Some(format!("guest agent or extension handler ({a})"));
        }
    }
    if h.cwd.as_deref().is_some_and(|c| c.starts_with("/var/lib/waagent/")) {
        return Some("extension handler (cwd under /var/lib/waagent)".into());
    }
    if h.cgroup.as_deref().is_some_and(|c| glob::matches(EXTENSION_CGROUP, c)) {
        return Some("extension handler (azure-vmextensions slice)".into());
    }
    None
}

/// The first uid of a regular user (login.defs' UID_MIN on every distribution ADE supports).
pub const FIRST_USER_UID: u32 = 1000;

/// A system user's process, or one in a system unit (a unit outside user.slice: not a login session's).
fn is_system(h: &Holder) -> bool {
    let in_system_unit = h.unit.is_some() && !h.cgroup.as_deref().is_some_and(|c| c.starts_with("/user.slice"));
    h.uid < FIRST_USER_UID || in_system_unit
}

/// Classifies one holder.
pub fn classify(h: &Holder, s: &Settings) -> Classification {
    if let Some(reason) = protected_reason(h, s) {
        return Classification { class: Class::Protected, workload: None, reason };
    }
    for (name, w) in &s.workloads {
        let hit = |what: &str, pats: &[String], v: Option<&str>| -> Option<String> {
            let v = v?;
            pats.iter().find(|p| glob::matches(p, v)).map(|p| format!("{what} {v} matches {p}"))
        };
        let reason = hit("unit", &w.units, h.unit.as_deref())
            .or_else(|| hit("exe", &w.exes, h.exe.as_deref()))
            .or_else(|| hit("cgroup", &w.cgroups, h.cgroup.as_deref()));
        if let Some(reason) = reason {
            return Classification { class: Class::Workload, workload: Some(name.clone()), reason };
        }
        // A name or an argument anyone can choose: it counts only for a system user's process or one in a
        // system unit, else any user could make prepare stop or refuse (shown, left alone).
        let chosen = hit("comm", &w.comms, Some(&h.comm))
            .or_else(|| h.cmdline.iter().find_map(|a| hit("argument", &w.args, Some(a))));
        if let Some(reason) = chosen {
            if is_system(h) {
                return Classification { class: Class::Workload, workload: Some(name.clone()), reason };
            }
            return Classification {
                class: Class::Other,
                workload: None,
                reason: format!(
                    "{reason}, but uid {} is not a system user (< {FIRST_USER_UID}) and it runs in no system \
                     unit: left alone",
                    h.uid
                ),
            };
        }
    }
    Classification { class: Class::Other, workload: None, reason: "not in the catalogue".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::procs::holder as h;

    fn class_of(x: &Holder) -> (Class, Option<String>) {
        let c = classify(x, &Settings::default());
        (c.class, c.workload)
    }

    #[test]
    fn builtin_workloads() {
        assert_eq!(class_of(&h(10, "dockerd", Some("docker.service"))), (Class::Workload, Some("docker".into())));
        assert_eq!(class_of(&h(11, "containerd-shim", Some("containerd.service"))).1.as_deref(), Some("docker"));
        assert_eq!(class_of(&h(12, "nginx", Some("docker-0a1b.scope"))).1.as_deref(), Some("docker"));
        let mut c = h(13, "sh", None);
        c.cgroup = Some("/docker/0a1b2c".into());
        assert_eq!(class_of(&c).1.as_deref(), Some("docker"));
        assert_eq!(class_of(&h(14, "mongod", Some("mongod.service"))).1.as_deref(), Some("mongodb"));
        let mut j = h(15, "java", Some("foo.service"));
        j.cmdline = vec!["java".into(), "-Xmx1g".into(), "org.apache.cassandra.service.CassandraDaemon".into()];
        assert_eq!(class_of(&j).1.as_deref(), Some("cassandra"));
        assert_eq!(class_of(&h(16, "hdbindexserver", None)).1.as_deref(), Some("sap"));
        assert_eq!(class_of(&h(17, "sapstart", Some("SAPHN1_00.service"))).1.as_deref(), Some("sap"));
    }

    #[test]
    fn protected_wins() {
        let mut k = h(2, "kthreadd", None);
        k.kernel_thread = true;
        assert_eq!(class_of(&k).0, Class::Protected);
        assert_eq!(class_of(&h(1, "systemd", Some("init.scope"))).0, Class::Protected);
        assert_eq!(class_of(&h(300, "systemd-journal", Some("systemd-journald.service"))).0, Class::Protected);
        assert_eq!(class_of(&h(301, "sshd", Some("ssh.service"))).0, Class::Protected);
        let mut a = h(302, "python3", Some("walinuxagent.service"));
        a.cmdline = vec!["python3".into(), "-u".into(), "/usr/sbin/waagent".into(), "-daemon".into()];
        assert_eq!(class_of(&a).0, Class::Protected);
        let mut ext = h(303, "bash", None);
        ext.cwd = Some("/var/lib/waagent/custom-script/download/0".into());
        assert_eq!(class_of(&ext).0, Class::Protected);
        // protected even when a workload pattern would match too
        let mut d = h(304, "dockerd", Some("docker.service"));
        d.exe = Some("/var/lib/waagent/x/dockerd".into());
        assert_eq!(class_of(&d).0, Class::Protected);
    }

    #[test]
    fn a_name_or_argument_counts_only_for_system_users_or_system_units() {
        // A user's own process called mongod, in a login session: shown, left alone.
        let mut u = h(500, "mongod", Some("session-3.scope"));
        u.uid = 1000;
        u.cgroup = Some("/user.slice/user-1000.slice/session-3.scope".into());
        let c = classify(&u, &Settings::default());
        assert_eq!((c.class, c.workload), (Class::Other, None));
        assert!(c.reason.contains("comm mongod matches") && c.reason.contains("uid 1000 is not a system user"));
        // The same with a crafted argument (Cassandra's main class) and no unit at all.
        let mut j = h(501, "java", None);
        j.uid = 4242;
        j.cmdline = vec!["java".into(), "org.apache.cassandra.service.CassandraDaemon".into()];
        assert_eq!(class_of(&j).0, Class::Other);
        // A system user's process (uid 999), or a user's process in a system unit, still counts.
        j.uid = 999;
        assert_eq!(class_of(&j).1.as_deref(), Some("cassandra"));
        let mut s = h(502, "mongod", Some("mongod.service"));
        s.uid = 1001;
        assert_eq!(class_of(&s).1.as_deref(), Some("mongodb"));
        let mut n = h(503, "hdbindexserver", Some("custom.service"));
        n.uid = 1001;
        assert_eq!(class_of(&n).1.as_deref(), Some("sap"));
    }

    #[test]
    fn other_and_user_extensions() {
        assert_eq!(class_of(&h(400, "vim", Some("session-1.scope"))), (Class::Other, None));
        let mut s = Settings::default();
        s.protected.comms.push("vim".into());
        assert_eq!(classify(&h(400, "vim", None), &s).class, Class::Protected);
        let mut w = s.workloads["mongodb"].clone();
        w.units = vec!["redis-*.service".into()];
        w.comms = vec![];
        w.exes = vec![];
        s.workloads.insert("redis".into(), w);
        assert_eq!(
            classify(&h(401, "redis-server", Some("redis-server.service")), &s).workload.as_deref(),
            Some("redis")
        );
    }
}
