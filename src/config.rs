//! Configuration: built-in defaults, then [`crate::paths::CONFIG_FILE`], then [`crate::paths::CONFIG_DIR`]`/*.toml` in lexical
//! order. Every field is optional in a file; unknown keys and wrong types are errors naming file, line and key.
//! The built-in layer is data too (src/catalogue.toml). It must not read anything but its files.
//!
//! Merge rules: scalars from a later layer replace earlier ones; `[workloads.NAME]` fields replace that workload's
//! fields (a new NAME adds a workload); the `[protected]` lists are appended to (built-in protections cannot be
//! removed from a file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::paths::Paths;

/// A configuration error, always naming the file and, where known, line and key.
// The fields are named by each variant's message: no doc line repeats them.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}:{line}: {key}: {message}")]
    Parse {
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key at fault (as written in the file), or `-` when unknown.
        key: String,
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file that set the value (or `built-in`).
        path: PathBuf,
        /// The dotted key.
        key: String,
        message: String,
    },
    /// Running as root, a config file or folder others could write is refused.
    #[error("{path}: refused: {why} (must be owned by root and not writable by group or others)")]
    Insecure {
        path: PathBuf,
        /// Owner or mode found.
        why: String,
    },
}

/// What to do with a process holding the filesystem that no unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrayPolicy {
    /// List them and fail (prepare rolls back).
    Report,
    /// SIGTERM, wait the grace period, SIGKILL.
    Terminate,
}

/// What prepare does with the other writers: services in no workload and not protected that hold files on the
/// filesystem open for writing ([`crate::classify::writer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritersPolicy {
    /// Name them (scan, check, prepare's plan) and leave them to ADE.
    #[default]
    Report,
    /// Stop and hold their units for the window like a workload's, and start again those that were active.
    Stop,
}

impl fmt::Display for WritersPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WritersPolicy::Report => "report",
            WritersPolicy::Stop => "stop",
        })
    }
}

/// Policies that are not a workload's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `report` or `stop`.
    pub writers: WritersPolicy,
}

/// A command run before a workload's units are stopped, as an argv (never a shell).
/// `{sid}`, `{sidlower}` and `{nr}` are replaced from an SAP unit name `SAP<SID>_<NR>.service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreStop {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// User to run as (default root).
    #[serde(default = "default_user")]
    pub user: String,
    /// Seconds before the command is killed and counted as failed.
    #[serde(default = "default_prestop_timeout", deserialize_with = "required::<1, MAX_STOP_SECS, _>")]
    pub timeout_secs: u64,
    /// Exit codes that mean success.
    #[serde(default = "default_ok_codes", deserialize_with = "exit_codes")]
    pub ok_exit_codes: Vec<i32>,
    /// A question asked first (as the same user, within the same timeout): the command runs only when it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if: Option<OnlyIf>,
    /// Post-start steps only: while the command fails (or times out), run it again every second for up to this many
    /// seconds (a cluster tool that cannot reach its cluster until the daemons just started are up). 0: once.
    #[serde(default, deserialize_with = "required::<0, MAX_STOP_SECS, _>", skip_serializing_if = "is_zero")]
    pub retry_secs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// When a pre-stop command applies: `argv` exits 0 and its standard output, trimmed, is none of `unless_stdout`
/// (Redis: `CONFIG GET save` answers just `save` when no snapshot is configured). Any other exit is a failure of
/// the step: ade-prep does not guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlyIf {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Answers that mean the command does not apply.
    #[serde(default)]
    pub unless_stdout: Vec<String>,
}

fn default_user() -> String {
    "root".into()
}
fn default_prestop_timeout() -> u64 {
    300
}
fn default_ok_codes() -> Vec<i32> {
    vec![0]
}

/// One workload of the catalogue: how to recognise its processes and how to stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Unit-name globs (`docker.service`, `docker-*.scope`).
    pub units: Vec<String>,
    /// Command-name globs (`/proc/PID/comm`, 15 characters at most).
    pub comms: Vec<String>,
    /// Executable-path globs.
    pub exes: Vec<String>,
    /// Globs matched against each command-line argument (a JVM's main class).
    pub args: Vec<String>,
    /// cgroup-path globs, for processes outside any unit (Docker's cgroupfs driver: `/docker/*`).
    pub cgroups: Vec<String>,
    /// Units stopped with this workload even when none of their processes holds the filesystem.
    pub companion_units: Vec<String>,
    /// Seconds each stop job may take.
    pub stop_timeout_secs: u64,
    /// Commands run before the units are stopped, in order.
    pub pre_stop: Vec<PreStop>,
    /// Commands run by restore after the units started, in order (same shape as a pre-stop).
    #[serde(default)]
    pub post_start: Vec<PreStop>,
    /// How to tell the workload serves again: restore waits for it after the start, `status` asks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Probe>,
}

