//! The fleet tests proper: the `fleet` verbs of the built binary for simulated VMs (each a fixture root with its
//! own config, SMBIOS UUID and state folder) and the library's backends from many threads.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ade_prep::config::{Fleet, FleetBackend};
use ade_prep::fleet::{self, Acquired, Released};

use super::common;
use super::etcd::{history, read_key, vm_root, Cluster};
use super::fleetlock_server::Server;

const KEY: &str = "com.coreos.airlock/groups/web/v1/semaphore";

fn ade_prep(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ade-prep")).arg("--root").arg(root).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn etcd_config(endpoints: &[String], slots: u64) -> String {
    let list = endpoints.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ");
    format!("[fleet]\nbackend = \"etcd\"\nendpoints = [{list}]\ngroup = \"web\"\nslots = {slots}\ntimeout_secs = 5\n")
}

fn holders(endpoint: &str) -> Vec<String> {
    let (v, _) = read_key(endpoint, KEY, 0).expect("the group's key exists");
    v["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
}

fn lib_fleet(endpoints: Vec<String>, slots: u64) -> Fleet {
    Fleet {
        backend: FleetBackend::Etcd,
        endpoints,
        group: "web".into(),
        slots,
        id: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        timeout_secs: 5,
    }
}

#[test]
fn single_member_acquire_records_the_slot_is_idempotent_and_a_full_group_says_busy() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    let cfg = etcd_config(&c.endpoints(), 1);
    let a = vm_root(t.path(), "aaaa-1111", &cfg);
    let b = vm_root(t.path(), "bbbb-2222", &cfg);

    let o = ade_prep(&a, &["fleet", "status"]);
    assert!(
        text(&o).contains("group web: no semaphore yet; the first acquire creates it with 1 slots"),
        "{}",
        text(&o)
    );
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("acquired: group web slot for aaaa-1111 (recorded on this VM)"), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111"]);
    let rec = a.join("var/lib/ade-prep/fleet-slot.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777, 0o600);
    let (v, rev) = read_key(&c.endpoints()[0], KEY, 0).unwrap();
    assert_eq!(v["total_slots"], 1);

    // Again: idempotent, nothing written.
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success() && text(&o).contains("already held"), "{}", text(&o));
    assert_eq!(read_key(&c.endpoints()[0], KEY, 0).unwrap().1, rev, "a re-acquire wrote the key");

    // Another VM: the group is full: exit 5 after the wait, naming the holder; no record.
    let started = std::time::Instant::now();
    let o = ade_prep(&b, &["fleet", "acquire", "--wait", "2"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(started.elapsed() >= Duration::from_secs(2), "it did not wait");
    assert!(text(&o).contains("all 1 slots are held (aaaa-1111)"), "{}", text(&o));
    assert!(!b.join("var/lib/ade-prep/fleet-slot.json").exists());

    // Status shows the holder with its since-when and this VM's record.
    let o = ade_prep(&a, &["fleet", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("group web: 1 of 1 slots held") && s.contains("aaaa-1111  since 20"), "{s}");
    assert!(s.contains("(this VM)") && s.contains("this VM's record: aaaa-1111 holds"), "{s}");
    let o = ade_prep(&b, &["fleet", "status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["free"].as_u64(), j["this_vm_holds"].as_bool()), (Some(0), Some(false)));

    // A waiting acquire gets the slot once it is released.
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || ade_prep(&b, &["fleet", "acquire", "--wait", "30"]))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let o = ade_prep(&a, &["fleet", "release"]);
    assert!(o.status.success() && text(&o).contains("released: group web slot of aaaa-1111"), "{}", text(&o));
    assert!(!rec.exists(), "release left the record");
    let o = waiter.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["bbbb-2222"]);
    // Releasing again: not held, still exit 0.
    let o = ade_prep(&a, &["fleet", "release"]);
    assert!(o.status.success() && text(&o).contains("not held"), "{}", text(&o));
}

#[test]
fn unreachable_etcd_is_a_clear_error_and_changes_nothing() {
    if common::need_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let port = super::etcd::free_port();
    let a = vm_root(t.path(), "aaaa-1111", &etcd_config(&[format!("http://127.0.0.1:{port}")], 1));
    let o = ade_prep(&a, &["fleet", "acquire", "--wait", "30"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&format!("no endpoint answered (http://127.0.0.1:{port}: ")) && e.contains("nothing changed"));
    assert!(!a.join("var/lib/ade-prep").exists(), "something was written");
}

#[test]
fn three_members_one_killed_mid_rollout_and_the_semaphore_still_holds() {
    let Some(mut c) = Cluster::start(3) else { return };
    let eps = c.endpoints();
    let b = fleet::backend(&lib_fleet(eps.clone(), 2)).unwrap();
    assert_eq!(b.acquire("vm-a", 1).unwrap(), Acquired::Taken);
    assert_eq!(b.acquire("vm-b", 2).unwrap(), Acquired::Taken);
    // Mid-rollout the first endpoint (the one the client used) dies.
    c.kill(0);
    assert!(matches!(b.acquire("vm-c", 3).unwrap(), Acquired::Busy(w) if w.contains("vm-a, vm-b")));
    assert_eq!(b.release("vm-a").unwrap(), Released::Released);
    assert_eq!(b.acquire("vm-c", 4).unwrap(), Acquired::Taken);
    // A new client whose first endpoint is the dead one goes on to the others.
    let b2 = fleet::backend(&lib_fleet(eps.clone(), 2)).unwrap();
    assert_eq!(b2.acquire("vm-c", 5).unwrap(), Acquired::AlreadyHeld);
    assert!(matches!(b2.acquire("vm-d", 5).unwrap(), Acquired::Busy(_)));
    assert_eq!(holders(&eps[1]), ["vm-b", "vm-c"]);
    // The member comes back and agrees.
    c.restart(0);
    assert_eq!(holders(&eps[0]), ["vm-b", "vm-c"]);
    assert!(history(&eps[1], KEY).iter().all(|v| v["holders"].as_array().unwrap().len() <= 2));
}

#[test]
fn many_concurrent_clients_for_fewer_slots_never_exceed_them() {
    let Some(c) = Cluster::start(3) else { return };
    const SLOTS: u64 = 3;
    const VMS: usize = 24;
    let eps = c.endpoints();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..VMS)
        .map(|i| {
            // Each client starts on another member.
            let mut e = eps.clone();
            e.rotate_left(i % 3);
            let (inside, most) = (inside.clone(), most.clone());
            std::thread::spawn(move || {
                let b = fleet::backend(&lib_fleet(e, SLOTS)).unwrap();
                let id = format!("vm-{i:02}");
                let r = fleet::acquire_waiting(
                    b.as_ref(),
                    &id,
                    Duration::from_secs(120),
                    Duration::from_millis(50),
                    |_| {},
                )
                .unwrap();
                assert_eq!(r, Acquired::Taken, "{id}");
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(b.release(&id).unwrap(), Released::Released, "{id}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= SLOTS as usize, "{} held at once", most.load(Ordering::SeqCst));
    // etcd's own history of the key: every version within the slots, every VM in and out once.
    let h = history(&eps[0], KEY);
    let max = h.iter().map(|v| v["holders"].as_array().unwrap().len()).max().unwrap();
    assert!(max <= SLOTS as usize, "a version of the key had {max} holders");
    assert_eq!(max, SLOTS as usize, "the slots were never all used: no contention tested");
    // The first acquire creates the key with its holder; then one write per acquire and per release.
    assert_eq!(h.len(), 2 * VMS, "one acquire and one release per VM, nothing else written");
    assert!(h.last().unwrap()["holders"].as_array().unwrap().is_empty());
}

#[test]
fn a_crashed_holder_keeps_its_slot_through_its_reboot_until_released() {
    if common::need_root() {
        return;
    }
    let Some(mut c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    let cfg = etcd_config(&c.endpoints(), 1);
    let a = vm_root(t.path(), "aaaa-1111", &cfg);
    let b = vm_root(t.path(), "bbbb-2222", &cfg);
    assert!(ade_prep(&a, &["fleet", "acquire"]).status.success());
    // The holder dies (its acquire process is long gone; no lease, no TTL) and etcd itself restarts.
    c.restart(0);
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111"]);
    assert_eq!(ade_prep(&b, &["fleet", "acquire"]).status.code(), Some(5));
    // The record survived on A; restore's success path gives it back (the hook restore calls).
    let paths = ade_prep::paths::Paths::under(&a);
    assert_eq!(fleet::record::read(&paths).unwrap().unwrap().id, "aaaa-1111");
    // ...unless etcd cannot be reached: then the record stays for the next try.
    c.kill(0);
    fleet::release_after_restore(&paths);
    let rec = fleet::record::read(&paths).unwrap().expect("the record went without a release");
    assert!(rec.release_pending, "a failed release after a good restore is not marked pending");
    c.restart(0);
    let o = ade_prep(&a, &["fleet", "status"]);
    assert!(text(&o).contains("this VM's record: release pending"), "{}", text(&o));
    // The deadline timer's restore (no window open) retries it.
    std::os::unix::fs::symlink("/proc", a.join("proc")).unwrap();
    let o = ade_prep(&a, &["restore", "--past-deadline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(fleet::record::read(&paths).unwrap().is_none(), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty());

    // An operator frees a dead VM's slot from another VM: --force needed.
    assert!(ade_prep(&a, &["fleet", "acquire"]).status.success());
    let o = ade_prep(&b, &["fleet", "release", "--id", "aaaa-1111"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("takes --force"));
    let o = ade_prep(&b, &["fleet", "release", "--id", "aaaa-1111", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty());
    // When A comes back its restore finds itself no longer a holder, says so and drops the record.
    fleet::release_after_restore(&paths);
    assert!(fleet::record::read(&paths).unwrap().is_none());
}

#[test]
fn an_airlock_layout_key_written_by_hand_is_honoured() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    // The config says 5 slots; the key (airlock's, written with etcdctl) says 2 and lists two holders.
    let a = vm_root(t.path(), "aaaa-1111", &etcd_config(&c.endpoints(), 5));
    let o = c.etcdctl(&["put", KEY, r#"{"total_slots":2,"holders":["node-x","node-y"]}"#]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("all 2 slots are held (node-x, node-y)"), "{}", text(&o));
    assert!(text(&o).contains("the stored semaphore has 2 slots, the configuration says 5"), "{}", text(&o));
    let o = ade_prep(&a, &["fleet", "status"]);
    assert!(text(&o).contains("the stored semaphore has 2 slots, the configuration says 5"), "{}", text(&o));
    // An operator frees one by hand; ade-prep takes it, keeping airlock's fields and order.
    assert!(c.etcdctl(&["put", KEY, r#"{"total_slots":3,"holders":["node-y","node-x"]}"#]).status.success());
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    // Written sorted: airlock finds holders by binary search (semaphore.go:34).
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111", "node-x", "node-y"]);
    assert!(ade_prep(&a, &["fleet", "release"]).status.success());
    assert!(c.etcdctl(&["put", KEY, r#"{"total_slots":2,"holders":["node-y"]}"#]).status.success());
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.etcdctl(&["get", KEY, "--print-value-only"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total_slots"], 2);
    assert_eq!(v["holders"], serde_json::json!(["aaaa-1111", "node-y"]));
    // A key that is not a semaphore is named, not overwritten.
    assert!(c.etcdctl(&["put", KEY, "not json"]).status.success());
    let o = ade_prep(&a, &["fleet", "release"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains(&format!("etcd key {KEY}: not a semaphore")), "{}", text(&o));
    assert_eq!(c.etcdctl(&["get", KEY, "--print-value-only"]).stdout, b"not json\n");
}

#[test]
fn the_fleetlock_backend_speaks_the_protocol_to_a_server_over_the_same_etcd() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let server = Server::start(c.endpoints(), &[("web", 1)]);
    let t = tempfile::tempdir().unwrap();
    let cfg = format!("[fleet]\nbackend = \"fleetlock\"\nendpoints = [\"{}/\"]\ngroup = \"web\"\n", server.url);
    let a = vm_root(t.path(), "aaaa-1111", &cfg);
    let b = vm_root(t.path(), "bbbb-2222", &cfg);
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(a.join("var/lib/ade-prep/fleet-slot.json").exists());
    // The server keeps it in airlock's key: the etcd backend's clients see the same group.
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111"]);
    assert!(ade_prep(&a, &["fleet", "acquire"]).status.success(), "a holder re-acquiring gets 200");
    let o = ade_prep(&b, &["fleet", "acquire", "--wait", "1"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("HTTP 500 failed_lock: all 1 semaphore slots currently locked"), "{}", text(&o));
    // A 4xx is an error, not a wait.
    let o = Command::new(env!("CARGO_BIN_EXE_ade-prep"))
        .arg("--root")
        .arg(&b)
        .args(["fleet", "--group", "nope", "acquire", "--wait", "30"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("HTTP 400 unknown_group"), "{}", text(&o));
    // Status is not part of the protocol: said so.
    let o = ade_prep(&a, &["fleet", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no status request"), "{}", text(&o));
    let o = ade_prep(&a, &["fleet", "release"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty());
    assert!(ade_prep(&b, &["fleet", "acquire"]).status.success());
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl command (test fixtures
/// only: ade-prep itself never uses OpenSSL).
fn make_certs(dir: &Path) -> Option<[std::path::PathBuf; 5]> {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").current_dir(dir).args(args).output();
        assert!(o.as_ref().is_ok_and(|o| o.status.success()), "openssl {args:?}: {o:?}");
    };
    if Command::new("openssl").arg("version").output().is_err() {
        common::skip("no openssl command to make test certificates");
        return None;
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca"]]
        .concat());
    for (name, ext) in [("server", "san.ext"), ("client", "client.ext")] {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }
    let p = |f: &str| dir.join(f);
    Some([p("ca.pem"), p("server.pem"), p("server.key"), p("client.pem"), p("client.key")])
}

#[test]
fn mutual_tls_with_the_configured_ca_and_client_certificate() {
    if common::need_root() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let Some([ca, server, server_key, client, client_key]) = make_certs(certs.path()) else { return };
    let Some(c) = Cluster::start_with(1, Some([ca.clone(), server, server_key])) else { return };
    let ep = &c.endpoints()[0];
    assert!(ep.starts_with("https://"));
    let t = tempfile::tempdir().unwrap();
    let base = etcd_config(&c.endpoints(), 1);
    let tls = format!(
        "{base}ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        ca.display().to_string(),
        client.display().to_string(),
        client_key.display().to_string()
    );
    let a = vm_root(t.path(), "aaaa-1111", &tls);
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ade_prep(&a, &["fleet", "status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["this_vm_holds"], true, "{}", text(&o));
    // Without the client certificate etcd refuses the handshake: an error, nothing recorded.
    let no_client = format!("{base}ca_file = {:?}\n", ca.display().to_string());
    let b = vm_root(t.path(), "bbbb-2222", &no_client);
    let o = ade_prep(&b, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no endpoint answered"), "{}", text(&o));
    assert!(!b.join("var/lib/ade-prep/fleet-slot.json").exists());
    // Without the CA the server's certificate is not trusted (the webpki roots do not know the test CA).
    let c_only = format!(
        "{base}cert_file = {:?}\nkey_file = {:?}\n",
        client.display().to_string(),
        client_key.display().to_string()
    );
    let d = vm_root(t.path(), "dddd-4444", &c_only);
    let o = ade_prep(&d, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = ade_prep(&a, &["fleet", "release"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A VM root that `run` can decide on: /proc linked to the real one, RHEL 8.6 (ADE encrypts its OS disk online,
/// no window), and ADE's request seq 0 "EnableEncryption, OS".
fn online_vm(dir: &Path, uuid: &str, cfg: &str) -> std::path::PathBuf {
    let root = vm_root(dir, uuid, cfg);
    std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.6\"\n")
        .unwrap();
    let settings =
        root.join("var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.1/config/0.settings");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(
        settings,
        r#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"OS"}}}]}"#,
    )
    .unwrap();
    root
}

#[test]
fn a_vm_whose_ade_request_opens_no_window_gives_its_slot_back() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    let cfg = etcd_config(&c.endpoints(), 1);
    let a = online_vm(t.path(), "aaaa-1111", &cfg);
    assert!(ade_prep(&a, &["fleet", "acquire"]).status.success());
    // run decides that ADE's request opens no window (online OS encryption): the slot goes back. run itself stays
    // up for ADE's next request (a data request may still need a window there), so it is stopped once the slot is
    // back or after 60 s.
    let child = Command::new(env!("CARGO_BIN_EXE_ade-prep"))
        .arg("--root")
        .arg(&a)
        .args(["-v", "run"])
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !holders(&c.endpoints()[0]).is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(text(&o).contains("encrypts the OS disk online"), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty(), "the slot stayed held: {}", text(&o));
    assert!(!a.join("var/lib/ade-prep/fleet-slot.json").exists());

    // restore with no window: the deadline timer's keeps a slot taken before ADE is enabled; a restore by hand (or
    // by an orchestrator) gives it back, every workload being up.
    let b = vm_root(t.path(), "bbbb-2222", &cfg);
    std::os::unix::fs::symlink("/proc", b.join("proc")).unwrap();
    assert!(ade_prep(&b, &["fleet", "acquire"]).status.success());
    let o = ade_prep(&b, &["restore", "--past-deadline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["bbbb-2222"]);
    let o = ade_prep(&b, &["restore"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty(), "{}", text(&o));
    assert!(!b.join("var/lib/ade-prep/fleet-slot.json").exists());
}

#[test]
fn release_and_acquire_follow_the_slot_recorded_on_the_vm() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    let a = vm_root(t.path(), "aaaa-1111", &etcd_config(&c.endpoints(), 1));
    let cache_key = "com.coreos.airlock/groups/cache/v1/semaphore";
    assert!(ade_prep(&a, &["fleet", "acquire"]).status.success());
    // Another group while web's slot is recorded: refused, naming web; nothing taken in cache, the record kept.
    let o = ade_prep(&a, &["fleet", "--group", "cache", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("this VM holds a slot of group web"), "{}", text(&o));
    assert!(read_key(&c.endpoints()[0], cache_key, 0).is_none());
    // Releasing in another group: refused, the record kept.
    let o = ade_prep(&a, &["fleet", "--group", "cache", "release"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("recorded in group web"), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111"]);
    // The configuration changes group since the acquire: release still gives back web's slot (the record's).
    std::fs::write(
        a.join("etc/ade-prep/config.toml"),
        etcd_config(&c.endpoints(), 1).replace("group = \"web\"", "group = \"cache\""),
    )
    .unwrap();
    let o = ade_prep(&a, &["fleet", "release"]);
    assert!(o.status.success() && text(&o).contains("released: group web slot of aaaa-1111"), "{}", text(&o));
    assert!(holders(&c.endpoints()[0]).is_empty());
    assert!(!a.join("var/lib/ade-prep/fleet-slot.json").exists());
}

#[test]
fn a_swap_after_the_key_was_deleted_and_recreated_fails() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let f = lib_fleet(c.endpoints(), 1);
    let mk = || fleet::etcd::Etcd::new(super::etcd::agent(), f.endpoints.clone(), "web", 1);
    let (stale, b) = (mk(), mk());
    assert!(c.etcdctl(&["put", KEY, r#"{"total_slots":1,"holders":[]}"#]).status.success());
    let (sem, stamp) = stale.read_stamped().unwrap();
    let mut sem = sem.unwrap();
    // An operator deletes the key (to change the group's slots, say); B's acquire creates it again at version 1.
    assert!(c.etcdctl(&["del", KEY]).status.success());
    use fleet::Backend as _;
    assert_eq!(b.acquire("vm-b", 1).unwrap(), Acquired::Taken);
    // The stale writer's swap of what it read (version 1 too) must not pass.
    sem.acquire("vm-c", 2);
    assert!(!stale.swap(&stamp, &sem).unwrap(), "a stale swap overwrote the recreated key");
    assert_eq!(holders(&c.endpoints()[0]), ["vm-b"]);
}

#[test]
fn a_lost_reply_to_a_committed_acquire_is_read_back_and_recorded() {
    if common::need_root() {
        return;
    }
    let Some(c) = Cluster::start(1) else { return };
    let t = tempfile::tempdir().unwrap();
    let proxy = super::proxy::Proxy::start(c.endpoints()[0].clone(), false);
    let a = vm_root(t.path(), "aaaa-1111", &etcd_config(std::slice::from_ref(&proxy.url), 1));
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111"]);
    assert!(a.join("var/lib/ade-prep/fleet-slot.json").exists(), "held in etcd but not recorded");
    // The reply is lost and etcd cannot be read again: the error says the slot may have been taken.
    assert!(c.etcdctl(&["put", KEY, r#"{"total_slots":2,"holders":["aaaa-1111"]}"#]).status.success());
    let silent = super::proxy::Proxy::start(c.endpoints()[0].clone(), true);
    let b = vm_root(t.path(), "bbbb-2222", &etcd_config(std::slice::from_ref(&silent.url), 2));
    let o = ade_prep(&b, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("it may have been applied") && !text(&o).contains("nothing changed"), "{}", text(&o));
    assert_eq!(holders(&c.endpoints()[0]), ["aaaa-1111", "bbbb-2222"]);
}

#[test]
fn fleetlock_releases_under_contention_all_succeed_against_a_one_try_server() {
    if common::need_root() {
        return;
    }
    const VMS: usize = 12;
    let Some(c) = Cluster::start(1) else { return };
    let server = Server::start(c.endpoints(), &[("web", VMS as u64)]);
    let f = Fleet { backend: FleetBackend::Fleetlock, ..lib_fleet(vec![server.url.clone()], VMS as u64) };
    let barrier = Arc::new(std::sync::Barrier::new(VMS));
    let threads: Vec<_> = (0..VMS)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                let b = fleet::backend(&f).unwrap();
                let id = format!("vm-{i:02}");
                let got =
                    fleet::acquire_waiting(b.as_ref(), &id, Duration::from_secs(60), Duration::from_millis(50), |_| {});
                assert!(matches!(got, Ok(Acquired::Taken)), "{id}: {got:?}");
                barrier.wait();
                b.release(&id).map_err(|e| format!("{id}: {e}"))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "releases lost to airlock's one-try conflicts: {failed:?}");
    assert!(holders(&c.endpoints()[0]).is_empty());
}

#[test]
fn fleetlock_failed_sem_init_is_an_error_at_once_not_a_full_group() {
    if common::need_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // The FleetLock server's own etcd is down.
    let server = Server::start(vec![format!("http://127.0.0.1:{}", super::etcd::free_port())], &[("web", 1)]);
    let cfg = format!("[fleet]\nbackend = \"fleetlock\"\nendpoints = [\"{}\"]\ngroup = \"web\"\n", server.url);
    let a = vm_root(t.path(), "aaaa-1111", &cfg);
    let started = std::time::Instant::now();
    let o = ade_prep(&a, &["fleet", "acquire", "--wait", "30"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(15), "it waited as if the group were full");
    assert!(text(&o).contains("failed_sem_init"), "{}", text(&o));
    assert!(!a.join("var/lib/ade-prep/fleet-slot.json").exists());
}

#[test]
fn fleetlock_a_request_sent_but_unanswered_is_not_called_nothing_changed() {
    if common::need_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // A server that reads the request and closes without an answer (it may have taken the slot).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Read as _;
            let mut buf = [0u8; 4096];
            let _ = (&s).read(&mut buf);
        }
    });
    let cfg = format!("[fleet]\nbackend = \"fleetlock\"\nendpoints = [\"{url}\"]\ngroup = \"web\"\n");
    let a = vm_root(t.path(), "aaaa-1111", &cfg);
    let o = ade_prep(&a, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("it may have been applied") && !text(&o).contains("nothing changed"), "{}", text(&o));
    // Refused: nothing was sent, nothing changed.
    let port = super::etcd::free_port();
    let cfg = format!("[fleet]\nbackend = \"fleetlock\"\nendpoints = [\"http://127.0.0.1:{port}\"]\ngroup = \"web\"\n");
    let b = vm_root(t.path(), "bbbb-2222", &cfg);
    let o = ade_prep(&b, &["fleet", "acquire"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing changed"), "{}", text(&o));
}
