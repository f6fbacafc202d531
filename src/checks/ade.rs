//! ADE's own state: an operation under way (request queue, phase markers, the dd writing the encrypted volume)
//! and the extension's last reported status against what the guest shows.
//! It reads ADE's status through extension::ade's reader; it must not change anything.

use std::path::Path;

use crate::extension::ade::machine::OLDROOT;
use crate::extension::ade::{parse_status, OpStatus, OsState, RootState};
use crate::mountinfo::Mount;
use crate::paths::WAAGENT_DIR;

use crate::volumes::Verdict;

use super::{
    AdeState, Check, DmDevice, Input, Process, StaleHold, Status, VolumeInputs, ADE_OPERATION, ENCRYPTION_STATUS,
};

/// ADE's OS encryption phases, in the order its state machines run them (each distro runs a subset); a marker file
/// named after each is written when the phase ends. The last one ends the encryption.
pub const PHASES: &[&str] = &[
    "PrereqState",
    "SelinuxState",
    "StripdownState",
    "UnmountOldrootState",
    "SplitRootPartitionState",
    "EncryptBlockDeviceState",
    "PatchBootSystemState",
];

/// The mapper name ADE gives the encrypted OS volume.
pub const OS_MAPPER: &str = "osencrypt";

const OP_TITLE: &str = "no ADE operation under way";
const OP_FIX: &str = "An ADE operation is under way: do not change, reboot or prepare the VM until it ends (3 to 16 \
    hours for an OS disk, SSH is off meanwhile); follow it with `az vm encryption show` or \
    Get-AzVMDiskEncryptionStatus. If it failed midway, restore the snapshot or backup taken before encryption.";

const STATUS_TITLE: &str = "encryption status consistent";
const STATUS_FIX: &str = "Change encryption only with the supported commands: to disable ADE run `az vm encryption \
    disable` (or Disable-AzVMDiskEncryption), then remove the extension (Remove-AzVMDiskEncryptionExtension fails \
    before that); never decrypt with low-level commands. On VMRestartPending reboot the VM and wait a few minutes; \
    on an error read /var/log/azure/Microsoft.Azure.Security.AzureDiskEncryptionForLinux/ and retry once fixed.";

/// A key of ADE's request queue ini (ConfigParser lowercases keys: compared without case).
fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=').or_else(|| l.split_once(':'))?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().to_string()).filter(|v| !v.is_empty() && v != "None")
    })
}

fn dd_to_osencrypt(procs: &[Process]) -> Option<&Process> {
    let target = format!("of=/dev/mapper/{OS_MAPPER}");
    procs.iter().find(|p| {
        let is_dd = p.comm == "dd" || p.cmdline.first().is_some_and(|a| a.rsplit('/').next() == Some("dd"));
        is_dd && p.cmdline.contains(&target)
    })
}