/// A readiness probe: `argv` as `user` exits 0 (and, with `expect_stdout`, answers exactly that, trimmed). Restore
/// asks it again every [`PROBE_INTERVAL_SECS`] until it answers or `timeout_secs` have passed, each ask bounded by
/// [`PROBE_ASK_SECS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// User to run as (default root).
    #[serde(default = "default_user")]
    pub user: String,
    /// How long restore waits for the workload to answer.
    #[serde(default = "default_prestop_timeout", deserialize_with = "required::<1, MAX_STOP_SECS, _>")]
    pub timeout_secs: u64,
    /// The answer that means ready (`PONG`); any output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_stdout: Option<String>,
}

/// Seconds between two asks of a readiness probe.
pub const PROBE_INTERVAL_SECS: u64 = 1;
/// The longest one ask of a readiness probe may take.
pub const PROBE_ASK_SECS: u64 = 10;

/// Extra patterns of processes that are never stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protected {
    /// Unit-name globs.
    pub units: Vec<String>,
    /// Command-name globs.
    pub comms: Vec<String>,
    /// Executable-path globs.
    pub exes: Vec<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Processes holding the filesystem in no unit.
    pub stray: Stray,
    /// The other writers.
    pub policy: Policy,
    /// Docker specifics.
    pub docker: Docker,
    /// The encryption window.
    pub window: Window,
    /// Additional protected processes (the built-in ones always apply).
    pub protected: Protected,
    /// The workload catalogue, by name.
    pub workloads: BTreeMap<String, Workload>,
    /// The fleet rollout's group semaphore (docs/fleet.md); absent: no fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Fleet>,
}

/// Which server keeps the group semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetBackend {
    /// etcd v3 directly (its JSON gateway), airlock's key layout.
    Etcd,
    /// A FleetLock server (airlock or another), over its HTTP protocol.
    Fleetlock,
}

/// The fleet rollout: which group this VM belongs to and where its semaphore lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// `etcd` or `fleetlock`.
    pub backend: FleetBackend,
    /// etcd client URLs (tried in order), or the FleetLock server's base URL (one).
    pub endpoints: Vec<String>,
    /// The group: VMs of one service that must not all be encrypted at once.
    pub group: String,
    /// etcd: the group's slots when its key is created (an existing key keeps its own).
    pub slots: u64,
    /// This VM's id in the group (default: the SMBIOS UUID, /sys/class/dmi/id/product_uuid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// PEM CA certificates that sign the server's certificate (https endpoints; default: the webpki roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS), with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Seconds one request may take.
    pub timeout_secs: u64,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            backend: FleetBackend::Etcd,
            endpoints: vec![],
            group: "default".into(),
            slots: 1,
            id: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout_secs: 10,
        }
    }
}

/// Stray process handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stray {
    /// `report` or `terminate`.
    pub policy: StrayPolicy,
    /// Seconds between SIGTERM and SIGKILL under `terminate`.
    pub grace_secs: u64,
}

/// Docker specifics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Docker {
    /// Grace period given to `docker stop` for each running container (live-restore).
    pub stop_grace_secs: u64,
}

/// The encryption window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Hours after which the window is closed (restore) even without word from ADE.
    pub timeout_hours: u64,
    /// Seconds prepare waits for other extension handlers to finish before it acts.
    pub extension_wait_secs: u64,
}

/// The built-in defaults and catalogue: data, compiled in, read by the same loader as the files merged over it.
pub const BUILTIN: &str = include_str!("catalogue.toml");

/// Where messages about the built-in catalogue point.
const BUILTIN_PATH: &str = "src/catalogue.toml (built in)";

