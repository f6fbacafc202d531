//! The data volumes ADE's EnableEncryption (VolumeType Data or All) will select on this machine, and whether each
//! one was really encrypted afterwards. Owns ADE's selection rule (read from ADE's own source) and the
//! verification; it reads `lsblk` through the [`Runner`] and files through [`Paths`], and must not change anything
//! (no mount, no umount, no write).

// Used by check (here) and by the window (branch volwin); until both are merged some items are unused.
#![allow(dead_code)]

pub mod lsblk;
mod read;
pub mod select;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

pub use select::VolumeType;

use crate::paths::Paths;
use crate::runner::Runner;

/// A data volume as ADE's EnableEncryption (VolumeType Data/All) selects it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataVolume {
    /// The block device, `/dev/sdc1`.
    pub device: PathBuf,
    /// The filesystem UUID.
    pub uuid: String,
    /// The filesystem type (`ext4`, `xfs`, ...).
    pub fstype: String,
    /// Where it is mounted now (mountinfo), None if not mounted.
    pub mount: Option<PathBuf>,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Whether ADE encrypted a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// Encrypted, opened as `mapper`.
    Encrypted {
        /// `/dev/mapper/<name>`.
        mapper: PathBuf,
    },
    /// Not (or not completely) encrypted, with the reason.
    NotEncrypted {
        /// What is missing.
        why: String,
    },
}

/// The volumes ADE will select on this machine (lsblk through the runner + the mount table under `paths`), by
/// ADE's VolumeType Data rule (the one that skips most; see [`ade_selection_for`]).
pub fn ade_selection(paths: &Paths, runner: &dyn Runner) -> anyhow::Result<Vec<DataVolume>> {
    ade_selection_for(paths, runner, VolumeType::Data)
}

/// The volumes ADE selects for this VolumeType.
pub fn ade_selection_for(paths: &Paths, runner: &dyn Runner, vt: VolumeType) -> anyhow::Result<Vec<DataVolume>> {
    Ok(survey(paths, runner, vt)?.selected)
}

/// ADE's view of the block devices: what it selects and what it passes over, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Selected, in lsblk's order.
    pub selected: Vec<DataVolume>,
    /// Passed over (name, ADE's reason).
    pub skipped: Vec<select::Skipped>,
}

/// Reads what ADE's selection is decided on, then selects.
pub fn survey(paths: &Paths, runner: &dyn Runner, vt: VolumeType) -> anyhow::Result<Survey> {
    let mountinfo = paths.proc().join("self/mountinfo");
    let text = crate::fsread::read_capped(&mountinfo, crate::fsread::Links::Follow)
        .map_err(|e| anyhow::anyhow!("{}: {e}", mountinfo.display()))?;
    let (mounts, _) = crate::mountinfo::parse(&text);
    let items = run_lsblk(runner, None)?;
    let mut m = select::Machine { items, mounts, ..Default::default() };
    for it in &m.items {
        if let Some(id) = read::device_id(paths, &it.name) {
            m.device_ids.insert(it.name.clone(), id);
        }
    }
    for dev in read::special_devices(paths) {
        for it in run_lsblk(runner, Some(&dev))? {
            m.special.insert(it.name);
        }
    }
    // ADE asks lsblk what is below a device only once the earlier rules passed (DiskUtil.py:1251-1254).
    let mut below = std::collections::BTreeMap::new();
    for it in &m.items {
        if select::skip_reason(it, &m, vt, None).is_none() && !below.contains_key(&it.name) {
            let dev = select::device_path(it);
            below.insert(it.name.clone(), run_lsblk(runner, Some(&dev.display().to_string()))?.len());
        }
    }
    m.lines_below = below;
    let (selected, skipped) = select::select(&m, vt);
    Ok(Survey { selected, skipped })
}