/// An ADE operation under way, and its phase. `os_encrypted`: the OS volume is encrypted by ADE's own test, the
/// rule `run` uses ([`crate::extension::ade::machine::os_encrypted`]: an LVM root is on the mapper without being
/// encrypted).
pub fn ade_operation(
    queue: &Input<Option<String>>,
    markers: &Input<Option<Vec<String>>>,
    procs: &Input<Vec<Process>>,
    mounts: &Input<Vec<Mount>>,
    os_encrypted: bool,
) -> Check {
    let mk = |r, e: String| Check::new(ADE_OPERATION, OP_TITLE, OP_FIX, r, e);
    let mut seen = vec![];
    let mut errors = vec![];
    let mut under_way = false;
    match queue {
        Ok(Some(text)) => {
            under_way = true;
            let op = ini_value(text, "EncryptionOperation").or_else(|| ini_value(text, "command"));
            let vol = ini_value(text, "VolumeType");
            seen.push(format!(
                "request queued ({}, volume type {})",
                op.as_deref().unwrap_or("operation not named"),
                vol.as_deref().unwrap_or("not named")
            ));
        }
        Ok(None) => {}
        Err(e) => errors.push(e.clone()),
    }
    // One reader of where / stands, shared with `run` (FINDINGS 15, 23).
    let root = mounts.as_ref().ok().map(|m| RootState::from_mounts(m));
    // An encrypted VM keeps PrereqState (and SelinuxState on RHEL) on the disk for good (FINDINGS 25): the OS
    // volume encrypted (ADE's test, as `run` reads it: not merely `/` on the mapper, which an LVM root always is)
    // means the phases finished, whatever markers are left.
    let mut finished = os_encrypted;
    match markers {
        Ok(Some(names)) if !names.is_empty() => {
            let done: Vec<&str> = PHASES.iter().copied().filter(|p| names.iter().any(|n| n == p)).collect();
            let other: Vec<&str> = names.iter().map(String::as_str).filter(|n| !PHASES.contains(n)).collect();
            finished |= done.last() == PHASES.last();
            let mut s =
                format!("OS phases finished: {}", if done.is_empty() { "none".into() } else { done.join(", ") });
            if !other.is_empty() {
                s.push_str(&format!(" (other markers: {})", other.join(", ")));
            }
            seen.push(s);
        }
        Ok(_) => {}
        Err(e) => errors.push(e.clone()),
    }
    match procs {
        Ok(p) => {
            if let Some(dd) = dd_to_osencrypt(p) {
                under_way = true;
                seen.push(format!("encrypting the OS volume: pid {} `{}`", dd.pid, dd.cmdline.join(" ")));
            }
        }
        Err(e) => errors.push(e.clone()),
    }
    if let Some(root) = &root {
        if root.tmpfs {
            under_way = true;
            seen.push("/ is a tmpfs: ADE has moved to its RAM root".into());
        } else if root.oldroot {
            under_way = true;
            seen.push(format!("{OLDROOT} is mounted: ADE is unmounting the disk"));
        }
        if os_encrypted {
            seen.push(format!("/ is on {} (encrypted)", root.source));
        }
    }
    let markers_only = !seen.is_empty() && !under_way;
    if under_way || (markers_only && !finished) {
        let how = if under_way { "under way" } else { "interrupted (phase markers without a queued request)" };
        return mk(Status::Warn, format!("ADE operation {how}: {}", seen.join("; ")));
    }
    if !errors.is_empty() {
        return mk(Status::Unknown, errors.join("; "));
    }
    if finished {
        return mk(
            Status::Pass,
            format!("no operation under way; OS encryption finished earlier ({})", seen.join("; ")),
        );
    }
    mk(Status::Pass, "no request queued, no phase marker, no dd writing the OS volume".into())
}

const HOLD_FIX: &str = "Run `ade-prep restore`: it removes the hold list, reloads systemd (dropping the generator's \
    masks) and starts what the last window stopped; until then the listed units are masked at every boot or reload.";

/// ade-prep's hold list left with no window open (a crash between closing the window and removing it, or a list
/// left by hand) warns on the ADE operation check, with its path, its units and the fix; an unreadable list or
/// journal turns a pass into unknown.
pub fn with_stale_hold(mut c: Check, stale: &Input<Option<StaleHold>>) -> Check {
    match stale {
        Ok(None) => c,
        Err(e) => {
            if c.result == Status::Pass {
                c.result = Status::Unknown;
                c.evidence = format!("{}; hold list: {e}", c.evidence);
            }
            c
        }
        Ok(Some(h)) => {
            let units = if h.units.is_empty() { "no unit".to_string() } else { h.units.join(", ") };
            let said =
                format!("stale hold list {} with no window open (masked at the next boot or reload: {units})", h.path);
            if matches!(c.result, Status::Warn | Status::Unknown) {
                c.evidence = format!("{}; {said}", c.evidence);
                c.fix = format!("{} {HOLD_FIX}", c.fix);
            } else {
                c.evidence = said;
                c.fix = HOLD_FIX.to_string();
            }
            c.result = Status::Warn;
            c
        }
    }
}

