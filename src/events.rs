//! What prepare, restore and the waits report while they work: one [`Event`] per step that an operator or a fleet's
//! log search cares about, sent to one [`EventSink`] installed at start (the terminal's live progress, or log
//! lines, which carry journal fields under systemd). It owns the events, their MESSAGE_IDs (docs/journal.md) and the
//! two sinks; it must not decide anything, and a sink must never fail the work it reports on.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One thing that happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Prepare begins to carry out its plan.
    WindowOpened {
        /// The filesystems freed (data volumes, then `/`), comma-separated.
        mounts: &'a str,
        /// Steps of the plan.
        steps: usize,
    },
    /// A batch of stops begins (each unit with its timeout).
    Stopping(&'a [(String, Duration)]),
    /// A unit stopped.
    Stopped(&'a str),
    /// A unit did not stop.
    StopFailed(&'a str, &'a str),
    /// A batch of starts begins (each unit with how long it is followed).
    Starting(&'a [(String, Duration)]),
    /// A unit started.
    Started(&'a str),
    /// A unit did not start.
    StartFailed(&'a str, &'a str),
    /// Still waiting for `what`; `left` is None for a wait without end.
    Waiting {
        /// What the wait waits for.
        what: &'a str,
        /// How long the wait may still last.
        left: Option<Duration>,
    },
    /// The wait is over.
    WaitOver,
    /// SELinux switched to this mode.
    SelinuxSet(&'a str),
    /// The window closed: everything restored.
    WindowClosed(&'a str),
    /// Restore left these behind.
    RestoreIncomplete(&'a [String]),
    /// The daemon decided on ADE's request `seq`.
    AdeDecision {
        /// ADE's sequence number.
        seq: u64,
        /// What it decided.
        decision: &'a str,
    },
    /// A data volume of the window verified after ADE's success: encrypted (`detail`: its mapper) or not
    /// (`detail`: why; ADE skipped it).
    DataVolume {
        /// The volume (mount point and device).
        volume: &'a str,
        /// Encrypted.
        encrypted: bool,
        /// The mapper, or why it is not encrypted.
        detail: &'a str,
    },
}

/// The journal's MESSAGE_ID of each kind of event (docs/journal.md lists them with their `journalctl` lines).
pub const MESSAGE_IDS: &[(&str, &str)] = &[
    ("window-opened", "85a0a398539447d6a83b8c485a695114"),
    ("unit-stopped", "632aab61e32946eca184d8c33beb485d"),
    ("unit-stop-failed", "a88c0d4728af41d68119fb8d2c6b1e60"),
    ("selinux-set", "f9fefade7f1d4a9e883501310635f66f"),
    ("window-closed", "5123d94ad3954adfbe47d0b0501dcf85"),
    ("restore-incomplete", "99c3f6bda59e44f991c36d1d62dff86e"),
    ("ade-decision", "af18309d625d4228993c8d024f0130ab"),
    ("unit-started", "064812a10f3e4ae89be9ef9232dab0f0"),
    ("unit-start-failed", "8148a95c35094104bd37326a78e621ca"),
    ("volume-encrypted", "4f90e0eccfc447bf943a66a35300df3f"),
    ("volume-not-encrypted", "fe554ba1cc734b89a79eeeb9aa026c1f"),
];

fn message_id(kind: &str) -> &'static str {
    MESSAGE_IDS.iter().find(|(k, _)| *k == kind).map_or("", |(_, id)| id)
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Reports one event; must not fail or block for long.
    fn event(&self, e: &Event);
}

static SINK: OnceLock<Box<dyn EventSink>> = OnceLock::new();
/// ADE's sequence number of the request being served (0: none), for the ADE_SEQ field.
static ADE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Installs the sink of this process (the first one wins); without one, events go to [`LogSink`].
pub fn install(sink: Box<dyn EventSink>) {
    let _ = SINK.set(sink);
}

/// Reports an event to the installed sink.
pub fn emit(e: Event) {
    if let Event::AdeDecision { seq, .. } = e {
        ADE_SEQ.store(seq, Ordering::Relaxed);
    }
    match SINK.get() {
        Some(s) => s.event(&e),
        None => default_log_sink().event(&e),
    }
}

fn default_log_sink() -> &'static LogSink {
    static L: OnceLock<LogSink> = OnceLock::new();
    L.get_or_init(LogSink::default)
}

fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(3600 * 24 * 365) {
        "no limit".into()
    } else {
        format!("{} s", d.as_secs())
    }
}

/// One log line per event, with the journal fields MESSAGE_ID, UNIT, ADE_SEQ and WINDOW_PHASE as key-values (the
/// journal logger sends them as fields; plain stderr shows the message).
#[derive(Debug, Default)]
pub struct LogSink {
    started: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl LogSink {
    fn took(&self, unit: &str) -> String {
        let t = self.started.lock().ok().and_then(|mut m| m.remove(unit));
        t.map(|(at, timeout)| format!(" in {:.1} s (timeout {})", at.elapsed().as_secs_f64(), secs(timeout)))
            .unwrap_or_default()
    }

    fn begin(&self, units: &[(String, Duration)]) {
        if let Ok(mut m) = self.started.lock() {
            for (u, t) in units {
                m.insert(u.clone(), (Instant::now(), *t));
            }
        }
    }
}

fn log_event(level: log::Level, kind: &str, unit: Option<&str>, phase: &str, msg: &str) {
    let seq = ADE_SEQ.load(Ordering::Relaxed).to_string();
    let mut kv: Vec<(&str, &str)> = vec![];
    if !phase.is_empty() {
        kv.push(("WINDOW_PHASE", phase));
    }
    if !kind.is_empty() {
        kv.push(("MESSAGE_ID", message_id(kind)));
    }
    if let Some(u) = unit {
        kv.push(("UNIT", u));
    }
    if seq != "0" {
        kv.push(("ADE_SEQ", &seq));
    }
    let kvs: &[(&str, &str)] = &kv;
    let meta = log::Metadata::builder().level(level).target("ade_prep::events").build();
    if level <= log::max_level() && log::logger().enabled(&meta) {
        log::logger().log(
            &log::Record::builder()
                .metadata(meta)
                .args(format_args!("{msg}"))
                .module_path_static(Some(module_path!()))
                .key_values(&kvs)
                .build(),
        );
    }
}

impl EventSink for LogSink {
    fn event(&self, e: &Event) {
        use log::Level::{Debug, Error, Info, Warn};
        match *e {
            Event::WindowOpened { mounts, steps } => log_event(
                Info,
                "window-opened",
                None,
                "preparing",
                &format!("window opened: {steps} step(s) to free {mounts}"),
            ),
            Event::Stopping(units) => {
                self.begin(units);
                let names: Vec<String> = units.iter().map(|(u, t)| format!("{u} (timeout {})", secs(*t))).collect();
                log_event(Info, "", None, "preparing", &format!("stopping {}", names.join(", ")));
            }
            Event::Stopped(u) => {
                log_event(Info, "unit-stopped", Some(u), "preparing", &format!("stopped {u}{}", self.took(u)))
            }
            Event::StopFailed(u, why) => log_event(
                Error,
                "unit-stop-failed",
                Some(u),
                "preparing",
                &format!("{u} failed to stop{}: {why}", self.took(u)),
            ),
            Event::Starting(units) => {
                self.begin(units);
                let names: Vec<String> = units.iter().map(|(u, t)| format!("{u} (up to {})", secs(*t))).collect();
                log_event(Info, "", None, "restoring", &format!("starting {}", names.join(", ")));
            }
            Event::Started(u) => {
                log_event(Info, "unit-started", Some(u), "restoring", &format!("started {u}{}", self.took(u)))
            }
            Event::StartFailed(u, why) => log_event(
                Error,
                "unit-start-failed",
                Some(u),
                "restoring",
                &format!("{u} failed to start{}: {why}", self.took(u)),
            ),
            // The waiting code logs its own rate-limited line; the event adds the time left, at debug.
            Event::Waiting { what, left } => log_event(
                Debug,
                "",
                None,
                "",
                &format!("waiting ({}): {what}", left.map_or("no limit".into(), |l| format!("{} s left", l.as_secs()))),
            ),
            Event::WaitOver => {}
            Event::SelinuxSet(mode) => log_event(Info, "selinux-set", None, "", &format!("SELinux set to {mode}")),
            Event::WindowClosed(summary) => {
                log_event(Info, "window-closed", None, "closed", &format!("window closed: {summary}"))
            }
            Event::RestoreIncomplete(failed) => log_event(
                Warn,
                "restore-incomplete",
                None,
                "restoring",
                &format!("restore incomplete: {}", failed.join("; ")),
            ),
            Event::AdeDecision { seq, decision } => {
                log_event(Info, "ade-decision", None, "", &format!("ADE request seq {seq}: {decision}"))
            }
            Event::DataVolume { volume, encrypted: true, detail } => {
                log_event(Info, "volume-encrypted", None, "", &format!("data volume {volume} is encrypted ({detail})"))
            }
            Event::DataVolume { volume, encrypted: false, detail } => log_event(
                Error,
                "volume-not-encrypted",
                None,
                "",
                &format!("data volume {volume} is not encrypted: {detail}"),
            ),
        }
    }
}

/// Live progress on a terminal (indicatif): a spinner per unit being stopped or started with its elapsed time and
/// timeout, one for a wait with the time left; the other events as lines above them.
pub struct TermSink {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
    wait: Mutex<Option<indicatif::ProgressBar>>,
}

impl Default for TermSink {
    fn default() -> Self {
        TermSink {
            multi: indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()),
            bars: Mutex::default(),
            wait: Mutex::default(),
        }
    }
}

impl TermSink {
    fn spinner(&self, msg: String) -> indicatif::ProgressBar {
        let style = indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let pb = self.multi.add(indicatif::ProgressBar::new_spinner().with_style(style).with_message(msg));
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    fn begin(&self, verb: &str, units: &[(String, Duration)]) {
        if let Ok(mut bars) = self.bars.lock() {
            for (u, t) in units {
                bars.insert(u.clone(), self.spinner(format!("{verb} {u} (timeout {})", secs(*t))));
            }
        }
    }

    fn end(&self, unit: &str, msg: &str) {
        let pb = self.bars.lock().ok().and_then(|mut b| b.remove(unit));
        match pb {
            Some(pb) => {
                let took = pb.elapsed();
                pb.set_style(
                    indicatif::ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                pb.finish_with_message(format!("{msg} in {:.1} s", took.as_secs_f64()));
            }
            None => self.line(msg),
        }
    }

    fn line(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }
}

impl EventSink for TermSink {
    fn event(&self, e: &Event) {
        match *e {
            Event::WindowOpened { mounts, steps } => {
                self.line(&format!("window opened: {steps} step(s) to free {mounts}"))
            }
            Event::Stopping(units) => self.begin("stopping", units),
            Event::Stopped(u) => self.end(u, &format!("stopped {u}")),
            Event::StopFailed(u, why) => self.end(u, &format!("{u} failed to stop: {why}")),
            Event::Starting(units) => self.begin("starting", units),
            Event::Started(u) => self.end(u, &format!("started {u}")),
            Event::StartFailed(u, why) => self.end(u, &format!("{u} failed to start: {why}")),
            Event::Waiting { what, left } => {
                let left = left.map_or("no limit".into(), |l| format!("{} s left", l.as_secs()));
                let msg = format!("waiting ({left}): {what}");
                if let Ok(mut w) = self.wait.lock() {
                    match &*w {
                        Some(pb) => pb.set_message(msg),
                        None => *w = Some(self.spinner(msg)),
                    }
                }
            }
            Event::WaitOver => {
                if let Some(pb) = self.wait.lock().ok().and_then(|mut w| w.take()) {
                    pb.finish_and_clear();
                }
            }
            Event::SelinuxSet(mode) => self.line(&format!("SELinux set to {mode}")),
            Event::WindowClosed(s) => self.line(&format!("window closed: {s}")),
            Event::RestoreIncomplete(f) => self.line(&format!("restore incomplete: {}", f.join("; "))),
            Event::AdeDecision { seq, decision } => self.line(&format!("ADE request seq {seq}: {decision}")),
            Event::DataVolume { volume, encrypted: true, detail } => {
                self.line(&format!("data volume {volume} is encrypted ({detail})"))
            }
            Event::DataVolume { volume, encrypted: false, detail } => {
                self.line(&format!("error: data volume {volume} is not encrypted: {detail}"))
            }
        }
    }
}

/// Sets up where logs and events go, once, at start: under systemd (stderr is the journal's stream) the native
/// journal protocol with fields, at info at least; otherwise plain stderr without timestamps at `-v`'s level
/// (RUST_LOG overrides), with live progress when stderr is a terminal.
pub fn init_output(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if systemd_journal_logger::connected_to_journal() || stderr_is_journald_stream() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            if log::set_boxed_logger(Box::new(Journal(j))).is_ok() {
                let env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse::<log::LevelFilter>().ok());
                log::set_max_level(env.unwrap_or(level).max(log::LevelFilter::Info));
                // SAFETY: registers a plain function without arguments, run by exit() after main returns.
                unsafe { libc::atexit(sync_journal_at_exit) };
                return;
            }
        }
    }
    // No timestamps: journald adds them when it reads stderr.
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level.as_str()));
    // Messages carry outside text (process titles, unit names, ADE's messages): control characters are escaped,
    // so that each record stays one honest line.
    b.format(|buf, record| {
        use std::io::Write;
        let style = buf.default_level_style(record.level());
        let level = record.level();
        writeln!(buf, "[{style}{level:<5}{style:#}] {}", crate::text::escape_controls(&record.args().to_string()))
    });
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let term = TermSink::default();
        // Log lines go above the live lines (cleared, printed, redrawn), not through them.
        b.target(env_logger::Target::Pipe(Box::new(AboveBars(term.multi.clone()))));
        install(Box::new(term));
    }
    b.init();
}