fn run_lsblk(runner: &dyn Runner, dev: Option<&str>) -> anyhow::Result<Vec<lsblk::BlkItem>> {
    let argv = lsblk::argv(dev);
    let what = argv.join(" ");
    let o = runner.run(&argv, "root", Duration::from_secs(60)).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if o.code != Some(0) {
        let how = if o.timed_out { "timed out".to_string() } else { format!("exit {:?}", o.code) };
        anyhow::bail!("{what}: {how}: {}", o.stderr_tail);
    }
    lsblk::parse(&o.stdout, &what).map_err(anyhow::Error::msg)
}

/// Whether ADE encrypted `v`: a LUKS header on the device or a crypt mapping over it, a crypttab entry, fstab's
/// line for its mount point pointing to the mapper.
pub fn verify(paths: &Paths, runner: &dyn Runner, v: &DataVolume) -> Verdict {
    verify::decide(v, &read::facts(paths, runner, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Outcome, RunError};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    const IDE: &str = "{32412632-86cb-44a2-9b5c-50d1417354f5}";
    const SCSI: &str = "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}";

    /// Answers ADE's lsblk from the fixture: `lsblk.txt` for every device, `lsblk@<name>.txt` for one device.
    pub(crate) struct FixtureLsblk(pub(crate) PathBuf);
    impl Runner for FixtureLsblk {
        fn run(&self, argv: &[String], _: &str, _: Duration) -> Result<Outcome, RunError> {
            assert_eq!(&argv[..6], &lsblk::argv(None)[..], "only ADE's lsblk is run");
            let file = match argv.get(6) {
                Some(dev) => format!("lsblk@{}.txt", Path::new(dev).file_name().unwrap().to_string_lossy()),
                None => "lsblk.txt".into(),
            };
            let (code, stdout, stderr_tail) = match std::fs::read_to_string(self.0.join(&file)) {
                Ok(t) => (0, t, String::new()),
                Err(_) => (32, String::new(), format!("lsblk: {}: not a block device", argv[6])),
            };
            Ok(Outcome { code: Some(code), timed_out: false, stdout, stderr_tail })
        }
    }

    /// A vmbus device: guid, class id, device id, disks (name, partitions).
    pub(crate) type Bus<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a [&'a str])]);

    /// A machine tree: the fixture's mountinfo, fstab and crypttab, and a sysfs of vmbus devices holding disks:
    /// (vmbus guid, class id, device id, disks (name, partitions)).
    pub(crate) fn tree(case: &str, buses: &[Bus]) -> (tempfile::TempDir, PathBuf) {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volumes").join(case);
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::copy(fx.join("mountinfo"), r.join("proc/self/mountinfo")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        for f in ["fstab", "crypttab"] {
            if fx.join(f).exists() {
                std::fs::copy(fx.join(f), r.join("etc").join(f)).unwrap();
            }
        }
        for d in ["sys/class/block", "sys/bus/vmbus/devices", "dev"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for (guid, class, id, disks) in buses {
            let bus = format!("devices/LNXSYSTM:00/VMBUS:00/{guid}");
            std::fs::create_dir_all(r.join("sys").join(&bus)).unwrap();
            std::fs::write(r.join("sys").join(&bus).join("class_id"), format!("{class}\n")).unwrap();
            std::fs::write(r.join("sys").join(&bus).join("device_id"), format!("{{{id}}}\n")).unwrap();
            symlink(format!("../../../{bus}"), r.join("sys/bus/vmbus/devices").join(guid)).unwrap();
            for (i, (disk, parts)) in disks.iter().enumerate() {
                let blk = format!("{bus}/host{i}/target{i}:0:0/{i}:0:0:0/block/{disk}");
                std::fs::create_dir_all(r.join("sys").join(&blk)).unwrap();
                symlink(format!("../../{blk}"), r.join("sys/class/block").join(disk)).unwrap();
                std::fs::write(r.join("dev").join(disk), b"").unwrap();
                for p in *parts {
                    std::fs::create_dir_all(r.join("sys").join(&blk).join(p)).unwrap();
                    symlink(format!("../../{blk}/{p}"), r.join("sys/class/block").join(p)).unwrap();
                    std::fs::write(r.join("dev").join(p), b"").unwrap();
                }
            }
        }
        (d, fx)
    }

    fn rhel7_gen1() -> (tempfile::TempDir, PathBuf) {
        tree(
            "rhel7-gen1",
            &[
                (
                    "00000000-0000-8899-0000-000000000000",
                    IDE,
                    "00000000-0000-8899-0000-000000000000",
                    &[("sda", &["sda1", "sda2"])],
                ),
                (
                    "00000000-0001-8899-0000-000000000000",
                    IDE,
                    "00000000-0001-8899-0000-000000000000",
                    &[("sdb", &["sdb1"])],
                ),
                (
                    "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
                    SCSI,
                    "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
                    &[("sdc", &["sdc1"]), ("sdd", &["sdd1"]), ("sde", &[])],
                ),
            ],
        )
    }

    fn ubuntu_gen2() -> (tempfile::TempDir, PathBuf) {
        let (d, fx) = tree(
            "ubuntu2204-gen2",
            &[
                (
                    "f8b3781a-1e82-4818-a1c3-63d806ec15bb",
                    SCSI,
                    "f8b3781a-1e82-4818-a1c3-63d806ec15bb",
                    &[("sda", &["sda1", "sda14", "sda15"]), ("sdb", &["sdb1"])],
                ),
                (
                    "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
                    SCSI,
                    "f8b3781b-1e82-4818-a1c3-63d806ec15bb",
                    &[("sdc", &["sdc1"]), ("sdd", &[])],
                ),
            ],
        );
        let r = d.path();
        std::fs::create_dir_all(r.join("dev/disk/azure/scsi1")).unwrap();
        std::fs::create_dir_all(r.join("dev/disk/cloud")).unwrap();
        symlink("../../sda", r.join("dev/disk/azure/root")).unwrap();
        symlink("../../sdb", r.join("dev/disk/azure/resource")).unwrap();
        symlink("../../../sdc", r.join("dev/disk/azure/scsi1/lun0")).unwrap();
        symlink("../../sdb", r.join("dev/disk/cloud/azure_resource")).unwrap();
        (d, fx)
    }

    fn names(v: &[DataVolume]) -> Vec<String> {
        v.iter().map(|v| v.device.display().to_string()).collect()
    }

    #[test]
    fn rhel7_gen1_selects_the_scsi_data_volumes_only() {
        let (d, fx) = rhel7_gen1();
        let p = Paths::under(d.path());
        assert_eq!(read::device_id(&p, "sda2").as_deref(), Some("00000000-0000-8899-0000-000000000000"));
        // Gen 1: the IDE controller holds the OS and the resource disk
        assert_eq!(read::special_devices(&p), ["/dev/sda", "/dev/sdb"]);
        let s = survey(&p, &FixtureLsblk(fx), VolumeType::Data).unwrap();
        assert_eq!(names(&s.selected), ["/dev/sdc1", "/dev/sdd1"]);
        assert_eq!(s.selected[0].mount.as_deref(), Some(Path::new("/data")));
        assert_eq!(s.selected[1].fstype, "xfs");
        let why = |n: &str| s.skipped.iter().find(|k| k.name == n).unwrap().why.clone();
        assert!(why("sda2").contains("root disk"));
        assert!(why("sdb1").contains("resource disk"));
        assert!(why("sde").contains("150 MiB"));
        assert!(why("sr0").contains("no filesystem"));
    }

    #[test]
    fn ubuntu_gen2_skips_root_and_resource_by_their_links_and_takes_lvm() {
        let (d, fx) = ubuntu_gen2();
        let p = Paths::under(d.path());
        // Gen 2: no IDE, every disk on SCSI: only the /dev/disk/azure and /dev/disk/cloud links mark root and resource
        assert_eq!(read::special_devices(&p), ["/dev/sda", "/dev/sdb"]);
        let s = survey(&p, &FixtureLsblk(fx), VolumeType::Data).unwrap();
        assert_eq!(names(&s.selected), ["/dev/sdc1", "/dev/mapper/datavg-lv"]);
        assert_eq!(s.selected[1].mount.as_deref(), Some(Path::new("/lv")));
        let why = |n: &str| s.skipped.iter().find(|k| k.name == n).unwrap().why.clone();
        assert!(why("sdb1").contains("special Azure device"), "{}", why("sdb1"));
        assert!(why("sdd").contains("below it"), "{}", why("sdd"));
    }

    #[test]
    fn bad_lsblk_and_mountinfo_are_one_line_errors_naming_them() {
        let (d, fx) = ubuntu_gen2();
        let p = Paths::under(d.path());
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join("lsblk.txt"), "sda disk 30G\n").unwrap();
        let e = survey(&p, &FixtureLsblk(bad.path().into()), VolumeType::Data).unwrap_err().to_string();
        assert_eq!(
            e,
            "lsblk -b -n -P -o NAME,TYPE,FSTYPE,MOUNTPOINT,LABEL,UUID,MODEL,SIZE,MAJ:MIN: line 1: not KEY=\"value\" pairs: \"sda disk 30G\""
        );
        std::fs::remove_file(d.path().join("proc/self/mountinfo")).unwrap();
        let e = survey(&p, &FixtureLsblk(fx), VolumeType::Data).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}/proc/self/mountinfo: ", d.path().display())) && !e.contains('\n'), "{e}");
    }

    #[test]
    fn verify_reads_header_crypttab_and_fstab_of_the_tree() {
        let (d, fx) = ubuntu_gen2();
        let p = Paths::under(d.path());
        let v = survey(&p, &FixtureLsblk(fx.clone()), VolumeType::Data).unwrap().selected.remove(0);
        // before ADE: ext4 on sdc1, nothing in crypttab
        std::fs::write(d.path().join("dev/sdc1"), vec![0u8; 4096]).unwrap();
        assert_eq!(
            verify(&p, &FixtureLsblk(fx.clone()), &v),
            Verdict::NotEncrypted { why: "/dev/sdc1 has no LUKS header and no crypt mapping over it".into() }
        );
        // after ADE's in-place step: the header, crypttab naming the azure link, fstab on the mapper
        let mut head = LUKS_HEADER.to_vec();
        head.resize(4096, 0);
        std::fs::write(d.path().join("dev/sdc1"), head).unwrap();
        std::fs::create_dir_all(d.path().join("dev/disk/azure/scsi1")).unwrap();
        symlink("../../../sdc1", d.path().join("dev/disk/azure/scsi1/lun0-part1")).unwrap();
        std::fs::write(
            d.path().join("etc/crypttab"),
            "c0ffee /dev/disk/azure/scsi1/lun0-part1 /mnt/azure_bek_disk/LinuxPassPhraseFileName_1_0 luks,nofail\n",
        )
        .unwrap();
        let fstab = std::fs::read_to_string(d.path().join("etc/fstab")).unwrap();
        std::fs::write(
            d.path().join("etc/fstab"),
            fstab.replace("UUID=d474-ext4 /data ext4 defaults", "/dev/mapper/c0ffee /data ext4 nofail,defaults"),
        )
        .unwrap();
        assert_eq!(
            verify(&p, &FixtureLsblk(fx.clone()), &v),
            Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() }
        );
        // an unreadable fstab is named
        std::fs::remove_file(d.path().join("etc/fstab")).unwrap();
        std::fs::create_dir(d.path().join("etc/fstab")).unwrap();
        match verify(&p, &FixtureLsblk(fx), &v) {
            Verdict::NotEncrypted { why } => assert!(why.contains("etc/fstab") && !why.contains('\n'), "{why}"),
            e => panic!("{e:?}"),
        }
    }

    const LUKS_HEADER: &[u8] = b"LUKS\xba\xbe\x00\x01";
}