impl Default for Settings {
    /// The built-in catalogue. It is compiled in and checked by the unit tests, so it always parses and validates.
    fn default() -> Self {
        let mut settings = Settings {
            stray: Stray { policy: StrayPolicy::Report, grace_secs: 0 },
            policy: Policy { writers: WritersPolicy::Report },
            docker: Docker { stop_grace_secs: 0 },
            window: Window { timeout_hours: 0, extension_wait_secs: 0 },
            protected: Protected::default(),
            workloads: BTreeMap::new(),
            fleet: None,
        };
        match parse_file(Path::new(BUILTIN_PATH), BUILTIN) {
            Ok(raw) => merge(&mut settings, raw),
            Err(e) => unreachable!("the built-in catalogue is checked by the unit tests: {e}"),
        }
        settings
    }
}

// ---- the raw layer: what one file may say ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    stray: Option<RawStray>,
    policy: Option<RawPolicy>,
    docker: Option<RawDocker>,
    window: Option<RawWindow>,
    protected: Option<RawProtected>,
    workloads: Option<BTreeMap<String, RawWorkload>>,
    fleet: Option<RawFleet>,
}

// ---- bounds: every number a file may give, checked as it is parsed (so the error names file, line and key) ----

/// The longest `window.timeout_hours`: 30 days. ADE's own OS-disk encryption takes hours, not weeks.
pub const MAX_TIMEOUT_HOURS: u64 = 720;
/// The longest grace period, stop timeout or pre-stop timeout: one day.
pub const MAX_STOP_SECS: u64 = 86_400;
/// The longest `window.extension_wait_secs`: one day.
pub const MAX_EXTENSION_WAIT_SECS: u64 = 86_400;

/// A number from a file within `MIN..=MAX` (TOML integers are i64: a negative one is named as such, not as a type
/// error).
fn bounded<'de, const MIN: u64, const MAX: u64, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = i64::deserialize(d)?;
    match u64::try_from(v) {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(D::Error::custom(format!("{v} is out of range: must be {MIN} to {MAX}"))),
    }
}

fn required<'de, const MIN: u64, const MAX: u64, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded::<MIN, MAX, D>(d)
}

fn optional<'de, const MIN: u64, const MAX: u64, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded::<MIN, MAX, D>(d).map(Some)
}

/// Exit codes as a process can return them: 0 to 255.
fn exit_codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
    let v = Vec::<i64>::deserialize(d)?;
    v.into_iter()
        .map(|c| match u8::try_from(c) {
            Ok(n) => Ok(i32::from(n)),
            Err(_) => Err(D::Error::custom(format!("exit code {c} is out of range: must be 0 to 255"))),
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStray {
    policy: Option<StrayPolicy>,
    #[serde(default, deserialize_with = "optional::<0, MAX_STOP_SECS, _>")]
    grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    writers: Option<WritersPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    #[serde(default, deserialize_with = "optional::<0, MAX_STOP_SECS, _>")]
    stop_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default, deserialize_with = "optional::<1, MAX_TIMEOUT_HOURS, _>")]
    timeout_hours: Option<u64>,
    #[serde(default, deserialize_with = "optional::<0, MAX_EXTENSION_WAIT_SECS, _>")]
    extension_wait_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtected {
    units: Option<Vec<String>>,
    comms: Option<Vec<String>>,
    exes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    units: Option<Vec<String>>,
    comms: Option<Vec<String>>,
    exes: Option<Vec<String>>,
    args: Option<Vec<String>>,
    cgroups: Option<Vec<String>>,
    companion_units: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional::<1, MAX_STOP_SECS, _>")]
    stop_timeout_secs: Option<u64>,
    pre_stop: Option<Vec<PreStop>>,
    post_start: Option<Vec<PreStop>>,
    ready: Option<Probe>,
}

/// The most slots a group may have.
pub const MAX_FLEET_SLOTS: u64 = 100_000;
/// The longest request timeout: 10 minutes.
pub const MAX_FLEET_TIMEOUT_SECS: u64 = 600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    backend: Option<FleetBackend>,
    endpoints: Option<Vec<String>>,
    group: Option<String>,
    #[serde(default, deserialize_with = "optional::<1, MAX_FLEET_SLOTS, _>")]
    slots: Option<u64>,
    id: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional::<1, MAX_FLEET_TIMEOUT_SECS, _>")]
    timeout_secs: Option<u64>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The key written on the line of `offset` (text before `=`, or the table header), for error messages.
fn key_at(text: &str, offset: usize) -> String {
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim(),
        None => line.trim_matches(|c| c == '[' || c == ']'),
    };
    if key.is_empty() {
        "-".into()
    } else {
        key.to_string()
    }
}

