//! The verdict on ADE's facts: keep waiting, frozen (ADE is in its RAM root: change nothing), or done (completed
//! or failed for good). A pure function of [`Facts`] and the time; every rule cites the item of
//! tests/ade/FINDINGS.md it comes from. It must not read or change anything.

use std::fmt;

use serde::Serialize;

use super::{Facts, OpStatus, OsState, StatusRead};

/// ADE's daemon sleeps this long before its OS work, single pass (FINDINGS 26, `handle.py:2516-2524`).
pub const HEAD_START_SECS: u64 = 60;
/// The same for the dual pass (FINDINGS 26, dp `handle.py:2059-2060`).
pub const DUAL_PASS_HEAD_START_SECS: u64 = 120;
/// What the dual pass is given beyond its head start before an error with no daemon counts as final (FINDINGS 16).
pub const FAILURE_MARGIN_SECS: u64 = 60;

/// What `run` keeps of the head start for prepare itself (pre-stop commands, stopping the workloads, SELinux)
/// after waiting for other extensions' handler operations (FINDINGS 26, 31).
pub const PREPARE_MARGIN_SECS: u64 = 25;

/// How long `run` may wait for other extensions' handler operations on a request whose settings file is
/// `age_secs` old: ADE's head start less [`PREPARE_MARGIN_SECS`] less the age (FINDINGS 26, 31; 0 when spent).
pub fn extension_wait_bound(dual_pass: bool, age_secs: u64) -> u64 {
    let head_start = if dual_pass { DUAL_PASS_HEAD_START_SECS } else { HEAD_START_SECS };
    head_start.saturating_sub(PREPARE_MARGIN_SECS).saturating_sub(age_secs)
}

/// The message of ADE's normal Ubuntu step after the pivot (FINDINGS 7, `StripdownState.py:81-85`).
pub const RESTARTED_FROM_STRIPPED_OS: &str = "Restarted extension from stripped down OS";
/// The code of a failed `/oldroot` unmount attempt, retried (FINDINGS 8).
pub const UNMOUNT_RETRY_CODE: &str = "22";

/// How ADE's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The OS volume is encrypted and ADE has nothing left queued or running.
    Encrypted,
    /// The operation ended in success or warning, with nothing queued or running, the OS volume not asked for.
    Succeeded {
        operation: String,
        /// ADE's message.
        message: String,
    },
    /// ADE gave up on this request.
    Failed {
        operation: String,
        /// ADE's code.
        code: String,
        /// ADE's message.
        message: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Encrypted => f.write_str("the OS volume is encrypted"),
            Outcome::Succeeded { operation, message } => write!(f, "{operation} succeeded: {message}"),
            Outcome::Failed { operation, code, message } => write!(f, "{operation} failed (code {code}): {message}"),
        }
    }
}

/// Whether the window can close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// Not yet, and why.
    Wait(String),
    /// ADE is in its RAM root (`/` a tmpfs or `/oldroot` mounted): change nothing, whatever the status says; the
    /// journal on the disk keeps the window open (FINDINGS 23).
    Frozen(String),
    /// ADE is done.
    Done(Outcome),
}

impl Verdict {
    /// One line for the unit's status.
    pub fn text(&self) -> String {
        match self {
            Verdict::Wait(why) => why.clone(),
            Verdict::Frozen(why) => format!("frozen: {why}"),
            Verdict::Done(o) => o.to_string(),
        }
    }
}

