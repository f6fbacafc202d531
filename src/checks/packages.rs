//! The packages ADE's extension (1.4.0.12) installs, or believes it has, on the distributions it unmounts `/` on,
//! against the package database, asked through dpkg's and rpm's own query tools (`dpkg-query -W` on Ubuntu,
//! `rpm -q` on RHEL/CentOS 7), which also read a fixture tree's database (`--root`). The lists and their
//! conditions are ADE's own (patch/UbuntuPatching.py, redhatPatching.py, centosPatching.py; cited per line).
//! It owns the lists, the parsers of the two databases and the check; it reads the database once in [`gather`]
//! (never the package manager's network parts: no `apt-get`, no `yum`) and must not install anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::paths::Paths;
use crate::runner::{RealRunner, Runner};

use super::distro::{parse_os_release, Flow};
use super::{Check, Input, Status, PACKAGES};

const TITLE: &str = "packages ADE needs";
/// What `dpkg-query -W` prints per package: its name and its `Status` field.
const DPKG_FORMAT: &str = "${Package}\\t${Status}\\n";
/// rpm's database folder, given to `rpm --dbpath` (some rpm builds default to another one).
pub const RPM_DB: &str = "/var/lib/rpm";

/// patch/UbuntuPatching.py:118-126 (install_extras), `parted` being python3-parted or python-parted by the
/// interpreter (~111-115); install_cryptsetup's list (~84) is cryptsetup-bin, already in it.
const UBUNTU: &[&str] =
    &["at", "cryptsetup-bin", "grub-pc-bin", "lsscsi", "PARTED", "python-six", "procps", "psmisc", "nvme-cli"];
/// patch/redhatPatching.py:106-114 (install_extras); 7.x is below min_version_online_encryption 8.1 (~83), so
/// the online branch (~122-128) does not apply, nor the 6.x one (~116-120). install_cryptsetup (~92-96):
/// cryptsetup, already in it.
const REDHAT7: &[&str] = &["cryptsetup", "lsscsi", "psmisc", "lvm2", "uuid", "at", "patch", "procps-ng", "util-linux"];
/// patch/centosPatching.py:95-104: RHEL's list and pyparted (centosPatching overrides install_extras, ~94).
const CENTOS7: &[&str] =
    &["cryptsetup", "lsscsi", "psmisc", "lvm2", "uuid", "at", "patch", "procps-ng", "util-linux", "pyparted"];

/// Every name `rpm -q` is asked about (CentOS's list holds RHEL's).
pub const RPM_NAMES: &[&str] = CENTOS7;

/// Where the extension's shim looks for an interpreter (`command -v`, extension_shim.sh:35-47), as on a
/// default PATH.
const PATH_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The interpreters the extension's shim could find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pythons {
    /// `python` found: Some(its major version when its name or link target tells it).
    pub python: Option<Option<u8>>,
    /// `python2` found.
    pub python2: bool,
    /// `python3` found.
    pub python3: bool,
}

/// What the package check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFacts {
    /// The standard output of `dpkg-query -W` over every package (empty: dpkg knows none).
    pub dpkg: Input<String>,
    /// The standard output of `rpm -q --qf '%{NAME}\n'` over [`RPM_NAMES`] (None: no [`RPM_DB`] under the root).
    pub rpm: Input<Option<String>>,
    /// The interpreters on PATH.
    pub pythons: Pythons,
}

/// Which of ADE's lists applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ubuntu,
    Redhat7,
    Centos7,
}

/// The interpreter's major version the shim would run handle.py with (extension_shim.sh:35-47: python3 on
/// Ubuntu 20.04, else `python`, `python2`, `python3` in that order); None when none is found or `python`'s
/// version cannot be told.
fn shim_python(os_release: &str, p: &Pythons) -> Option<u8> {
    if os_release.contains("Ubuntu 20.04") && p.python3 {
        return Some(3);
    }
    match p.python {
        Some(v) => v,
        None if p.python2 => Some(2),
        None if p.python3 => Some(3),
        None => None,
    }
}

