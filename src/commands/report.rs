//! `report`: the support bundle: `check`, `scan` and `status` as JSON, the journal and its `.prev`, the hold list,
//! the units involved, ade-prep's journald entries of the last boots, ADE's logs, settings and status files (secrets
//! redacted) and markers, with a manifest of what was collected and what could not be read, as one .tar.gz. Reads
//! only; it must not change the machine (it writes the archive and nothing else).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::out;
use crate::bundle::{self, Bundle};
use crate::checks;
use crate::clock;
use crate::config::Settings;
use crate::exit;
use crate::extension::ADE_HANDLER;
use crate::paths::Paths;
use crate::window::hold;
use crate::window::store::FileStore;

/// Largest part of one file kept (its end: logs grow at the end).
const FILE_CAP: usize = 32 << 20;
/// Deepest folder level walked under ADE's folders.
const MAX_DEPTH: usize = 6;

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = std::fs::read(path)?;
    if b.len() > FILE_CAP {
        b.drain(..b.len() - FILE_CAP);
    }
    Ok(b)
}

fn file(b: &mut Bundle, name: &str, path: &Path, redact: bool) {
    match read_capped(path) {
        Ok(bytes) if redact => b.add_redacted(name, &path.display().to_string(), bytes),
        Ok(bytes) => b.add(name, &path.display().to_string(), bytes),
        Err(e) => b.missing(name, format!("{}: {e}", path.display())),
    }
}

/// Every regular file under `dir` (symlinks not followed), as `prefix/relative path`.
fn tree(b: &mut Bundle, prefix: &str, dir: &Path, redact: &dyn Fn(&Path) -> bool) {
    fn walk(b: &mut Bundle, prefix: &str, dir: &Path, depth: usize, redact: &dyn Fn(&Path) -> bool) {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return b.missing(prefix, format!("{}: {e}", dir.display())),
        };
        let mut items: Vec<_> = rd.flatten().collect();
        items.sort_by_key(|e| e.file_name());
        for e in items {
            let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < MAX_DEPTH {
                walk(b, &name, &e.path(), depth + 1, redact);
            } else if ft.is_file() && bundle::is_key_file(&e.file_name().to_string_lossy()) {
                // Key material (ADE's cleartext_key_*, a .key file...): its name and size, never its bytes.
                match e.metadata() {
                    Ok(md) => b.listed(&name, &e.path().display().to_string(), md.len()),
                    Err(err) => b.missing(&name, format!("{}: {err}", e.path().display())),
                }
            } else if ft.is_file() {
                file(b, &name, &e.path(), redact(&e.path()));
            }
        }
    }
    walk(b, prefix, dir, 0, redact);
}

fn json(b: &mut Bundle, name: &str, what: &str, r: anyhow::Result<serde_json::Value>) {
    match r {
        Ok(v) => b.add_redacted(name, what, serde_json::to_vec_pretty(&v).unwrap_or_default()),
        Err(e) => b.missing(name, format!("{what}: {e:#}")),
    }
}

fn command(b: &mut Bundle, name: &str, argv: &[&str]) {
    let shown = argv.join(" ");
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(o) if !o.status.success() && o.stdout.is_empty() => {
            let err = String::from_utf8_lossy(&o.stderr);
            b.missing(name, format!("{shown}: {}: {}", o.status, err.lines().next().unwrap_or_default()))
        }
        Ok(o) => {
            let mut bytes = o.stdout;
            if !o.status.success() {
                bytes.extend_from_slice(format!("\n[{shown}: {}]\n", o.status).as_bytes());
                bytes.extend_from_slice(&o.stderr);
            }
            b.add(name, &shown, bytes);
        }
        Err(e) => b.missing(name, format!("{shown}: {e}")),
    }
}

/// The units the journal and the hold list name, with ade-prep's own.
fn units_involved(paths: &Paths) -> Vec<String> {
    let mut units = vec!["ade-prep.service".to_string(), "ade-prep.path".to_string()];
    if let Ok(Some(r)) = crate::window::store::Store::load(&FileStore::new(paths)) {
        units.extend(hold::units_to_hold(&r));
    }
    if let Ok(t) = std::fs::read_to_string(paths.hold_file()) {
        units.extend(hold::parse_list(&t));
    }
    units.sort();
    units.dedup();
    units
}

