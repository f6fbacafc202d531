//! The Azure guest agent's extension handlers: which of them are running besides ADE, so that `check` can name
//! them and `prepare` can wait for them (ADE fails when another extension changes the machine at the same time).
//! ADE's own handler (its settings, its status, waiting for it to be done) is in [`ade`].
//! It reads process lists it is given; it must not change anything.

pub mod ade;

use serde::Serialize;

use crate::paths::WAAGENT_DIR;

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
}