/// ADE's list for this family, `PARTED` resolved: with an unknown interpreter either parted package will do.
fn wanted(family: Family, python: Option<u8>) -> Vec<Vec<&'static str>> {
    let list = match family {
        Family::Ubuntu => UBUNTU,
        Family::Redhat7 => REDHAT7,
        Family::Centos7 => CENTOS7,
    };
    list.iter()
        .map(|&n| match (n, python) {
            ("PARTED", Some(3)) => vec!["python3-parted"],
            ("PARTED", Some(_)) => vec!["python-parted"],
            ("PARTED", None) => vec!["python3-parted", "python-parted"],
            (n, _) => vec![n],
        })
        .collect()
}

/// Reads `dpkg-query -W -f '${Package}\t${Status}\n'`'s output into package name → installed (the third word
/// of `Status` is `installed`; a package with several architectures is installed when one is). An error names
/// the line that is not `name<TAB>want flag status`; no line at all means dpkg knows no package.
pub fn parse_dpkg_query(stdout: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for (i, line) in stdout.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || format!("line {}: {line:?} is not `package<TAB>want flag status`", i + 1);
        let (name, status) = line.split_once('\t').ok_or_else(bad)?;
        let words: Vec<&str> = status.split_whitespace().collect();
        if name.is_empty() || words.len() != 3 {
            return Err(bad());
        }
        *out.entry(name.to_string()).or_default() |= words[2] == "installed";
    }
    if out.is_empty() {
        return Err("dpkg-query lists no package: no dpkg database".into());
    }
    Ok(out)
}

