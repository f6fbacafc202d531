//! A FleetLock server for the tests (coreos/zincati docs/development/fleetlock/protocol.md), in the manner of
//! airlock (coreos/airlock internal/server/*.go): `POST /v1/pre-reboot` and `/v1/steady-state`, the header
//! `fleet-lock-protocol: true`, the body `{"client_params": {"id", "group"}}`, 200 or `{"kind", "value"}` with 400
//! (bad identity, unknown group) or 500 (the lock failed, e.g. full). It keeps the semaphore in etcd through
//! ade-prep's etcd backend (airlock's layout), so both backends share one group. HTTP/1.1 by hand: one request per
//! connection, a thread each; it stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ade_prep::config::{Fleet, FleetBackend};
use ade_prep::fleet::Acquired;

pub struct Server {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn fleet(endpoints: &[String], group: &str, slots: u64) -> Fleet {
    Fleet {
        backend: FleetBackend::Etcd,
        endpoints: endpoints.to_vec(),
        group: group.into(),
        slots,
        id: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        timeout_secs: 5,
    }
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
    let b = match ade_prep::fleet::backend(&fleet(etcd, group, slots)) {
        Ok(b) => b,
        Err(e) => return respond(&mut s, 500, &error("failed_sem_init", &e.to_string())),
    };
    if path == "/v1/pre-reboot" {
        match b.acquire(id, ade_prep::clock::now()) {
            Ok(Acquired::Taken | Acquired::AlreadyHeld) => respond(&mut s, 200, ""),
            Ok(Acquired::Busy(why)) => respond(&mut s, 500, &error("failed_lock", &why)),
            Err(e) => respond(&mut s, 500, &error("failed_lock", &e.to_string())),
        }
    } else {
        match b.release(id) {
            Ok(_) => respond(&mut s, 200, ""),
            Err(e) => respond(&mut s, 500, &error("failed_unlock", &e.to_string())),
        }
    }
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
