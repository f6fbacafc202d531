//! Memory and kernel: what the extension's encryption itself needs of the machine.
//! Pure over the inputs; it must not read files itself.

use super::{distro::parse_os_release, Check, Input, Status, KERNEL, MEMORY};
use crate::version;

/// The extension refuses OS disk encryption below this MemTotal (kB).
pub const MIN_MEM_KB: u64 = 7_000_000;

const MEM_TITLE: &str = "memory for OS disk encryption";
const MEM_FIX: &str = "Resize the VM to a size with at least 8 GB of memory for the encryption (ADE refuses below \
    7,000,000 kB); it can be resized back afterwards.";

const KERNEL_TITLE: &str = "Ubuntu 14.04 kernel 4.15 or later";
const KERNEL_FIX: &str = "Install the Azure-tuned kernel and reboot into it before enabling encryption: \
    `sudo apt-get update && sudo apt-get install linux-azure && sudo reboot`, then confirm with `uname -a`.";

/// MemTotal in kB from /proc/meminfo text.
pub fn mem_total_kb(text: &str) -> Result<u64, String> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).ok_or("no MemTotal line")?;
    let mut f = line["MemTotal:".len()..].split_whitespace();
    let n = f.next().and_then(|n| n.parse::<u64>().ok()).ok_or_else(|| format!("bad MemTotal line {line:?}"))?;
    match f.next() {
        Some("kB") => Ok(n),
        _ => Err(format!("bad MemTotal line {line:?} (expected kB)")),
    }
}

/// MemTotal against [`MIN_MEM_KB`].
pub fn memory(meminfo: &Input<String>) -> Check {
    let mk = |r, e: String| Check::new(MEMORY, MEM_TITLE, MEM_FIX, r, e);
    match meminfo.as_ref().map_err(String::clone).and_then(|t| mem_total_kb(t).map_err(|e| format!("meminfo: {e}"))) {
        Ok(kb) if kb < MIN_MEM_KB => {
            mk(Status::Fail, format!("MemTotal {kb} kB is below the extension's threshold of {MIN_MEM_KB} kB"))
        }
        Ok(kb) => mk(Status::Pass, format!("MemTotal {kb} kB (at least {MIN_MEM_KB} kB needed, 8 GB recommended)")),
        Err(e) => mk(Status::Unknown, e),
    }
}

/// `major.minor` of a kernel release string ("4.4.0-148-generic" → [4, 4]).
pub fn kernel_version(release: &str) -> Option<Vec<u64>> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some(vec![major, minor])
}

/// On Ubuntu 14.04 the running kernel must be 4.15 or later (the 4.4 OOM killer ends ADE's dd).
pub fn kernel(os_release: &Input<String>, kernel_release: &Input<String>) -> Check {
    let mk = |r, e: String| Check::new(KERNEL, KERNEL_TITLE, KERNEL_FIX, r, e);
    let d = match os_release.as_ref().map_err(String::clone).and_then(|t| parse_os_release(t)) {
        Ok(d) => d,
        Err(e) => return mk(Status::Unknown, format!("os-release: {e}")),
    };
    if d.id != "ubuntu" || d.version_id != "14.04" {
        return mk(Status::NotApplicable, format!("{}: only Ubuntu 14.04 has this problem", d.pretty));
    }
    let rel = match kernel_release {
        Ok(r) => r.trim(),
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    match kernel_version(rel) {
        Some(v) if version::cmp(&v, &[4, 15]).is_lt() => mk(
            Status::Fail,
            format!("Ubuntu 14.04 runs kernel {rel}: before 4.15 the OOM killer ends the dd that encrypts the OS disk"),
        ),
        Some(_) => mk(Status::Pass, format!("Ubuntu 14.04 runs kernel {rel}")),
        None => mk(Status::Unknown, format!("kernel release {rel:?} is not a version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_threshold_and_garbage() {
        let m = |t: &str| memory(&Ok(t.to_string()));
        let real = "MemTotal:        8136912 kB\nMemFree:         6512340 kB\n";
        assert_eq!(m(real).result, Status::Pass);
        assert_eq!(m("MemTotal:        3522656 kB\n").result, Status::Fail);
        assert_eq!(m("MemTotal:        6999999 kB\n").result, Status::Fail);
        assert_eq!(m("MemTotal:        7000000 kB\n").result, Status::Pass);
        for bad in ["", "\0\u{1}garbage", "MemTotal: lots kB\n", "MemTotal: 8000000 MB\n", "MemTotal:\n"] {
            let c = m(bad);
            assert_eq!(c.result, Status::Unknown, "{bad:?}");
            assert!(c.evidence.starts_with("meminfo:"), "{}", c.evidence);
        }
        assert_eq!(memory(&Err("/r/proc/meminfo: permission denied".into())).result, Status::Unknown);
    }

    #[test]
    fn ubuntu_1404_kernel() {
        let trusty =
            Ok("NAME=\"Ubuntu\"\nVERSION=\"14.04.6 LTS, Trusty Tahr\"\nID=ubuntu\nVERSION_ID=\"14.04\"\n".to_string());
        let bionic = Ok("ID=ubuntu\nVERSION_ID=\"18.04\"\n".to_string());
        assert_eq!(kernel(&trusty, &Ok("4.4.0-148-generic\n".into())).result, Status::Fail);
        assert_eq!(kernel(&trusty, &Ok("4.15.0-1113-azure\n".into())).result, Status::Pass);
        assert_eq!(kernel(&trusty, &Ok("5.4.0-1\n".into())).result, Status::Pass);
        assert_eq!(kernel(&trusty, &Ok("weird\n".into())).result, Status::Unknown);
        assert_eq!(kernel(&trusty, &Err("gone".into())).result, Status::Unknown);
        assert_eq!(kernel(&bionic, &Ok("4.4.0-1\n".into())).result, Status::NotApplicable);
        assert_eq!(kernel(&Err("x".into()), &Ok("4.4.0-1\n".into())).result, Status::Unknown);
    }
}
