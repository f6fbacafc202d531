//! A proxy in front of one etcd member that forwards every request but loses the answer to each transaction it
//! forwarded (the connection is closed once etcd has answered): a write that committed while its reply was lost.
//! With `then_silent`, every request after such a transaction is dropped unanswered (etcd unreachable after the
//! write). HTTP/1.1 by hand, one request per connection; it stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Proxy {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn handle(mut s: TcpStream, etcd: &str, then_silent: bool, lost: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    if r.read_exact(&mut body).is_err() || (then_silent && lost.load(Ordering::SeqCst)) {
        return;
    }
    let Ok(resp) = super::etcd::agent().post(&format!("{etcd}{path}")).send(&body[..]) else { return };
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    if path == "/v3/kv/txn" {
        lost.store(true, Ordering::SeqCst);
        return; // committed (or not) in etcd; the client never hears
    }
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

impl Proxy {
    pub fn start(etcd: String, then_silent: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (etcd, lost) = (etcd.clone(), lost.clone());
                        std::thread::spawn(move || handle(s, &etcd, then_silent, &lost));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { url, stop, thread: Some(thread) }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