/// The journal logger; a record whose native send fails goes to stderr instead (journald's stream under systemd),
/// so that no line is lost, only its fields.
struct Journal(systemd_journal_logger::JournalLog);

impl log::Log for Journal {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if self.0.journal_send(record).is_err() {
            let _ = writeln!(std::io::stderr(), "<{}>{}", syslog_priority(record.level()), record.args());
        }
    }

    fn flush(&self) {
        sync_journal(Path::new(JOURNALD_SOCKET), JOURNAL_SYNC_LIMIT);
    }
}

/// The `<N>` prefix journald's stream reads a line's priority from.
fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 5,
        log::Level::Debug => 6,
        log::Level::Trace => 7,
    }
}

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// How long the exit waits at most for journald to read what was sent.
const JOURNAL_SYNC_LIMIT: Duration = Duration::from_secs(2);

extern "C" fn sync_journal_at_exit() {
    sync_journal(Path::new(JOURNALD_SOCKET), JOURNAL_SYNC_LIMIT);
}

/// Waits (at most `limit`) until journald (listening on `socket`) has read every entry this process sent before.
/// journald before 232-ish (219 here) finds a sender's unit, cgroup and command line in /proc when it reads the entry:
/// an entry still queued when the process exits is stored without `_SYSTEMD_UNIT=` and `journalctl -u` does not show
/// it. So an empty datagram (journald discards it) goes last into the socket's queue, and the wait lasts until it was
/// read (the bytes our socket has queued, SIOCOUTQ, are back to 0): journald reads its socket in order and handles an
/// entry before it reads the next, so every earlier entry is stored by then.
fn sync_journal(socket: &Path, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return false };
    if sock.send_to(&[], socket).is_err() {
        return false;
    }
    let t = Instant::now();
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int, the bytes sent on this socket not yet read by the receiver.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } != 0 {
            return false;
        }
        if queued == 0 {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// systemd before 231 (RHEL 7's 219, Ubuntu 16.04's 229) sets no JOURNAL_STREAM: there stderr is the journal's
/// stream when it is a socket whose peer is journald's stdout socket (the accepted socket carries the address the
/// listener is bound to).
fn stderr_is_journald_stream() -> bool {
    // SAFETY: a zeroed sockaddr_un is a valid value; getpeername writes at most `len` bytes into it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let rc = unsafe { libc::getpeername(2, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) };
    if rc != 0 || i32::from(addr.sun_family) != libc::AF_UNIX {
        return false;
    }
    let path: Vec<u8> = addr.sun_path.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    path == b"/run/systemd/journal/stdout"
}

/// stderr for log lines while progress bars are drawn: each write is made with the bars cleared.
struct AboveBars(indicatif::MultiProgress);

impl std::io::Write for AboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_ids() {
        let mut ids: Vec<&str> = MESSAGE_IDS.iter().map(|(_, id)| *id).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), MESSAGE_IDS.len());
    }

    #[test]
    fn the_exit_sync_waits_until_the_listener_read_the_socket_and_not_longer_than_its_limit() {
        let dir = std::env::temp_dir().join(format!("ade-prep-jsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Nobody reads: the sync gives up after its limit.
        let t = Instant::now();
        assert!(!sync_journal(&path, Duration::from_millis(200)));
        assert!(t.elapsed() >= Duration::from_millis(200));
        // A reader that drains the queue after a moment: the sync returns once the last datagram was read.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // The first sync's datagram, still queued, then the second's.
            let mut buf = [0u8; 16];
            (0..2).map(|_| listener.recv(&mut buf).unwrap()).count()
        });
        assert!(sync_journal(&path, Duration::from_secs(30)));
        assert_eq!(reader.join().unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn docs_journal_md_lists_every_message_id_with_its_journalctl_line() {
        let doc = include_str!("../docs/journal.md");
        for (kind, id) in MESSAGE_IDS {
            assert!(doc.contains(&format!("| {kind} | `{id}` |")), "docs/journal.md: no row for {kind}");
            assert!(
                doc.contains(&format!("journalctl MESSAGE_ID={id}   # {kind}")),
                "docs/journal.md: no line for {kind}"
            );
        }
    }
}
