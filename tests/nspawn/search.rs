//! Issue 25, Elasticsearch/OpenSearch against a stand-in: no Debian package exists, so a small server speaking the
//! part of Elasticsearch's HTTP API that the catalogue's steps use (python3's `socket` only: the guests have
//! python3-minimal, without http.server) runs as `elasticsearch.service` and records every request. The steps are
//! run by the real curl: the guests have none, so the host's (Debian 12 as the guests) is bound in with its
//! libraries at /opt/ade-curl. Asserted: the calls prepare and restore make, their bodies and their order. On
//! systemd 252 and 219.

use std::path::Path;

use crate::common::{inside_with_scenarios as inside, sh, IN_CONTAINER};
use crate::prepare::{ade, baseline, prepare, state, window_open, BASE};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 1;

/// The host's curl and the libraries it links (but the C library and the loader, the guests' own), copied to
/// `dir/bin` and `dir/lib`.
fn copy_host_curl(dir: &Path) -> Result<(), String> {
    let curl = Path::new("/usr/bin/curl");
    if !curl.exists() {
        return Err("no /usr/bin/curl on the host".into());
    }
    std::fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("lib")).map_err(|e| e.to_string())?;
    std::fs::copy(curl, dir.join("bin/curl")).map_err(|e| e.to_string())?;
    let ldd = std::process::Command::new("ldd").arg(curl).output().map_err(|e| format!("ldd: {e}"))?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`
        let Some((name, rest)) = line.trim().split_once(" => ") else { continue };
        let Some(path) = rest.split_whitespace().next() else { continue };
        if name.starts_with("libc.so") || name.starts_with("ld-linux") {
            continue;
        }
        std::fs::copy(path, dir.join("lib").join(name)).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

#[test]
fn search_in_nspawn() {
    if std::env::var(IN_CONTAINER).is_ok() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        crate::common::skip_nspawn("search", "not root (systemd-nspawn needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    copy_host_curl(dir.path()).unwrap_or_else(|e| panic!("the stand-in test runs the host's curl: {e}"));
    let bind = format!("{}:/opt/ade-curl", dir.path().display());
    // One guest after the other: the containers share the host's network, and each stand-in listens on
    // 127.0.0.1:9200 (side by side, one guest's curl reached the other's stand-in).
    let _one = crate::common::one_guest();
    let failed: Vec<String> = crate::common::nspawn_guests()
        .iter()
        .filter_map(|g| {
            crate::common::nspawn_suite_on_with("search", g, IN_CONTAINER_TESTS, 300, std::slice::from_ref(&bind))
                .err()
                .map(|e| format!("[guest {g}] {e}"))
        })
        .collect();
    assert!(failed.is_empty(), "search failed on {} guest(s):\n{}", failed.len(), failed.join("\n\n"));
}

// ---- inside the container ---------------------------------------------------------------------------------

const UNIT: &str = "elasticsearch.service";
const SERVER: &str = "/usr/local/libexec/ade-es-standin.py";
const REQUESTS: &str = "/var/lib/ade-es-standin/requests.log";

/// The stand-in: 127.0.0.1:9200, one request at a time; each logged as `METHOD PATH|CONTENT-TYPE|BODY`; 200 with
/// `{"acknowledged":true}`, or `{"status":"green"}` for the health API (500 for `_flush` while
/// /run/ade-es-fail-flush exists). READY=1 once it listens (Type=notify, as
/// the vendors' units are).
const SERVER_PY: &str = r#"import os, socket
LOG = "/var/lib/ade-es-standin/requests.log"
os.makedirs(os.path.dirname(LOG), exist_ok=True)
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9200))
srv.listen(16)
log = open(LOG, "a")
n = os.environ.get("NOTIFY_SOCKET")
if n:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", "\0" + n[1:] if n.startswith("@") else n)
while True:
    c, _ = srv.accept()
    f = c.makefile("rb")
    words = f.readline().decode().split()
    headers = {}
    while True:
        h = f.readline().decode()
        if h in ("\r\n", "\n", ""):
            break
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", "0"))).decode()
    log.write("%s %s|%s|%s\n" % (words[0], words[1], headers.get("content-type", ""), body))
    log.flush()
    out = b'{"status":"green"}' if words[1].startswith("/_cluster/health") else b'{"acknowledged":true}'
    code = "200 OK"
    if words[1] == "/_flush" and os.path.exists("/run/ade-es-fail-flush"):
        code, out = "500 Internal Server Error", b'{"error":"stand-in told to fail"}'
    head = "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    c.sendall((head % (code, len(out))).encode() + out)
    c.close()
"#;

fn requests() -> Vec<String> {
    std::fs::read_to_string(REQUESTS).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
#[ignore = "runs inside the nspawn container, started by search_in_nspawn"]
fn in_container_elasticsearch_allocation_and_flush_before_the_stop_allocation_and_health_after_the_start() {
    if !inside() {
        return;
    }
    let sd = baseline(BASE);
    // The host's curl, through a wrapper on PATH that finds its libraries.
    std::fs::write(
        "/usr/local/bin/curl",
        "#!/bin/sh\nLD_LIBRARY_PATH=/opt/ade-curl/lib exec /opt/ade-curl/bin/curl \"$@\"\n",
    )
    .unwrap();
    assert!(sh(&["chmod", "755", "/usr/local/bin/curl"]).status.success());
    let v = sh(&["curl", "--version"]);
    assert!(v.status.success(), "curl: {}", String::from_utf8_lossy(&v.stderr));
    // The stand-in, as the vendor's unit runs the node (Type=notify), its main class as an argument.
    std::fs::create_dir_all(Path::new(SERVER).parent().unwrap()).unwrap();
    std::fs::write(SERVER, SERVER_PY).unwrap();
    let _ = std::fs::remove_file(REQUESTS);
    std::fs::write(
        format!("/etc/systemd/system/{UNIT}"),
        format!(
            "[Unit]\nDescription=ade-prep test: Elasticsearch stand-in (its HTTP API only)\n[Service]\nType=notify\n\
             ExecStart=/usr/bin/python3 {SERVER} org.elasticsearch.bootstrap.Elasticsearch\n"
        ),
    )
    .unwrap();
    assert!(sh(&["systemctl", "daemon-reload"]).status.success());
    let st = sh(&["systemctl", "start", UNIT]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));

    let r = prepare(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(state(&sd, UNIT), "inactive", "{r:?}");
    let primaries = "PUT /_cluster/settings|application/json|{\"persistent\":{\"cluster.routing.allocation.enable\":\"primaries\"}}";
    let flush = "POST /_flush||";
    assert_eq!(requests(), [primaries, flush], "before the stop, in this order: {r:?}");

    let r = ade(&["restore", "-v"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(state(&sd, UNIT), "active");
    let back = "PUT /_cluster/settings|application/json|{\"persistent\":{\"cluster.routing.allocation.enable\":null}}";
    let health = "GET /_cluster/health?wait_for_status=yellow&timeout=5s||";
    assert_eq!(requests(), [primaries, flush, back, health], "after the start, in this order: {r:?}");
    assert!(r.stderr.contains("workload elasticsearch is ready"), "{r:?}");
    // `status` asks the probe again.
    assert!(!window_open());
    assert_eq!(requests(), [primaries, flush, back, health, health]);

    // The flush fails: prepare refuses and rolls back, the node never stopped, and the rollback sets allocation
    // back (else the cluster would stay limited to primaries).
    std::fs::write("/run/ade-es-fail-flush", "").unwrap();
    let before = requests().len(); // the stand-in keeps its log open: read past what is there
    let r = prepare(&[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("rolled back"), "{r:?}");
    assert_eq!(state(&sd, UNIT), "active");
    assert_eq!(requests()[before..], [primaries, flush, back, health], "{r:?}");
    assert!(!window_open());
    std::fs::remove_file("/run/ade-es-fail-flush").unwrap();

    let _ = sh(&["systemctl", "stop", UNIT]);
    let _ = std::fs::remove_file(format!("/etc/systemd/system/{UNIT}"));
    let _ = sh(&["systemctl", "daemon-reload"]);
    let _ = std::fs::remove_file("/usr/local/bin/curl");
}
