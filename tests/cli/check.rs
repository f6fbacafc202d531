//! `ade-prep check` run as a binary over the fixture trees of tests/fixtures/checks/<case>: exit codes, the JSON
//! shape and each check's result.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub(crate) fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checks").join(case)
}

pub(crate) fn ade_prep(args: &[&str]) -> Output {
    Command::new(crate::bin()).args(args).env_remove("RUST_LOG").output().expect("run ade-prep")
}

pub(crate) fn check(case: &str) -> (i32, Value) {
    let root = fixture(case);
    let out = ade_prep(&["--root", root.to_str().unwrap(), "check", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().expect("exit code"), json)
}

pub(crate) fn result_of<'a>(json: &'a Value, id: &str) -> &'a str {
    json["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}"))
        ["result"]
        .as_str()
        .unwrap()
}

pub(crate) fn evidence<'a>(json: &'a Value, id: &str) -> &'a str {
    json["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["evidence"].as_str().unwrap()
}

const IDS: &[&str] = &[
    "distro",
    "memory",
    "os-lvm",
    "root-filesystem",
    "kernel",
    "guest-agent",
    "ade-extension",
    "data-mounts",
    "data-volumes",
    "selinux",
    "workloads",
    "writers",
    "extensions",
    "ade-operation",
    "encryption-status",
    "packages",
    "network-route",
    "network-proxy",
    "wire-server",
    "backup",
];

