//! A FleetLock server for the tests (coreos/zincati docs/development/fleetlock/protocol.md), in the manner of
//! airlock (coreos/airlock internal/server/*.go): `POST /v1/pre-reboot` and `/v1/steady-state`, the header
//! `fleet-lock-protocol: true`, the body `{"client_params": {"id", "group"}}`, 200 or `{"kind", "value"}` with 400
//! (bad identity, unknown group) or 500 (the lock failed: full, a lost race, etcd unreachable). It keeps the
//! semaphore in etcd in airlock's layout and with airlock's one-try compare-and-swap on the key's version (not
//! ade-prep's etcd client, whose retries would hide airlock's conflicts), so both backends share one group. HTTP/1.1 by hand: one request per
//! connection, a thread each; it stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ade_prep::fleet::semaphore::Acquire;
use ade_prep::fleet::Semaphore;
use base64::Engine as _;

pub struct Server {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn respond(s: &mut TcpStream, code: u16, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn error(kind: &str, value: &str) -> String {
    serde_json::json!({ "kind": kind, "value": value }).to_string()
}

fn handle(mut s: TcpStream, etcd: &[String], groups: &BTreeMap<String, u64>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
    let (mut len, mut proto) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "fleet-lock-protocol" => proto = v.trim() == "true",
                _ => {}
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    if method != "POST" || (path != "/v1/pre-reboot" && path != "/v1/steady-state") {
        return respond(&mut s, 404, &error("not_found", &format!("{method} {path}")));
    }
    // airlock http_params.go:28-44: the header, then a non-empty group and id.
    if !proto {
        return respond(&mut s, 400, &error("invalid_client_identity", "wrong 'fleet-lock-protocol' header"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (id, group) =
        (v["client_params"]["id"].as_str().unwrap_or(""), v["client_params"]["group"].as_str().unwrap_or(""));
    if id.is_empty() || group.is_empty() {
        return respond(&mut s, 400, &error("invalid_client_identity", "empty client group or ID"));
    }
    let Some(&slots) = groups.get(group) else {
        return respond(&mut s, 400, &error("unknown_group", &format!("unknown group {group:?}")));
    };
    // airlock's lock manager (internal/lock/lock.go): ensureInit creates the key if absent ("version = 0 → put",
    // lock.go:137-142), failing as `failed_sem_init` (pre_reboot.go:73-79); then ONE read, edit, "version = what
    // was read → put" (lock.go:150-210): a lost race is `500 failed_lock` "conflict on semaphore detected,
    // aborting" (lock.go:208-209), never retried; steady-state writes even for a non-holder (lock.go:95-101).
    if let Err(e) = ensure_init(etcd, group, slots) {
        return respond(&mut s, 500, &error("failed_sem_init", &e));
    }
    let (mut sem, version) = match get(etcd, group) {
        Ok(Some(x)) => x,
        Ok(None) => return respond(&mut s, 500, &error("failed_lock", "semaphore vanished")),
        Err(e) => return respond(&mut s, 500, &error("failed_lock", &e)),
    };
    if path == "/v1/pre-reboot" {
        match sem.acquire(id, 0) {
            Acquire::AlreadyHeld => return respond(&mut s, 200, ""),
            Acquire::Full => {
                let why = format!("all {} semaphore slots currently locked", sem.total_slots);
                return respond(&mut s, 500, &error("failed_lock", &why));
            }
            Acquire::Taken => {}
        }
    } else {
        sem.release(id);
    }
    match put_if(etcd, group, version, &sem) {
        Ok(true) => respond(&mut s, 200, ""),
        Ok(false) => respond(&mut s, 500, &error("failed_lock", "conflict on semaphore detected, aborting")),
        Err(e) => respond(&mut s, 500, &error("failed_lock", &e)),
    }
}

fn key(group: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ade_prep::fleet::etcd::key(group))
}

/// One POST to the first etcd endpoint.
fn call(etcd: &[String], path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
    let r =
        super::etcd::agent().post(&format!("{}{path}", etcd[0])).send(body.to_string()).map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("etcd: HTTP {}", r.status()));
    }
    let text = r.into_body().read_to_string().map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn ensure_init(etcd: &[String], group: &str, slots: u64) -> Result<(), String> {
    let k = key(group);
    let value = base64::engine::general_purpose::STANDARD.encode(Semaphore::new(slots).to_json());
    call(
        etcd,
        "/v3/kv/txn",
        serde_json::json!({
            "compare": [{ "key": k, "result": "EQUAL", "target": "VERSION", "version": "0" }],
            "success": [{ "request_put": { "key": k, "value": value } }],
        }),
    )
    .map(drop)
}

fn get(etcd: &[String], group: &str) -> Result<Option<(Semaphore, String)>, String> {
    let v = call(etcd, "/v3/kv/range", serde_json::json!({ "key": key(group) }))?;
    let Some(kv) = v.get("kvs").and_then(|k| k.get(0)) else { return Ok(None) };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(kv["value"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let sem = Semaphore::parse(&raw)?;
    Ok(Some((sem, kv["version"].as_str().unwrap_or("0").to_string())))
}

fn put_if(etcd: &[String], group: &str, version: String, sem: &Semaphore) -> Result<bool, String> {
    let k = key(group);
    let value = base64::engine::general_purpose::STANDARD.encode(sem.to_json());
    let v = call(
        etcd,
        "/v3/kv/txn",
        serde_json::json!({
            "compare": [{ "key": k, "result": "EQUAL", "target": "VERSION", "version": version }],
            "success": [{ "request_put": { "key": k, "value": value } }],
        }),
    )?;
    Ok(v.get("succeeded").and_then(|b| b.as_bool()).unwrap_or(false))
}

impl Server {
    /// Serves `groups` (name → slots) over the etcd at `etcd`.
    pub fn start(etcd: Vec<String>, groups: &[(&str, u64)]) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let groups: BTreeMap<String, u64> = groups.iter().map(|(g, n)| (g.to_string(), *n)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (etcd, groups) = (etcd.clone(), groups.clone());
                        std::thread::spawn(move || handle(s, &etcd, &groups));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { url, stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
