//! `scan`'s text against a real load: processes of our own hold a scratch tmpfs (a workload by its command name,
//! `mongod`, and a plain `sleep`), and the verdict must come first, name each kind with its processes, and the
//! table list them; a mount below is a kernel user; an idle filesystem gets the all-clear; `--all` lists what JSON
//! lists, in pid order (kernel threads, which hold only `/`, are folded in src/report.rs's tests). Needs root (mount).

use std::path::Path;
use std::process::Command;

use crate::scan_fuser::{unusable, Holders, Mounted};

fn scan(path: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let run = |json: bool| {
        let mut c = Command::new(crate::bin());
        c.arg("scan").args(extra).arg("--mount").arg(path);
        if json {
            c.arg("--json");
        }
        let out = c.output().expect("run ade-prep");
        assert!(out.status.success(), "ade-prep scan failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    let v: serde_json::Value = serde_json::from_str(&run(true)).expect("scan --json is JSON");
    (text, v)
}

#[test]
fn verdict_first_names_workloads_others_and_mounts_below() {
    if unusable() {
        return;
    }
    let fs = Mounted::tmpfs();
    let d = fs.path().display();
    std::fs::copy("/bin/sleep", fs.path().join("mongod")).unwrap();
    let mut h = Holders::default();
    h.shell("workload", &format!("cd {d} && exec ./mongod 1000"));
    h.shell("other", &format!("cd {d} && exec sleep 1000"));
    std::fs::create_dir(fs.path().join("below")).unwrap();
    // Unmounted with the scratch filesystem (its lazy unmount detaches the mounts below too).
    let ok = Command::new("mount").args(["-t", "tmpfs", "adeprep-below"]).arg(fs.path().join("below")).status();
    assert!(ok.unwrap().success(), "mount tmpfs below");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (mongod, other) = (h.pids[0].0, h.pids[1].0);

    let (text, v) = scan(fs.path(), &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], format!("verdict: ADE's unmount of {d} would meet holders:"), "{text}");
    let workloads = lines.iter().find(|l| l.contains("workload process(es)")).expect(&text);
    assert!(workloads.starts_with("  - 1 workload process(es) (mongodb) that prepare would stop"), "{text}");
    let others = lines.iter().find(|l| l.contains("other process(es)")).expect(&text);
    assert!(others.contains(&format!("pid {other} sleep")) && others.contains("kill -9"), "{text}");
    assert!(lines.iter().any(|l| l.contains("1 mount(s) below it") && l.contains(&format!("{d}/below"))), "{text}");
    // The verdict comes before the table, and the table lists the workload before the other.
    let header = lines.iter().position(|l| l.trim_start().starts_with("PID ")).expect(&text);
    assert!(lines[..header].iter().all(|l| !l.trim_start().starts_with(&mongod.to_string())), "{text}");
    let row = |pid: i32| lines.iter().position(|l| l.split_whitespace().next() == Some(&pid.to_string())).expect(&text);
    assert!(header < row(mongod) && row(mongod) < row(other), "{text}");
    assert!(lines[row(mongod)].contains(" workload  mongodb"), "{text}");
    // JSON: the same verdict as fields, the old fields still there.
    assert_eq!(v["version"], 1);
    assert_eq!(v["verdict"]["holders"], true);
    assert_eq!(v["verdict"]["workload_processes"], 1);
    assert_eq!(v["verdict"]["other_processes"], 1);
    assert_eq!(v["processes"].as_array().unwrap().len(), 2);
}

#[test]
fn an_idle_filesystem_gets_the_all_clear() {
    if unusable() {
        return;
    }
    let fs = Mounted::tmpfs();
    let (text, v) = scan(fs.path(), &[]);
    let second = text.lines().nth(1).unwrap_or_default();
    assert!(second.starts_with("verdict: nothing that ade-prep or ADE would stop holds"), "{text}");
    assert!(!text.lines().any(|l| l.trim_start().starts_with("PID ")), "no table without holders: {text}");
    assert_eq!(v["verdict"]["holders"], false);
}

#[test]
fn all_lists_every_process_that_json_lists() {
    if unusable() {
        return;
    }
    let fs = Mounted::tmpfs();
    let mut h = Holders::default();
    for _ in 0..3 {
        h.shell("other", &format!("cd {} && exec sleep 1000", fs.path().display()));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (text, v) = scan(fs.path(), &["--all"]);
    let rows: Vec<i32> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("PID "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let json: Vec<i32> = v["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_i64().unwrap() as i32).collect();
    let mut ours: Vec<i32> = h.pids.iter().map(|p| p.0).collect();
    ours.sort_unstable();
    assert_eq!(rows, ours, "{text}");
    assert_eq!(json, ours);
}