fn parse_file(path: &Path, text: &str) -> Result<RawFile, ConfigError> {
    toml::from_str::<RawFile>(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(sp) => (line_of(text, sp.start), key_at(text, sp.start)),
            None => (1, "-".into()),
        };
        // Keep the first line of toml's message: the rest is a source excerpt.
        let message = e.message().lines().next().unwrap_or("invalid").to_string();
        ConfigError::Parse { path: path.to_path_buf(), line, key, message }
    })
}

fn merge(settings: &mut Settings, raw: RawFile) {
    if let Some(r) = raw.stray {
        if let Some(v) = r.policy {
            settings.stray.policy = v;
        }
        if let Some(v) = r.grace_secs {
            settings.stray.grace_secs = v;
        }
    }
    if let Some(v) = raw.policy.and_then(|r| r.writers) {
        settings.policy.writers = v;
    }
    if let Some(r) = raw.docker {
        if let Some(v) = r.stop_grace_secs {
            settings.docker.stop_grace_secs = v;
        }
    }
    if let Some(r) = raw.window {
        if let Some(v) = r.timeout_hours {
            settings.window.timeout_hours = v;
        }
        if let Some(v) = r.extension_wait_secs {
            settings.window.extension_wait_secs = v;
        }
    }
    if let Some(r) = raw.protected {
        settings.protected.units.extend(r.units.unwrap_or_default());
        settings.protected.comms.extend(r.comms.unwrap_or_default());
        settings.protected.exes.extend(r.exes.unwrap_or_default());
    }
    for (name, r) in raw.workloads.unwrap_or_default() {
        let w = settings.workloads.entry(name).or_insert_with(|| Workload {
            units: vec![],
            comms: vec![],
            exes: vec![],
            args: vec![],
            cgroups: vec![],
            companion_units: vec![],
            stop_timeout_secs: 90,
            pre_stop: vec![],
            post_start: vec![],
            ready: None,
        });
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = r.$f { w.$f = v; } )* };
        }
        set!(units, comms, exes, args, cgroups, companion_units, stop_timeout_secs, pre_stop, post_start);
        if let Some(p) = r.ready {
            w.ready = Some(p);
        }
    }
    if let Some(r) = raw.fleet {
        let f = settings.fleet.get_or_insert_with(Fleet::new);
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = r.$f { f.$f = v; } )* };
        }
        set!(backend, endpoints, group, slots, timeout_secs);
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if r.$f.is_some() { f.$f = r.$f; } )* };
        }
        set_opt!(id, ca_file, cert_file, key_file);
    }
}

/// A FleetLock group: `^[a-zA-Z0-9.-]+$` (coreos/zincati docs/development/fleetlock/protocol.md:50); the etcd key
/// takes it as is.
pub fn valid_group(g: &str) -> bool {
    !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// What is wrong with a `[fleet]` section, as (dotted key, message).
pub fn check_fleet(f: &Fleet) -> Result<(), (&'static str, String)> {
    if f.endpoints.is_empty() {
        return Err(("fleet.endpoints", "must list at least one URL (http://HOST:PORT or https://...)".into()));
    }
    for e in &f.endpoints {
        let host = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(("fleet.endpoints", format!("{e:?}: not an http:// or https:// URL")));
        }
    }
    if f.backend == FleetBackend::Fleetlock && f.endpoints.len() != 1 {
        return Err(("fleet.endpoints", "the fleetlock backend takes one base URL".into()));
    }
    if !valid_group(&f.group) {
        return Err(("fleet.group", format!("{:?}: must match ^[a-zA-Z0-9.-]+$ (FleetLock's rule)", f.group)));
    }
    if f.id.as_ref().is_some_and(|i| i.trim().is_empty() || i.chars().any(char::is_control)) {
        return Err(("fleet.id", "must be non-empty text without control characters".into()));
    }
    if f.cert_file.is_some() != f.key_file.is_some() {
        return Err(("fleet.cert_file", "cert_file and key_file go together (mutual TLS)".into()));
    }
    let tls = f.ca_file.is_some() || f.cert_file.is_some();
    if tls && !f.endpoints.iter().all(|e| e.starts_with("https://")) {
        return Err(("fleet.ca_file", "TLS files are set but an endpoint is not https://".into()));
    }
    Ok(())
}

