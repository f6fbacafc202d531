//! `/proc/PID/mountinfo`, read and parsed: which filesystem holds a path, what is mounted below it. The one reader
//! of the mount table ([`read`], [`read_in`], one error text naming the file) and its parser; it must not read any
//! other file nor judge what is mounted.

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Unique mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// Device number (major, minor) as the kernel reports it (`st_dev` of files on it).
    pub dev: (u32, u32),
    /// The root of the mount within its filesystem.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options.
    pub options: String,
    pub fstype: String,
    /// Mount source (device path, `tmpfs`, ...).
    pub source: String,
}

/// Undoes the octal escapes (`\040` for a space) the kernel uses in mountinfo fields.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table could not be read: the file and why. Its text (`<file>: <error>`) is the one every reader of
/// the mount table reports.
#[derive(Debug)]
pub struct ReadError {
    /// The mountinfo file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub source: std::io::Error,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

// No `source()`: the text already holds the cause, and a chain printer would print it twice.
impl std::error::Error for ReadError {}

/// The mount table of the root `paths` looks at (`<proc>/self/mountinfo`), parsed; an error names the file.
pub fn read(paths: &crate::paths::Paths) -> Result<Vec<Mount>, ReadError> {
    read_in(&paths.proc())
}

/// The mount table under the proc folder `proc_root` (`<proc_root>/self/mountinfo`), parsed; malformed lines are
/// skipped. The one reader of the mount table: every module reads it through here (or [`read`]).
pub fn read_in(proc_root: &Path) -> Result<Vec<Mount>, ReadError> {
    let path = proc_root.join("self/mountinfo");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse(&text).0),
        Err(source) => Err(ReadError { path, source }),
    }
}

/// Parses mountinfo text; malformed lines are skipped and counted.
pub fn parse(text: &str) -> (Vec<Mount>, usize) {
    let mut mounts = vec![];
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(m) => mounts.push(m),
            None => bad += 1,
        }
    }
    (mounts, bad)
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    if f.len() < 6 {
        return None;
    }
    let (maj, min) = f[2].split_once(':')?;
    let r: Vec<&str> = right.split(' ').collect();
    if r.len() < 2 {
        return None;
    }
    Some(Mount {
        id: f[0].parse().ok()?,
        parent: f[1].parse().ok()?,
        dev: (maj.parse().ok()?, min.parse().ok()?),
        root: unescape(f[3]),
        mount_point: PathBuf::from(unescape(f[4])),
        options: f[5].to_string(),
        fstype: r[0].to_string(),
        source: unescape(r[1]),
    })
}

/// The mount that holds `path` (an absolute, canonical path): the last-mounted entry whose mount point is the
/// longest prefix of it.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point) {
            let better = match best {
                None => true,
                // Later lines are mounted later: at equal length the later one hides the earlier.
                Some(b) => m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len(),
            };
            if better {
                best = Some(m);
            }
        }
    }
    best
}

/// Mount points strictly below `top` (they keep `top` from being unmounted).
pub fn below<'a>(mounts: &'a [Mount], top: &Path) -> Vec<&'a Mount> {
    mounts.iter().filter(|m| m.mount_point != top && m.mount_point.starts_with(top)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
23 22 0:21 / /proc rw,nosuid - proc proc rw\n\
40 22 8:17 / /mnt/my\\040disk rw - ext4 /dev/sdb1 rw\n\
41 40 8:33 / /mnt/my\\040disk/inner rw - xfs /dev/sdc1 rw\n\
garbage line\n";

    #[test]
    fn parses_fields_and_escapes() {
        let (m, bad) = parse(SAMPLE);
        assert_eq!(bad, 1);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].dev, (8, 1));
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/my disk"));
        assert_eq!(m[3].fstype, "xfs");
        assert_eq!(m[3].source, "/dev/sdc1");
    }

    #[test]
    fn finds_the_mount_of_a_path_and_what_is_below() {
        let (m, _) = parse(SAMPLE);
        assert_eq!(mount_of(&m, Path::new("/etc/passwd")).unwrap().id, 22);
        assert_eq!(mount_of(&m, Path::new("/mnt/my disk/inner/x")).unwrap().id, 41);
        let b: Vec<u32> = below(&m, Path::new("/")).iter().map(|m| m.id).collect();
        assert_eq!(b, vec![23, 40, 41]);
    }
}