/// The documented shape: version, flow, summary, failed, checks[] with id/title/result/evidence/fix.
pub(crate) fn assert_shape(case: &str, json: &Value) {
    assert_eq!(json["version"], 1, "{case}");
    let obj = json.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["checks", "failed", "flow", "summary", "version"], "{case}");
    let checks = json["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, IDS, "{case}");
    let mut counted = std::collections::BTreeMap::new();
    for c in checks {
        let mut k: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(k, ["evidence", "fix", "id", "result", "title"], "{case}");
        let r = c["result"].as_str().unwrap();
        assert!(["pass", "info", "warn", "fail", "not-applicable", "unknown"].contains(&r), "{case}: {r}");
        assert!(!c["fix"].as_str().unwrap().is_empty() && !c["evidence"].as_str().unwrap().is_empty());
        *counted.entry(r.to_string()).or_insert(0u64) += 1;
    }
    for (k, v) in json["summary"].as_object().unwrap() {
        assert_eq!(v.as_u64().unwrap(), counted.get(k).copied().unwrap_or(0), "{case}: summary {k}");
    }
    let failed: Vec<&str> = json["failed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let want: Vec<&str> = checks.iter().filter(|c| c["result"] == "fail").map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(failed, want, "{case}");
    assert!(["unmount", "online", "unsupported", "unknown"].contains(&json["flow"].as_str().unwrap()), "{case}");
}

/// (case, exit code, flow, [(id, result)] for the checks that do not pass).
type Case = (&'static str, i32, &'static str, &'static [(&'static str, &'static str)]);

#[test]
fn every_case_has_its_exit_code_flow_and_results() {
    let cases: &[Case] = &[
        (
            "rhel79-rootvg",
            0,
            "unmount",
            &[
                ("kernel", "not-applicable"),
                ("selinux", "warn"),
                ("packages", "unknown"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "centos72-lvm",
            1,
            "unmount",
            &[
                ("memory", "fail"),
                ("os-lvm", "fail"),
                ("kernel", "not-applicable"),
                ("guest-agent", "fail"),
                ("ade-extension", "fail"),
                ("encryption-status", "not-applicable"),
                ("packages", "unknown"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "ubuntu1404-kernel",
            1,
            "unsupported",
            &[
                ("distro", "fail"),
                ("kernel", "fail"),
                ("guest-agent", "unknown"),
                ("ade-extension", "not-applicable"),
                ("encryption-status", "not-applicable"),
                ("packages", "not-applicable"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "ubuntu1604-ade-running",
            0,
            "unmount",
            &[
                ("root-filesystem", "warn"),
                ("kernel", "not-applicable"),
                ("ade-operation", "warn"),
                ("encryption-status", "warn"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "ubuntu1804-mounts",
            1,
            "unmount",
            &[
                ("kernel", "not-applicable"),
                ("data-mounts", "fail"),
                ("extensions", "warn"),
                ("encryption-status", "not-applicable"),
                ("packages", "warn"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "ubuntu2004-status-mismatch",
            0,
            "unmount",
            &[
                ("kernel", "not-applicable"),
                ("encryption-status", "warn"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "ubuntu2204-encrypted",
            0,
            "unmount",
            &[("kernel", "not-applicable"), ("network-route", "unknown"), ("backup", "info")],
        ),
        (
            "ubuntu2310",
            0,
            "online",
            &[
                ("kernel", "not-applicable"),
                ("selinux", "not-applicable"),
                ("workloads", "not-applicable"),
                ("writers", "not-applicable"),
                ("encryption-status", "not-applicable"),
                ("packages", "not-applicable"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
        (
            "sles15",
            1,
            "unsupported",
            &[
                ("distro", "fail"),
                ("kernel", "not-applicable"),
                ("encryption-status", "not-applicable"),
                ("packages", "not-applicable"),
                ("network-route", "unknown"),
                ("backup", "info"),
            ],
        ),
    ];
    for &(case, code, flow, special) in cases {
        let (got, json) = check(case);
        assert_shape(case, &json);
        assert_eq!(got, code, "{case}: {json:#}");
        assert_eq!(json["flow"], flow, "{case}");
        // lsblk is run only on `/`: under a fixture root data-volumes is unknown, and says why
        assert!(evidence(&json, "data-volumes").starts_with("lsblk is not run under another root"), "{case}");
        for id in IDS {
            let other = if *id == "data-volumes" { "unknown" } else { "pass" };
            let want = special.iter().find(|(i, _)| i == id).map_or(other, |(_, r)| *r);
            assert_eq!(result_of(&json, id), want, "{case}: {id}: {}", evidence(&json, id));
        }
    }
}

#[test]
fn online_distributions_need_no_preparation() {
    for case in ["rhel86", "oracle85", "mariner2", "azurelinux3", "ubuntu2310"] {
        let (code, json) = check(case);
        assert_shape(case, &json);
        assert_eq!(code, 0, "{case}");
        assert_eq!(json["flow"], "online", "{case}");
        assert!(evidence(&json, "distro").contains("no preparation is needed"), "{case}");
        assert_eq!(result_of(&json, "workloads"), "not-applicable", "{case}");
        assert_eq!(result_of(&json, "writers"), "not-applicable", "{case}");
        assert_eq!(result_of(&json, "selinux"), "not-applicable", "{case}");
    }
}

#[test]
fn evidence_names_what_was_found() {
    let (_, j) = check("centos72-lvm");
    assert!(evidence(&j, "distro").contains("centos 7.2"), "{}", evidence(&j, "distro"));
    assert!(evidence(&j, "guest-agent").contains("2.2.36"));
    assert!(evidence(&j, "os-lvm").contains("centos-root"));
    assert!(evidence(&j, "ade-extension").contains("Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux-0.1.0.999340"));
    // selinuxfs is mounted at /selinux there: its enforce (0) wins over /sys/fs/selinux/enforce (1)
    assert_eq!(evidence(&j, "selinux"), "SELinux is permissive (/selinux/enforce is 0)");
    let (_, j) = check("ubuntu1804-mounts");
    assert!(evidence(&j, "data-mounts").contains("/mnt/data1 (/dev/sdc1) is under /mnt"));
    assert!(evidence(&j, "data-mounts").contains("/data3/data4 (/dev/sde1) is mounted below /data3"));
    assert!(evidence(&j, "extensions").contains("custom-script/download/0 (pid 2410 bash, pid 2411 apt-get)"));
    assert!(evidence(&j, "extensions").contains("Microsoft.Azure.Extensions.CustomScript-2.1.10"));
    let (_, j) = check("ubuntu1604-ade-running");
    let op = evidence(&j, "ade-operation");
    assert!(op.contains("request queued (EnableEncryption, volume type OS)"), "{op}");
    assert!(op.contains("SplitRootPartitionState"), "{op}");
    assert!(op.contains("pid 3001"), "{op}");
    let (_, j) = check("ubuntu2004-status-mismatch");
    assert!(evidence(&j, "encryption-status").contains("guest shows it decrypted"));
    assert!(j["checks"][14]["fix"].as_str().unwrap().contains("az vm encryption disable"));
    let (_, j) = check("rhel79-rootvg");
    assert!(evidence(&j, "os-lvm").contains("supported rootvg layout"));
    assert!(evidence(&j, "data-mounts").contains("/datadrive"));
}

#[test]
fn odd_inputs_are_unknown_never_a_crash() {
    let (code, json) = check("odd-inputs");
    assert_shape("odd-inputs", &json);
    assert_eq!(code, 0, "nothing failed, everything unknown: {json:#}");
    for id in [
        "distro",
        "memory",
        "os-lvm",
        "data-mounts",
        "selinux",
        "workloads",
        "writers",
        "ade-operation",
        "encryption-status",
    ] {
        assert_eq!(result_of(&json, id), "unknown", "{id}");
    }
    assert!(evidence(&json, "distro").contains("Is a directory"));
    assert!(evidence(&json, "memory").contains("MemTotal"));
    assert!(evidence(&json, "ade-operation").contains("Not a directory"));
    assert!(evidence(&json, "encryption-status").contains("not valid JSON"));
    // a tree that does not exist at all
    let (code, json) = check("no-such-case");
    assert_eq!(code, 0);
    // data-volumes unknown (no lsblk under a fixture root); packages unknown (no os-release); the network checks
    // have no guest agent to judge for there
    assert_eq!(json["summary"]["unknown"], 14, "{json:#}");
    assert_eq!(json["summary"]["fail"], 0);
}

#[test]
fn human_table_has_no_colour_on_a_pipe() {
    let root = fixture("centos72-lvm");
    let out = ade_prep(&["--root", root.to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.lines().any(|l| l.starts_with("fail") && l.contains(" os-lvm ")), "{text}");
    assert!(text.contains("fix: ADE supports an LVM OS disk only in the rootvg layout"), "{text}");
    assert!(text.contains("--force memory,os-lvm,guest-agent,ade-extension"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ade_prep(&["check", "--bogus"]).status.code(), Some(2));
    assert_eq!(ade_prep(&["check", "extra"]).status.code(), Some(2));
}

#[test]
fn runs_on_this_machine() {
    // Whatever this machine is, check reads it without crashing and answers in the documented shape.
    let out = ade_prep(&["check", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_shape("this machine", &json);
    let code = out.status.code().unwrap();
    assert_eq!(code, if json["failed"].as_array().unwrap().is_empty() { 0 } else { 1 });
}

/// Copies a fixture tree (files and folders only) into `dst`.
pub(crate) fn copy_tree(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub(crate) fn fix_of<'a>(json: &'a Value, id: &str) -> &'a str {
    json["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["fix"].as_str().unwrap()
}

#[test]
fn a_hold_list_with_no_window_open_warns_with_its_units_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_tree(&fixture("rhel79-rootvg"), &root);
    let run = |root: &std::path::Path, json: bool| {
        let mut args = vec!["--root", root.to_str().unwrap(), "check"];
        if json {
            args.push("--json");
        }
        ade_prep(&args)
    };
    let json = |o: &Output| serde_json::from_slice::<Value>(&o.stdout).unwrap();
    // No list: the check passes.
    assert_eq!(result_of(&json(&run(&root, true)), "ade-operation"), "pass");
    std::fs::create_dir_all(root.join("etc/ade-prep")).unwrap();
    std::fs::write(root.join("etc/ade-prep/hold"), "# Written by ade-prep\nmongod.service\nsap-hana.socket\n").unwrap();
    let out = run(&root, true);
    assert_eq!(out.status.code(), Some(0), "a warning is no failure");
    let j = json(&out);
    assert_shape("stale-hold", &j);
    assert_eq!(result_of(&j, "ade-operation"), "warn");
    let ev = evidence(&j, "ade-operation");
    let list = root.join("etc/ade-prep/hold");
    assert!(ev.contains(&format!("stale hold list {}", list.display())), "{ev}");
    assert!(ev.contains("mongod.service, sap-hana.socket"), "{ev}");
    assert!(!ev.contains("Written by"), "comments are no units: {ev}");
    assert!(fix_of(&j, "ade-operation").contains("ade-prep restore"), "{}", fix_of(&j, "ade-operation"));
    // The table says it too.
    let text = String::from_utf8(run(&root, false).stdout).unwrap();
    assert!(text.contains("stale hold list") && text.contains("ade-prep restore"), "{text}");
    // With a window open (the journal says so) the list is the window's, not stale.
    std::fs::create_dir_all(root.join("var/lib/ade-prep")).unwrap();
    let journal = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state/v1.json");
    std::fs::copy(journal, root.join("var/lib/ade-prep/state.json")).unwrap();
    let j = json(&run(&root, true));
    assert_eq!(result_of(&j, "ade-operation"), "pass", "{}", evidence(&j, "ade-operation"));
}
