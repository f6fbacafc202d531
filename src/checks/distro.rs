//! The distribution and version, against how ADE encrypts its OS disk: unmounting it (preparation needed), online
//! (nothing to prepare), or not at all (unsupported). Pure over the inputs; it must not read files itself.

use crate::version;
use serde::Serialize;

use super::{Check, Input, Status, DISTRO};

const TITLE: &str = "distribution supported by ADE";
const FIX: &str = "Use a distribution ADE supports for OS disk encryption, from a stock gallery image: RHEL/CentOS \
    7.2-7.9 or 8.1 and later, Oracle Linux 8.5 and later, Ubuntu 16.04/18.04/20.04/22.04 or 23.10 and later, \
    CBL-Mariner 2 and later, Azure Linux 3 and later.";

/// How ADE encrypts the OS disk of this distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// ADE pivots to a RAM root and unmounts `/`: what ade-prep prepares for.
    Unmount,
    /// ADE encrypts in place without unmounting `/`: no preparation needed.
    Online,
    /// ADE does not support OS disk encryption here.
    Unsupported,
    /// The distribution could not be identified.
    Unknown,
}

/// What /etc/os-release says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (lowercase: rhel, centos, ubuntu, ol, mariner, azurelinux...).
    pub id: String,
    /// `VERSION_ID`.
    pub version_id: String,
    /// `PRETTY_NAME`, else `NAME VERSION`.
    pub pretty: String,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = match (v.chars().next(), v.chars().last()) {
        (Some(q @ ('"' | '\'')), Some(e)) if q == e && v.len() >= 2 => &v[1..v.len() - 1],
        _ => v,
    };
    let mut out = String::new();
    let mut esc = false;
    for c in inner.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out
}

/// Parses os-release text (`KEY=value`, values optionally quoted); an error when there is no `ID`.
pub fn parse_os_release(text: &str) -> Result<Distro, String> {
    let mut d = Distro::default();
    let mut name = String::new();
    let mut version = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = unquote(v);
        match k.trim() {
            "ID" => d.id = v.to_ascii_lowercase(),
            "VERSION_ID" => d.version_id = v,
            "PRETTY_NAME" => d.pretty = v,
            "NAME" => name = v,
            "VERSION" => version = v,
            _ => {}
        }
    }
    if d.id.is_empty() {
        return Err("no ID= line".into());
    }
    if d.pretty.is_empty() {
        d.pretty = format!("{name} {version}").trim().to_string();
    }
    if d.pretty.is_empty() {
        d.pretty = format!("{} {}", d.id, d.version_id).trim().to_string();
    }
    Ok(d)
}

/// The `major.minor` of a `/etc/redhat-release` or `/etc/centos-release` line ("CentOS Linux release 7.2.1511").
fn release_file_version(text: &str) -> Option<Vec<u64>> {
    let after = text.split_once(" release ")?.1;
    let word = after.split_whitespace().next()?;
    let v: Vec<u64> = word.split('.').take(2).map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (v.len() == 2).then_some(v)
}

/// How ADE treats this distribution, with the version it was judged on; an error when the version cannot be told
/// (CentOS's os-release carries only the major version: `redhat_release` gives the minor).
pub fn classify_distro(d: &Distro, redhat_release: Option<&str>) -> Result<(Flow, String), String> {
    let mut v =
        version::parse(&d.version_id).ok_or_else(|| format!("VERSION_ID {:?} is not a version", d.version_id))?;
    let mut shown = d.version_id.clone();
    let at_least = |v: &[u64], min: &[u64]| version::cmp(v, min).is_ge();
    let flow = match d.id.as_str() {
        "rhel" | "centos" => {
            if v.len() < 2 && matches!(v.first(), Some(7 | 8)) {
                v = redhat_release.and_then(release_file_version).ok_or_else(|| {
                    format!("VERSION_ID {} has no minor version and /etc/redhat-release gives none", d.version_id)
                })?;
                shown = format!("{}.{}", v[0], v[1]);
            }
            if at_least(&v, &[8, 1]) {
                Flow::Online
            } else if at_least(&v, &[7, 2]) && v[0] == 7 {
                Flow::Unmount
            } else {
                Flow::Unsupported
            }
        }
        "ol" if at_least(&v, &[8, 5]) => Flow::Online,
        "ubuntu" => match (v.first(), v.get(1)) {
            (Some(16 | 18 | 20 | 22), Some(4)) => Flow::Unmount,
            _ if at_least(&v, &[23, 10]) => Flow::Online,
            _ => Flow::Unsupported,
        },
        "mariner" if at_least(&v, &[2]) => Flow::Online,
        "azurelinux" if at_least(&v, &[3]) => Flow::Online,
        _ => Flow::Unsupported,
    };
    Ok((flow, format!("{} {shown}", d.id)))
}

