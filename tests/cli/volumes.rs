//! `prepare --volume-type` and `--data-mount` from the command line (issue 17): bad values are refused naming the
//! flag, exit 2, before anything is checked or written; a journal with data volumes (version 2) is read by
//! `status`.

use std::path::Path;
use std::process::{Command, Output};

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", d.path().join("proc")).unwrap();
    d
}

fn ade_prep(root: &Path, args: &[&str]) -> Output {
    Command::new(crate::bin()).arg("--root").arg(root).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn nothing_written(root: &Path) {
    assert!(!root.join("var/lib/ade-prep").exists(), "no journal was written");
    assert!(!root.join("run/ade-prep").exists(), "no lock was taken");
}

#[test]
fn a_volume_type_that_is_not_os_data_or_all_is_refused_naming_the_flag() {
    let d = root();
    for args in [&["prepare", "--volume-type", "everything"][..], &["prepare", "--dry-run", "--volume-type", ""]] {
        let o = ade_prep(d.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("'--volume-type <TYPE>'"), "{}", stderr(&o));
        assert!(stderr(&o).contains("[possible values: os, data, all]"), "{}", stderr(&o));
    }
    nothing_written(d.path());
}

#[test]
fn the_volume_type_is_read_in_any_case_as_ade_reads_it() {
    // Accepted by the parser (the error that follows is about --data-mount, not the type).
    let d = root();
    for vt in ["DATA", "Data", "all", "ALL"] {
        let o = ade_prep(d.path(), &["prepare", "--dry-run", "--volume-type", vt, "--data-mount", "/nonexistent-x"]);
        assert_eq!(o.status.code(), Some(2), "{vt}: {}", stderr(&o));
        assert!(!stderr(&o).contains("--volume-type"), "{vt}: {}", stderr(&o));
        assert!(stderr(&o).contains("--data-mount"), "{vt}: {}", stderr(&o));
    }
}

#[test]
fn a_data_mount_without_data_volumes_or_that_is_not_a_mount_point_is_refused_naming_the_flag() {
    let d = root();
    let o = ade_prep(d.path(), &["prepare", "--dry-run", "--data-mount", "/"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim(), "ade-prep: --data-mount needs --volume-type data or all (got os)");

    let o = ade_prep(d.path(), &["prepare", "--dry-run", "--volume-type", "data", "--data-mount", "/nonexistent-x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--data-mount") && stderr(&o).contains("/nonexistent-x"), "{}", stderr(&o));

    // A folder that exists but is no mount point: named, with where the mount table was read.
    let not_a_mount = d.path().join("plain-folder");
    std::fs::create_dir(&not_a_mount).unwrap();
    let arg = not_a_mount.to_str().unwrap();
    let o = ade_prep(d.path(), &["prepare", "--dry-run", "--volume-type", "data", "--data-mount", arg]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("--data-mount {arg}: not a mount point (see /proc/self/mountinfo)")),
        "{}",
        stderr(&o)
    );
    let o = ade_prep(d.path(), &["prepare", "--dry-run", "--volume-type", "all", "--data-mount", "/"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--data-mount /: / is the OS volume, not a data volume"), "{}", stderr(&o));
    nothing_written(d.path());
}

#[test]
fn status_lists_the_data_volumes_of_an_open_window() {
    let d = root();
    let mut j: serde_json::Value = serde_json::from_str(include_str!("../fixtures/state/v2.json")).unwrap();
    j["entries"] = serde_json::json!([]);
    let p = d.path().join("var/lib/ade-prep/state.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, j.to_string()).unwrap();
    let o = ade_prep(d.path(), &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("window: open"), "{text}");
    for want in [
        "data volume /data (/dev/sdc1): freed for ADE (verified once ADE reports success)\n",
        "data volume /var/lib/mongodb (/dev/sdd1): freed for ADE (verified once ADE reports success)\n",
    ] {
        assert!(text.contains(want), "{want}---\n{text}");
    }
    let o = ade_prep(d.path(), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["journal"]["version"], 2);
    assert_eq!(v["volumes"][0]["volume"]["mount_point"], "/data");
    assert!(v["volumes"][0]["check"].is_null(), "not judged while the window is open: {v}");
}

#[test]
fn status_of_a_closed_window_names_each_data_volume_left_unencrypted_and_exits_1() {
    let d = root();
    let mut j: serde_json::Value = serde_json::from_str(include_str!("../fixtures/state/v2.json")).unwrap();
    j["phase"] = "closed".into();
    j["entries"] = serde_json::json!([]);
    let p = d.path().join("var/lib/ade-prep/state.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, j.to_string()).unwrap();
    // Neither device exists here and the fixture root has no crypttab or fstab: nothing says encrypted.
    let o = ade_prep(d.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "error: data volume /data (/dev/sdc1) is not encrypted: ",
        "error: data volume /var/lib/mongodb (/dev/sdd1) is not encrypted: ",
    ] {
        assert!(text.contains(want), "{want}---\n{text}");
    }
    let o = ade_prep(d.path(), &["status", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["volumes"][0]["check"]["verdict"], "not_encrypted", "{v}");
    assert_eq!(v["volumes"][1]["check"]["verdict"], "not_encrypted", "{v}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), j.to_string(), "status changes nothing");
}
