//! The trust rule: what about a process no local user can forge (its uids, the cgroup systemd placed it in), and
//! so may let its claims count. Pure functions of what scan read; shared by scan (which walks) and classify (which
//! judges) so that neither imports the other for it. It must not read the machine nor know about workloads.

/// The trust rule: why a process's claims (its comm, arguments, exe path, cgroup name) may make ade-prep stop,
/// refuse or wait, from what no local user can forge; None when nothing vouches for it. Two things do: its real and
/// effective uid are both 0 (`/proc/PID/status`; the owner of `/proc/PID` is not enough, a non-dumpable process's
/// entry is root's), or it runs in a system unit, one outside `user.slice` (systemd places a process there; a user
/// can create cgroups only in the subtree delegated to their own manager, `user@UID.service`, or their sessions,
/// all inside `user.slice`). A user's `/usr/bin/mongod` in their session, a copy of any binary named
/// containerd-shim: not vouched for, shown by scan with why, never acted on.
///
/// A system unit that runs other users' jobs in its own cgroup vouches for none of them: atd and cron switch to the
/// job's owner and, where their PAM stack has no pam_systemd (Debian's common-session-noninteractive), leave the
/// job in atd.service or cron.service. There only root's processes count ([`USER_JOB_UNITS`]).
pub fn trusted(uids: Option<[u32; 2]>, unit: Option<&str>, cgroup: Option<&str>) -> Option<&'static str> {
    if uids == Some([0, 0]) {
        return Some("run by root");
    }
    if unit.is_some_and(runs_users_jobs) {
        return None;
    }
    let system = unit.is_some() && cgroup.is_some_and(|c| c.starts_with('/') && !in_user_slice(c));
    system.then_some("in a system unit")
}

/// System units that run jobs of any user, as that user, in their own cgroup: their claim counts only for root's
/// processes ([`trusted`]).
pub const USER_JOB_UNITS: &[&str] = &["atd.service", "cron.service", "crond.service", "cronie.service"];

pub(crate) fn runs_users_jobs(unit: &str) -> bool {
    USER_JOB_UNITS.contains(&unit)
}

pub(crate) fn in_user_slice(cgroup: &str) -> bool {
    cgroup.split('/').any(|c| c == "user.slice")
}

/// The unit of a process when that unit is a system service: a `.service` whose cgroup is outside `user.slice`
/// (systemd put the process there; no user can). A scope, a user's manager or session, or no unit: None.
pub fn system_service<'a>(unit: Option<&'a str>, cgroup: Option<&str>) -> Option<&'a str> {
    let u = unit.filter(|u| u.ends_with(".service"))?;
    cgroup.is_some_and(|c| c.starts_with('/') && !in_user_slice(c)).then_some(u)
}
