//! What each holder is: a workload to stop (and which), protected (never stopped), or other (left alone).
//! The catalogue of workloads is data ([`crate::config::Settings::workloads`]); the protected list is built in and
//! can only be extended; the trust rule it applies is [`crate::trust`]'s. Pure; it must not read the machine or know
//! about units' states.

use serde::Serialize;

use crate::config::Settings;
use crate::glob;
use crate::scan::Holder;
use crate::trust::{in_user_slice, runs_users_jobs};
use crate::trust::{system_service, trusted};

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

/// Units never stopped, masked or held, whatever holds `/` in them: the machine's own services, the units that
/// run other managers' workloads as a whole (a user's manager, a container, a login session), the guest agent and
/// its extension slice, and ade-prep's own units. The generator applies the same list (packaging/usr/lib/systemd/
/// system-generators/ade-prep-generator; tests/packaging checks that the two agree).
pub const PROTECTED_UNITS: &[&str] = &[
    "init.scope",
    "-.slice",
    "systemd-journald*",
    "dbus.service",
    "dbus.socket",
    "dbus-broker.service",
    "systemd-udevd*",
    "systemd-logind.service",
    "ssh.service",
    "ssh.socket",
    "sshd.service",
    "sshd.socket",
    "cron.service",
    "crond.service",
    "user@*",
    "user-runtime-dir@*",
    "*nspawn@*",
    "machine-*.scope",
    "getty@*",
    "serial-getty@*",
    "session-*.scope",
    "walinuxagent.service",
    "waagent.service",
    "azure-vmextensions*",
    "ade-prep*",
];

/// The built-in pattern of [`PROTECTED_UNITS`] a unit name matches.
pub fn protected_unit(u: &str) -> Option<&'static str> {
    PROTECTED_UNITS.iter().copied().find(|p| glob::matches(p, u))
}

/// Why a unit must not be stopped: a built-in pattern or one of the configuration's `protected.units`.
pub fn protected_unit_reason(u: &str, s: &Settings) -> Option<String> {
    protected_unit(u)
        .map(str::to_string)
        .or_else(|| s.protected.units.iter().find(|p| glob::matches(p, u)).cloned())
        .map(|p| format!("unit {u} matches {p}"))
}

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
    // A login session is never stopped, but what runs in it is not protected for that: a workload started by
    // hand there is a stray (the stray policy), like one in no unit.
    let session = |u: &&str| glob::matches("session-*.scope", u);
    if let Some(r) = h.unit.as_deref().filter(|u| !session(u)).and_then(|u| protected_unit_reason(u, s)) {
        return Some(r);
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

/// [`trusted`] for a holder.
pub fn holder_trusted(h: &Holder) -> Option<&'static str> {
    trusted(h.uids, h.unit.as_deref(), h.cgroup.as_deref())
}

/// Another writer: a holder in no workload and not protected with a file on the filesystem open for writing (an fd
/// open `O_WRONLY`/`O_RDWR`, or a shared writable mapping). ADE leaves it running until its own stop or restart
/// (docs/decisions.md, "Every other writer").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    pub pid: i32,
    /// `comm`, for the operator (never what decides).
    pub comm: String,
    /// The system service prepare stops under `[policy] writers = "stop"`; None: reported, never stopped.
    pub unit: Option<String>,
    /// Why it is only reported (no unit or a scope, a user's process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_only: Option<String>,
}

/// Whether a classified holder is another writer, and which unit would stop it. Decided by the unit systemd put it
/// in, never by its name or arguments (the trust rule): only a system service ([`system_service`]) may be stopped,
/// and in a unit that runs users' jobs ([`crate::trust::USER_JOB_UNITS`]) only for root's process. A user's process
/// holding a file open for writing is reported, never stopped.
pub fn writer(h: &Holder, c: &Classification) -> Option<Writer> {
    if c.class != Class::Other || h.kernel_thread || (h.writable_fds == 0 && !h.access.mmap_write) {
        return None;
    }
    let w = |unit: Option<&str>, why: Option<String>| Writer {
        pid: h.pid,
        comm: h.comm.clone(),
        unit: unit.map(str::to_string),
        report_only: why,
    };
    match system_service(h.unit.as_deref(), h.cgroup.as_deref()) {
        Some(u) if runs_users_jobs(u) && h.uids != Some([0, 0]) => {
            Some(w(None, Some(format!("a user's job in {u} (not root's): its unit runs every user's jobs"))))
        }
        Some(u) => Some(w(Some(u), None)),
        None => {
            let why = match (h.unit.as_deref(), h.cgroup.as_deref()) {
                (_, Some(c)) if in_user_slice(c) => format!("a user's process (cgroup {c})"),
                (Some(u), _) => format!("{u} is not a system service: no unit to stop and start again"),
                (None, _) => "in no unit".to_string(),
            };
            Some(w(None, Some(why)))
        }
    }
}

