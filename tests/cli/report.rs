//! `ade-prep report` over a fixture tree (`--root`): ADE's handler with settings whose protected settings and a
//! public secret must never reach the archive (not even where ADE's log copied them), a status file, a marker with a
//! secret key, a journal; the archive must open (with the system `tar` too), hold the manifest, and name what it
//! collected and what it could not read.

use std::io::Read;
use std::path::Path;
use std::process::Command;

const PROTECTED: &str = "MIIByAYJKoZIhvcNAQcDoIIBuTCCAbUCAQAxggFxMIIBbQIBADBVMEExPzA9BgoJkiaJkFIXTURESECRET";
const CLIENT_SECRET: &str = "aad-client-secret-0f9e8d7c";
const PASSPHRASE: &str = "marker-passphrase-1234";
const KEY: &str = "cleartext-key-material-5f4e3d2c1b";

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn fixture(root: &Path) {
    let h = "var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.76";
    put(
        root,
        &format!("{h}/config/0.settings"),
        &format!(
            r#"{{"runtimeSettings":[{{"handlerSettings":{{"protectedSettingsCertThumbprint":"1BE9A13A",
            "protectedSettings":"{PROTECTED}","publicSettings":{{"EncryptionOperation":"EnableEncryption",
            "KeyVaultURL":"https://kv.vault.azure.net/","VolumeType":"All","AADClientSecret":"{CLIENT_SECRET}"}}}}}}]}}"#
        ),
    );
    put(root, &format!("{h}/status/0.status"), r#"[{"status":{"status":"transitioning","code":0}}]"#);
    put(
        root,
        "var/log/azure/Microsoft.Azure.Security.AzureDiskEncryptionForLinux/extension.log",
        &format!("2024-05-01 reading settings {PROTECTED} with {CLIENT_SECRET}\nEncryption started\n"),
    );
    put(
        root,
        "var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini",
        &format!("[azure_crypt_request_queue]\nvolume_type = All\npassphrase = {PASSPHRASE}\n"),
    );
    // ADE's key file, as its config folder holds it during the encryption (issue 24): listed, never copied.
    put(root, "var/lib/azure_disk_encryption_config/cleartext_key_sda1", KEY);
    let journal =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state/v1.json")).unwrap();
    put(root, "var/lib/ade-prep/state.json", &journal);
    put(root, "etc/os-release", "ID=ubuntu\nVERSION_ID=\"20.04\"\n");
}

#[test]
fn the_bundle_opens_has_the_manifest_and_no_secret() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let archive = d.path().join("out/bundle.tar.gz");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ade-prep"))
        .arg("--root")
        .arg(d.path())
        .args(["report", "--output"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&archive.display().to_string()));

    // The system tar opens it.
    let list = Command::new("tar").arg("tzf").arg(&archive).output().unwrap();
    assert!(list.status.success(), "tar tzf: {}", String::from_utf8_lossy(&list.stderr));
    let names = String::from_utf8(list.stdout).unwrap();
    for want in [
        "MANIFEST.txt",
        "check.json",
        "status.json",
        "state/state.json",
        "ade/log/extension.log",
        "config/0.settings",
        "status/0.status",
        "ade/markers/azure_crypt_request_queue.ini",
    ] {
        assert!(names.lines().any(|l| l.ends_with(want)), "{want} not in the archive:\n{names}");
    }

    // Every byte, decompressed: no secret anywhere.
    let mut raw = vec![];
    flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()).read_to_end(&mut raw).unwrap();
    for secret in [PROTECTED, CLIENT_SECRET, PASSPHRASE, KEY] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in the archive");
    }

    let mut manifest = String::new();
    let mut settings = String::new();
    let mut t = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()));
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().into_owned();
        if p.ends_with("MANIFEST.txt") {
            e.read_to_string(&mut manifest).unwrap();
        } else if p.ends_with("config/0.settings") {
            e.read_to_string(&mut settings).unwrap();
        }
    }
    // Redacted by key, public settings kept.
    let v: serde_json::Value = serde_json::from_str(&settings).unwrap();
    let hs = &v["runtimeSettings"][0]["handlerSettings"];
    assert_eq!(hs["protectedSettings"], "<redacted>");
    assert_eq!(hs["publicSettings"]["AADClientSecret"], "<redacted>");
    assert_eq!(hs["publicSettings"]["KeyVaultURL"], "https://kv.vault.azure.net/");
    // The manifest names what it collected, redacted, scrubbed and could not read.
    assert!(manifest.lines().any(|l| l.starts_with("collected  state/state.json")), "{manifest}");
    assert!(manifest.lines().any(|l| l.starts_with("redacted") && l.contains("0.settings")), "{manifest}");
    assert!(manifest.lines().any(|l| l.starts_with("scrubbed   ade/log/extension.log")), "{manifest}");
    assert!(manifest.lines().any(|l| l.starts_with("missing    state/state.json.prev")), "{manifest}");
    assert!(manifest.lines().any(|l| l.starts_with("missing    units.txt") && l.contains("not the running system")));
    let key_line = format!("listed     ade/markers/cleartext_key_sda1  ({} bytes", KEY.len());
    assert!(manifest.lines().any(|l| l.starts_with(&key_line) && l.contains("not copied")), "{manifest}");
    assert!(!names.contains("cleartext_key"), "{names}");
}

#[test]
fn a_link_planted_where_the_archive_goes_is_replaced_never_written_through() {
    // Root running `report` in a folder another user can write: whatever that user put at the archive's name or at
    // the old `<output>.tmp` name (links to a file of root's), nothing but the archive itself is written.
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let dir = d.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, "root's file").unwrap();
    let archive = dir.join("b.tar.gz");
    std::os::unix::fs::symlink(&victim, dir.join("b.tar.gz.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, &archive).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ade-prep"))
        .arg("--root")
        .arg(d.path())
        .args(["report", "--output"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file");
    let md = std::fs::symlink_metadata(&archive).unwrap();
    assert!(md.is_file());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777, 0o600);
}

#[test]
fn an_unwritable_output_is_a_one_line_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("no/such/folder/b.tar.gz");
    let o = Command::new(env!("CARGO_BIN_EXE_ade-prep"))
        .arg("--root")
        .arg(d.path())
        .args(["report", "--output"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.lines().count() == 1 && e.contains(&format!("{}: creating the archive", bad.display())), "{e}");
}