fn validate(settings: &Settings, path: &Path) -> Result<(), ConfigError> {
    let invalid = |key: String, message: &str| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message: message.to_string(),
    };
    // The numbers are bounded as they are parsed (bounded above), with the line.
    for (name, w) in &settings.workloads {
        if w.units.is_empty() && w.comms.is_empty() && w.exes.is_empty() && w.args.is_empty() && w.cgroups.is_empty() {
            return Err(invalid(
                format!("workloads.{name}"),
                "matches nothing: give units, comms, exes, args or cgroups",
            ));
        }
        for (i, p) in w.pre_stop.iter().enumerate() {
            if p.argv.is_empty() || p.argv[0].is_empty() {
                return Err(invalid(format!("workloads.{name}.pre_stop[{i}].argv"), "must name a program"));
            }
            if p.only_if.as_ref().is_some_and(|c| c.argv.first().is_none_or(String::is_empty)) {
                return Err(invalid(format!("workloads.{name}.pre_stop[{i}].only_if.argv"), "must name a program"));
            }
            if p.retry_secs != 0 {
                // A pre-stop that failed is a refusal before anything is stopped: it is never run again.
                return Err(invalid(
                    format!("workloads.{name}.pre_stop[{i}].retry_secs"),
                    "is for post_start steps only",
                ));
            }
        }
        for (i, p) in w.post_start.iter().enumerate() {
            if p.argv.first().is_none_or(String::is_empty) {
                return Err(invalid(format!("workloads.{name}.post_start[{i}].argv"), "must name a program"));
            }
        }
        if w.ready.as_ref().is_some_and(|p| p.argv.first().is_none_or(String::is_empty)) {
            return Err(invalid(format!("workloads.{name}.ready.argv"), "must name a program"));
        }
    }
    if let Some(f) = &settings.fleet {
        check_fleet(f).map_err(|(key, message)| invalid(key.to_string(), &message))?;
    }
    Ok(())
}

/// Refuses a file or folder not owned by root or writable by group or others (only enforced when running as root).
fn check_owner(path: &Path, md: &std::fs::Metadata, enforce: bool) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    if !enforce {
        return Ok(());
    }
    if md.uid() != 0 {
        return Err(ConfigError::Insecure { path: path.into(), why: format!("owned by uid {}", md.uid()) });
    }
    if md.mode() & 0o022 != 0 {
        return Err(ConfigError::Insecure { path: path.into(), why: format!("mode {:04o}", md.mode() & 0o7777) });
    }
    Ok(())
}

/// The configuration folders (the main file's and the drop-ins'), checked like the files when they exist.
fn check_folders(paths: &Paths, enforce: bool) -> Result<(), ConfigError> {
    let main = paths.config_file();
    for dir in [main.parent().map(Path::to_path_buf), Some(paths.config_dir())].into_iter().flatten() {
        match std::fs::metadata(&dir) {
            Ok(md) => check_owner(&dir, &md, enforce)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path: dir, source }),
        }
    }
    Ok(())
}

/// One configuration file: a regular file (a FIFO would block), its owner and mode checked on the open file, at
/// most [`crate::fsread::CAP`] bytes.
fn read_file(path: &Path, enforce: bool) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read { path: path.into(), source };
    let (f, md) = crate::fsread::open_regular(path, crate::fsread::Links::Follow).map_err(read)?;
    check_owner(path, &md, enforce)?;
    crate::fsread::read_open(f, crate::fsread::CAP).map_err(read)
}

/// The files that make up the configuration, in the order they are applied.
pub fn files(paths: &Paths) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = vec![];
    let main = paths.config_file();
    if main.exists() {
        out.push(main);
    }
    let dir = paths.config_dir();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            let mut extra: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            extra.sort();
            out.extend(extra);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ConfigError::Read { path: dir, source }),
    }
    Ok(out)
}

/// The configuration one drop-in's `text` makes of the built-in one (parsed, merged, validated), as [`load`] does
/// for each file; `path` names it in errors.
pub fn parse_text(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    merge(&mut settings, parse_file(path, text)?);
    validate(&settings, path)?;
    Ok(settings)
}

/// Loads the effective configuration. `enforce_owner` is true when running as root.
pub fn load(paths: &Paths, enforce_owner: bool) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    check_folders(paths, enforce_owner)?;
    for path in files(paths)? {
        let text = read_file(&path, enforce_owner)?;
        let raw = parse_file(&path, &text)?;
        merge(&mut settings, raw);
        validate(&settings, &path)?;
    }
    Ok(settings)
}