/// Reads `rpm -q --qf '%{NAME}\n' names...`'s output: a name line per installed package, "package X is not
/// installed" per missing one. An error names the line that is neither.
pub fn parse_rpm_q(asked: &[&str], stdout: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut out = BTreeMap::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if asked.contains(&line) {
            out.insert(line.to_string(), true);
        } else if let Some(n) = line
            .strip_prefix("package ")
            .and_then(|r| r.strip_suffix(" is not installed"))
            .filter(|n| asked.contains(n))
        {
            out.entry(n.to_string()).or_insert(false);
        } else {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    if let Some(n) = asked.iter().find(|n| !out.contains_key(**n)) {
        return Err(format!("no answer about {n}"));
    }
    Ok(out)
}

fn fix_for(family: Option<Family>, missing: &[&str]) -> String {
    let why_ubuntu = "ADE 1.4.0.12 never installs them itself: its installed-check runs `dpkg-query -s {package}` \
        with the braces never filled (patch/UbuntuPatching.py:57), that query fails, and a failing query leaves the \
        package counted as installed (~58-59), so install_extras (~128-135) and install_cryptsetup (~86-87) never \
        run apt-get.";
    let why_yum = "ADE runs `rpm -q` and then `yum install -y` itself (patch/redhatPatching.py:130-131, \
        centosPatching.py:113-114); a repository out of reach shows up only later: install_extras ignores yum's \
        failure (handle.py:2527) and encryption fails at luksFormat (code 19, handle.py:2553-2564), or \
        install_cryptsetup's 100 s yum times out (code 52, handle.py:280-288 and 1117-1125; its other call, on the \
        online path only, ends as code 100, handle.py:673 and 1149-1157). Installing them now, with the repositories \
        in reach, avoids both.";
    match family {
        Some(Family::Ubuntu) if !missing.is_empty() => {
            format!("apt-get install -y {} ({why_ubuntu})", missing.join(" "))
        }
        Some(Family::Ubuntu) => format!("Keep them installed: {why_ubuntu}"),
        Some(_) if !missing.is_empty() => format!("yum install -y {} ({why_yum})", missing.join(" ")),
        Some(_) => format!("Keep the repositories in reach: {why_yum}"),
        None => "Nothing to install for ADE on this distribution from ade-prep's lists (RHEL/CentOS 7.x, \
            Ubuntu 16.04-22.04)."
            .into(),
    }
}

/// The check: every package of ADE's list for this distribution installed.
pub fn packages(os_release: &Input<String>, flow: Flow, facts: &PackageFacts) -> Check {
    let mk = |family, r, e: String, missing: &[&str]| Check {
        id: PACKAGES,
        title: TITLE,
        result: r,
        evidence: e,
        fix: fix_for(family, missing),
    };
    let distro = match os_release.as_ref().map_err(String::clone).and_then(|t| parse_os_release(t)) {
        Ok(d) => d,
        Err(e) => return mk(None, Status::Unknown, format!("os-release: {e}"), &[]),
    };
    let family = match (flow, distro.id.as_str()) {
        (Flow::Unmount, "ubuntu") => Family::Ubuntu,
        (Flow::Unmount, "rhel") => Family::Redhat7,
        (Flow::Unmount, "centos") => Family::Centos7,
        _ => {
            return mk(
                None,
                Status::NotApplicable,
                format!("{}: ade-prep knows ADE's package lists of the distributions it unmounts on", distro.pretty),
                &[],
            )
        }
    };
    let text = os_release.as_deref().unwrap_or_default();
    let python = shim_python(text, &facts.pythons);
    let want = wanted(family, python);
    let (db, installed) = if family == Family::Ubuntu {
        let parsed = match &facts.dpkg {
            Ok(t) => parse_dpkg_query(t).map_err(|e| format!("dpkg-query -W: {e}")),
            Err(e) => Err(e.clone()),
        };
        ("dpkg-query -W".to_string(), parsed)
    } else {
        let parsed = match &facts.rpm {
            Ok(Some(out)) => parse_rpm_q(RPM_NAMES, out).map_err(|e| format!("rpm -q: {e}")),
            Ok(None) => Err(format!("no {RPM_DB}: the package database cannot be read")),
            Err(e) => Err(e.clone()),
        };
        (format!("rpm -q --dbpath {RPM_DB}"), parsed)
    };
    let installed = match installed {
        Ok(i) => i,
        Err(e) => return mk(Some(family), Status::Unknown, e, &[]),
    };
    let is_in = |n: &str| installed.get(n).copied().unwrap_or(false);
    let missing: Vec<&str> =
        want.iter().filter(|alts| !alts.iter().any(|n| is_in(n))).map(|alts| alts[0]).collect::<Vec<_>>();
    let names: Vec<String> = want.iter().map(|a| a.join("|")).collect();
    let interp = match (family, python) {
        (Family::Ubuntu, Some(v)) => format!("; the extension runs under Python {v}"),
        (Family::Ubuntu, None) => "; the extension's Python version cannot be told".into(),
        _ => String::new(),
    };
    if missing.is_empty() {
        return mk(
            Some(family),
            Status::Pass,
            format!("all {} packages of ADE's list are installed ({db}): {}{interp}", want.len(), names.join(", ")),
            &[],
        );
    }
    // Without cryptsetup there is no luksFormat; on Ubuntu ADE never installs it (see the fix).
    let fatal = family == Family::Ubuntu && missing.contains(&"cryptsetup-bin");
    let why = if fatal { ": ADE cannot encrypt without cryptsetup and will not install it" } else { "" };
    mk(
        Some(family),
        if fatal { Status::Fail } else { Status::Warn },
        format!("not installed ({db}): {}{why}{interp}", missing.join(", ")),
        &missing,
    )
}

/// The major version a `python` file's name or link target tells ("python3.8" → 3), following links inside
/// the root.
fn python_major(paths: &Paths, abs: &Path) -> Option<u8> {
    let mut cur = abs.to_path_buf();
    for _ in 0..8 {
        let name = cur.file_name()?.to_string_lossy().into_owned();
        if let Some(d) = name.strip_prefix("python").and_then(|r| r.chars().next()).and_then(|c| c.to_digit(10)) {
            return u8::try_from(d).ok();
        }
        let target = std::fs::read_link(paths.resolve(&cur)).ok()?;
        cur = if target.is_absolute() { target } else { cur.parent()?.join(target) };
    }
    None
}

fn find_pythons(paths: &Paths) -> Pythons {
    let find = |name: &str| {
        PATH_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| {
            // a dangling link counts as absent, as `command -v` would not run it
            std::fs::metadata(paths.resolve(p)).is_ok_and(|m| m.is_file())
        })
    };
    Pythons {
        python: find("python").map(|p| python_major(paths, &p)),
        python2: find("python2").is_some(),
        python3: find("python3").is_some(),
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a package query tool through the runner as the current user; its standard output, or why not (its
/// errors go to standard error; rpm's exit code counts the packages not installed, so it is not judged here).
fn query(runner: &dyn Runner, argv: Vec<String>) -> Input<String> {
    let tool = argv[0].clone();
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map_or("root".into(), |u| u.name);
    let out = runner.run(&argv, &me, QUERY_TIMEOUT).map_err(|e| format!("{tool}: {e}"))?;
    if out.timed_out {
        return Err(format!("{tool}: no answer in {}s", QUERY_TIMEOUT.as_secs()));
    }
    if out.code.is_none() || out.stderr_tail.contains("error:") {
        // One line: the tail's lines as they are, their indentation dropped.
        let said = out.stderr_tail.split(" | ").map(str::trim).collect::<Vec<_>>().join(" | ");
        return Err(if said.starts_with(&tool) { said.to_string() } else { format!("{tool}: {said}") });
    }
    Ok(out.stdout)
}

/// `--root TREE` for a tree other than the running system.
fn root_args(paths: &Paths) -> Vec<String> {
    if paths.is_system() {
        vec![]
    } else {
        vec!["--root".into(), paths.root().display().to_string()]
    }
}

/// `rpm -q` over [`RPM_NAMES`], reading the database under the root; None when there is none.
fn query_rpm(paths: &Paths, runner: &dyn Runner) -> Input<Option<String>> {
    if !paths.resolve(RPM_DB).is_dir() {
        return Ok(None);
    }
    let mut argv = vec!["rpm".to_string()];
    argv.extend(root_args(paths));
    argv.extend(["--dbpath", RPM_DB, "-q", "--qf", "%{NAME}\\n"].map(String::from));
    argv.extend(RPM_NAMES.iter().map(|s| s.to_string()));
    query(runner, argv).map(Some)
}

/// `dpkg-query -W` over every package, reading the database under the root.
fn query_dpkg(paths: &Paths, runner: &dyn Runner) -> Input<String> {
    let mut argv = vec!["dpkg-query".to_string()];
    argv.extend(root_args(paths));
    argv.extend(["-W", "-f", DPKG_FORMAT].map(String::from));
    query(runner, argv)
}

/// Reads the package facts under `paths`; rpm runs only when the tree has an rpm database.
pub fn gather(paths: &Paths) -> PackageFacts {
    PackageFacts {
        dpkg: query_dpkg(paths, &RealRunner),
        rpm: query_rpm(paths, &RealRunner),
        pythons: find_pythons(paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U2204: &str = "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n";
    const U2004: &str = "NAME=\"Ubuntu\"\nVERSION_ID=\"20.04\"\nID=ubuntu\nPRETTY_NAME=\"Ubuntu 20.04.6 LTS\"\n";
    const RHEL79: &str = "ID=\"rhel\"\nVERSION_ID=\"7.9\"\nPRETTY_NAME=\"Red Hat Enterprise Linux Server 7.9\"\n";
    const CENTOS: &str = "ID=\"centos\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n";

    fn line(name: &str, status: &str) -> String {
        format!("{name}\t{status}\n")
    }

    fn dpkg(installed: &[&str]) -> String {
        installed.iter().map(|n| line(n, "install ok installed")).collect()
    }

    fn facts(dpkg_out: Option<String>, rpm: Option<&str>, py3: bool) -> PackageFacts {
        PackageFacts {
            dpkg: Ok(dpkg_out.unwrap_or_default()),
            rpm: Ok(rpm.map(String::from)),
            pythons: Pythons { python: None, python2: false, python3: py3 },
        }
    }

    const ALL_UBUNTU: &[&str] = &[
        "at",
        "cryptsetup-bin",
        "grub-pc-bin",
        "lsscsi",
        "python3-parted",
        "python-six",
        "procps",
        "psmisc",
        "nvme-cli",
    ];

    #[test]
    fn ubuntu_all_installed_passes_and_names_the_broken_check() {
        let c = packages(&Ok(U2204.into()), Flow::Unmount, &facts(Some(dpkg(ALL_UBUNTU)), None, true));
        assert_eq!(c.result, Status::Pass, "{}", c.evidence);
        assert!(c.evidence.contains("all 9 packages") && c.evidence.contains("Python 3"), "{}", c.evidence);
        assert!(c.fix.contains("dpkg-query -s {package}"), "{}", c.fix);
    }

    #[test]
    fn ubuntu_missing_names_each_and_the_command() {
        let some: Vec<&str> = ALL_UBUNTU.iter().copied().filter(|n| !["at", "nvme-cli"].contains(n)).collect();
        let mut text = dpkg(&some);
        // removed but configuration left: not installed
        text.push_str(&line("at", "deinstall ok config-files"));
        let c = packages(&Ok(U2204.into()), Flow::Unmount, &facts(Some(text), None, true));
        assert_eq!(c.result, Status::Warn);
        assert_eq!(c.evidence, "not installed (dpkg-query -W): at, nvme-cli; the extension runs under Python 3");
        assert!(c.fix.starts_with("apt-get install -y at nvme-cli ("), "{}", c.fix);
        assert!(c.fix.contains("never installs them itself"), "{}", c.fix);
        // without cryptsetup, a failure
        let none = packages(&Ok(U2204.into()), Flow::Unmount, &facts(Some(dpkg(&["at"])), None, true));
        assert_eq!(none.result, Status::Fail);
        assert!(none.fix.starts_with("apt-get install -y cryptsetup-bin grub-pc-bin"), "{}", none.fix);
    }

    #[test]
    fn ubuntu_parted_follows_the_shims_interpreter() {
        let mut names: Vec<&str> = ALL_UBUNTU.to_vec();
        names.retain(|n| *n != "python3-parted");
        names.push("python-parted");
        let text = dpkg(&names);
        // 22.04 with `python` a link to python2.7: python-parted is the one
        let py2 = Pythons { python: Some(Some(2)), python2: true, python3: true };
        let f = PackageFacts { pythons: py2.clone(), ..facts(Some(text.clone()), None, true) };
        assert_eq!(packages(&Ok(U2204.into()), Flow::Unmount, &f).result, Status::Pass);
        // 20.04: python3 wins even with a python 2 around, so python3-parted is missing
        let c = packages(&Ok(U2004.into()), Flow::Unmount, &f);
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.contains(": python3-parted;"), "{}", c.evidence);
        // a `python` whose version cannot be told: either parted package does
        let f = PackageFacts { pythons: Pythons { python: Some(None), ..py2 }, ..f };
        let c = packages(&Ok(U2204.into()), Flow::Unmount, &f);
        assert_eq!(c.result, Status::Pass, "{}", c.evidence);
        assert!(c.evidence.contains("python3-parted|python-parted"), "{}", c.evidence);
    }

    #[test]
    fn rhel_and_centos_lists_differ_by_pyparted() {
        let rpm_all: String = RPM_NAMES.iter().map(|n| format!("{n}\n")).collect();
        let rpm_no_pyparted: String = RPM_NAMES
            .iter()
            .map(|n| if *n == "pyparted" { "package pyparted is not installed\n".into() } else { format!("{n}\n") })
            .collect();
        let rhel = packages(&Ok(RHEL79.into()), Flow::Unmount, &facts(None, Some(&rpm_no_pyparted), false));
        assert_eq!(rhel.result, Status::Pass, "{}", rhel.evidence);
        assert!(rhel.evidence.contains("all 9 packages"));
        let centos = packages(&Ok(CENTOS.into()), Flow::Unmount, &facts(None, Some(&rpm_no_pyparted), false));
        assert_eq!(centos.result, Status::Warn);
        assert!(centos.fix.starts_with("yum install -y pyparted ("), "{}", centos.fix);
        assert!(centos.fix.contains("code 19") && centos.fix.contains("code 52"), "{}", centos.fix);
        let ok = packages(&Ok(CENTOS.into()), Flow::Unmount, &facts(None, Some(&rpm_all), false));
        assert_eq!(ok.result, Status::Pass);
        // no rpm database: unknown, naming it
        let none = packages(&Ok(RHEL79.into()), Flow::Unmount, &facts(None, None, false));
        assert_eq!(none.result, Status::Unknown);
        assert!(none.evidence.contains("/var/lib/rpm"), "{}", none.evidence);
    }

    #[test]
    fn other_flows_are_not_applicable() {
        let u2310 = "ID=ubuntu\nVERSION_ID=\"23.10\"\n";
        let c = packages(&Ok(u2310.into()), Flow::Online, &facts(None, None, true));
        assert_eq!(c.result, Status::NotApplicable);
        let c = packages(&Err("x: gone".into()), Flow::Unknown, &facts(None, None, true));
        assert_eq!(c.result, Status::Unknown);
    }

    #[test]
    fn odd_dpkg_query_output_names_the_line() {
        let e = parse_dpkg_query("at\tinstall ok installed\nbroken\tinstall ok\n").unwrap_err();
        assert_eq!(e, "line 2: \"broken\\tinstall ok\" is not `package<TAB>want flag status`");
        assert!(parse_dpkg_query("no tab here\n").unwrap_err().starts_with("line 1:"));
        assert_eq!(parse_dpkg_query("").unwrap_err(), "dpkg-query lists no package: no dpkg database");
        let c = packages(&Ok(U2204.into()), Flow::Unmount, &facts(Some("broken\tinstall ok\n".into()), None, true));
        assert_eq!(c.result, Status::Unknown);
        assert!(c.evidence.starts_with("dpkg-query -W: line 1:"), "{}", c.evidence);
        // dpkg-query's own error (a status file it cannot parse) is the evidence as it is
        let f = PackageFacts {
            dpkg: Err("dpkg-query -W: dpkg-query: error: parsing file".into()),
            ..facts(None, None, true)
        };
        assert_eq!(
            packages(&Ok(U2204.into()), Flow::Unmount, &f).evidence,
            "dpkg-query -W: dpkg-query: error: parsing file"
        );
        // multi-arch: installed when one architecture is
        let m = parse_dpkg_query(&(line("lib", "deinstall ok config-files") + &line("lib", "install ok installed")));
        assert_eq!(m.unwrap().get("lib"), Some(&true));
    }

    #[test]
    fn rpm_output_is_understood_or_refused() {
        let m = parse_rpm_q(&["at", "uuid"], "at\npackage uuid is not installed\n").unwrap();
        assert_eq!(m.get("at"), Some(&true));
        assert_eq!(m.get("uuid"), Some(&false));
        assert!(parse_rpm_q(&["at", "uuid"], "at\n").unwrap_err().contains("no answer about uuid"));
        assert!(parse_rpm_q(&["at"], "error: db5\n").unwrap_err().contains("unexpected line"));
    }

    #[test]
    fn pythons_are_found_through_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/python3.10"), "").unwrap();
        std::os::unix::fs::symlink("python3.10", r.join("usr/bin/python3")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", r.join("usr/bin/python")).unwrap();
        // a dangling python2 is not found
        std::os::unix::fs::symlink("python2.7", r.join("usr/bin/python2")).unwrap();
        let p = find_pythons(&Paths::under(r));
        assert_eq!(p, Pythons { python: Some(Some(3)), python2: false, python3: true });
        assert_eq!(shim_python("", &p), Some(3));
        assert_eq!(shim_python("", &Pythons { python: None, python2: true, python3: true }), Some(2));
        assert_eq!(shim_python("", &Pythons::default()), None);
    }
}
