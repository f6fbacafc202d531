//! The catalogue's database entries (docs/workloads.md) with the real Debian 12 packages, in the `db` guest
//! (rootfs-db: rootfs-ns plus postgresql 15 and mariadb-server; redis-server is in every guest), systemd 252.
//!
//! Each test starts the database by its own unit, then a writer commits numbered rows (keys) one at a time, each
//! retried until acknowledged, while `ade-prep prepare` stops the database (it holds `/`) and `ade-prep restore`
//! starts it again. Afterwards every acknowledged number is there, the numbers run 1..=N with no gap, the
//! database answers its probe, and `status` names it ready.
//!
//! `workloads_in_nspawn` (host side) boots the `db` guest once and runs this binary's `workloads::in_container_*`
//! tests inside it. It skips (SKIPPED) when rootfs-db has not been built (`tests/harness/build-guest.sh
//! --nspawn-only`).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{inside, sd, sh, sh_ok as ok, wait_for};
use crate::prepare::{ade, prepare, state, window_open, write_config};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 3;

#[test]
fn workloads_in_nspawn() {
    let _one = crate::common::one_guest();
    if let Err(e) = crate::common::nspawn_suite_on("workloads", "db", IN_CONTAINER_TESTS, 600) {
        panic!("{e}");
    }
}

// ---- inside the container ---------------------------------------------------------------------------------

/// A writer committing 1, 2, 3... through `commit` (true: acknowledged), each number retried until it is, from
/// another thread; `stop` ends it and returns the last acknowledged number and how many attempts failed.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Writer {
    fn start(commit: impl Fn(u64) -> bool + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut n, mut failed) = (1u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                if commit(n) {
                    n += 1;
                } else {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (n - 1, failed)
        });
        Writer { stop, handle }
    }

    /// Lets it write until at least `n` numbers are acknowledged, counted by `count` (panics after `secs`).
    fn stop_after(self, n: u64, secs: u64, count: impl Fn() -> u64) -> (u64, u64) {
        wait_for(&format!("{n} acknowledged writes"), secs, || count() >= n);
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the writer")
    }
}

