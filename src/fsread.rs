//! Reading files: those that come from outside ade-prep (its configuration, ADE's settings and status) with limits:
//! a regular file only (a FIFO or a device would block or never end), opened non-blocking, at most a cap in size,
//! optionally never through a symlink; and the machine's own files the checks read whole (`read_text`,
//! `read_optional`, `list_dir`), each error naming the path. An edge; it must not interpret what it reads.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest outside file read: 1 MiB (ADE's settings and status are a few KiB, a config file less).
pub const CAP: u64 = 1 << 20;

/// Whether a symlink may lead to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Followed (an administrator's drop-in may be a link).
    Follow,
    /// Refused (`O_NOFOLLOW`): a file where a link makes no sense.
    Refuse,
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// Opens `path` for reading, checked to be a regular file; returns it with its metadata (of the open file).
pub fn open_regular(path: &Path, links: Links) -> std::io::Result<(File, Metadata)> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let f = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            invalid("is a symlink, refused here".into())
        } else {
            e
        }
    })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(invalid(format!("not a regular file ({})", kind(&md))));
    }
    Ok((f, md))
}

fn kind(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Reads an open regular file, at most `cap` bytes (refusing a longer one), as UTF-8 text.
pub fn read_open(mut f: File, cap: u64) -> std::io::Result<String> {
    let mut bytes = vec![];
    f.by_ref().take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(invalid(format!("larger than the {cap} bytes allowed")));
    }
    String::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))
}

/// [`open_regular`] then [`read_open`] with [`CAP`].
pub fn read_capped(path: &Path, links: Links) -> std::io::Result<String> {
    let (f, _) = open_regular(path, links)?;
    read_open(f, CAP)
}

/// A file's whole text; Err names the path.
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A file's whole text, None when it does not exist; Err names the path.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A folder's entry names, sorted; None when it does not exist; Err names the path.
pub(crate) fn list_dir(path: &Path) -> Result<Option<Vec<String>>, String> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut names = vec![];
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", path.display()))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_link_and_an_oversized_file_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_capped(&fifo, Links::Follow).unwrap_err().to_string();
        assert_eq!(e, "not a regular file (a FIFO)");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'a'; CAP as usize + 1]).unwrap();
        assert_eq!(read_capped(&big, Links::Follow).unwrap_err().to_string(), "larger than the 1048576 bytes allowed");
        let ok = d.path().join("ok");
        std::fs::write(&ok, "text").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_capped(&link, Links::Follow).unwrap(), "text");
        assert_eq!(read_capped(&link, Links::Refuse).unwrap_err().to_string(), "is a symlink, refused here");
        assert_eq!(read_capped(d.path(), Links::Follow).unwrap_err().to_string(), "not a regular file (a directory)");
    }
}
