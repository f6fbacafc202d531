//! The Azure guest agent's extension handlers: which of them are running besides ADE, so that `check` can name
//! them, and which short-lived handler operations the agent is running, so that `prepare` can wait for them (ADE
//! fails when another extension changes the machine at the same time) and for nothing else.
//! ADE's own handler (its settings, its status, waiting for it to be done) is in [`ade`].
//! It reads process lists it is given; it must not change anything.

pub mod ade;

use serde::Serialize;

use crate::paths::WAAGENT_DIR;
use crate::scan::Holder;

/// The supported ADE extension for Linux (Publisher.Type of its handler folder).
pub const ADE_HANDLER: &str = "Microsoft.Azure.Security.AzureDiskEncryptionForLinux";
/// The deprecated ADE extension, no longer supported.
pub const ADE_DEPRECATED_HANDLER: &str = "Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux";
/// The guest agent's own folders are `WALinuxAgent-<version>`.
pub const AGENT_PREFIX: &str = "WALinuxAgent-";
/// Where the Custom Script extension downloads and runs scripts, one folder per sequence number.
pub const CUSTOM_SCRIPT_DOWNLOAD: &str = "custom-script/download";

/// An extension handler process found running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningHandler {
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// The handler: its folder name (`Publisher.Type-version`) or `custom-script/download/<seq>`.
    pub handler: String,
}

/// Splits a handler folder name `Publisher.Type-1.2.3` into (`Publisher.Type`, `1.2.3`); None for anything else
/// (the agent's `WALinuxAgent-2.9.1.1` has no dot in its name part, so it is not a handler).
pub fn split_handler_dir(name: &str) -> Option<(&str, &str)> {
    let (pub_type, version) = name.rsplit_once('-')?;
    let version_ok =
        version.starts_with(|c: char| c.is_ascii_digit()) && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    (version_ok && pub_type.contains('.') && !pub_type.starts_with('.')).then_some((pub_type, version))
}

/// The handler a path under the agent's folder belongs to, if any (ADE and the agent excluded).
fn handler_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix(WAAGENT_DIR)?.strip_prefix('/')?;
    let mut comps = rest.split('/').filter(|c| !c.is_empty());
    let first = comps.next()?;
    if first == "custom-script" {
        let (Some("download"), Some(seq)) = (comps.next(), comps.next()) else { return None };
        return seq.chars().all(|c| c.is_ascii_digit()).then(|| format!("{CUSTOM_SCRIPT_DOWNLOAD}/{seq}"));
    }
    if first.starts_with(AGENT_PREFIX) {
        return None;
    }
    let (pub_type, _) = split_handler_dir(first)?;
    (pub_type != ADE_HANDLER).then(|| first.to_string())
}

/// Extension handlers running other than ADE and the guest agent, from (pid, comm, cmdline, cwd) of each process:
/// a process is a handler when its cwd, or a path in its command line, lies in a handler folder
/// (`/var/lib/waagent/<Publisher.Type>-<version>/`) or a Custom Script download folder
/// (`/var/lib/waagent/custom-script/download/<seq>/`).
pub fn running_handlers(procs: &[(i32, &str, &[String], Option<&str>)]) -> Vec<RunningHandler> {
    let mut out = vec![];
    for &(pid, comm, cmdline, cwd) in procs {
        // `sh -c "..."` carries paths inside one argument: look at every word.
        let from_args = cmdline
            .iter()
            .flat_map(|a| a.split_whitespace())
            .filter_map(|w| w.find(WAAGENT_DIR).map(|i| &w[i..]))
            .find_map(handler_of_path);
        if let Some(handler) = from_args.or_else(|| cwd.and_then(handler_of_path)) {
            out.push(RunningHandler { pid, comm: comm.to_string(), handler });
        }
    }
    out
}

/// The verbs the guest agent runs a handler with (FINDINGS 29, sp `VMEncryption/setup.py:95-99`).
pub const HANDLER_VERBS: &[&str] = &["install", "enable", "update", "disable", "uninstall"];
/// Arguments of the resident daemons handlers leave behind (FINDINGS 30): ADE `handle.py -daemon`, AMA `agent.py
/// -metrics/-syslogconfig/-transformconfig`, LAD `diagnostic.py -daemon`. Never waited for.
pub const RESIDENT_FLAGS: &[&str] = &["-daemon", "-metrics", "-syslogconfig", "-transformconfig"];
/// The argument of the guest agent's process that runs the handlers (FINDINGS 28, `WALA/.../update.py:220`).
pub const AGENT_EXTHANDLERS_FLAG: &str = "-run-exthandlers";

fn words(cmdline: &[String]) -> impl Iterator<Item = &str> {
    // `sh -c "..."` carries the whole command in one argument.
    cmdline.iter().flat_map(|a| a.split_whitespace())
}

/// The verb of a handler command line: `--enable`, `-enable` or `enable` (Custom Script's shim).
fn verb_of(cmdline: &[String]) -> Option<&'static str> {
    words(cmdline).skip(1).find_map(|w| HANDLER_VERBS.iter().copied().find(|v| w.trim_start_matches('-') == *v))
}

