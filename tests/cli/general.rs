//! The binary's behaviour on bad input and its stable outputs (scan, config), and docs kept in line with the code.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

fn ade(args: &[&str]) -> Output {
    Command::new(crate::bin()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn scan_of_a_missing_path_exits_2_with_one_line_naming_it() {
    let o = ade(&["scan", "--mount", "/no/such/place"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("/no/such/place"), "{e}");
}

#[test]
fn malformed_config_exits_2_naming_file_line_and_key_and_does_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("etc/ade-prep/config.d/50-x.toml");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "[stray]\npolicy = \"report\"\n\n[window]\ntimeout_hours = -3\n").unwrap();
    let root = d.path().to_str().unwrap();
    for cmd in [&["scan"][..], &["config"][..]] {
        let mut args = vec!["--root", root];
        args.extend_from_slice(cmd);
        let o = ade(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        assert!(o.stdout.is_empty(), "{cmd:?} printed something");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(&format!("{}:5: timeout_hours:", f.display())), "{e}");
    }
}

#[test]
fn config_prints_the_effective_configuration_as_toml() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("etc/ade-prep/config.toml");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "[stray]\npolicy = \"terminate\"\n[workloads.redis]\nunits = [\"redis-server.service\"]\n")
        .unwrap();
    // Running as root, the file must be root's and not group/other-writable: it is (we made it, umask 022).
    let o = ade(&["--root", d.path().to_str().unwrap(), "config"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("# effective configuration: built-in defaults, then "), "{text}");
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["stray"]["policy"].as_str(), Some("terminate"));
    assert_eq!(v["workloads"]["redis"]["units"][0].as_str(), Some("redis-server.service"));
    assert!(v["workloads"]["docker"]["units"].as_array().unwrap().len() >= 4, "built-ins kept");
}

#[test]
fn config_writable_by_others_is_refused_when_root() {
    if crate::common::need_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("etc/ade-prep/config.toml");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = ade(&["--root", d.path().to_str().unwrap(), "config"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(&f.display().to_string()) && e.contains("mode 0666"), "{e}");
}

#[test]
fn scan_as_an_unprivileged_user_reports_what_it_could_not_read() {
    if crate::common::need_root() {
        return;
    }
    // As nobody, other users' fd folders are closed: the scan still succeeds and counts them.
    let o = Command::new(crate::bin()).args(["scan", "--json"]).uid(65534).gid(65534).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["unreadable"]["count"].as_u64().unwrap() > 0);
    assert!(v["unreadable"]["entries"][0]["error"].as_str().unwrap().contains("denied"));
    assert_eq!(v["unreadable"]["why"], "not_root");
    assert!(stderr(&o).contains("could not be read") && stderr(&o).contains("not root: run as root"), "{}", stderr(&o));
}

#[test]
fn scan_json_has_the_documented_shape_and_never_lists_itself() {
    let child =
        Command::new(crate::bin()).args(["scan", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let me = child.id() as i64;
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["target"]["mount_point"], "/");
    for key in ["processes", "kernel", "unreadable", "processes_seen"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let procs = v["processes"].as_array().unwrap();
    assert!(!procs.is_empty());
    for key in [
        "pid",
        "ppid",
        "uid",
        "comm",
        "cmdline",
        "unit",
        "codes",
        "fds",
        "writable_fds",
        "start_time",
        "class",
        "reason",
    ] {
        assert!(procs[0].get(key).is_some(), "process entry lacks {key}");
    }
    // Other ade-prep processes (sibling tests) may be listed; this one must not be.
    assert!(procs.iter().all(|p| p["pid"].as_i64() != Some(me)), "the scanner listed itself");
}

#[test]
fn readme_and_packaging_name_the_paths_the_code_uses() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for (name, path) in ade_prep::paths::ALL {
        assert!(readme.contains(path), "README.md does not mention {name} = {path}");
    }
    // Every absolute /etc, /var or /run path README mentions under "Files" must be one the code knows.
    let files = readme.split("## Files").nth(1).expect("README has a '## Files' section");
    let files = files.split("\n## ").next().unwrap();
    for word in files.split(|c: char| c.is_whitespace() || c == '`' || c == '|') {
        if ["/etc/", "/var/", "/run/"].iter().any(|p| word.starts_with(p)) {
            let known = ade_prep::paths::ALL.iter().any(|(_, p)| word == *p || word.starts_with(&format!("{p}/")));
            assert!(known, "README's Files section names {word}, which src/paths.rs does not define");
        }
    }
}
