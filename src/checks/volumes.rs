//! The data volumes ADE will select (crate::volumes) against what its in-place path can do (ADE 1.4.0.12):
//! e2fsck, resize2fs shrink by the LUKS header, header, copy, grow (`handle.py:1335-1553`): ext2/3/4 only; a plain
//! `umount` of each mount point (`DiskUtil.py:597-599`), `mount -a` first (`handle.py:2340`), `swapoff -a` for
//! EncryptFormatAll (`handle.py:1233`), fstab's line rewritten to the mapper (`CryptMountConfigUtil.py:702-747`).
//! Pure: it judges what inputs.rs read; it must not read nor change anything.

use std::path::{Path, PathBuf};

use crate::mountinfo::Mount;
use crate::volumes::verify::parse_fstab;
use crate::volumes::{DataVolume, Survey, Verdict};

use super::{Check, Input, Status, DATA_VOLUMES};

/// ADE's LUKS2 header (`Common.py:110`, 16 MiB), written with cryptsetup 2.1.0 and later: what the in-place path
/// shrinks the filesystem by.
pub const LUKS2_HEADER: u64 = 32768 * 512;
/// ADE's LUKS1 header (`Common.py:109`, 2 MiB), with an older cryptsetup (`DiskUtil.py:1379-1386`).
pub const LUKS1_HEADER: u64 = 4096 * 512;

const TITLE: &str = "data volumes ADE can encrypt in place";
const FIX: &str = "Per volume: XFS (or any non-ext2/3/4 filesystem) cannot be encrypted in place: move its data to an \
    ext4 volume or use EncryptFormatAll on an empty disk; free at least 16 MiB on a volume with no room to shrink; \
    unmount what is mounted below a data volume (ADE's plain umount fails and it skips the volume); move data off \
    /mnt (the resource disk); write fstab lines by UUID= with nofail; fix or remove fstab lines `mount -a` cannot \
    mount; move swap off data and resource disks.";

/// What the data-volume check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInputs {
    /// ADE's selection (and every device lsblk listed).
    pub survey: Input<Survey>,
    /// `/etc/fstab`.
    pub fstab: Input<String>,
    /// `/proc/swaps`.
    pub swaps: Input<String>,
    /// Free bytes (statvfs f_bfree × f_frsize) per mount point of a selected volume, where it could be read.
    pub free: Vec<(PathBuf, u64)>,
    /// Paths of the machine that exist (fstab devices and mount points looked up), for the `mount -a` judgement.
    pub existing: Vec<PathBuf>,
    /// Each selected volume verified (crate::volumes::verify), for encryption-status.
    pub verdicts: Vec<(DataVolume, Verdict)>,
    /// The VolumeType of ADE's newest settings, when there are any.
    pub request: Option<String>,
    /// ADE's newest settings ask for EnableEncryptionFormatAll: the volumes are formatted, not encrypted in place.
    pub format_all: bool,
}

impl VolumeInputs {
    /// Nothing read, for `reason`.
    pub fn not_read(reason: &str) -> Self {
        VolumeInputs {
            survey: Err(reason.to_string()),
            fstab: Err(reason.to_string()),
            swaps: Err(reason.to_string()),
            free: vec![],
            existing: vec![],
            verdicts: vec![],
            request: None,
            format_all: false,
        }
    }
}

fn on(v: &DataVolume) -> String {
    match &v.mount {
        Some(m) => format!("{} ({})", v.device.display(), m.display()),
        None => format!("{} (not mounted)", v.device.display()),
    }
}