/// The verdict on ADE's facts at `now` (seconds since the epoch), first rule that applies:
///
/// 1. `/` a tmpfs or `/oldroot` mounted (or the mount table unreadable) -> frozen (23, 17);
/// 2. no handler, no request, no readable status -> wait (18);
/// 3. dual pass: error with no daemon past the head start + margin -> failed (16);
/// 4. a live `handle.py -daemon` -> wait (12);
/// 5. OS `EncryptionInProgress` / `VMRestartPending`, whatever the top status -> wait (6, 9);
/// 6. OS encrypted (`/` on the mapper, or the substatus): queue there -> wait (14), else completed (15);
/// 7. error: 19 "Restarted extension from stripped down OS" or 22 -> wait (7, 8); queue there -> wait (11);
///    else failed (16);
/// 8. success or warning: queue there -> wait (11, 13); an OS request with OS not encrypted -> wait (10);
///    else succeeded;
/// 9. anything else (transitioning, unknown) -> wait.
pub fn decide(f: &Facts, now: u64) -> Verdict {
    let Some(root) = &f.root else {
        return Verdict::Frozen("the mount table cannot be read: cannot tell ADE's RAM root from the disk".into());
    };
    if root.tmpfs {
        return Verdict::Frozen("/ is a tmpfs: ADE runs from its RAM root".into());
    }
    if root.oldroot {
        return Verdict::Frozen(format!("{} is mounted: ADE is unmounting the disk", super::machine::OLDROOT));
    }
    let (Some(_), Some(seq)) = (&f.handler, f.seq) else {
        return Verdict::Wait(match &f.handler {
            None => format!("no {}-<version> folder in {}", crate::extension::ADE_HANDLER, f.waagent_dir.display()),
            Some(h) => format!("no settings in {}", h.dir.join("config").display()),
        });
    };
    let status_file = || {
        let h = f.handler.as_ref().map(|h| h.dir.clone()).unwrap_or_default();
        super::status_path(&h, f.status_seq.unwrap_or(seq)).display().to_string()
    };
    let s = match &f.status {
        StatusRead::Ok { status } => status,
        StatusRead::Missing => return Verdict::Wait(format!("no status yet: {}", status_file())),
        StatusRead::Invalid { why } => return Verdict::Wait(format!("{}: {why}; reading again", status_file())),
    };
    let os = s.os.as_ref().map_or("not reported".to_string(), |o| o.to_string());
    let wait = |why: &str| Verdict::Wait(format!("{why} ({} {} code {}, OS {os})", s.operation, s.status, s.code));
    let failed =
        || Outcome::Failed { operation: s.operation.clone(), code: s.code.clone(), message: s.message.clone() };
    let is_error = s.status == OpStatus::Error;
    let mid_flight_error = is_error && (s.message == RESTARTED_FROM_STRIPPED_OS || s.code == UNMOUNT_RETRY_CODE);
    if f.dual_pass() && is_error && !mid_flight_error && f.daemon.is_none() {
        let since = f.settings_mtime.map_or(u64::MAX, |m| now.saturating_sub(m));
        if since > DUAL_PASS_HEAD_START_SECS + FAILURE_MARGIN_SECS {
            return Verdict::Done(failed());
        }
        return wait("dual pass: error with no daemon, within the head start and margin");
    }
    if let Some(pid) = f.daemon {
        return wait(&format!("ADE's handle.py -daemon (pid {pid}) is at work"));
    }
    match s.os {
        Some(OsState::EncryptionInProgress) => return wait("OS volume encryption in progress"),
        Some(OsState::VMRestartPending) => return wait("OS volume encrypted, waiting through the restart"),
        _ => {}
    }
    if f.os_encrypted || s.os == Some(OsState::Encrypted) {
        if f.queue {
            return wait("OS volume encrypted, but ADE's request queue is still there");
        }
        return Verdict::Done(Outcome::Encrypted);
    }
    let includes_os = f.public.as_ref().is_none_or(|p| p.includes_os());
    match &s.status {
        OpStatus::Error if mid_flight_error => wait("a normal step of ADE's OS pass, not the end"),
        OpStatus::Error if f.queue => wait("error, but ADE's request queue is still there"),
        OpStatus::Error => Verdict::Done(failed()),
        OpStatus::Success | OpStatus::Warning if f.queue => wait("ADE's request queue is there: more to do"),
        OpStatus::Success | OpStatus::Warning if includes_os => {
            wait("the request includes the OS volume, which is not encrypted yet")
        }
        OpStatus::Success | OpStatus::Warning => {
            Verdict::Done(Outcome::Succeeded { operation: s.operation.clone(), message: s.message.clone() })
        }
        OpStatus::Transitioning => wait("at work"),
        OpStatus::Other(_) => wait("unknown status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::ade::{parse_status, AdeHandler, PublicSettings, RootState};
    use serde_json::json;

    const NOW: u64 = 1_000_000;

    /// A case: the facts, and what FINDINGS says the verdict is.
    struct Case {
        findings: &'static str,
        status: (&'static str, &'static str, serde_json::Value, &'static str, &'static str),
        volume_type: &'static str,
        queue: bool,
        daemon: bool,
        root: &'static str,
        dual: bool,
        age: u64,
        want: &'static str,
    }

    fn facts(c: &Case) -> Facts {
        let (op, st, code, msg, os) = &c.status;
        let sub = json!({"data": "EncryptionInProgress", "os": os}).to_string();
        let text = json!([{"version": 1.0, "status": {"operation": op, "status": st, "code": code,
            "formattedMessage": {"message": msg}, "substatus": [{"formattedMessage": {"message": sub}}]}}]);
        let version = if c.dual { "0.1.0.999345" } else { "1.4.0.12" };
        Facts {
            waagent_dir: "/var/lib/waagent".into(),
            handler: Some(AdeHandler { dir: "/var/lib/waagent/ADE".into(), version: version.into() }),
            seq: Some(1),
            status_seq: Some(1),
            public: Some(PublicSettings {
                encryption_operation: Some("EnableEncryption".into()),
                volume_type: Some(c.volume_type.into()),
            }),
            settings_mtime: Some(NOW - c.age),
            status: StatusRead::Ok { status: parse_status(&text.to_string()).unwrap() },
            queue: c.queue,
            daemon: c.daemon.then_some(4242),
            os_encrypted: c.root == "mapper",
            decrypt_queue: false,
            mrseq: None,
            settings_stamp: None,
            status_mtime: None,
            recorded_volume_type: None,
            work_files_mtime: None,
            root: Some(match c.root {
                "disk" => RootState { tmpfs: false, oldroot: false, source: "/dev/sda1".into() },
                "ram" => RootState { tmpfs: true, oldroot: true, source: "none".into() },
                "ram-unmounted" => RootState { tmpfs: true, oldroot: false, source: "none".into() },
                "mapper" => RootState { tmpfs: false, oldroot: false, source: "/dev/mapper/osencrypt".into() },
                other => panic!("{other}"),
            }),
        }
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Wait(_) => "wait",
            Verdict::Frozen(_) => "frozen",
            Verdict::Done(Outcome::Encrypted) => "encrypted",
            Verdict::Done(Outcome::Failed { .. }) => "failed",
            Verdict::Done(Outcome::Succeeded { .. }) => "succeeded",
        }
    }

    fn case(
        findings: &'static str,
        status: (&'static str, &'static str, serde_json::Value, &'static str, &'static str),
        queue: bool,
        daemon: bool,
        root: &'static str,
        want: &'static str,
    ) -> Case {
        Case { findings, status, volume_type: "All", queue, daemon, root, dual: false, age: 30, want }
    }

    #[test]
    fn the_verdict_follows_findings() {
        let inprog = "EncryptionInProgress";
        let cases = vec![
            case(
                "6: OS EncryptionInProgress, transitioning",
                ("EnableEncryption", "transitioning", json!("0"), "", inprog),
                true,
                true,
                "disk",
                "wait",
            ),
            case(
                "6: OS EncryptionInProgress whatever the top status (error, no daemon)",
                ("EnableEncryption", "error", json!("5"), "x", inprog),
                true,
                false,
                "disk",
                "wait",
            ),
            case(
                "7: error 19 'Restarted extension from stripped down OS' in the RAM root",
                ("EnableEncryptionOSVolume", "error", json!(19), RESTARTED_FROM_STRIPPED_OS, inprog),
                true,
                false,
                "ram",
                "frozen",
            ),
            case(
                "7: the same error 19 read on the disk is still mid-flight",
                ("EnableEncryptionOSVolume", "error", json!(19), RESTARTED_FROM_STRIPPED_OS, "NotEncrypted"),
                false,
                false,
                "disk",
                "wait",
            ),
            case(
                "8: error \"22\" unmount attempt, a retry",
                (
                    "EnableEncryptionOSVolume",
                    "error",
                    json!("22"),
                    "Attempt #1 to unmount /oldroot failed",
                    "NotEncrypted",
                ),
                false,
                false,
                "disk",
                "wait",
            ),
            case(
                "8/23: error 22 in the RAM root",
                ("EnableEncryptionOSVolume", "error", json!("22"), "Attempt #1", inprog),
                true,
                true,
                "ram",
                "frozen",
            ),
            case(
                "9: VMRestartPending, queue gone, no daemon",
                (
                    "EnableEncryptionOSVolume",
                    "success",
                    json!("0"),
                    "OS disk successfully encrypted, please reboot the VM",
                    "VMRestartPending",
                ),
                false,
                false,
                "disk",
                "wait",
            ),
            case(
                "10: UpdateEncryptionSettings success, OS NotEncrypted, request includes the OS",
                ("UpdateEncryptionSettings", "success", json!("0"), "Encryption settings updated", "NotEncrypted"),
                false,
                false,
                "disk",
                "wait",
            ),
            case(
                "11: success with the queue file there",
                (
                    "EnableEncryptionDataVolumes",
                    "success",
                    json!("0"),
                    "Encryption succeeded for data volumes",
                    "NotEncrypted",
                ),
                true,
                false,
                "disk",
                "wait",
            ),
            case(
                "12: a live handle.py -daemon, success NotEncrypted",
                ("EnableEncryption", "success", json!("0"), "", "NotEncrypted"),
                false,
                true,
                "disk",
                "wait",
            ),
            case(
                "13: dual pass between passes: success, queue, no daemon",
                ("EnableEncryption", "success", json!("0"), "<KEK secret id>", inprog),
                true,
                false,
                "disk",
                "wait",
            ),
            case(
                "14: OS Encrypted with the queue still there",
                ("EnableEncryption", "success", json!("0"), "", "Encrypted"),
                true,
                false,
                "mapper",
                "wait",
            ),
            case(
                "14: OS Encrypted with a daemon at work",
                ("EnableEncryption", "success", json!("0"), "", "Encrypted"),
                false,
                true,
                "mapper",
                "wait",
            ),
            case(
                "15: completed: / on the mapper, no queue, no daemon",
                (
                    "EnableEncryptionOSVolume",
                    "success",
                    json!("0"),
                    "Encryption succeeded for all volumes",
                    "Encrypted",
                ),
                false,
                false,
                "mapper",
                "encrypted",
            ),
            case(
                "15: completed: the substatus says Encrypted, no queue, no daemon",
                (
                    "EnableEncryptionOSVolume",
                    "success",
                    json!("0"),
                    "Encryption succeeded for all volumes",
                    "Encrypted",
                ),
                false,
                false,
                "disk",
                "encrypted",
            ),
            case(
                "15: / on the mapper although the substatus lags",
                ("EnableEncryption", "success", json!("0"), "", "NotEncrypted"),
                false,
                false,
                "mapper",
                "encrypted",
            ),
            case(
                "16: final failure, code 19 as a number, queue removed",
                (
                    "EnableEncryptionOSVolume",
                    "error",
                    json!(19),
                    "Failed to encrypt OS volume with error: x",
                    "NotEncrypted",
                ),
                false,
                false,
                "disk",
                "failed",
            ),
            case(
                "16/18: final failure, code \"19\" as a string",
                ("Enable", "error", json!("19"), "Failed to enable the extension", "NotEncrypted"),
                false,
                false,
                "disk",
                "failed",
            ),
            case(
                "16: enable error before any queue",
                ("EnableEncyption", "error", json!("5"), "Failed to read settings", "NotEncrypted"),
                false,
                false,
                "disk",
                "failed",
            ),
            case(
                "17: final failure in the RAM root is not actionable",
                (
                    "EnableEncryptionOSVolume",
                    "error",
                    json!(19),
                    "Failed to encrypt OS volume with error: Could not unmount /oldroot in 10 attempts",
                    "NotEncrypted",
                ),
                false,
                false,
                "ram-unmounted",
                "frozen",
            ),
            case(
                "23: success reported in the RAM root",
                (
                    "EnableEncryptionOSVolume",
                    "success",
                    json!("0"),
                    "Encryption succeeded for all volumes",
                    "Encrypted",
                ),
                false,
                false,
                "ram",
                "frozen",
            ),
        ];
        let mut more = vec![
            Case {
                volume_type: "data",
                ..case(
                    "4: a data-only request's success is the end",
                    (
                        "EnableEncryption",
                        "success",
                        json!("0"),
                        "Encryption succeeded for data volumes",
                        "NotEncrypted",
                    ),
                    false,
                    false,
                    "disk",
                    "succeeded",
                )
            },
            Case {
                volume_type: "ALL",
                ..case(
                    "4: volume type in any case includes the OS",
                    ("EnableEncryption", "success", json!("0"), "", "NotEncrypted"),
                    false,
                    false,
                    "disk",
                    "wait",
                )
            },
            Case {
                dual: true,
                age: 30,
                ..case(
                    "16: dual pass: error, queue left, no daemon, within the head start",
                    ("EnableEncryptionOSVolume", "error", json!(19), "Failed to encrypt OS volume", inprog),
                    true,
                    false,
                    "disk",
                    "wait",
                )
            },
            Case {
                dual: true,
                age: DUAL_PASS_HEAD_START_SECS + FAILURE_MARGIN_SECS + 1,
                ..case(
                    "16: dual pass: error, queue left, no daemon past the head start + margin",
                    ("EnableEncryptionOSVolume", "error", json!(19), "Failed to encrypt OS volume", inprog),
                    true,
                    false,
                    "disk",
                    "failed",
                )
            },
            Case {
                dual: true,
                age: 1000,
                ..case(
                    "16/12: dual pass: error while the daemon lives",
                    ("EnableEncryptionOSVolume", "error", json!("22"), "Attempt #1", inprog),
                    true,
                    true,
                    "disk",
                    "wait",
                )
            },
        ];
        more.extend(cases);
        for c in &more {
            let v = decide(&facts(c), NOW);
            assert_eq!(kind(&v), c.want, "FINDINGS {}: {v:?}", c.findings);
        }
    }

    #[test]
    fn the_extension_wait_ends_inside_the_head_start() {
        // FINDINGS 26: 60 s single pass, 120 s dual pass, counted from the settings file; FINDINGS 31: margin kept.
        assert_eq!(extension_wait_bound(false, 0), HEAD_START_SECS - PREPARE_MARGIN_SECS);
        assert_eq!(extension_wait_bound(true, 0), DUAL_PASS_HEAD_START_SECS - PREPARE_MARGIN_SECS);
        assert_eq!(extension_wait_bound(false, 10), HEAD_START_SECS - PREPARE_MARGIN_SECS - 10);
        assert_eq!(extension_wait_bound(false, 3600), 0);
    }

    #[test]
    fn no_request_or_no_status_waits_and_no_mount_table_freezes() {
        let c = case("2", ("EnableEncryption", "success", json!("0"), "", "Encrypted"), false, false, "disk", "");
        let mut f = facts(&c);
        f.status = StatusRead::Invalid { why: "half written".into() };
        assert!(matches!(decide(&f, NOW), Verdict::Wait(w) if w.contains("reading again")), "FINDINGS 18");
        f.status = StatusRead::Missing;
        assert!(matches!(decide(&f, NOW), Verdict::Wait(_)));
        f.seq = None;
        assert!(matches!(decide(&f, NOW), Verdict::Wait(w) if w.starts_with("no settings")));
        f.root = None;
        assert!(matches!(decide(&f, NOW), Verdict::Frozen(_)), "FINDINGS 23: unknown root changes nothing");
    }
}