/// From a cgroup path, the scope verb and the slice's handler: `.../azure-vmextensions-<Publisher.Type>.slice/
/// <verb>_<uuid>.scope` (FINDINGS 28, `WALA/azurelinuxagent/ga/cgroupapi.py:306-318`, slice name `:76-83`).
fn scope_of(cgroup: &str) -> Option<(&'static str, Option<&str>)> {
    let mut parts = cgroup.split('/').filter(|p| !p.is_empty()).rev();
    let scope = parts.next()?.strip_suffix(".scope")?;
    let (verb, _uuid) = scope.split_once('_')?;
    let verb = HANDLER_VERBS.iter().copied().find(|v| *v == verb)?;
    let slice = parts.next().and_then(|s| s.strip_prefix("azure-vmextensions-")?.strip_suffix(".slice"));
    Some((verb, slice))
}

/// The agent's short-lived handler operations running now, other than ADE's (FINDINGS 28-31), among processes
/// (the holders of `/`: every user process holds it): root-owned, a [`HANDLER_VERBS`] verb in the command line,
/// not a resident daemon ([`RESIDENT_FLAGS`]), and run by the agent (the parent chain reaches its
/// [`AGENT_EXTHANDLERS_FLAG`] process) or in a `<verb>_<uuid>.scope`. ADE's own handler (by path or slice) is left
/// out: its enable can run minutes and waiting for it would outlast its own head start (FINDINGS 31).
pub fn handler_operations(procs: &[Holder]) -> Vec<RunningHandler> {
    let ade_path = format!("/{ADE_HANDLER}-");
    let agents: Vec<i32> =
        procs.iter().filter(|p| words(&p.cmdline).any(|w| w == AGENT_EXTHANDLERS_FLAG)).map(|p| p.pid).collect();
    let parent: std::collections::HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let under_agent = |pid: i32| {
        let mut cur = pid;
        for _ in 0..64 {
            match parent.get(&cur) {
                Some(&pp) if agents.contains(&pp) => return true,
                Some(&pp) if pp > 1 => cur = pp,
                _ => return false,
            }
        }
        false
    };
    let mut out = vec![];
    for p in procs {
        if p.uid != 0 || words(&p.cmdline).any(|w| RESIDENT_FLAGS.contains(&w)) {
            continue;
        }
        let Some(verb) = verb_of(&p.cmdline) else { continue };
        let scope = p.cgroup.as_deref().and_then(scope_of);
        let ade = words(&p.cmdline).any(|w| w.contains(&ade_path))
            || p.cwd.as_deref().is_some_and(|c| c.contains(&ade_path))
            || scope.is_some_and(|(_, slice)| slice == Some(ADE_HANDLER));
        if ade || !(under_agent(p.pid) || scope.is_some_and(|(v, _)| v == verb)) {
            continue;
        }
        let from_path = words(&p.cmdline)
            .filter_map(|w| w.find(WAAGENT_DIR).map(|i| &w[i..]))
            .find_map(handler_of_path)
            .or_else(|| p.cwd.as_deref().and_then(handler_of_path));
        let handler = from_path
            .or_else(|| scope.and_then(|(_, s)| s.map(str::to_string)))
            .unwrap_or_else(|| "an unnamed handler".into());
        out.push(RunningHandler { pid: p.pid, comm: p.comm.clone(), handler: format!("{handler} {verb}") });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn handler_folders_are_publisher_type_dash_version() {
        assert_eq!(
            split_handler_dir("Microsoft.Azure.Extensions.CustomScript-2.1.10"),
            Some(("Microsoft.Azure.Extensions.CustomScript", "2.1.10"))
        );
        assert_eq!(split_handler_dir("WALinuxAgent-2.9.1.1"), None);
        assert_eq!(split_handler_dir("Microsoft.Azure.Extensions.CustomScript"), None);
        assert_eq!(split_handler_dir("Microsoft.Foo-1.x"), None);
        assert_eq!(split_handler_dir("history"), None);
    }

    #[test]
    fn finds_handlers_by_cwd_and_arguments_but_not_ade_or_the_agent() {
        let cs = v(&[
            "/bin/sh",
            "-c",
            "/var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-2.1.10/bin/custom-script-shim enable",
        ]);
        let script = v(&["/bin/bash", "install.sh"]);
        let ade = v(&[
            "python3",
            "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53/main/handle.py",
            "-enable",
        ]);
        let agent = v(&["python3", "-u", "bin/WALinuxAgent-2.9.1.1-py3.8.egg", "-run-exthandlers"]);
        let monitor = v(&["/var/lib/waagent/Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.29.4/agentLauncher"]);
        let other = v(&["/usr/bin/mongod"]);
        let procs: Vec<(i32, &str, &[String], Option<&str>)> = vec![
            (100, "sh", &cs, Some("/var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-2.1.10")),
            (101, "bash", &script, Some("/var/lib/waagent/custom-script/download/0")),
            (
                102,
                "python3",
                &ade,
                Some("/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53"),
            ),
            (103, "python3", &agent, Some("/var/lib/waagent/WALinuxAgent-2.9.1.1")),
            (104, "agentLauncher", &monitor, Some("/")),
            (105, "mongod", &other, Some("/var/lib/mongodb")),
            (106, "bash", &script, Some("/var/lib/waagent/custom-script/download/x")),
            (107, "bash", &script, None),
        ];
        let found: Vec<(i32, String)> = running_handlers(&procs).into_iter().map(|h| (h.pid, h.handler)).collect();
        assert_eq!(
            found,
            vec![
                (100, "Microsoft.Azure.Extensions.CustomScript-2.1.10".to_string()),
                (101, "custom-script/download/0".to_string()),
                (104, "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.29.4".to_string()),
            ]
        );
    }

    fn holder(pid: i32, ppid: i32, uid: u32, args: &[&str], cgroup: Option<&str>) -> Holder {
        Holder {
            pid,
            ppid,
            uid,
            uids: Some([uid, uid]),
            comm: args[0].rsplit('/').next().unwrap().chars().take(15).collect(),
            cmdline: v(args),
            exe: None,
            cwd: Some("/".into()),
            unit: None,
            cgroup: cgroup.map(str::to_string),
            kernel_thread: false,
            access: Default::default(),
            fds: 0,
            writable_fds: 0,
            start_time: 0,
            shim: None,
        }
    }

    #[test]
    fn only_the_agents_short_lived_operations_are_waited_for() {
        let cse = "/var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-2.1.10";
        let ama = "/var/lib/waagent/Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.29.4";
        let lad = "/var/lib/waagent/Microsoft.Azure.Diagnostics.LinuxDiagnostic-4.0.0";
        let ade = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12";
        let agent_sc = Some("/system.slice/walinuxagent.service");
        let scope = |verb: &str, ext: &str| {
            Some(format!("/azure.slice/azure-vmextensions.slice/azure-vmextensions-{ext}.slice/{verb}_5f1e.scope"))
        };
        let cse_scope = scope("enable", "Microsoft.Azure.Extensions.CustomScript");
        let ama_scope = scope("enable", "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent");
        let ade_scope = scope("enable", ADE_HANDLER);
        let procs = vec![
            // FINDINGS 28: the agent, its `sh -c` (setsid) and the handler command.
            holder(10, 1, 0, &["python3", "-u", "/usr/sbin/waagent", "-run-exthandlers"], agent_sc),
            holder(
                20,
                10,
                0,
                &["/bin/sh", "-c", &format!("{cse}/bin/custom-script-shim enable")],
                cse_scope.as_deref(),
            ),
            holder(21, 20, 0, &[&format!("{cse}/bin/custom-script-shim"), "enable"], cse_scope.as_deref()),
            // FINDINGS 30: resident daemons in the enable scope they were started from, reparented to 1.
            holder(30, 1, 0, &["python3", &format!("{ama}/agent.py"), "-metrics"], ama_scope.as_deref()),
            holder(31, 1, 0, &["python3", &format!("{ama}/agent.py"), "-syslogconfig"], ama_scope.as_deref()),
            holder(32, 1, 0, &["python2", &format!("{lad}/diagnostic.py"), "-daemon"], None),
            holder(
                33,
                1,
                0,
                &[
                    "/bin/bash",
                    &format!("{ade}/main/extension_shim.sh"),
                    "-c",
                    &format!("{ade}/main/handle.py"),
                    "-daemon",
                ],
                ade_scope.as_deref(),
            ),
            // FINDINGS 31: ADE's own enable, run by the agent.
            holder(
                40,
                10,
                0,
                &[
                    "/bin/bash",
                    &format!("{ade}/main/extension_shim.sh"),
                    "-c",
                    &format!("{ade}/main/handle.py"),
                    "--enable",
                ],
                ade_scope.as_deref(),
            ),
            // Another user naming a handler path and a verb (FINDINGS 30, last sentence).
            holder(50, 1, 1000, &["/bin/sh", "-c", &format!("sleep 1000 # {cse}/bin/custom-script-shim enable")], None),
            // Root, a verb, but not run by the agent nor in a handler scope: `systemctl enable foo` by hand.
            holder(60, 1, 0, &["systemctl", "enable", "foo"], Some("/user.slice/session-1.scope")),
            // An operation in its scope when the agent's process is not seen (cgroups on, FINDINGS 28).
            holder(
                70,
                1,
                0,
                &[&format!("{lad}/diagnostic.py"), "-update"],
                scope("update", "Microsoft.Azure.Diagnostics.LinuxDiagnostic").as_deref(),
            ),
        ];
        let got: Vec<(i32, String)> = handler_operations(&procs).into_iter().map(|h| (h.pid, h.handler)).collect();
        assert_eq!(
            got,
            vec![
                (20, "Microsoft.Azure.Extensions.CustomScript-2.1.10 enable".to_string()),
                (21, "Microsoft.Azure.Extensions.CustomScript-2.1.10 enable".to_string()),
                (70, "Microsoft.Azure.Diagnostics.LinuxDiagnostic-4.0.0 update".to_string()),
            ]
        );
    }
}