/// For verbs that end or report a window: the configuration, or, when it does not load, a warning naming why and
/// the built-in catalogue (a bad drop-in must never keep a window from closing).
pub fn or_builtin(loaded: Result<Settings, ConfigError>) -> Settings {
    loaded.unwrap_or_else(|e| {
        log::warn!("{e}; ignored here (the built-in defaults apply): fix it before the next prepare");
        Settings::default()
    })
}

impl Settings {
    /// The effective configuration as TOML, as `ade-prep config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

impl fmt::Display for StrayPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrayPolicy::Report => "report",
            StrayPolicy::Terminate => "terminate",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_parses_sets_every_field_and_validates() {
        let raw = parse_file(Path::new(BUILTIN_PATH), BUILTIN).unwrap();
        let (stray, docker, window) = (raw.stray.unwrap(), raw.docker.unwrap(), raw.window.unwrap());
        assert!(stray.policy.is_some() && stray.grace_secs.is_some());
        assert_eq!(raw.policy.unwrap().writers, Some(WritersPolicy::Report));
        assert!(docker.stop_grace_secs.is_some());
        assert!(window.timeout_hours.is_some() && window.extension_wait_secs.is_some());
        let workloads = raw.workloads.unwrap();
        assert_eq!(
            workloads.keys().collect::<Vec<_>>(),
            [
                "cassandra",
                "docker",
                "elasticsearch",
                "kubelet",
                "mariadb",
                "mongodb",
                "pacemaker",
                "postgresql",
                "redis",
                "sap"
            ]
        );
        for (name, w) in &workloads {
            assert!(w.units.as_ref().is_some_and(|u| !u.is_empty()), "{name}");
            assert!(w.stop_timeout_secs.is_some(), "{name}");
        }
        let d = Settings::default();
        validate(&d, Path::new(BUILTIN_PATH)).unwrap();
        assert_eq!((d.stray.grace_secs, d.docker.stop_grace_secs, d.window.timeout_hours), (10, 30, 24));
        assert_eq!(d.workloads["sap"].pre_stop[1].timeout_secs, 660);
        let probes: Vec<(&str, String)> = d
            .workloads
            .iter()
            .filter_map(|(n, w)| w.ready.as_ref().map(|p| (n.as_str(), format!("{} as {}", p.argv.join(" "), p.user))))
            .collect();
        assert_eq!(
            probes,
            [
                (
                    "elasticsearch",
                    "curl -sS -f http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=5s as root"
                        .to_string()
                ),
                ("mariadb", "mysqladmin --silent ping as root".to_string()),
                ("pacemaker", "crmadmin --dc_lookup as root".to_string()),
                ("postgresql", "pg_isready -q as postgres".to_string()),
                ("redis", "redis-cli ping as root".to_string()),
            ]
        );
    }

    fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn no_files_gives_the_defaults() {
        let d = tempfile::tempdir().unwrap();
        let s = load(&Paths::under(d.path()), false).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn layers_apply_in_order_and_dropins_lexically() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "etc/ade-prep/config.toml", "[stray]\npolicy = \"terminate\"\ngrace_secs = 5\n");
        write(d.path(), "etc/ade-prep/config.d/20-b.toml", "[stray]\ngrace_secs = 20\n");
        write(
            d.path(),
            "etc/ade-prep/config.d/10-a.toml",
            "[stray]\ngrace_secs = 10\n[protected]\nunits=[\"x.service\"]\n[policy]\nwriters = \"stop\"\n",
        );
        write(d.path(), "etc/ade-prep/config.d/30-c.conf", "not toml, ignored: not *.toml");
        write(
            d.path(),
            "etc/ade-prep/config.d/40-w.toml",
            "[workloads.redis]\nunits = [\"redis-server.service\"]\nstop_timeout_secs = 30\n\
             [workloads.docker]\nstop_timeout_secs = 120\n",
        );
        let s = load(&Paths::under(d.path()), false).unwrap();
        assert_eq!(s.stray.policy, StrayPolicy::Terminate);
        assert_eq!(s.stray.grace_secs, 20);
        assert_eq!(s.protected.units, vec!["x.service".to_string()]);
        assert_eq!(s.policy.writers, WritersPolicy::Stop);
        assert_eq!(Settings::default().policy.writers, WritersPolicy::Report);
        assert_eq!(s.workloads["redis"].stop_timeout_secs, 30);
        assert_eq!(s.workloads["docker"].stop_timeout_secs, 120);
        // fields not given keep the earlier layer's value
        assert_eq!(s.workloads["docker"].units, Settings::default().workloads["docker"].units);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "etc/ade-prep/config.toml", "[stray]\npolicy = \"report\"\ngrase_secs = 3\n");
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:3: grase_secs: unknown field", p.display())), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "etc/ade-prep/config.d/a.toml", "\n[window]\ntimeout_hours = \"soon\"\n");
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:3: timeout_hours: invalid type", p.display())), "{e}");
    }

    #[test]
    fn bad_policy_value_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "etc/ade-prep/config.toml", "[stray]\npolicy = \"kill\"\n");
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.contains(":2: policy: unknown variant `kill`"), "{e}");
    }

    #[test]
    fn post_start_and_ready_merge_and_an_empty_probe_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "etc/ade-prep/config.toml",
            "[workloads.redis]\npost_start = [{argv = [\"redis-cli\", \"CLIENT\", \"UNPAUSE\"]}]\n\
             ready = {argv = [\"redis-cli\", \"-p\", \"6380\", \"ping\"], expect_stdout = \"PONG\", timeout_secs = 30}\n",
        );
        let s = load(&Paths::under(d.path()), false).unwrap();
        let r = &s.workloads["redis"];
        assert_eq!(r.post_start[0].argv, ["redis-cli", "CLIENT", "UNPAUSE"]);
        let p = r.ready.as_ref().unwrap();
        assert_eq!((p.argv[2].as_str(), p.timeout_secs, p.user.as_str()), ("6380", 30, "root"));
        assert_eq!(r.units, Settings::default().workloads["redis"].units, "the rest is kept");
        write(d.path(), "etc/ade-prep/config.toml", "[workloads.redis]\nready = {argv = []}\n");
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.contains("workloads.redis.ready.argv: must name a program"), "{e}");
    }

    #[test]
    fn retry_secs_is_read_for_post_start_and_refused_on_a_pre_stop() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "etc/ade-prep/config.toml",
            "[workloads.redis]\npost_start = [{argv = [\"redis-cli\", \"ping\"], retry_secs = 30}]\n",
        );
        let s = load(&Paths::under(d.path()), false).unwrap();
        assert_eq!(s.workloads["redis"].post_start[0].retry_secs, 30);
        assert_eq!(Settings::default().workloads["redis"].pre_stop[0].retry_secs, 0, "default: once");
        write(
            d.path(),
            "etc/ade-prep/config.toml",
            "[workloads.redis]\npre_stop = [{argv = [\"redis-cli\", \"SAVE\"], retry_secs = 30}]\n",
        );
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.contains("workloads.redis.pre_stop[0].retry_secs: is for post_start steps only"), "{e}");
    }

    #[test]
    fn invalid_values_are_named_with_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "etc/ade-prep/config.toml", "[workloads.x]\npre_stop = [{argv = []}]\nunits=[\"x\"]\n");
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.contains("workloads.x.pre_stop[0].argv: must name a program"), "{e}");
    }

    #[test]
    fn a_fleet_section_merges_over_layers_and_each_bad_field_is_named_on_one_line() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        write(d.path(), "etc/ade-prep/config.toml", "[fleet]\nendpoints = [\"http://10.0.0.4:2379\"]\nslots = 3\n");
        write(d.path(), "etc/ade-prep/config.d/10-group.toml", "[fleet]\ngroup = \"cassandra\"\n");
        let f = load(&paths, false).unwrap().fleet.unwrap();
        assert_eq!((f.backend, f.group.as_str(), f.slots, f.timeout_secs), (FleetBackend::Etcd, "cassandra", 3, 10));
        assert_eq!(f.endpoints, ["http://10.0.0.4:2379"]);
        let cases = [
            ("group = \"a b\"", "10-group.toml: fleet.group: \"a b\": must match ^[a-zA-Z0-9.-]+$"),
            ("endpoints = []", "fleet.endpoints: must list at least one URL"),
            ("endpoints = [\"10.0.0.4:2379\"]", "fleet.endpoints: \"10.0.0.4:2379\": not an http:// or https:// URL"),
            (
                "backend = \"fleetlock\"\nendpoints = [\"http://a\", \"http://b\"]",
                "fleet.endpoints: the fleetlock backend takes one base URL",
            ),
            ("cert_file = \"/c.pem\"", "fleet.cert_file: cert_file and key_file go together"),
            ("ca_file = \"/ca.pem\"", "fleet.ca_file: TLS files are set but an endpoint is not https://"),
            ("slots = 0", "10-group.toml:2: slots: 0 is out of range: must be 1 to 100000"),
            ("backend = \"zk\"", "10-group.toml:2: backend: unknown variant `zk`"),
        ];
        for (line, want) in cases {
            write(d.path(), "etc/ade-prep/config.d/10-group.toml", &format!("[fleet]\n{line}\n"));
            let e = load(&paths, false).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn group_writable_file_is_refused_when_enforced() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "etc/ade-prep/config.toml", "");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(load(&Paths::under(d.path()), false).is_ok());
        let e = load(&Paths::under(d.path()), true).unwrap_err().to_string();
        // as root the owner is root, so the mode is what is refused; as another user the owner is.
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn every_number_is_bounded_at_its_extremes_with_the_limit_in_the_message() {
        // (table header, key, min, max); pre_stop's fields live in an inline table.
        let fields: [(&str, &str, u64, u64); 6] = [
            ("[stray]", "grace_secs", 0, MAX_STOP_SECS),
            ("[docker]", "stop_grace_secs", 0, MAX_STOP_SECS),
            ("[window]", "timeout_hours", 1, MAX_TIMEOUT_HOURS),
            ("[window]", "extension_wait_secs", 0, MAX_EXTENSION_WAIT_SECS),
            ("[workloads.docker]", "stop_timeout_secs", 1, MAX_STOP_SECS),
            ("[workloads.docker]\npre_stop = [{ argv = [\"true\"],", "timeout_secs", 1, MAX_STOP_SECS),
        ];
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        for (table, key, min, max) in fields {
            let values: Vec<(String, bool)> = vec![
                ("0".into(), min == 0),
                ("1".into(), true),
                (max.to_string(), true),
                ((max + 1).to_string(), false),
                (i64::MAX.to_string(), false),
                ("-1".into(), false),
                (i64::MIN.to_string(), false),
            ];
            for (v, ok) in values {
                let body = if table.contains('{') {
                    format!("{table} {key} = {v} }}]\n")
                } else {
                    format!("{table}\n{key} = {v}\n")
                };
                let p = write(d.path(), "etc/ade-prep/config.toml", &body);
                match load(&paths, false) {
                    Ok(_) if ok => {}
                    Ok(_) => panic!("{key} = {v} accepted"),
                    Err(e) if ok => panic!("{key} = {v} refused: {e}"),
                    Err(e) => {
                        let e = e.to_string();
                        let want_key = if table.contains('{') { "pre_stop" } else { key };
                        assert!(e.starts_with(&format!("{}:2: {want_key}: ", p.display())), "{e}");
                        assert!(e.contains(&format!("{v} is out of range: must be {min} to {max}")), "{e}");
                    }
                }
            }
        }
        // Beyond what TOML holds at all, and exit codes beyond a byte.
        write(d.path(), "etc/ade-prep/config.toml", "[window]\ntimeout_hours = 18446744073709551616\n");
        let e = load(&paths, false).unwrap_err().to_string();
        assert!(e.contains(":2: timeout_hours: "), "{e}");
        for (codes, ok) in [("[0, 255]", true), ("[256]", false), ("[-1]", false), ("[9223372036854775807]", false)] {
            let body = format!("[workloads.docker]\npre_stop = [{{ argv = [\"true\"], ok_exit_codes = {codes} }}]\n");
            write(d.path(), "etc/ade-prep/config.toml", &body);
            let r = load(&paths, false);
            assert_eq!(r.is_ok(), ok, "{codes}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("is out of range: must be 0 to 255"), "{e}");
            }
        }
    }

    #[test]
    fn a_fifo_dropin_and_a_world_writable_folder_are_refused_without_hanging() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("etc/ade-prep/config.d");
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("10-fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert_eq!(e, format!("{}: not a regular file (a FIFO)", fifo.display()));
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(dir.join("20-big.toml"), vec![b'#'; 2 << 20]).unwrap();
        let e = load(&Paths::under(d.path()), false).unwrap_err().to_string();
        assert!(e.ends_with("20-big.toml: larger than the 1048576 bytes allowed"), "{e}");
        std::fs::remove_file(dir.join("20-big.toml")).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = load(&Paths::under(d.path()), true).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "{}: refused: mode 0777 (must be owned by root and not writable by group or others)",
                    dir.display()
                )
            );
        }
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let s = Settings::default();
        let back: Settings = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back, s);
    }
}