/// Collects the bundle of this machine (or fixture tree).
pub fn collect(paths: &Paths, settings: &Settings) -> Bundle {
    let mut b = Bundle::default();
    let report = checks::check_machine(paths, settings, &checks::Waagent::for_paths(paths));
    json(&mut b, "check.json", "ade-prep check", serde_json::to_value(&report).map_err(Into::into));
    let scan = super::scan::scan_report(paths, settings, Path::new("/"));
    json(&mut b, "scan.json", "ade-prep scan", scan.and_then(|r| Ok(serde_json::to_value(&r)?)));
    let status = super::status::status(paths);
    json(&mut b, "status.json", "ade-prep status", status.and_then(|s| Ok(serde_json::to_value(&s)?)));
    let store = FileStore::new(paths);
    file(&mut b, "state/state.json", &paths.state_file(), false);
    file(&mut b, "state/state.json.prev", &store.previous_path(), false);
    file(&mut b, "state/hold", &paths.hold_file(), false);
    let units = units_involved(paths);
    if paths.is_system() {
        let mut argv = vec!["systemctl", "show", "--no-pager"];
        argv.push(
            "--property=Id,LoadState,ActiveState,SubState,UnitFileState,Result,ExecMainStatus,ActiveEnterTimestamp",
        );
        argv.extend(units.iter().map(String::as_str));
        command(&mut b, "units.txt", &argv);
        for (boot, name) in [("0", "journal/boot-0.txt"), ("-1", "journal/boot-1.txt"), ("-2", "journal/boot-2.txt")] {
            command(
                &mut b,
                name,
                &[
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "short-iso",
                    "-b",
                    boot,
                    "-u",
                    "ade-prep.service",
                    "-u",
                    "ade-prep.path",
                ],
            );
        }
    } else {
        let why = format!("not the running system (root {})", paths.root().display());
        b.missing("units.txt", format!("{}: {why}", units.join(" ")));
        b.missing("journal/", why);
    }
    tree(&mut b, "ade/log", &paths.ade_log_dir(), &|_| false);
    // Settings, status and environment files are JSON: redacted by key. Everything else as is.
    let is_json = |p: &Path| {
        p.extension().is_some_and(|e| e == "settings" || e == "status" || e == "json")
            || p.file_name().is_some_and(|n| n == "HandlerState")
    };
    match std::fs::read_dir(paths.waagent_dir()) {
        Ok(rd) => {
            let mut handlers: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{ADE_HANDLER}-")))
                .map(|e| e.path())
                .collect();
            handlers.sort();
            if handlers.is_empty() {
                b.missing("ade/handler", format!("no {ADE_HANDLER}-* under {}", paths.waagent_dir().display()));
            }
            for h in handlers {
                let name = h.file_name().unwrap_or_default().to_string_lossy().into_owned();
                for sub in ["config", "status"] {
                    tree(&mut b, &format!("ade/handler/{name}/{sub}"), &h.join(sub), &is_json);
                }
                file(
                    &mut b,
                    &format!("ade/handler/{name}/HandlerEnvironment.json"),
                    &h.join("HandlerEnvironment.json"),
                    true,
                );
            }
        }
        Err(e) => b.missing("ade/handler", format!("{}: {e}", paths.waagent_dir().display())),
    }
    // ADE's markers and request queue (ini files): redacted by key as well.
    tree(&mut b, "ade/markers", &paths.ade_config_dir(), &|_| true);
    b
}

/// `report [--output FILE]`: writes the bundle; prints where.
pub fn run(paths: &Paths, settings: &Settings, output: Option<&Path>) -> anyhow::Result<u8> {
    let now = clock::now();
    let stamp = clock::format_utc(now).replace([':', ' '], "-");
    let host = std::fs::read_to_string(paths.proc().join("sys/kernel/hostname"))
        .map(|h| h.trim().replace('/', "_"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let top = format!("ade-prep-report-{host}-{stamp}");
    let path = output.map_or_else(|| PathBuf::from(format!("{top}.tar.gz")), Path::to_path_buf);
    let b = collect(paths, settings);
    let header = format!(
        "ade-prep {} support bundle of {host}, {} (root {})\nEach line: collected, redacted (secret keys), scrubbed \
         (copies of a redacted secret elsewhere), or missing (could not be read, and why).\n",
        env!("CARGO_PKG_VERSION"),
        clock::format_utc(now),
        paths.root().display()
    );
    let entries = b.finish(&header);
    bundle::write_archive(&path, &top, &entries, now)?;
    let missing = String::from_utf8_lossy(&entries[0].1).lines().filter(|l| l.starts_with("missing")).count();
    out(&format!("{}: {} file(s), {missing} missing (see MANIFEST.txt)\n", path.display(), entries.len()))?;
    Ok(exit::OK)
}