/// The writers among classified holders, in pid order.
pub fn writers<'a>(holders: impl IntoIterator<Item = (&'a Holder, &'a Classification)>) -> Vec<Writer> {
    let mut v: Vec<Writer> = holders.into_iter().filter_map(|(h, c)| writer(h, c)).collect();
    v.sort_by_key(|w| w.pid);
    v
}

/// Classifies one holder.
pub fn classify(h: &Holder, s: &Settings) -> Classification {
    if let Some(reason) = protected_reason(h, s) {
        return Classification { class: Class::Protected, workload: None, reason };
    }
    // A container task's process (Docker's, or containerd's own `ctr run` task in any namespace, whose cgroup no
    // pattern can name): the workload of the shim it runs under (docs/docker.md, bug 2).
    if let Some(shim) = h.shim {
        if let Some((name, _)) = s.workloads.iter().find(|(_, w)| glob::any(&w.comms, "containerd-shim")) {
            let reason = format!("a container task: runs under containerd-shim pid {shim}");
            return Classification { class: Class::Workload, workload: Some(name.clone()), reason };
        }
    }
    match workload_match(h, s) {
        Some(Ok((name, reason))) => Classification { class: Class::Workload, workload: Some(name), reason },
        Some(Err(reason)) => Classification { class: Class::Other, workload: None, reason },
        None => Classification { class: Class::Other, workload: None, reason: "not in the catalogue".into() },
    }
}

/// The workload whose patterns a holder matches, protected or not (a mongod in a container is still a mongod).
pub fn workload_of(h: &Holder, s: &Settings) -> Option<String> {
    workload_match(h, s)?.ok().map(|(w, _)| w)
}

