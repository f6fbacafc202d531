//! The guest agent and its extensions: the agent version that runs extensions, the deprecated ADE extension,
//! and other extensions running at the same time as ADE. Pure over the inputs; it must not read files itself.

use crate::version;
use std::collections::BTreeMap;

use crate::extension::{running_handlers, split_handler_dir, ADE_DEPRECATED_HANDLER, ADE_HANDLER, AGENT_PREFIX};
use crate::paths::WAAGENT_DIR;

use super::{Check, Input, Process, Status, ADE_EXTENSION, EXTENSIONS, GUEST_AGENT};

/// The oldest guest agent ADE works with.
pub const MIN_AGENT: &str = "2.2.38";

const AGENT_TITLE: &str = "guest agent 2.2.38 or later";
const AGENT_FIX: &str = "Update the Azure Linux guest agent (WALinuxAgent) to 2.2.38 or later (the distribution's \
    walinuxagent/WALinuxAgent package, with AutoUpdate.Enabled=y in /etc/waagent.conf) and restart it before \
    enabling encryption.";

const EXT_TITLE: &str = "supported ADE extension";
const EXT_FIX: &str = "Remove the deprecated Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux extension from the \
    VM and enable encryption with the supported Microsoft.Azure.Security.AzureDiskEncryptionForLinux (`az vm \
    encryption enable` or Set-AzVMDiskEncryptionExtension), which the platform keeps up to date.";

const RUNNING_TITLE: &str = "no other extension running";
const RUNNING_FIX: &str = "Let these extensions finish before encryption starts and do not run Custom Script or other \
    extensions while ADE runs: serialise them (`ade-prep lock -- CMD` in extension scripts; prepare waits for \
    running handlers).";

/// The goal-state agent's version from a `... WALinuxAgent-X.Y.Z-pyN.egg -run-exthandlers` process: (pid, version).
pub fn agent_from_processes(procs: &[Process]) -> Option<(i32, String)> {
    procs.iter().filter(|p| p.cmdline.iter().any(|a| a == "-run-exthandlers")).find_map(|p| {
        let v = p.cmdline.iter().find_map(|a| {
            let rest = &a[a.find(AGENT_PREFIX)? + AGENT_PREFIX.len()..];
            let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let v = v.trim_end_matches('.').to_string();
            version::parse(&v).map(|_| v)
        })?;
        Some((p.pid, v))
    })
}

/// The "Goal state agent: X.Y.Z" line of `waagent --version`.
pub fn goal_state_version(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let v = l.trim().strip_prefix("Goal state agent:")?.trim();
        version::parse(v).map(|_| v.to_string())
    })
}

/// The goal-state agent against [`MIN_AGENT`].
pub fn guest_agent(procs: &Input<Vec<Process>>, waagent_version: Option<&Input<String>>) -> Check {
    let mk = |r, e: String| Check::new(GUEST_AGENT, AGENT_TITLE, AGENT_FIX, r, e);
    let found = match (procs.as_ref().ok().and_then(|p| agent_from_processes(p)), waagent_version) {
        (Some((pid, v)), _) => Ok((v, format!("pid {pid} -run-exthandlers"))),
        (None, Some(Ok(out))) => {
            goal_state_version(out).map(|v| (v, "`waagent --version`".to_string())).ok_or_else(|| {
                "no -run-exthandlers process, and no \"Goal state agent:\" line in `waagent --version`".into()
            })
        }
        (None, Some(Err(e))) => Err(format!("no -run-exthandlers process names the agent's version; {e}")),
        (None, None) => Err(match procs {
            Err(e) => e.clone(),
            Ok(_) => "no -run-exthandlers process names the agent's version".into(),
        }),
    };
    match found {
        Ok((v, from)) => {
            let old =
                version::parse(&v).zip(version::parse(MIN_AGENT)).is_some_and(|(a, b)| version::cmp(&a, &b).is_lt());
            if old {
                mk(Status::Fail, format!("goal-state agent {v} ({from}) is older than {MIN_AGENT}"))
            } else {
                mk(Status::Pass, format!("goal-state agent {v} ({from})"))
            }
        }
        Err(e) => mk(Status::Unknown, e),
    }
}

/// The deprecated ADE handler folder fails; the supported one is named when present.
pub fn ade_extension(entries: &Input<Option<Vec<String>>>) -> Check {
    let mk = |r, e: String| Check::new(ADE_EXTENSION, EXT_TITLE, EXT_FIX, r, e);
    let entries = match entries {
        Err(e) => return mk(Status::Unknown, e.clone()),
        Ok(None) => return mk(Status::NotApplicable, "no /var/lib/waagent: the guest agent is not installed".into()),
        Ok(Some(e)) => e,
    };
    let of = |want: &str| -> Vec<&str> {
        entries.iter().filter(|n| split_handler_dir(n).is_some_and(|(pt, _)| pt == want)).map(String::as_str).collect()
    };
    let (old, new) = (of(ADE_DEPRECATED_HANDLER), of(ADE_HANDLER));
    if !old.is_empty() {
        let dirs: Vec<String> = old.iter().map(|d| format!("{WAAGENT_DIR}/{d}")).collect();
        mk(Status::Fail, format!("deprecated handler installed: {}", dirs.join(", ")))
    } else if !new.is_empty() {
        mk(Status::Pass, format!("{} installed", new.join(", ")))
    } else {
        mk(Status::Pass, format!("no ADE handler yet; Azure installs {ADE_HANDLER} when encryption is enabled"))
    }
}