/// The distro check and the flow it implies for the other checks.
pub fn distro(os_release: &Input<String>, redhat_release: Option<&str>) -> (Check, Flow) {
    let mk = |r, e: String| Check::new(DISTRO, TITLE, FIX, r, e);
    let d = match os_release.as_ref().map_err(String::clone).and_then(|t| parse_os_release(t)) {
        Ok(d) => d,
        Err(e) => return (mk(Status::Unknown, format!("os-release: {e}")), Flow::Unknown),
    };
    match classify_distro(&d, redhat_release) {
        Ok((Flow::Unmount, v)) => (
            mk(
                Status::Pass,
                format!(
                    "{} ({v}): ADE unmounts the OS disk to encrypt it; run `ade-prep prepare` before enabling encryption",
                    d.pretty
                ),
            ),
            Flow::Unmount,
        ),
        Ok((Flow::Online, v)) => (
            mk(
                Status::Pass,
                format!("{} ({v}): ADE encrypts the OS disk online and never unmounts it; no preparation is needed", d.pretty),
            ),
            Flow::Online,
        ),
        Ok((_, v)) => (
            mk(Status::Fail, format!("{} ({v}): ADE does not support OS disk encryption on this version", d.pretty)),
            Flow::Unsupported,
        ),
        Err(e) => (mk(Status::Unknown, format!("{}: {e}", d.pretty)), Flow::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(case: &str) -> String {
        let p = format!("{}/tests/fixtures/checks/{case}/etc/os-release", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn flow_of(case: &str, rh: Option<&str>) -> (Flow, Status) {
        let (c, f) = distro(&Ok(fixture(case)), rh);
        (f, c.result)
    }

    #[test]
    fn every_fixture_distro_gets_its_flow() {
        let centos = "CentOS Linux release 7.2.1511 (Core) \n";
        let cases = [
            ("rhel79-rootvg", None, Flow::Unmount),
            ("centos72-lvm", Some(centos), Flow::Unmount),
            ("ubuntu1404-kernel", None, Flow::Unsupported),
            ("ubuntu1604-ade-running", None, Flow::Unmount),
            ("ubuntu1804-mounts", None, Flow::Unmount),
            ("ubuntu2004-status-mismatch", None, Flow::Unmount),
            ("ubuntu2204-encrypted", None, Flow::Unmount),
            ("ubuntu2310", None, Flow::Online),
            ("rhel86", None, Flow::Online),
            ("oracle85", None, Flow::Online),
            ("mariner2", None, Flow::Online),
            ("azurelinux3", None, Flow::Online),
            ("sles15", None, Flow::Unsupported),
        ];
        for (case, rh, want) in cases {
            let (f, r) = flow_of(case, rh);
            assert_eq!(f, want, "{case}");
            assert_eq!(r, if want == Flow::Unsupported { Status::Fail } else { Status::Pass }, "{case}");
        }
    }

    #[test]
    fn centos_minor_version_comes_from_the_release_file() {
        // CentOS 7's os-release says VERSION_ID="7" only.
        let (c, f) = distro(&Ok(fixture("centos72-lvm")), None);
        assert_eq!((f, c.result), (Flow::Unknown, Status::Unknown));
        assert!(c.evidence.contains("no minor version"), "{}", c.evidence);
        let (_, f) = distro(&Ok(fixture("centos72-lvm")), Some("CentOS Linux release 7.1.1503 (Core)"));
        assert_eq!(f, Flow::Unsupported);
    }

    #[test]
    fn version_boundaries() {
        let d = |id: &str, v: &str| Distro { id: id.into(), version_id: v.into(), pretty: String::new() };
        let f = |id, v| classify_distro(&d(id, v), None).map(|x| x.0);
        assert_eq!(f("rhel", "7.1"), Ok(Flow::Unsupported));
        assert_eq!(f("rhel", "8.0"), Ok(Flow::Unsupported));
        assert_eq!(f("rhel", "8.1"), Ok(Flow::Online));
        assert_eq!(f("rhel", "9.4"), Ok(Flow::Online));
        assert_eq!(f("rhel", "6.10"), Ok(Flow::Unsupported));
        assert_eq!(f("ol", "8.4"), Ok(Flow::Unsupported));
        assert_eq!(f("ol", "9.2"), Ok(Flow::Online));
        assert_eq!(f("ubuntu", "23.04"), Ok(Flow::Unsupported));
        assert_eq!(f("ubuntu", "24.04"), Ok(Flow::Online));
        assert_eq!(f("ubuntu", "14.04"), Ok(Flow::Unsupported));
        assert_eq!(f("mariner", "1.0"), Ok(Flow::Unsupported));
        assert_eq!(f("debian", "12"), Ok(Flow::Unsupported));
        assert!(f("ubuntu", "jammy").is_err());
    }

    #[test]
    fn odd_os_release_is_unknown() {
        let (c, f) = distro(&Ok("NAME=Foo\nVERSION_ID=1\n".into()), None);
        assert_eq!((c.result, f), (Status::Unknown, Flow::Unknown));
        assert!(c.evidence.contains("no ID="));
        let (c, _) = distro(&Err("/x/etc/os-release: Is a directory (os error 21)".into()), None);
        assert_eq!(c.result, Status::Unknown);
        assert!(c.evidence.contains("Is a directory"));
        assert_eq!(parse_os_release("ID='ol'\nVERSION_ID=\"8.5\"\n").unwrap().version_id, "8.5");
    }
}