/// `Ok((workload, why))` for a match, `Err(why not)` for a name match that does not count (another user's process),
/// None when no pattern matches.
fn workload_match(h: &Holder, s: &Settings) -> Option<Result<(String, String), String>> {
    for (name, w) in &s.workloads {
        let hit = |what: &str, pats: &[String], v: Option<&str>| -> Option<String> {
            let v = v?;
            pats.iter().find(|p| glob::matches(p, v)).map(|p| format!("{what} {v} matches {p}"))
        };
        let reason = hit("unit", &w.units, h.unit.as_deref())
            .or_else(|| hit("exe", &w.exes, h.exe.as_deref()))
            .or_else(|| hit("cgroup", &w.cgroups, h.cgroup.as_deref()))
            .or_else(|| hit("comm", &w.comms, Some(&h.comm)))
            .or_else(|| h.cmdline.iter().find_map(|a| hit("argument", &w.args, Some(a))));
        let Some(reason) = reason else { continue };
        // Whatever matched, only a vouched-for process counts (the trust rule): else any user could make prepare
        // stop or refuse, with a name, an argument, a copy of /usr/bin/mongod or a scope under their own manager.
        if holder_trusted(h).is_some() {
            return Some(Ok((name.clone(), reason)));
        }
        let uids = h.uids.map_or("unreadable".to_string(), |[r, e]| format!("{r}/{e}"));
        if let Some(u) = h.unit.as_deref().filter(|u| runs_users_jobs(u)) {
            return Some(Err(format!(
                "{reason}, but it is not root's (real/effective uid {uids}) and {u} runs users' jobs (at, cron) as \
                 their owners: left alone"
            )));
        }
        return Some(Err(format!(
            "{reason}, but it is not root's (real/effective uid {uids}) and runs in no system unit (cgroup {}): \
             left alone",
            h.cgroup.as_deref().unwrap_or("unknown")
        )));
    }
    None
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
    fn writers_are_named_by_their_system_service_never_by_name() {
        let s = Settings::default();
        let wr = |x: &Holder| writer(x, &classify(x, &s));
        let writing = |pid, comm: &str, unit: Option<&str>| {
            let mut x = h(pid, comm, unit);
            x.writable_fds = 1;
            x
        };
        // A system service writing to a file on /: its unit, whoever it runs as (User=www-data).
        let mut nginx = writing(70, "nginx", Some("nginx.service"));
        nginx.uids = Some([33, 33]);
        assert_eq!(wr(&nginx).unwrap().unit.as_deref(), Some("nginx.service"));
        // Writing through a shared mapping only.
        let mut m = h(71, "lmdb", Some("cache.service"));
        m.access.mmap_write = true;
        assert_eq!(wr(&m).unwrap().unit.as_deref(), Some("cache.service"));
        // Reading only: no writer.
        assert_eq!(wr(&h(72, "nginx", Some("nginx.service"))), None);
        // Workloads and protected holders are not "other" writers.
        assert_eq!(wr(&writing(73, "mongod", Some("mongod.service"))), None);
        assert_eq!(wr(&writing(74, "systemd-journal", Some("systemd-journald.service"))), None);
        let mut k = writing(2, "kthreadd", None);
        k.kernel_thread = true;
        assert_eq!(wr(&k), None);
        // A user's process, whatever it calls itself: reported, never stopped.
        let mut user = writing(75, "nginx", Some("session-3.scope"));
        user.uids = Some([1000, 1000]);
        user.cgroup = Some("/user.slice/user-1000.slice/session-3.scope".into());
        let w = wr(&user).unwrap();
        assert_eq!(w.unit, None);
        assert!(w.report_only.unwrap().contains("a user's process"));
        // A unit the user named under their own manager: still the user's.
        let mut own = writing(76, "x", Some("evil.service"));
        own.uids = Some([1000, 1000]);
        own.cgroup = Some("/user.slice/user-1000.slice/user@1000.service/app.slice/evil.service".into());
        assert_eq!(wr(&own).unwrap().unit, None);
        // A user's at job in atd.service: reported; root's job there names atd.service.
        let mut job = writing(77, "sh", Some("atd.service"));
        job.uids = Some([1000, 1000]);
        assert_eq!(wr(&job).unwrap().unit, None);
        job.uids = Some([0, 0]);
        assert_eq!(wr(&job).unwrap().unit.as_deref(), Some("atd.service"));
        // A system scope or no unit: nothing to stop and start again.
        let scope = wr(&writing(78, "backup", Some("run-r1.scope"))).unwrap();
        assert!(scope.unit.is_none() && scope.report_only.unwrap().contains("not a system service"));
        assert_eq!(wr(&writing(79, "x", None)).unwrap().report_only.as_deref(), Some("in no unit"));
        let all = [&nginx, &user, &h(72, "nginx", Some("nginx.service"))];
        let cs: Vec<Classification> = all.iter().map(|x| classify(x, &s)).collect();
        assert_eq!(writers(all.into_iter().zip(&cs)).iter().map(|w| w.pid).collect::<Vec<_>>(), [70, 75]);
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
        assert_eq!(class_of(&h(18, "kubelet", Some("kubelet.service"))).1.as_deref(), Some("kubelet"));
        // Elasticsearch and OpenSearch: by unit, or a JVM (comm java) by its main class.
        for (unit, class) in [
            ("elasticsearch.service", "org.elasticsearch.bootstrap.Elasticsearch"),
            ("opensearch.service", "org.opensearch.bootstrap.OpenSearch"),
        ] {
            assert_eq!(class_of(&h(19, "java", Some(unit))).1.as_deref(), Some("elasticsearch"), "{unit}");
            let mut jvm = h(19, "java", Some("search.service"));
            jvm.cmdline = vec!["/usr/share/x/jdk/bin/java".into(), "-Xms1g".into(), class.into()];
            assert_eq!(class_of(&jvm).1.as_deref(), Some("elasticsearch"), "{class}");
        }
    }

    #[test]
    fn databases_by_their_debian_and_rhel7_units_and_binaries() {
        for (unit, comm, want) in [
            ("postgresql@15-main.service", "postgres", "postgresql"),
            ("postgresql.service", "postgres", "postgresql"),
            ("postgresql-9.6.service", "postmaster", "postgresql"),
            ("mariadb.service", "mariadbd", "mariadb"),
            ("mysql.service", "mysqld", "mariadb"),
            ("mysqld.service", "mysqld", "mariadb"),
            ("redis-server.service", "redis-server", "redis"),
            ("redis-server@cache.service", "redis-server", "redis"),
            ("redis.service", "redis-server", "redis"),
            ("redis-sentinel.service", "redis-sentinel", "redis"),
        ] {
            assert_eq!(class_of(&h(60, "x", Some(unit))).1.as_deref(), Some(want), "{unit}");
            // Outside its unit, by its command name (a system user's process).
            assert_eq!(class_of(&h(61, comm, Some("other.service"))).1.as_deref(), Some(want), "{comm}");
        }
        let mut pg = h(62, "x", None);
        pg.exe = Some("/usr/lib/postgresql/15/bin/postgres".into());
        assert_eq!(class_of(&pg).1.as_deref(), Some("postgresql"));
        // A database in a Docker container stays Docker's.
        assert_eq!(class_of(&h(63, "postgres", Some("docker-0a1b.scope"))).1.as_deref(), Some("docker"));
    }

    #[test]
    fn a_containerd_tasks_process_is_the_workload_of_its_shim_whatever_its_cgroup_or_name() {
        // `ctr -n demo run`: cgroup /demo/web (cgroupfs), no unit; a name the catalogue does not know.
        let mut t = h(20, "sh", None);
        t.cgroup = Some("/demo/web".into());
        assert_eq!(class_of(&t), (Class::Other, None), "without its shim nothing names it");
        t.shim = Some(19);
        let c = classify(&t, &Settings::default());
        assert_eq!((c.class, c.workload.as_deref()), (Class::Workload, Some("docker")));
        assert!(c.reason.contains("containerd-shim pid 19"), "{}", c.reason);
        // A name another workload's catalogue knows is still the container's.
        let mut m = h(21, "mongod", None);
        m.shim = Some(19);
        assert_eq!(class_of(&m).1.as_deref(), Some("docker"));
        // Protected stays protected.
        let mut sshd = h(22, "sshd", None);
        sshd.shim = Some(19);
        assert_eq!(class_of(&sshd).0, Class::Protected);
    }

    #[test]
    fn the_generator_protects_exactly_the_units_classify_protects() {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/usr/lib/systemd/system-generators/ade-prep-generator");
        let text = std::fs::read_to_string(path).unwrap();
        let block = text.split("# BEGIN protected").nth(1).and_then(|t| t.split("# END protected").next()).unwrap();
        let case = block.split("case $unit in").nth(1).unwrap().split(')').next().unwrap();
        let pats: Vec<&str> = case.split(['|', '\\']).map(str::trim).filter(|p| !p.is_empty()).collect();
        assert_eq!(pats, PROTECTED_UNITS, "{path}");
    }

    #[test]
    fn whole_managers_sessions_containers_and_the_machines_own_units_are_protected() {
        for u in [
            "user@1000.service",
            "systemd-nspawn@c1.service",
            "machine-c1.scope",
            "getty@tty1.service",
            "session-3.scope",
            "init.scope",
            "systemd-journald.service",
            "systemd-journald.socket",
            "systemd-udevd.service",
            "dbus.service",
            "systemd-logind.service",
            "sshd.service",
            "cron.service",
            "crond.service",
            "walinuxagent.service",
            "azure-vmextensions-Microsoft.Azure.Security.AzureDiskEncryptionForLinux.slice",
            "ade-prep.service",
        ] {
            assert!(protected_unit(u).is_some(), "{u}");
        }
        for u in ["mongod.service", "docker.socket", "SAPHN1_00.service", "cloud-final.service", "run-u7.service"] {
            assert!(protected_unit(u).is_none(), "{u}");
        }
        // A mongod started by hand in a login session is a stray, not protected; in a container it is protected.
        assert_eq!(class_of(&h(20, "mongod", Some("session-3.scope"))).0, Class::Workload);
        assert_eq!(class_of(&h(21, "mongod", Some("systemd-nspawn@c1.service"))).0, Class::Protected);
        assert_eq!(
            workload_of(&h(21, "mongod", Some("systemd-nspawn@c1.service")), &Settings::default()).as_deref(),
            Some("mongodb")
        );
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
    fn only_a_process_root_runs_or_a_system_unit_runs_counts_whatever_it_matches() {
        let user = |pid, comm: &str, cgroup: &str| {
            let mut x = h(pid, comm, None);
            (x.uid, x.uids) = (1000, Some([1000, 1000]));
            x.cgroup = Some(cgroup.into());
            x.unit = crate::scan::unit_from_cgroup(&format!("0::{cgroup}")).0;
            x
        };
        let session = "/user.slice/user-1000.slice/session-3.scope";
        // A user's own process called mongod, in a login session: shown, left alone, with why.
        let c = classify(&user(500, "mongod", session), &Settings::default());
        assert_eq!((c.class, c.workload), (Class::Other, None));
        assert!(c.reason.contains("comm mongod matches") && c.reason.contains("uid 1000/1000"), "{}", c.reason);
        // The real /usr/bin/mongod run by the user (`mongod --dbpath ~/db`): an exe match, still the user's.
        let mut m = user(501, "mongod", session);
        m.exe = Some("/usr/bin/mongod".into());
        let c = classify(&m, &Settings::default());
        assert_eq!(c.class, Class::Other, "{}", c.reason);
        assert!(workload_of(&m, &Settings::default()).is_none());
        // A crafted argument (Cassandra's main class), by a system user (999) in no unit: nothing vouches for it.
        let mut j = h(502, "java", None);
        (j.uid, j.uids) = (999, Some([999, 999]));
        j.cmdline = vec!["java".into(), "org.apache.cassandra.service.CassandraDaemon".into()];
        assert_eq!(class_of(&j).0, Class::Other);
        // A setuid-root binary run by a user: effective 0, real 1000: not root's.
        j.uids = Some([1000, 0]);
        assert_eq!(class_of(&j).0, Class::Other);
        // A non-dumpable process: its /proc entry is root's (uid 0) but its status says 1000.
        (j.uid, j.uids) = (0, Some([1000, 1000]));
        assert_eq!(class_of(&j).0, Class::Other);
        (j.uid, j.uids) = (0, None);
        assert_eq!(class_of(&j).0, Class::Other, "an unreadable status vouches for nothing");
        // Root's process counts wherever it runs.
        j.uids = Some([0, 0]);
        assert_eq!(class_of(&j).1.as_deref(), Some("cassandra"));
        // A transient unit the user named after a workload's unit, under their own manager: the unit systemd
        // records is user@1000.service (protected) and nothing there is the workload's.
        let u = user(503, "mongod", "/user.slice/user-1000.slice/user@1000.service/app.slice/mongod.service");
        assert_eq!(u.unit.as_deref(), Some("user@1000.service"));
        assert_eq!(classify(&u, &Settings::default()).class, Class::Protected);
        assert!(workload_of(&u, &Settings::default()).is_none(), "no blocker from a user's manager");
        // A user's process in a system unit (User= in the admin's unit) counts.
        let mut s = h(504, "mongod", Some("mongod.service"));
        (s.uid, s.uids) = (1001, Some([1001, 1001]));
        assert_eq!(class_of(&s).1.as_deref(), Some("mongodb"));
        let mut n = h(505, "hdbindexserver", Some("custom.service"));
        (n.uid, n.uids) = (1001, Some([1001, 1001]));
        assert_eq!(class_of(&n).1.as_deref(), Some("sap"));
        // The same in a login session: not.
        assert_eq!(class_of(&user(506, "hdbindexserver", session)).0, Class::Other);
        // A user's at or cron job, left by atd or cron in their own unit (no pam_systemd): the unit runs every
        // user's jobs, so it vouches only for root's; neither a workload nor a blocker (cron.service is protected).
        for unit in ["atd.service", "cron.service", "crond.service"] {
            let mut job = h(507, "mongod", Some(unit));
            (job.uid, job.uids) = (1000, Some([1000, 1000]));
            let c = classify(&job, &Settings::default());
            assert_ne!(c.class, Class::Workload, "{unit}: {}", c.reason);
            assert!(workload_of(&job, &Settings::default()).is_none(), "{unit}");
            job.uids = Some([0, 0]);
            assert_eq!(workload_of(&job, &Settings::default()).as_deref(), Some("mongodb"), "{unit}: root's counts");
        }
        let mut job = h(508, "mongod", Some("atd.service"));
        (job.uid, job.uids) = (1000, Some([1000, 1000]));
        let c = classify(&job, &Settings::default());
        assert!(c.reason.contains("atd.service runs users' jobs"), "{}", c.reason);
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
