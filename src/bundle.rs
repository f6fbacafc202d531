//! The support bundle of `ade-prep report`: entries collected in memory, secrets redacted, a manifest of what was
//! collected and what could not be, written as one .tar.gz. It owns redaction and the archive; it must not decide
//! what to collect (commands::report does) nor change the machine beyond writing the archive.
//!
//! Redaction is by key first: in JSON, the value of `protectedSettings` and of every key whose name says secret
//! (secret, password, passphrase, token, credential, private key) becomes `"<redacted>"`, whatever its shape; in
//! `key = value` text (ADE's ini markers) the same keys. Then every redacted string value (8 characters or more) is
//! removed from every entry of the bundle, logs included, wherever it was copied to. Command lines (any `cmdline`
//! array in JSON: scan's processes) lose the values of secret-looking flags ([`redact_argv`]), scrubbed the same
//! way. Key material ([`is_key_file`]) is never copied: listed by name and size.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// What a redacted value becomes.
pub const REDACTED: &str = "<redacted>";

/// Whether a JSON or ini key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['_', '-'], "");
    k == "protectedsettings"
        || ["secret", "password", "passphrase", "passwd", "token", "credential", "privatekey"]
            .iter()
            .any(|w| k.contains(w))
}

/// Whether a command-line flag takes a secret as its value (`--password X`, `-pw X` of nodetool, `--token=X`).
fn is_secret_flag(word: &str) -> bool {
    let name = word.trim_start_matches('-');
    word.starts_with('-') && (is_secret_key(name) || ["pw", "pwd", "pass", "pwf", "key"].contains(&name))
}

/// A command line with the values of secret-looking flags replaced by [`REDACTED`]: the word after `--password`,
/// `-pw` and the like (and after sapcontrol's `-user NAME`, its password), the value of `name=value` and
/// `--name=value` words whose name says secret (`password=`, `--token=`); returns the secrets removed.
pub fn redact_argv(argv: &[String]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::with_capacity(argv.len());
    let mut removed = vec![];
    let mut skip_then_redact: Option<usize> = None;
    for w in argv {
        if let Some(n) = skip_then_redact {
            if n == 0 {
                removed.push(w.clone());
                out.push(REDACTED.to_string());
                skip_then_redact = None;
                continue;
            }
            skip_then_redact = Some(n - 1);
            out.push(w.clone());
            continue;
        }
        if let Some((k, v)) = w.split_once('=') {
            if is_secret_key(k.trim_start_matches('-')) || is_secret_flag(k) {
                if !v.is_empty() {
                    removed.push(v.to_string());
                }
                out.push(format!("{k}={REDACTED}"));
                continue;
            }
        }
        if w == "-user" {
            skip_then_redact = Some(1);
        } else if is_secret_flag(w) {
            skip_then_redact = Some(0);
        }
        out.push(w.clone());
    }
    (out, removed)
}

/// Whether a file holds key material by its name (ADE's `cleartext_key_*`, a `.key`, `.pem`, `.pfx`, `.p12`, `.prv`
/// or `.bek` file): the bundle lists such a file by name and size and never copies it.
pub fn is_key_file(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("cleartext_key")
        || n.contains("passphrase")
        || [".key", ".pem", ".pfx", ".p12", ".prv", ".bek"].iter().any(|e| n.ends_with(e))
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Replaces the value of every secret key, at any depth, by [`REDACTED`]; returns the secret strings removed.
pub fn redact_json(v: &mut Value) -> Vec<String> {
    let mut removed = vec![];
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| removed.extend(redact_json(x))),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "cmdline" {
                    if let Some(a) = x.as_array() {
                        let argv: Vec<String> = a.iter().filter_map(|w| w.as_str().map(String::from)).collect();
                        let (argv, secrets) = redact_argv(&argv);
                        removed.extend(secrets);
                        *x = Value::from(argv);
                        continue;
                    }
                }
                if is_secret_key(k) {
                    collect_strings(x, &mut removed);
                    *x = Value::String(REDACTED.into());
                } else {
                    removed.extend(redact_json(x));
                }
            }
        }
        _ => {}
    }
    removed
}