/// The window through the database: prepare stops it (it holds `/`), restore starts it and waits for its probe.
/// `pre_stop`: whether the workload's pre-stop must have run (not skipped).
fn window(unit: &str, workload: &str, pre_stop: bool) {
    let sd = sd();
    write_config("");
    assert!(!window_open(), "a window is open before the test");
    let t = Instant::now();
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "prepare: {r:?}");
    assert!(r.stderr.contains(unit) || r.stdout.contains(unit), "{r:?}");
    if pre_stop {
        assert!(r.stderr.contains(&format!("pre-stop {workload}: running")), "{r:?}");
        assert!(!r.stderr.contains("does not apply"), "{r:?}");
    }
    assert_ne!(state(&sd, unit), "active", "{unit} still running in the window");
    println!("MEASURED: {workload} prepare {:.1}s", t.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let r = ade(&["restore", "-v"]);
    assert_eq!(r.code, 0, "restore: {r:?}");
    assert!(r.stderr.contains(&format!("workload {workload} is ready")), "{r:?}");
    println!("MEASURED: {workload} restore {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(state(&sd, unit), "active");
    let s = ade(&["status"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains(&format!("workload {workload}: ready (probe ")), "{s:?}");
}

/// Every number 1..=last is there exactly once (no gap, nothing lost).
fn assert_no_gap(what: &str, mut got: Vec<u64>, last: u64) {
    got.sort_unstable();
    let want: Vec<u64> = (1..=last).collect();
    let got_upto: Vec<u64> = got.iter().copied().filter(|n| *n <= last).collect();
    assert_eq!(got_upto, want, "{what}: acknowledged writes missing or duplicated");
    assert!(got.len() as u64 <= last + 1, "{what}: {} rows for {last} acknowledged", got.len());
}

#[test]
#[ignore = "runs inside the nspawn container, started by workloads_in_nspawn"]
fn in_container_postgresql_keeps_every_acknowledged_row_through_the_window() {
    if !inside() {
        return;
    }
    let unit = "postgresql@15-main.service";
    ok(&["systemctl", "start", unit]);
    let psql = |sql: &str| -> std::process::Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap()
    };
    wait_for("pg_isready", 60, || sh(&["pg_isready", "-q"]).status.success());
    let o = psql("DROP TABLE IF EXISTS w; CREATE TABLE w (n bigint PRIMARY KEY)");
    assert!(o.status.success(), "{o:?}");
    let count = || -> u64 {
        let o = psql("SELECT count(*) FROM w");
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
    };
    let w = Writer::start(move |n| {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-X", "-q", "-c"])
            .arg(format!("INSERT INTO w VALUES ({n}) ON CONFLICT DO NOTHING"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    wait_for("the first rows", 30, || count() >= 20);
    window(unit, "postgresql", true);
    let before = count();
    let (last, failed) = w.stop_after(before + 20, 60, count);
    println!("MEASURED: postgresql {last} rows acknowledged, {failed} attempts refused during the window");
    let o = psql("SELECT n FROM w");
    let got: Vec<u64> = String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_no_gap("postgresql", got, last);
    assert!(sh(&["runuser", "-u", "postgres", "--", "pg_isready", "-q"]).status.success());
    ok(&["systemctl", "stop", unit]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by workloads_in_nspawn"]
fn in_container_mariadb_keeps_every_acknowledged_row_through_the_window() {
    if !inside() {
        return;
    }
    let unit = "mariadb.service";
    ok(&["systemctl", "start", unit]);
    let sql = |q: &str| Command::new("mariadb").args(["-N", "-B", "-e", q]).output().unwrap();
    wait_for("mysqladmin ping", 60, || sh(&["mysqladmin", "--silent", "ping"]).status.success());
    let o = sql("CREATE DATABASE IF NOT EXISTS ade; DROP TABLE IF EXISTS ade.w; \
                 CREATE TABLE ade.w (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    assert!(o.status.success(), "{o:?}");
    let count = move || -> u64 {
        let o = sql("SELECT count(*) FROM ade.w");
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
    };
    let w = Writer::start(|n| {
        Command::new("mariadb")
            .args(["-e", &format!("INSERT IGNORE INTO ade.w VALUES ({n})")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    wait_for("the first rows", 30, || count() >= 20);
    window(unit, "mariadb", false);
    let before = count();
    let (last, failed) = w.stop_after(before + 20, 60, count);
    println!("MEASURED: mariadb {last} rows acknowledged, {failed} attempts refused during the window");
    let o = sql("SELECT n FROM ade.w");
    let got: Vec<u64> = String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_no_gap("mariadb", got, last);
    assert!(sh(&["mysqladmin", "--silent", "ping"]).status.success());
    ok(&["systemctl", "stop", unit]);
}

#[test]
#[ignore = "runs inside the nspawn container, started by workloads_in_nspawn"]
fn in_container_redis_keeps_every_acknowledged_key_through_the_window() {
    if !inside() {
        return;
    }
    let unit = "redis-server.service";
    ok(&["systemctl", "start", unit]);
    wait_for("redis-cli ping", 30, || ok(&["redis-cli", "ping"]).trim() == "PONG");
    // Snapshots on (Debian's redis.conf keeps Redis's default save points): the pre-stop SAVE applies.
    let save = ok(&["redis-cli", "--raw", "CONFIG", "GET", "save"]);
    assert_ne!(save.trim(), "save", "snapshots are configured: {save:?}");
    ok(&["redis-cli", "FLUSHALL"]);
    let count = || -> u64 {
        let o = sh(&["redis-cli", "DBSIZE"]);
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
    };
    let w = Writer::start(|n| {
        // redis-cli exits 0 on an error reply in some versions: the reply itself is the acknowledgement.
        Command::new("redis-cli")
            .args(["SET", &format!("k:{n}"), &n.to_string()])
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "OK")
    });
    wait_for("the first keys", 30, || count() >= 20);
    window(unit, "redis", true);
    let before = count();
    let (last, failed) = w.stop_after(before + 20, 60, count);
    println!("MEASURED: redis {last} keys acknowledged, {failed} attempts refused during the window");
    let keys = ok(&["redis-cli", "--raw", "KEYS", "k:*"]);
    let got: Vec<u64> = keys.lines().filter_map(|l| l.trim().strip_prefix("k:")?.parse().ok()).collect();
    assert_no_gap("redis", got, last);
    assert_eq!(ok(&["redis-cli", "ping"]).trim(), "PONG");
    ok(&["systemctl", "stop", unit]);
}