/// Other extension handlers running now.
pub fn extensions(procs: &Input<Vec<Process>>) -> Check {
    let mk = |r, e: String| Check::new(EXTENSIONS, RUNNING_TITLE, RUNNING_FIX, r, e);
    let procs = match procs {
        Ok(p) => p,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    let tuples: Vec<(i32, &str, &[String], Option<&str>)> =
        procs.iter().map(|p| (p.pid, p.comm.as_str(), p.cmdline.as_slice(), p.cwd.as_deref())).collect();
    let mut by_handler: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in running_handlers(&tuples) {
        by_handler.entry(h.handler).or_default().push(format!("{} {}", h.pid, h.comm));
    }
    if by_handler.is_empty() {
        return mk(Status::Pass, "no extension handler running besides ADE and the guest agent".into());
    }
    let list: Vec<String> = by_handler.iter().map(|(h, p)| format!("{h} (pid {})", p.join(", pid "))).collect();
    mk(Status::Warn, format!("running: {}", list.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(pid: i32, cmd: &[&str], cwd: &str) -> Process {
        Process {
            pid,
            ppid: Some(1),
            comm: cmd[0].rsplit('/').next().unwrap().chars().take(15).collect(),
            cmdline: cmd.iter().map(|s| s.to_string()).collect(),
            cwd: Some(cwd.into()),
        }
    }

    const VERSION_OUT: &str = "WALinuxAgent-2.2.45 running on ubuntu 18.04\nPython: 3.6.9\nGoal state agent: 2.2.53\n";

    #[test]
    fn agent_version_from_run_exthandlers_else_waagent() {
        let old = proc_(900, &["python3", "-u", "bin/WALinuxAgent-2.2.36-py2.7.egg", "-run-exthandlers"], "/");
        let new =
            proc_(901, &["/usr/bin/python3", "-u", "bin/WALinuxAgent-2.9.1.1-py3.8.egg", "-run-exthandlers"], "/");
        let daemon = proc_(902, &["/usr/bin/python3", "-u", "/usr/sbin/waagent", "-daemon"], "/");
        assert_eq!(agent_from_processes(&[daemon.clone(), old.clone()]), Some((900, "2.2.36".into())));
        let c = guest_agent(&Ok(vec![old]), None);
        assert_eq!(c.result, Status::Fail, "{}", c.evidence);
        assert!(c.evidence.contains("2.2.36") && c.evidence.contains("pid 900"));
        assert_eq!(guest_agent(&Ok(vec![new]), None).result, Status::Pass);
        // no -run-exthandlers: the goal state line
        let c = guest_agent(&Ok(vec![daemon.clone()]), Some(&Ok(VERSION_OUT.into())));
        assert_eq!(c.result, Status::Pass);
        assert!(c.evidence.contains("2.2.53"));
        let c = guest_agent(&Ok(vec![]), Some(&Ok("WALinuxAgent-2.2.32\nGoal state agent: 2.2.32\n".into())));
        assert_eq!(c.result, Status::Fail);
        let c = guest_agent(&Ok(vec![]), Some(&Ok("Goal state agent: 2.2.38\n".into())));
        assert_eq!(c.result, Status::Pass, "the minimum itself is enough");
        // the agent run without auto-update: -run-exthandlers without a version in its command line
        let plain = proc_(903, &["/usr/bin/python3", "-u", "/usr/sbin/waagent", "-run-exthandlers"], "/");
        assert_eq!(agent_from_processes(&[plain]), None);
        for bad in [Some(&Ok("garbage\n".to_string())), Some(&Err("waagent: not found".to_string())), None] {
            let c = guest_agent(&Ok(vec![daemon.clone()]), bad);
            assert_eq!(c.result, Status::Unknown, "{}", c.evidence);
        }
        assert_eq!(guest_agent(&Err("/p: gone".into()), None).evidence, "/p: gone");
    }

    #[test]
    fn deprecated_ade_handler_fails() {
        let e = |names: &[&str]| Ok(Some(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        let c = ade_extension(&e(&["Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux-0.1.0.999", "history"]));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.contains("/var/lib/waagent/Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux-0.1.0.999"));
        let c = ade_extension(&e(&[
            "Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53",
            "WALinuxAgent-2.9.1.1",
        ]));
        assert_eq!(c.result, Status::Pass);
        assert!(c.evidence.contains("1.1.0.53"));
        // the OSTC status/config files of waagent are not handler folders
        assert_eq!(
            ade_extension(&e(&["Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux.1.manifest.xml"])).result,
            Status::Pass
        );
        assert_eq!(ade_extension(&Ok(None)).result, Status::NotApplicable);
        assert_eq!(ade_extension(&Err("/w: Not a directory (os error 20)".into())).result, Status::Unknown);
    }

    #[test]
    fn running_extensions_warn_by_handler() {
        let procs = vec![
            proc_(10, &["/bin/bash", "setup.sh"], "/var/lib/waagent/custom-script/download/1"),
            proc_(11, &["sleep", "600"], "/var/lib/waagent/custom-script/download/1"),
            proc_(
                12,
                &[
                    "python3",
                    "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53/main/handle.py",
                    "-enable",
                ],
                "/",
            ),
        ];
        let c = extensions(&Ok(procs.clone()));
        assert_eq!(c.result, Status::Warn);
        assert_eq!(c.evidence, "running: custom-script/download/1 (pid 10 bash, pid 11 sleep)");
        assert_eq!(extensions(&Ok(procs[2..].to_vec())).result, Status::Pass);
        assert_eq!(extensions(&Err("x".into())).result, Status::Unknown);
    }
}
