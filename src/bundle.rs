//! The support bundle of `ade-prep report`: entries collected in memory, secrets redacted, a manifest of what was
//! collected and what could not be, written as one .tar.gz. It owns redaction and the archive; it must not decide
//! what to collect (commands::report does) nor change the machine beyond writing the archive.
//!
//! Redaction is by key first: in JSON, the value of `protectedSettings` and of every key whose name says secret
//! (secret, password, passphrase, token, credential, private key) becomes `"<redacted>"`, whatever its shape; in
//! `key = value` text (ADE's ini markers) the same keys. Then every redacted string value (8 characters or more) is
//! removed from every entry of the bundle, logs included, wherever it was copied to.

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

/// Writes `entries` as a .tar.gz at `path` (mode 0600: it holds logs), under the folder `top`, through a temporary
/// file renamed into place.
pub fn write_archive(path: &Path, top: &str, entries: &[(String, Vec<u8>)], mtime: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("{}: creating the archive", path.display()))?;
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
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("{}: writing the archive", path.display())));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: renaming the archive into place", path.display()))
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
