//! The packages under test (target/packages), built by packaging/build.sh when missing or older than their sources.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The built .deb and .rpm.
pub struct Packages {
    /// target/packages/ade-prep_VERSION_amd64.deb
    pub deb: PathBuf,
    /// target/packages/ade-prep-VERSION-1.x86_64.rpm
    pub rpm: PathBuf,
    /// target/packages/ade-prep_VERSION_amd64.changes (for lintian)
    pub changes: PathBuf,
}

/// The checkout.
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The newest modification time of the tracked files under `paths` (git ls-files: build products in debian/ and
/// target/ do not count).
fn newest_source(src: &Path, paths: &[&str]) -> SystemTime {
    let o = Command::new("git").arg("-C").arg(src).args(["ls-files", "-z", "--"]).args(paths).output().unwrap();
    assert!(o.status.success(), "git ls-files: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .filter_map(|f| std::fs::symlink_metadata(src.join(String::from_utf8_lossy(f).as_ref())).ok())
        .filter_map(|m| m.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// True when `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

static BUILD: Mutex<()> = Mutex::new(());

/// The packages, built first when missing or stale; None (after `skip`) when the build tools are not installed.
pub fn packages() -> Option<Packages> {
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let src = source_dir();
    let v = env!("CARGO_PKG_VERSION");
    let out = src.join("target/packages");
    let p = Packages {
        deb: out.join(format!("ade-prep_{v}_amd64.deb")),
        rpm: out.join(format!("ade-prep-{v}-1.x86_64.rpm")),
        changes: out.join(format!("ade-prep_{v}_amd64.changes")),
    };
    let sources = ["src", "examples", "packaging", "debian", "rpm", "Cargo.toml", "Cargo.lock", "README.md", "LICENSE"];
    let newest_source = newest_source(&src, &sources);
    let built = |f: &Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let fresh = [&p.deb, &p.rpm].iter().all(|f| built(f).is_some_and(|t| t >= newest_source));
    if !fresh {
        for tool in ["dpkg-buildpackage", "dh", "rpmbuild", "cargo-zigbuild"] {
            if !have(tool) {
                super::skip(&format!("{tool} not installed (tests/run.sh installs it)"));
                return None;
            }
        }
        std::fs::create_dir_all(&out).unwrap();
        let log = out.join("build.log");
        eprintln!("building the packages: packaging/build.sh > {}", log.display());
        let t = std::time::Instant::now();
        let f = std::fs::File::create(&log).unwrap();
        let status =
            Command::new(src.join("packaging/build.sh")).stdout(f.try_clone().unwrap()).stderr(f).status().unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<_> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        assert!(status.success(), "packaging/build.sh failed ({status}); log {}:\n{}", log.display(), tail.join("\n"));
        eprintln!("packages built in {:.0?}", t.elapsed());
    }
    Some(p)
}