/// The extension's last reported status against the guest: `/` on the encrypted OS volume or not, dm-crypt data
/// volumes or none.
pub fn encryption_status(
    state: &Input<Option<AdeState>>,
    mounts: &Input<Vec<Mount>>,
    dm: &Input<Vec<DmDevice>>,
    volumes: &VolumeInputs,
) -> Check {
    let mk = |r, e: String| Check::new(ENCRYPTION_STATUS, STATUS_TITLE, STATUS_FIX, r, e);
    let st = match state {
        Err(e) => return mk(Status::Unknown, e.clone()),
        Ok(None) => return mk(Status::NotApplicable, "the ADE extension is not installed".into()),
        Ok(Some(s)) => s,
    };
    let Some(seq) = st.seq else {
        return mk(Status::NotApplicable, format!("{} has no settings yet: no operation requested", st.handler));
    };
    let file = format!("{WAAGENT_DIR}/{}/status/{seq}.status", st.handler);
    let Some(text) = &st.status else {
        return mk(Status::NotApplicable, format!("{file} not written yet"));
    };
    // The same reader as `run`'s: check and run cannot disagree about the same file.
    let reported = match parse_status(text) {
        Ok(r) => r,
        Err(e) => return mk(Status::Unknown, format!("{file}: {e}")),
    };
    let (mounts, dm) = match (mounts, dm) {
        (Ok(m), Ok(d)) => (m, d),
        (Err(e), _) | (_, Err(e)) => return mk(Status::Unknown, e.clone()),
    };
    let root = mounts.iter().rev().find(|m| m.mount_point == Path::new("/"));
    let os_mapped =
        dm.iter().any(|d| d.name == OS_MAPPER) || root.is_some_and(|r| r.source == format!("/dev/mapper/{OS_MAPPER}"));
    let data_crypt: Vec<&str> =
        dm.iter().filter(|d| d.is_crypt() && d.name != OS_MAPPER).map(|d| d.name.as_str()).collect();
    let guest = format!(
        "guest: {}, {} dm-crypt data volume(s){}",
        if os_mapped { "OS volume on /dev/mapper/osencrypt" } else { "OS volume not encrypted" },
        data_crypt.len(),
        if data_crypt.is_empty() { String::new() } else { format!(" ({})", data_crypt.join(", ")) }
    );
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let said = format!(
        "extension ({file}): {} {}, os {}, data {}",
        or_dash(&reported.operation),
        reported.status,
        reported.os.as_ref().map_or("-".into(), OsState::to_string),
        reported.data.as_deref().unwrap_or("-")
    );
    let mut problems = vec![];
    match reported.os {
        Some(OsState::Encrypted) if !os_mapped => {
            problems.push("Azure reports the OS disk encrypted but the guest shows it decrypted".to_string())
        }
        Some(OsState::NotEncrypted) if os_mapped => {
            problems.push("Azure reports the OS disk not encrypted but the guest runs on osencrypt".to_string())
        }
        Some(OsState::VMRestartPending) => problems.push("OS disk encrypted, the VM must be restarted".to_string()),
        Some(OsState::EncryptionInProgress) => problems.push("OS disk encryption in progress".to_string()),
        _ => {}
    }
    match reported.data.as_deref() {
        Some("Encrypted") if data_crypt.is_empty() => {
            problems.push("Azure reports data volumes encrypted but the guest has no dm-crypt data volume".to_string())
        }
        Some("NotEncrypted") if !data_crypt.is_empty() => problems
            .push("Azure reports data volumes not encrypted but the guest has dm-crypt data volumes".to_string()),
        _ => {}
    }
    // ADE reports success for data even when it skipped a busy volume (handle.py:1989-1993, then "Encryption
    // succeeded for data volumes", handle.py:2192): a volume it still selects, or one failing verification, is named.
    let mut skipped = vec![];
    if reported.data.as_deref() == Some("Encrypted") && reported.status != OpStatus::Error {
        for (v, verdict) in &volumes.verdicts {
            if let Verdict::NotEncrypted { why } = verdict {
                let at = v.mount.as_ref().map_or(String::new(), |m| format!(" ({})", m.display()));
                skipped.push(format!("ADE reported data encrypted but {}{at} is not: {why}", v.device.display()));
            }
        }
    }
    if reported.status == OpStatus::Error {
        let message = if reported.message.is_empty() { "no message" } else { reported.message.as_str() };
        problems.push(format!("the last operation failed (code {}): {message}", or_dash(&reported.code)));
    }
    if !skipped.is_empty() {
        skipped.extend(problems);
        mk(Status::Fail, format!("{}; {said}; {guest}", skipped.join("; ")))
    } else if problems.is_empty() {
        mk(Status::Pass, format!("{said}; {guest}"))
    } else {
        mk(Status::Warn, format!("{}; {said}; {guest}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse;

    fn status_json(status: &str, os: &str, data: &str) -> String {
        let inner = serde_json::json!({"os": os, "data": data}).to_string();
        serde_json::json!([{
            "version": 1.0,
            "timestampUTC": "2024-03-01T10:00:00Z",
            "status": {
                "name": "Microsoft.Azure.Security.AzureDiskEncryptionForLinux",
                "operation": "EnableEncryption",
                "status": status,
                "code": 0,
                "formattedMessage": {"lang": "en-US", "message": "Encryption succeeded for all volumes"},
                "substatus": [{"name": "x", "status": "success", "code": 0,
                               "formattedMessage": {"lang": "en-US", "message": inner}}]
            }
        }])
        .to_string()
    }

    fn state(text: Option<String>) -> Input<Option<AdeState>> {
        Ok(Some(AdeState {
            handler: "Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53".into(),
            seq: Some(1),
            status: text,
        }))
    }

    fn crypt(node: &str, name: &str) -> DmDevice {
        DmDevice {
            node: node.into(),
            dev: Some((253, 0)),
            name: name.into(),
            uuid: Some(format!("CRYPT-LUKS1-x-{name}")),
        }
    }

    const PLAIN: &str = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n";
    const ENC: &str = "1 0 253:0 / / rw - ext4 /dev/mapper/osencrypt rw\n";

    #[test]
    fn parses_the_status_file() {
        // The status reader is extension::ade's, shared with `run`: the check's fixtures must read there too.
        let s = parse_status(&status_json("success", "Encrypted", "NotMounted")).unwrap();
        assert_eq!(s.operation, "EnableEncryption");
        assert_eq!((s.os, s.data.as_deref()), (Some(OsState::Encrypted), Some("NotMounted")));
        assert_eq!(s.code, "0");
        assert!(parse_status("{\"status\": 1}").is_err());
        assert!(parse_status("[]").is_err());
        assert!(parse_status("\u{0}garbage").unwrap_err().starts_with("not valid JSON"));
    }

    fn es(st: &Input<Option<AdeState>>, m: &Input<Vec<Mount>>, dm: &Input<Vec<DmDevice>>) -> Check {
        encryption_status(st, m, dm, &VolumeInputs::not_read("not read"))
    }

    #[test]
    fn a_data_volume_ade_skipped_fails_named() {
        use crate::volumes::DataVolume;
        let m = Ok(parse(ENC).0);
        let dm = Ok(vec![crypt("dm-0", "osencrypt"), crypt("dm-1", "c0ffee")]);
        let vol = |dev: &str, mp: &str| DataVolume {
            device: dev.into(),
            uuid: "u".into(),
            fstype: "ext4".into(),
            mount: Some(mp.into()),
            size_bytes: 1 << 30,
        };
        let mut v = VolumeInputs::not_read("x");
        v.verdicts = vec![
            (vol("/dev/sdc1", "/data"), Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() }),
            (vol("/dev/sdd1", "/busy"), Verdict::NotEncrypted { why: "/dev/sdd1 has no LUKS header".into() }),
        ];
        let said_encrypted = state(Some(status_json("success", "Encrypted", "Encrypted")));
        let c = encryption_status(&said_encrypted, &m, &dm, &v);
        assert_eq!(c.result, Status::Fail, "{}", c.evidence);
        assert!(
            c.evidence
                .starts_with("ADE reported data encrypted but /dev/sdd1 (/busy) is not: /dev/sdd1 has no LUKS header;"),
            "{}",
            c.evidence
        );
        assert!(!c.evidence.contains("/dev/sdc1 (/data) is not"), "{}", c.evidence);
        // ADE did not claim data: nothing to hold it to
        let os_only = state(Some(status_json("success", "Encrypted", "NotEncrypted")));
        assert_eq!(encryption_status(&os_only, &m, &Ok(vec![crypt("dm-0", "osencrypt")]), &v).result, Status::Pass);
        // every selected volume verified: pass
        v.verdicts.pop();
        assert_eq!(encryption_status(&said_encrypted, &m, &dm, &v).result, Status::Pass);
    }

    #[test]
    fn mismatches_warn() {
        let m = |t: &str| Ok(parse(t).0);
        let ok = es(
            &state(Some(status_json("success", "Encrypted", "NotEncrypted"))),
            &m(ENC),
            &Ok(vec![crypt("dm-0", "osencrypt")]),
        );
        assert_eq!(ok.result, Status::Pass, "{}", ok.evidence);
        // decrypted with low-level commands: Azure still says encrypted
        let c = es(&state(Some(status_json("success", "Encrypted", "NotEncrypted"))), &m(PLAIN), &Ok(vec![]));
        assert_eq!(c.result, Status::Warn);
        assert!(
            c.evidence.starts_with("Azure reports the OS disk encrypted but the guest shows it decrypted"),
            "{}",
            c.evidence
        );
        let c = es(&state(Some(status_json("success", "NotEncrypted", "Encrypted"))), &m(PLAIN), &Ok(vec![]));
        assert!(c.evidence.contains("no dm-crypt data volume"), "{}", c.evidence);
        let c = es(
            &state(Some(status_json("success", "NotEncrypted", "NotEncrypted"))),
            &m(PLAIN),
            &Ok(vec![crypt("dm-1", "resourceencrypt")]),
        );
        assert_eq!(c.result, Status::Warn);
        let c = es(
            &state(Some(status_json("success", "VMRestartPending", "Encrypted"))),
            &m(PLAIN),
            &Ok(vec![crypt("dm-1", "a")]),
        );
        assert!(c.evidence.contains("must be restarted"));
        let c = es(&state(Some(status_json("error", "NotEncrypted", "NotEncrypted"))), &m(PLAIN), &Ok(vec![]));
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.contains("the last operation failed (code 0)"), "{}", c.evidence);
    }

    #[test]
    fn nothing_to_compare_or_unreadable() {
        let m = Ok(parse(PLAIN).0);
        assert_eq!(es(&Ok(None), &m, &Ok(vec![])).result, Status::NotApplicable);
        assert_eq!(es(&state(None), &m, &Ok(vec![])).result, Status::NotApplicable);
        let no_seq = Ok(Some(AdeState { handler: "h".into(), seq: None, status: None }));
        assert_eq!(es(&no_seq, &m, &Ok(vec![])).result, Status::NotApplicable);
        let c = es(&state(Some("[{".into())), &m, &Ok(vec![]));
        assert_eq!(c.result, Status::Unknown);
        assert!(c.evidence.contains("status/1.status: not valid JSON"), "{}", c.evidence);
        assert_eq!(es(&Err("e".into()), &m, &Ok(vec![])).result, Status::Unknown);
        let good = state(Some(status_json("success", "Encrypted", "NotEncrypted")));
        assert_eq!(es(&good, &m, &Err("no dm".into())).result, Status::Unknown);
    }

    fn dd(pid: i32) -> Process {
        Process {
            pid,
            ppid: Some(1),
            comm: "dd".into(),
            cmdline: ["dd", "if=/dev/sda1", "of=/dev/mapper/osencrypt", "bs=52428800", "conv=sparse"]
                .map(String::from)
                .to_vec(),
            cwd: Some("/".into()),
        }
    }

    /// `ade_operation` with the OS encrypted when `/` is on the mapper (no LVM in these mount tables).
    fn op(
        q: &Input<Option<String>>,
        m: &Input<Option<Vec<String>>>,
        p: &Input<Vec<Process>>,
        mounts: &Input<Vec<Mount>>,
    ) -> Check {
        let enc = mounts.as_ref().is_ok_and(|ms| RootState::from_mounts(ms).on_mapper());
        ade_operation(q, m, p, mounts, enc)
    }

    #[test]
    fn an_lvm_root_with_phase_markers_is_interrupted_not_finished() {
        // FINDINGS 15: an LVM root is on /dev/mapper without being encrypted (DiskUtil.py:654-659): PrereqState left
        // alone there is an interrupted OS pass, as `run` reads the root.
        let none: Input<Option<String>> = Ok(None);
        let lvm = Ok(parse("22 1 253:0 / / rw - xfs /dev/mapper/rootvg-rootlv rw\n").0);
        let kept = Ok(Some(vec!["PrereqState".to_string()]));
        let c = ade_operation(&none, &kept, &Ok(vec![]), &lvm, false);
        assert!(c.result == Status::Warn && c.evidence.contains("interrupted"), "{}", c.evidence);
        assert_eq!(ade_operation(&none, &kept, &Ok(vec![]), &lvm, true).result, Status::Pass);
    }

    #[test]
    fn operation_phase() {
        let none: Input<Option<String>> = Ok(None);
        let no_markers: Input<Option<Vec<String>>> = Ok(None);
        let m = Ok(parse(PLAIN).0);
        let quiet = op(&none, &no_markers, &Ok(vec![]), &m);
        assert_eq!(quiet.result, Status::Pass);
        let queue =
            Ok(Some("[encryption_request_queue]\nencryptionoperation = EnableEncryption\nvolumetype = OS\n".into()));
        let marks = Ok(Some(vec!["PrereqState".into(), "StripdownState".into()]));
        let c = op(&queue, &marks, &Ok(vec![dd(4242)]), &m);
        assert_eq!(c.result, Status::Warn);
        assert_eq!(
            c.evidence,
            "ADE operation under way: request queued (EnableEncryption, volume type OS); OS phases finished: \
             PrereqState, StripdownState; encrypting the OS volume: pid 4242 `dd if=/dev/sda1 of=/dev/mapper/osencrypt \
             bs=52428800 conv=sparse`"
        );
        // all phases marked, nothing queued: finished earlier
        let all = Ok(Some(PHASES.iter().map(|s| s.to_string()).collect()));
        assert_eq!(op(&none, &all, &Ok(vec![]), &m).result, Status::Pass);
        // some phases marked, nothing queued: interrupted
        let c = op(&none, &marks, &Ok(vec![]), &m);
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.contains("interrupted"));
        // FINDINGS 25, 15: an encrypted VM keeps PrereqState (and SelinuxState on RHEL) on the disk for good, the
        // later markers were written in the RAM root only: / on the mapper says finished, not interrupted.
        let encrypted = Ok(parse("22 1 253:0 / / rw - ext4 /dev/mapper/osencrypt rw\n").0);
        for kept in [vec!["PrereqState"], vec!["PrereqState", "SelinuxState"]] {
            let kept = Ok(Some(kept.into_iter().map(String::from).collect()));
            let c = op(&none, &kept, &Ok(vec![]), &encrypted);
            assert_eq!(c.result, Status::Pass, "{}", c.evidence);
            assert!(c.evidence.contains("finished earlier") && c.evidence.contains("/dev/mapper/osencrypt"));
        }
        // ADE's RAM root, and /oldroot mounted (FINDINGS 23)
        let c = op(&none, &no_markers, &Ok(vec![]), &Ok(parse("1 0 0:40 / / rw - tmpfs tmpfs rw\n").0));
        assert_eq!(c.result, Status::Warn);
        let ram = "22 1 8:1 / /oldroot rw - ext4 /dev/sda1 rw\n1 0 0:40 / / rw - tmpfs none rw\n";
        let c = op(&none, &no_markers, &Ok(vec![]), &Ok(parse(ram).0));
        assert!(c.result == Status::Warn && c.evidence.contains("RAM root"), "{}", c.evidence);
        // unreadable and nothing found: unknown
        let c = op(
            &Err("/a/azure_crypt_request_queue.ini: Is a directory (os error 21)".into()),
            &no_markers,
            &Ok(vec![]),
            &m,
        );
        assert_eq!(c.result, Status::Unknown);
        assert!(c.evidence.contains("Is a directory"));
        // a dd alone is enough
        assert_eq!(op(&none, &no_markers, &Ok(vec![dd(7)]), &m).result, Status::Warn);
    }

    #[test]
    fn a_stale_hold_list_warns_with_its_units_and_restore() {
        let pass = || Check::new(ADE_OPERATION, OP_TITLE, OP_FIX, Status::Pass, "nothing");
        let h = StaleHold { path: "/etc/ade-prep/hold".into(), units: vec!["mongod.service".into()] };
        assert_eq!(with_stale_hold(pass(), &Ok(None)), pass());
        let c = with_stale_hold(pass(), &Ok(Some(h.clone())));
        assert_eq!(c.result, Status::Warn);
        assert_eq!(
            c.evidence,
            "stale hold list /etc/ade-prep/hold with no window open (masked at the next boot or reload: mongod.service)"
        );
        assert_eq!(c.fix, HOLD_FIX);
        // An operation under way keeps its evidence and its fix; the list's are added.
        let busy = Check::new(ADE_OPERATION, OP_TITLE, OP_FIX, Status::Warn, "ADE operation under way");
        let c = with_stale_hold(busy, &Ok(Some(h)));
        assert!(c.evidence.starts_with("ADE operation under way; stale hold list"), "{}", c.evidence);
        assert!(c.fix.starts_with(OP_FIX) && c.fix.ends_with(HOLD_FIX));
        let c = with_stale_hold(pass(), &Err("/var/lib/ade-prep/state.json: bad".into()));
        assert_eq!(c.result, Status::Unknown);
        assert!(c.evidence.contains("state.json: bad"));
    }
}