/// `key = value` and `key: value` lines whose key names a secret get [`REDACTED`] as value; returns the secrets.
pub fn redact_ini(text: &str) -> (String, Vec<String>) {
    let mut removed = vec![];
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let sep = line.find(['=', ':']);
        match sep {
            Some(i) if is_secret_key(line[..i].trim()) => {
                let value = line[i + 1..].trim();
                if !value.is_empty() {
                    removed.push(value.to_string());
                }
                out.push_str(&line[..=i]);
                out.push(' ');
                out.push_str(REDACTED);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    (out, removed)
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(hay.len());
    let (mut i, mut n) = (0, 0);
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
            n += 1;
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    (out, n)
}

/// The bundle being collected.
#[derive(Debug, Default)]
pub struct Bundle {
    entries: Vec<(String, Vec<u8>)>,
    manifest: Vec<String>,
    secrets: Vec<String>,
}

impl Bundle {
    /// Adds an entry as is.
    pub fn add(&mut self, name: &str, source: &str, bytes: Vec<u8>) {
        self.manifest.push(format!("collected  {name}  ({} bytes, from {source})", bytes.len()));
        self.entries.push((name.to_string(), bytes));
    }

    /// Adds a JSON document with its secret keys redacted (a file that is not JSON is redacted as ini text).
    pub fn add_redacted(&mut self, name: &str, source: &str, bytes: Vec<u8>) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (bytes, removed) = match serde_json::from_str::<Value>(&text) {
            Ok(mut v) => {
                let removed = redact_json(&mut v);
                (serde_json::to_vec_pretty(&v).unwrap_or_default(), removed)
            }
            Err(_) => {
                let (t, removed) = redact_ini(&text);
                (t.into_bytes(), removed)
            }
        };
        if !removed.is_empty() {
            self.manifest.push(format!("redacted   {name}  ({} value(s) of secret keys)", removed.len()));
        }
        self.secrets.extend(removed);
        self.add(name, source, bytes);
    }

    /// Lists a file of key material by name and size: never its content.
    pub fn listed(&mut self, name: &str, source: &str, size: u64) {
        self.manifest.push(format!("listed     {name}  ({size} bytes, from {source}: key material, not copied)"));
    }

    /// Records what could not be collected, and why.
    pub fn missing(&mut self, name: &str, why: impl std::fmt::Display) {
        self.manifest.push(format!("missing    {name}  ({why})"));
    }

    /// Removes every secret found by key from every entry, then adds MANIFEST.txt; returns the entries to archive.
    pub fn finish(mut self, header: &str) -> Vec<(String, Vec<u8>)> {
        let mut secrets: Vec<&String> =
            self.secrets.iter().filter(|s| s.len() >= 8 && s.as_str() != REDACTED).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        for (name, bytes) in &mut self.entries {
            let mut total = 0;
            for s in &secrets {
                let (b, n) = replace_all(bytes, s.as_bytes(), REDACTED.as_bytes());
                if n > 0 {
                    *bytes = b;
                    total += n;
                }
            }
            if total > 0 {
                self.manifest.push(format!("scrubbed   {name}  ({total} copy(ies) of a redacted secret)"));
            }
        }
        let manifest = format!("{header}\n{}\n", self.manifest.join("\n"));
        let mut entries = vec![("MANIFEST.txt".to_string(), manifest.into_bytes())];
        entries.append(&mut self.entries);
        entries
    }
}

/// A new file beside `name` in the folder `dir`: a random name (mkstemp's way) created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` at mode 0600, so that nothing another user planted there (a symbolic link, a file of
/// theirs) is ever opened or truncated, whoever can write the folder; with its name.
fn create_beside(dir: &std::fs::File, name: &std::ffi::OsStr) -> std::io::Result<(std::fs::File, std::ffi::CString)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    for _ in 0..32 {
        // Not libc::getrandom: glibc 2.17 (CentOS 7, the packages' floor) has no such symbol and the release link
        // fails. std's RandomState is keyed from the kernel's random source (with its own fallback there).
        let r = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        };
        let mut tmp = b".".to_vec();
        tmp.extend_from_slice(name.as_bytes());
        tmp.extend_from_slice(format!(".{r:016x}.tmp").as_bytes());
        let tmp = std::ffi::CString::new(tmp).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid folder fd and a NUL-terminated name.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, 0o600 as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: fd was just opened and is owned by nothing else.
            return Ok((unsafe { std::fs::File::from_raw_fd(fd) }, tmp));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// Writes `entries` as a .tar.gz at `path` (mode 0600: it holds logs), under the folder `top`, through a temporary
/// file of a random name created beside it with `O_EXCL|O_NOFOLLOW` ([`create_beside`]) in the folder opened once,
/// then renamed into place in that same folder (a link at `path` is replaced, never followed).
pub fn write_archive(path: &Path, top: &str, entries: &[(String, Vec<u8>)], mtime: u64) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let ctx = |what: &str| format!("{}: {what}", path.display());
    let name = path.file_name().with_context(|| ctx("not a file name"))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::File::open(parent).with_context(|| ctx("creating the archive"))?;
    let (file, tmp) = create_beside(&dir, name).with_context(|| ctx("creating the archive"))?;
    let write = || -> std::io::Result<()> {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{top}/{name}"), bytes.as_slice())?;
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?.sync_all()
    };
    let target = std::ffi::CString::new(name.as_bytes()).with_context(|| ctx("a NUL in the name"))?;
    let r = write().and_then(|()| {
        // SAFETY: one valid folder fd, two NUL-terminated names.
        let rc = unsafe { libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), target.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    if let Err(e) = r {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        return Err(anyhow::Error::new(e).context(ctx("writing the archive")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_redacted_at_any_depth_and_public_ones_kept() {
        let mut v: Value = serde_json::json!({"runtimeSettings": [{"handlerSettings": {
            "protectedSettingsCertThumbprint": "1BE9", "protectedSettings": "MIIBblob",
            "publicSettings": {"KeyVaultURL": "https://kv/", "AADClientSecret": "s3cr3t-value", "Passphrase": {"a": "x"}}}}]});
        let removed = redact_json(&mut v);
        let hs = &v["runtimeSettings"][0]["handlerSettings"];
        assert_eq!(hs["protectedSettings"], REDACTED);
        assert_eq!(hs["publicSettings"]["AADClientSecret"], REDACTED);
        assert_eq!(hs["publicSettings"]["Passphrase"], REDACTED);
        assert_eq!(hs["publicSettings"]["KeyVaultURL"], "https://kv/");
        assert_eq!(hs["protectedSettingsCertThumbprint"], "1BE9");
        assert_eq!(removed, vec!["MIIBblob", "s3cr3t-value", "x"]);
    }

    #[test]
    fn command_lines_lose_the_values_of_secret_flags_and_copies_are_scrubbed() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (a, r) = redact_argv(&v(&["nodetool", "-u", "cassandra", "-pw", "hunter2-pw", "drain"]));
        assert_eq!(a, v(&["nodetool", "-u", "cassandra", "-pw", REDACTED, "drain"]));
        assert_eq!(r, v(&["hunter2-pw"]));
        let (a, _) = redact_argv(&v(&["sapcontrol", "-nr", "00", "-user", "hn1adm", "S3cret!", "-function", "Stop"]));
        assert_eq!(a, v(&["sapcontrol", "-nr", "00", "-user", "hn1adm", REDACTED, "-function", "Stop"]));
        let (a, r) = redact_argv(&v(&["app", "password=abc", "--db-password=xyz", "--token", "t0k", "--port=5"]));
        assert_eq!(a, v(&["app", "password=<redacted>", "--db-password=<redacted>", "--token", REDACTED, "--port=5"]));
        assert_eq!(r, v(&["abc", "xyz", "t0k"]));
        // In scan.json, every cmdline array; the secret is then scrubbed from every other entry.
        let mut b = Bundle::default();
        let scan = serde_json::json!({"processes": [{"pid": 7, "cmdline": ["mysqld", "--password=longsecret1"]}]});
        b.add_redacted("scan.json", "scan", serde_json::to_vec(&scan).unwrap());
        b.add("log", "y", b"started with longsecret1\n".to_vec());
        let e = b.finish("h");
        let all: String = e.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
        assert!(!all.contains("longsecret1"), "{all}");
        assert!(all.contains("--password=<redacted>"), "{all}");
    }

    #[test]
    fn the_archive_never_writes_through_a_link_planted_in_the_folder() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = d.path().join("bundle.tar.gz");
        // The old predictable temporary name, and the target itself, both links to the victim.
        std::os::unix::fs::symlink(&victim, d.path().join("bundle.tar.gz.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_archive(&out, "top", &[("a".into(), b"x".to_vec())], 0).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let md = std::fs::symlink_metadata(&out).unwrap();
        assert!(md.file_type().is_file(), "the link is replaced by the archive");
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.nlink(), 1);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "no temporary file left: {left:?}");
    }

    #[test]
    fn key_files_are_known_by_name() {
        for n in ["cleartext_key_sda", "CLEARTEXT_KEY", "bek.key", "x.pem", "c.pfx", "t.PRV", "LinuxPassPhraseFileName"]
        {
            assert!(is_key_file(n), "{n}");
        }
        for n in ["azure_crypt_params.ini", "azure_crypt_request_queue.ini", "extension.log", "0.settings"] {
            assert!(!is_key_file(n), "{n}");
        }
    }

    #[test]
    fn ini_secrets_are_redacted_and_copies_scrubbed_everywhere() {
        let (t, removed) = redact_ini("[s]\nPassphraseFile = /mnt/x\nsecret_id: abcdefgh12\nvolume_type = OS\n");
        assert_eq!(t, "[s]\nPassphraseFile = <redacted>\nsecret_id: <redacted>\nvolume_type = OS\n");
        assert_eq!(removed, vec!["/mnt/x", "abcdefgh12"]);
        let mut b = Bundle::default();
        b.add_redacted("m.ini", "x", b"secret_id = abcdefgh12\n".to_vec());
        b.add("log", "y", b"ADE got abcdefgh12 twice: abcdefgh12\n".to_vec());
        b.missing("gone", "No such file");
        let e = b.finish("header");
        assert_eq!(e[0].0, "MANIFEST.txt");
        let m = String::from_utf8(e[0].1.clone()).unwrap();
        assert!(m.contains("scrubbed   log  (2 copy(ies)") && m.contains("missing    gone  (No such file)"), "{m}");
        assert_eq!(e[2].1, b"ADE got <redacted> twice: <redacted>\n");
    }
}