/// Problems of one selected volume that stop ADE's in-place path (fail) or make it skip/misbehave (warn).
fn volume_problems(
    v: &DataVolume,
    mounts: &[Mount],
    inp: &VolumeInputs,
    fails: &mut Vec<String>,
    warns: &mut Vec<String>,
) {
    let name = on(v);
    if inp.format_all {
        // EncryptFormatAll: swapoff -a, umount, luksFormat, mkfs (handle.py:1231-1260): any filesystem, data erased
        warns.push(format!("{name} ({}) is formatted by EnableEncryptionFormatAll: its data is erased", v.fstype));
    } else if !matches!(v.fstype.as_str(), "ext2" | "ext3" | "ext4") {
        fails.push(format!("{name} is {}: in place supports ext2/3/4 only", v.fstype));
    } else if let Some(mp) = &v.mount {
        // Free blocks below the header size cannot be shrunk away; resize2fs may need more (its own minimum), which
        // only running it tells: not judged.
        match inp.free.iter().find(|(m, _)| m == mp) {
            Some((_, free)) if *free < LUKS1_HEADER => {
                fails.push(format!("{name} has {free} bytes free: no room to shrink by the LUKS header (2 to 16 MiB)"))
            }
            Some((_, free)) if *free < LUKS2_HEADER => warns.push(format!(
                "{name} has {free} bytes free: too little to shrink by the 16 MiB LUKS2 header ADE writes with \
                 cryptsetup 2.1.0 and later"
            )),
            _ => {}
        }
    }
    if let Some(mp) = &v.mount {
        let below: Vec<String> = mounts
            .iter()
            .filter(|m| m.mount_point != *mp && m.mount_point.starts_with(mp))
            .map(|m| m.mount_point.display().to_string())
            .collect();
        if !below.is_empty() {
            fails.push(format!("{name} has mounts below it ({}): ADE's umount fails and skips it", below.join(", ")));
        }
        if mp.starts_with("/mnt") {
            fails.push(format!("{name} is under /mnt, the resource disk's place"));
        }
        if let Ok(text) = &inp.fstab {
            match parse_fstab(text).iter().find(|(_, m, _, _)| Path::new(m) == mp) {
                Some((dev, _, _, opts)) => {
                    if !dev.starts_with("UUID=") && !dev.starts_with("/dev/disk/by-uuid/") {
                        warns.push(format!("{name}: fstab names it {dev}, not by UUID= (device names change)"));
                    }
                    if !opts.split(',').any(|o| o == "nofail") {
                        warns.push(format!("{name}: its fstab line has no nofail (a locked volume stops the boot)"));
                    }
                }
                None => warns.push(format!(
                    "{name}: no fstab line for {}: ADE has no line to point at the mapper",
                    mp.display()
                )),
            }
        }
    }
}

/// Which fstab lines `mount -a` would fail on, judged without mounting: not mounted, not noauto/nofail/swap, and
/// the device or the mount point missing.
fn mount_all_failures(fstab: &str, mounts: &[Mount], survey: &Survey, existing: &[PathBuf]) -> Vec<String> {
    let mut out = vec![];
    for (dev, mp, fstype, opts) in parse_fstab(fstab) {
        let o: Vec<&str> = opts.split(',').collect();
        if fstype == "swap" || mp == "none" || o.contains(&"noauto") || o.contains(&"nofail") {
            continue;
        }
        if mounts.iter().any(|m| m.mount_point == Path::new(&mp)) {
            continue;
        }
        let dev_ok = if let Some(u) = dev.strip_prefix("UUID=") {
            survey.devices.iter().any(|d| d.uuid == u.trim_matches('"'))
        } else if let Some(l) = dev.strip_prefix("LABEL=") {
            survey.devices.iter().any(|d| d.label == l.trim_matches('"'))
        } else if dev.starts_with('/') {
            existing.iter().any(|e| e == Path::new(&dev))
        } else {
            true // network and pseudo filesystems: not judged
        };
        if !dev_ok {
            out.push(format!("fstab: {dev} for {mp} does not exist: `mount -a` fails"));
        } else if !existing.iter().any(|e| e == Path::new(&mp)) {
            out.push(format!("fstab: mount point {mp} of {dev} does not exist: `mount -a` fails"));
        }
    }
    out
}

