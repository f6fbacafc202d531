//! Starting etcd members and clusters on 127.0.0.1 for one test, and reading the group's key (and its history)
//! through the JSON gateway.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Where etcd and etcdctl are: `$ADE_ETCD_DIR/usr/bin` (tests/run.sh: `dpkg -x` of Debian's packages into the
/// harness cache), else the harness cache's default, else an installed /usr/bin/etcd.
pub fn bin_dir() -> Option<PathBuf> {
    let harness = std::env::var("ADE_HARNESS_DIR").unwrap_or_else(|_| "/var/cache/ade-prep-harness".into());
    let candidates = [
        std::env::var("ADE_ETCD_DIR").ok().map(|d| PathBuf::from(d).join("usr/bin")),
        Some(PathBuf::from(harness).join("etcd/usr/bin")),
        Some(PathBuf::from("/usr/bin")),
    ];
    candidates.into_iter().flatten().find(|d| d.join("etcd").is_file() && d.join("etcdctl").is_file())
}

/// A free loopback port (bound, then released: etcd takes it just after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One member.
pub struct Member {
    pub name: String,
    pub client: String,
    peer: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// A cluster (one or three members), killed on drop.
pub struct Cluster {
    pub members: Vec<Member>,
    /// etcd's client TLS flags (CA, cert, key) when serving https.
    tls: Option<[PathBuf; 3]>,
    bin: PathBuf,
    cluster: String,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until each answers /health.
    pub fn start(n: usize) -> Option<Cluster> {
        Self::start_with(n, None)
    }

    /// Starts `n` members serving clients over https with client-certificate authentication (CA, server cert, key).
    pub fn start_with(n: usize, tls: Option<[PathBuf; 3]>) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            super::common::skip("no etcd: tests/run.sh fetches Debian's etcd-server (or set ADE_ETCD_DIR)");
            return None;
        };
        let tmp = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("{}://127.0.0.1:{}", if tls.is_some() { "https" } else { "http" }, free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let cluster = members.iter().map(|m| format!("{}={}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut c = Cluster { members, tls, bin, cluster, _tmp: tmp };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::File::create(m.dir.with_extension("log")).unwrap();
        let mut cmd = Command::new(self.bin.join("etcd"));
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args(["--listen-client-urls", &m.client, "--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer, "--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("ade-prep-test-{}", std::process::id())])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .args(self.tls.iter().flat_map(|[ca, cert, key]| {
                [
                    "--client-cert-auth".into(),
                    format!("--trusted-ca-file={}", ca.display()),
                    format!("--cert-file={}", cert.display()),
                    format!("--key-file={}", key.display()),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Dies with the test thread that started it, whatever happens to the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        m.child = Some(cmd.spawn().expect("starting etcd"));
    }

    fn wait_healthy(&self, i: usize) {
        if let Some([ca, cert, key]) = &self.tls {
            // The plain agent cannot speak to it: etcdctl with the client certificate.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                let ok = Command::new(self.bin.join("etcdctl"))
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={}", self.members[i].client))
                    .arg(format!("--cacert={}", ca.display()))
                    .arg(format!("--cert={}", cert.display()))
                    .arg(format!("--key={}", key.display()))
                    .args(["endpoint", "health"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            panic!("etcd {} (TLS) did not become healthy in 60 s: {}", self.members[i].name, self.log(i));
        }
        let url = format!("{}/health", self.members[i].client);
        let agent = agent();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = agent.get(&url).call() {
                if r.into_body().read_to_string().unwrap_or_default().contains("\"true\"") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd {} did not become healthy in 60 s: {}", self.members[i].name, self.log(i));
    }

    /// The member's log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.members[i].dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills a member (SIGKILL: a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again on its data dir (a reboot).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// etcdctl (v3 API) on the live members.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let live: Vec<_> = self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client.clone()).collect();
        Command::new(self.bin.join("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The key's value (JSON) at `revision` (0: now), with its mod revision; None when absent.
pub fn read_key(endpoint: &str, key: &str, revision: i64) -> Option<(serde_json::Value, i64)> {
    let body = serde_json::json!({ "key": b64(key), "revision": revision.to_string() });
    let text = agent()
        .post(&format!("{endpoint}/v3/kv/range"))
        .send(body.to_string())
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kv = v.get("kvs")?.as_array()?.first()?.clone();
    let raw = base64::engine::general_purpose::STANDARD.decode(kv["value"].as_str().unwrap()).unwrap();
    let rev = kv["mod_revision"].as_str().unwrap().parse().unwrap();
    Some((serde_json::from_slice(&raw).unwrap(), rev))
}

/// Every value the key ever had (etcd keeps the history until compaction, which these tests never run).
pub fn history(endpoint: &str, key: &str) -> Vec<serde_json::Value> {
    let mut out = vec![];
    let mut rev = match read_key(endpoint, key, 0) {
        Some((_, r)) => r,
        None => return out,
    };
    // Walk back through mod revisions: the value at rev-1 is the previous version.
    while rev > 0 {
        match read_key(endpoint, key, rev) {
            Some((v, r)) => {
                out.push(v);
                rev = r - 1;
            }
            None => break,
        }
    }
    out.reverse();
    out
}

/// A fixture root for one simulated VM: its config (the [fleet] section given) and its SMBIOS UUID.
pub fn vm_root(dir: &Path, uuid: &str, fleet: &str) -> PathBuf {
    let root = dir.join(uuid);
    std::fs::create_dir_all(root.join("etc/ade-prep")).unwrap();
    std::fs::write(root.join("etc/ade-prep/config.toml"), fleet).unwrap();
    std::fs::create_dir_all(root.join("sys/class/dmi/id")).unwrap();
    std::fs::write(root.join("sys/class/dmi/id/product_uuid"), format!("{}\n", uuid.to_uppercase())).unwrap();
    root
}