/// Swap on a selected volume or on the resource disk (a swap file on their mounts, or a swap device that is one).
fn swap_on_data(swaps: &str, mounts: &[Mount], survey: &Survey) -> Vec<String> {
    let mut out = vec![];
    for line in swaps.lines().skip(1) {
        let Some(file) = line.split_whitespace().next().map(crate::mountinfo::unescape) else { continue };
        let path = Path::new(&file);
        let dev_hit = survey.selected.iter().find(|v| v.device == path).map(on);
        let mount_hit = crate::mountinfo::mount_of(mounts, path).and_then(|m| {
            let resource = m.mount_point == Path::new("/mnt") || m.mount_point == Path::new("/mnt/resource");
            let data = survey.selected.iter().find(|v| v.mount.as_deref() == Some(m.mount_point.as_path()));
            data.map(on).or(resource.then(|| format!("the resource disk ({})", m.mount_point.display())))
        });
        if let Some(what) = dev_hit.or(mount_hit) {
            out.push(format!("swap {file} is on {what}: ADE runs `swapoff -a`"));
        }
    }
    out
}

/// The data volumes ADE selects, each judged against its in-place path.
pub fn data_volumes(inp: &VolumeInputs, mounts: &Input<Vec<Mount>>) -> Check {
    let mk = |r, e: String| Check::new(DATA_VOLUMES, TITLE, FIX, r, e);
    if let Some(vt) = inp.request.as_deref().filter(|v| v.eq_ignore_ascii_case("os")) {
        return mk(Status::NotApplicable, format!("ADE's request is VolumeType {vt}: it leaves data volumes alone"));
    }
    let survey = match &inp.survey {
        Ok(s) => s,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return mk(Status::Unknown, e.clone()),
    };
    let (mut fails, mut warns) = (vec![], vec![]);
    for v in &survey.selected {
        volume_problems(v, mounts, inp, &mut fails, &mut warns);
    }
    match &inp.fstab {
        Ok(t) => warns.extend(mount_all_failures(t, mounts, survey, &inp.existing)),
        Err(e) => warns.push(e.clone()),
    }
    match &inp.swaps {
        Ok(t) => warns.extend(swap_on_data(t, mounts, survey)),
        Err(e) => warns.push(e.clone()),
    }
    let listed: Vec<String> = survey.selected.iter().map(|v| format!("{} {}", on(v), v.fstype)).collect();
    let selected = if listed.is_empty() {
        "ADE selects no data volume".to_string()
    } else {
        format!("ADE selects {}", listed.join(", "))
    };
    if !fails.is_empty() {
        fails.extend(warns);
        mk(Status::Fail, format!("{}; {selected}", fails.join("; ")))
    } else if !warns.is_empty() {
        mk(Status::Warn, format!("{}; {selected}", warns.join("; ")))
    } else {
        mk(Status::Pass, selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::lsblk::BlkItem;

    fn vol(dev: &str, fstype: &str, mp: Option<&str>) -> DataVolume {
        DataVolume {
            device: dev.into(),
            uuid: format!("{}-uuid", &dev[5..]),
            fstype: fstype.into(),
            mount: mp.map(PathBuf::from),
            size_bytes: 1 << 30,
        }
    }

    fn inputs(selected: Vec<DataVolume>, fstab: &str) -> VolumeInputs {
        let devices = selected
            .iter()
            .map(|v| BlkItem {
                name: v.device.display().to_string()[5..].into(),
                uuid: v.uuid.clone(),
                ..Default::default()
            })
            .collect();
        VolumeInputs {
            survey: Ok(Survey { selected, skipped: vec![], devices }),
            fstab: Ok(fstab.into()),
            swaps: Ok("Filename Type Size Used Priority\n".into()),
            free: vec![],
            existing: vec!["/data".into(), "/x".into()],
            verdicts: vec![],
            request: None,
            format_all: false,
        }
    }

    const MOUNTS: &str = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:33 / /data rw - ext4 /dev/sdc1 rw\n";

    fn mounts(extra: &str) -> Input<Vec<Mount>> {
        Ok(crate::mountinfo::parse(&format!("{MOUNTS}{extra}")).0)
    }

    #[test]
    fn an_ext4_volume_by_uuid_with_nofail_passes() {
        let i =
            inputs(vec![vol("/dev/sdc1", "ext4", Some("/data"))], "UUID=sdc1-uuid /data ext4 defaults,nofail 0 2\n");
        let c = data_volumes(&i, &mounts(""));
        assert_eq!(c.result, Status::Pass, "{}", c.evidence);
        assert_eq!(c.evidence, "ADE selects /dev/sdc1 (/data) ext4");
    }

    #[test]
    fn each_in_place_blocker_is_named_with_its_volume() {
        let fstab = "UUID=sdc1-uuid /data ext4 nofail 0 2\n/dev/sdd1 /mnt/x xfs defaults 0 2\n";
        let mut i =
            inputs(vec![vol("/dev/sdc1", "ext4", Some("/data")), vol("/dev/sdd1", "xfs", Some("/mnt/x"))], fstab);
        i.free = vec![("/data".into(), 4096), ("/mnt/x".into(), 1)];
        let c = data_volumes(
            &i,
            &mounts("3 2 0:40 / /data/tmp rw - tmpfs tmpfs rw\n4 1 8:49 / /mnt/x rw - xfs /dev/sdd1 rw\n"),
        );
        assert_eq!(c.result, Status::Fail);
        for want in [
            "/dev/sdd1 (/mnt/x) is xfs: in place supports ext2/3/4 only",
            "/dev/sdc1 (/data) has 4096 bytes free: no room to shrink by the LUKS header (2 to 16 MiB)",
            "/dev/sdc1 (/data) has mounts below it (/data/tmp)",
            "/dev/sdd1 (/mnt/x) is under /mnt",
            "/dev/sdd1 (/mnt/x): fstab names it /dev/sdd1, not by UUID=",
            "/dev/sdd1 (/mnt/x): its fstab line has no nofail",
        ] {
            assert!(c.evidence.contains(want), "missing {want:?} in {}", c.evidence);
        }
    }

    #[test]
    fn room_to_shrink_is_judged_against_the_header_sizes() {
        let fstab = "UUID=sdc1-uuid /data ext4 nofail 0 2\n";
        let mut i = inputs(vec![vol("/dev/sdc1", "ext4", Some("/data"))], fstab);
        for (free, want) in
            [(LUKS1_HEADER - 1, Status::Fail), (LUKS2_HEADER - 1, Status::Warn), (LUKS2_HEADER, Status::Pass)]
        {
            i.free = vec![("/data".into(), free)];
            let c = data_volumes(&i, &mounts(""));
            assert_eq!(c.result, want, "{free}: {}", c.evidence);
        }
        // not mounted: free space unknown, not judged
        i.free = vec![];
        assert_eq!(data_volumes(&i, &mounts("")).result, Status::Pass);
    }

    #[test]
    fn mount_all_and_swap_are_judged_without_mounting() {
        let fstab = "UUID=sdc1-uuid /data ext4 nofail 0 2\nUUID=gone /old ext4 defaults 0 2\n\
                     UUID=sdc1-uuid /nowhere ext4 defaults 0 2\nUUID=gone2 /opt2 ext4 nofail 0 2\n";
        let mut i = inputs(vec![vol("/dev/sdc1", "ext4", Some("/data"))], fstab);
        i.swaps = Ok("Filename Type Size Used Priority\n/data/swapfile file 1024 0 -2\n".into());
        let c = data_volumes(&i, &mounts(""));
        assert_eq!(c.result, Status::Warn, "{}", c.evidence);
        assert!(c.evidence.contains("fstab: UUID=gone for /old does not exist: `mount -a` fails"), "{}", c.evidence);
        assert!(c.evidence.contains("mount point /nowhere of UUID=sdc1-uuid does not exist"), "{}", c.evidence);
        assert!(!c.evidence.contains("gone2"), "nofail lines do not fail mount -a: {}", c.evidence);
        assert!(
            c.evidence.contains("swap /data/swapfile is on /dev/sdc1 (/data): ADE runs `swapoff -a`"),
            "{}",
            c.evidence
        );
        // the resource disk's swap file (waagent's ResourceDisk.EnableSwap)
        i.swaps = Ok("Filename Type Size Used Priority\n/mnt/swapfile file 1024 0 -2\n".into());
        let c = data_volumes(&i, &mounts("5 1 8:17 / /mnt rw - ext4 /dev/sdb1 rw\n"));
        assert!(c.evidence.contains("swap /mnt/swapfile is on the resource disk (/mnt)"), "{}", c.evidence);
    }

    #[test]
    fn a_request_for_the_os_volume_only_leaves_data_volumes_alone() {
        let mut i = inputs(vec![vol("/dev/sdd1", "xfs", Some("/x"))], "");
        assert_eq!(data_volumes(&i, &mounts("")).result, Status::Fail);
        i.request = Some("OS".into());
        let c = data_volumes(&i, &mounts(""));
        assert_eq!(
            (c.result, c.evidence.as_str()),
            (Status::NotApplicable, "ADE's request is VolumeType OS: it leaves data volumes alone")
        );
        i.request = Some("All".into());
        assert_eq!(data_volumes(&i, &mounts("")).result, Status::Fail);
    }

    #[test]
    fn encrypt_format_all_warns_of_the_format_instead_of_in_place_limits() {
        let mut i = inputs(vec![vol("/dev/sdd1", "xfs", Some("/x"))], "UUID=sdd1-uuid /x xfs nofail 0 2\n");
        i.free = vec![("/x".into(), 0)];
        i.format_all = true;
        let c = data_volumes(&i, &mounts("4 1 8:49 / /x rw - xfs /dev/sdd1 rw\n"));
        assert_eq!(c.result, Status::Warn, "{}", c.evidence);
        assert!(
            c.evidence.starts_with("/dev/sdd1 (/x) (xfs) is formatted by EnableEncryptionFormatAll"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn unreadable_inputs_are_unknown_or_named() {
        let c = data_volumes(&VolumeInputs::not_read("lsblk: exit 1"), &mounts(""));
        assert_eq!((c.result, c.evidence.as_str()), (Status::Unknown, "lsblk: exit 1"));
        let mut i = inputs(vec![], "");
        i.fstab = Err("/etc/fstab: Permission denied".into());
        let c = data_volumes(&i, &mounts(""));
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.starts_with("/etc/fstab: Permission denied"), "{}", c.evidence);
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;
    use crate::paths::Paths;
    use crate::volumes::tests::{rhel7_gen1, ubuntu1604_gen1, ubuntu_gen2, FixtureLsblk};

    fn judged(d: &tempfile::TempDir, fx: PathBuf) -> Check {
        let p = Paths::under(d.path());
        let inp = super::super::inputs::gather_volumes(&p, &FixtureLsblk(fx), &Ok(None));
        let text = std::fs::read_to_string(d.path().join("proc/self/mountinfo")).unwrap();
        data_volumes(&inp, &Ok(crate::mountinfo::parse(&text).0))
    }

    #[test]
    fn ubuntu1604_tree_fails_the_swap_partition_and_warns_on_the_raid_fstab_line() {
        let (d, fx) = ubuntu1604_gen1();
        let c = judged(&d, fx);
        assert_eq!(c.result, Status::Fail, "{}", c.evidence);
        assert!(
            c.evidence.starts_with("/dev/sdc1 (not mounted) is swap: in place supports ext2/3/4 only"),
            "{}",
            c.evidence
        );
        assert!(c.evidence.contains("/dev/md0 (/raid): fstab names it /dev/md0, not by UUID="), "{}", c.evidence);
        assert!(c.evidence.contains("/dev/md0 (/raid): its fstab line has no nofail"), "{}", c.evidence);
        assert!(
            !c.evidence.contains("/dev/sdc2 (/data):"),
            "the UUID=/nofail volume has nothing to say: {}",
            c.evidence
        );
        assert!(c
            .evidence
            .ends_with("ADE selects /dev/sdc1 (not mounted) swap, /dev/sdc2 (/data) ext4, /dev/md0 (/raid) ext4"));
    }

    #[test]
    fn rhel7_tree_fails_xfs_and_the_nested_mount() {
        let (d, fx) = rhel7_gen1();
        let c = judged(&d, fx);
        assert_eq!(c.result, Status::Fail, "{}", c.evidence);
        assert!(
            c.evidence.contains("/dev/sdd1 (/data/logs) is xfs: in place supports ext2/3/4 only"),
            "{}",
            c.evidence
        );
        assert!(c.evidence.contains("/dev/sdc1 (/data) has mounts below it (/data/logs)"), "{}", c.evidence);
        assert!(c.evidence.contains("/dev/sdd1 (/data/logs): fstab names it /dev/sdd1"), "{}", c.evidence);
        // every fstab line is mounted: `mount -a` has nothing to fail on
        assert!(!c.evidence.contains("mount -a"), "{}", c.evidence);
    }

    #[test]
    fn ubuntu2204_gen2_tree_warns_on_xfs_lv_fstab_and_the_resource_swap_file() {
        let (d, fx) = ubuntu_gen2();
        let c = judged(&d, fx);
        assert_eq!(c.result, Status::Fail, "{}", c.evidence);
        assert!(c.evidence.contains("/dev/mapper/datavg-lv (/lv) is xfs"), "{}", c.evidence);
        assert!(c.evidence.contains("/dev/mapper/datavg-lv (/lv): its fstab line has no nofail"), "{}", c.evidence);
        assert!(c.evidence.contains("swap /mnt/swapfile is on the resource disk (/mnt)"), "{}", c.evidence);
        assert!(!c.evidence.contains("/dev/sdc1 (/data):"), "{}", c.evidence);
    }

    #[test]
    fn the_volume_type_comes_from_ades_newest_settings() {
        let (d, fx) = ubuntu1604_gen1();
        let handler = "Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12";
        let cfg = d.path().join("var/lib/waagent").join(handler).join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        let settings = |vt: &str| {
            format!(
                r#"{{"runtimeSettings":[{{"handlerSettings":{{"publicSettings":{{"EncryptionOperation":"EnableEncryption","VolumeType":"{vt}"}}}}}}]}}"#
            )
        };
        std::fs::write(cfg.join("3.settings"), settings("OS")).unwrap();
        let ade = Ok(Some(super::super::AdeState { handler: handler.into(), seq: Some(3), status: None }));
        let p = Paths::under(d.path());
        let inp = super::super::inputs::gather_volumes(&p, &FixtureLsblk(fx.clone()), &ade);
        assert_eq!(inp.request.as_deref(), Some("OS"));
        assert_eq!(data_volumes(&inp, &Ok(vec![])).result, Status::NotApplicable);
        std::fs::write(cfg.join("3.settings"), settings("Data")).unwrap();
        let inp = super::super::inputs::gather_volumes(&p, &FixtureLsblk(fx.clone()), &ade);
        assert_eq!(inp.request.as_deref(), Some("Data"));
        assert_eq!(inp.survey.unwrap().selected.len(), 3);
        // EncryptFormatAll: only mounted volumes a /dev/disk/azure link names (none in this tree)
        let format_all = settings("Data").replace("\"EnableEncryption\"", "\"EnableEncryptionFormatAll\"");
        std::fs::write(cfg.join("3.settings"), format_all).unwrap();
        let inp = super::super::inputs::gather_volumes(&p, &FixtureLsblk(fx), &ade);
        assert!(inp.format_all);
        assert_eq!(inp.survey.unwrap().selected, vec![]);
    }
}
