//! The data volumes ADE's EnableEncryption (VolumeType Data or All) will select on this machine, and whether each
//! one was really encrypted afterwards. Owns ADE's selection rule (read from ADE's own source) and the
//! verification; it reads `lsblk` through the [`Runner`] and files through [`Paths`], and must not change anything
//! (no mount, no umount, no write).

// `ade_selection`/`ade_selection_for` are for the window (branch volwin, issue 17); unused until it is merged.
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
    /// Every device lsblk listed.
    pub devices: Vec<lsblk::BlkItem>,
}

/// Reads what ADE's selection is decided on, then selects (EnableEncryption's in-place rule).
pub fn survey(paths: &Paths, runner: &dyn Runner, vt: VolumeType) -> anyhow::Result<Survey> {
    survey_for(paths, runner, vt, false)
}

/// [`survey`], for EncryptFormatAll when `format_all` (only mounted volumes a `/dev/disk/azure` link names).
pub fn survey_for(paths: &Paths, runner: &dyn Runner, vt: VolumeType, format_all: bool) -> anyhow::Result<Survey> {
    let mounts = crate::mountinfo::read(paths)?;
    let items = run_lsblk(runner, None)?;
    let mut m = select::Machine { items, mounts, azure_named: read::azure_named(paths), ..Default::default() };
    for it in &m.items {
        if let Some(id) = read::device_id(paths, &it.name) {
            m.device_ids.insert(it.name.clone(), id);
        }
    }
    for dev in read::special_devices(paths, &m.mounts) {
        for it in run_lsblk(runner, Some(&dev))? {
            m.special.insert(it.name);
        }
    }
    // ADE asks lsblk what is below a device only once the earlier rules passed (DiskUtil.py:1245-1246).
    let mut below = std::collections::BTreeMap::new();
    for it in &m.items {
        if select::reason_before_children(it, &m, vt).is_none() && !below.contains_key(&it.name) {
            let dev = select::device_path(it);
            below.insert(it.name.clone(), run_lsblk(runner, Some(&dev.display().to_string()))?.len());
        }
    }
    m.lines_below = below;
    let (selected, skipped) = select::select_for(&m, vt, format_all);
    Ok(Survey { selected, skipped, devices: m.items })
}

fn run_lsblk(runner: &dyn Runner, dev: Option<&str>) -> anyhow::Result<Vec<lsblk::BlkItem>> {
    let argv = lsblk::argv(dev);
    let what = argv.join(" ");
    // As whoever runs ade-prep: `check` works for a user other than root, and lsblk needs no privilege.
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map_or("root".to_string(), |u| u.name);
    let o = runner.run(&argv, &me, Duration::from_secs(60)).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if o.code != Some(0) {
        let how = match o.code {
            _ if o.timed_out => "timed out".to_string(),
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_string(),
        };
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
pub(crate) mod tests {
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
        if fx.join("swaps").exists() {
            std::fs::copy(fx.join("swaps"), r.join("proc/swaps")).unwrap();
        }
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

    pub(crate) fn rhel7_gen1() -> (tempfile::TempDir, PathBuf) {
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

    pub(crate) fn ubuntu_gen2() -> (tempfile::TempDir, PathBuf) {
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
        assert_eq!(read::special_devices(&p, &[]), ["/dev/sda", "/dev/sdb"]);
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
        assert_eq!(read::special_devices(&p, &[]), ["/dev/sda", "/dev/sdb"]);
        let s = survey(&p, &FixtureLsblk(fx), VolumeType::Data).unwrap();
        assert_eq!(names(&s.selected), ["/dev/sdc1", "/dev/mapper/datavg-lv"]);
        assert_eq!(s.selected[1].mount.as_deref(), Some(Path::new("/lv")));
        let why = |n: &str| s.skipped.iter().find(|k| k.name == n).unwrap().why.clone();
        assert!(why("sdb1").contains("special Azure device"), "{}", why("sdb1"));
        assert!(why("sdd").contains("below it"), "{}", why("sdd"));
    }

    pub(crate) fn ubuntu1604_gen1() -> (tempfile::TempDir, PathBuf) {
        let disks: &[(&str, &[&str])] =
            &[("sdc", &["sdc1", "sdc2"]), ("sdd", &[]), ("sde", &[]), ("sdf", &["sdf1"]), ("sdg", &["sdg1"])];
        let (d, fx) = tree(
            "ubuntu1604-gen1",
            &[
                (
                    "00000000-0000-8899-0000-000000000000",
                    IDE,
                    "00000000-0000-8899-0000-000000000000",
                    &[("sda", &["sda1"])],
                ),
                (
                    "00000000-0001-8899-0000-000000000000",
                    IDE,
                    "00000000-0001-8899-0000-000000000000",
                    &[("sdb", &["sdb1"])],
                ),
                ("f8b3781b-1e82-4818-a1c3-63d806ec15bb", SCSI, "f8b3781b-1e82-4818-a1c3-63d806ec15bb", disks),
            ],
        );
        std::fs::create_dir_all(d.path().join("dev/disk/azure/scsi1")).unwrap();
        symlink("../../../sdf1", d.path().join("dev/disk/azure/scsi1/lun3-part1")).unwrap();
        (d, fx)
    }

    #[test]
    fn ubuntu1604_swap_raid_luks_and_bek_volume_cases() {
        let (d, fx) = ubuntu1604_gen1();
        let p = Paths::under(d.path());
        let s = survey(&p, &FixtureLsblk(fx.clone()), VolumeType::Data).unwrap();
        // a swap partition passes ADE's rule (a filesystem type, a UUID, >= 150 MiB): ADE selects it; check fails it
        assert_eq!(names(&s.selected), ["/dev/sdc1", "/dev/sdc2", "/dev/md0"], "{:#?}", s.skipped);
        assert_eq!(s.selected[0].fstype, "swap");
        assert_eq!(s.selected[0].mount, None);
        assert_eq!(s.selected[2].mount.as_deref(), Some(Path::new("/raid")));
        let why = |n: &str| s.skipped.iter().find(|k| k.name == n).unwrap().why.clone();
        assert!(why("sdd").contains("below it"), "raid member: {}", why("sdd"));
        assert!(why("sdf1").contains("below it"), "open LUKS: {}", why("sdf1"));
        assert!(why("c0ffee").contains("type crypt"), "{}", why("c0ffee"));
        // the real BEK volume's label is "BEK VOLUME", not ADE's "bek": its size (< 150 MiB) is what skips it
        assert!(why("sdg1").contains("150 MiB"), "{}", why("sdg1"));
        // the volume ADE already encrypted verifies: header, crypttab through the azure link, fstab on the mapper
        let mut head = LUKS_HEADER.to_vec();
        head.resize(4096, 0);
        std::fs::write(d.path().join("dev/sdf1"), head).unwrap();
        let enc = DataVolume {
            device: "/dev/sdf1".into(),
            uuid: "d474-inside".into(),
            fstype: "ext4".into(),
            mount: Some("/secure".into()),
            size_bytes: 4292870144,
        };
        assert_eq!(verify(&p, &FixtureLsblk(fx), &enc), Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() });
    }

    /// An Azure NVMe VM: OS disk and data disk are namespaces of one controller (nvme0n1, nvme0n2) under a PCI
    /// device passed through vmbus (a random device id); the local disk is nvme1n1.
    pub(crate) fn ubuntu2404_nvme() -> (tempfile::TempDir, PathBuf) {
        let (d, fx) = tree("ubuntu2404-nvme", &[]);
        let r = d.path();
        let ctrl = "devices/LNXSYSTM:00/VMBUS:00/5ab1c0de-0000-4000-8000-00000000c0de/pci5ab1:00/5ab1:00:00.0/nvme";
        let vmbus = r.join("sys/devices/LNXSYSTM:00/VMBUS:00/5ab1c0de-0000-4000-8000-00000000c0de");
        std::fs::create_dir_all(&vmbus).unwrap();
        std::fs::write(vmbus.join("device_id"), "{5ab1c0de-0000-4000-8000-00000000c0de}\n").unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block")).unwrap();
        // (controller, disk, its maj:min, partitions with theirs)
        type Nvme<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let disks: &[Nvme] = &[
            ("nvme0", "nvme0n1", "259:0", &[("nvme0n1p1", "259:1"), ("nvme0n1p15", "259:2"), ("nvme0n1p16", "259:3")]),
            ("nvme0", "nvme0n2", "259:4", &[("nvme0n2p1", "259:5")]),
            ("nvme1", "nvme1n1", "259:6", &[]),
        ];
        for (c, disk, dn, parts) in disks {
            let dir = format!("{ctrl}/{c}/{disk}");
            std::fs::create_dir_all(r.join("sys").join(&dir)).unwrap();
            symlink(format!("../../{dir}"), r.join("sys/class/block").join(disk)).unwrap();
            symlink(format!("../../{dir}"), r.join("sys/dev/block").join(dn)).unwrap();
            for (p, pn) in *parts {
                std::fs::create_dir_all(r.join("sys").join(&dir).join(p)).unwrap();
                std::fs::write(r.join("sys").join(&dir).join(p).join("partition"), "1\n").unwrap();
                symlink(format!("../../{dir}/{p}"), r.join("sys/class/block").join(p)).unwrap();
                symlink(format!("../../{dir}/{p}"), r.join("sys/dev/block").join(pn)).unwrap();
            }
        }
        (d, fx)
    }

    #[test]
    fn an_nvme_os_disk_is_special_so_boot_is_not_a_data_volume() {
        let (d, fx) = ubuntu2404_nvme();
        let p = Paths::under(d.path());
        let text = std::fs::read_to_string(d.path().join("proc/self/mountinfo")).unwrap();
        let mounts = crate::mountinfo::parse(&text).0;
        assert_eq!(read::nvme_os_disk(&p, &mounts), Some(PathBuf::from("/dev/nvme0n1")));
        // a device_id without braces on the way up is passed over, as ADE's regex does
        let pci = "sys/devices/LNXSYSTM:00/VMBUS:00/5ab1c0de-0000-4000-8000-00000000c0de/pci5ab1:00/5ab1:00:00.0";
        std::fs::write(d.path().join(pci).join("device_id"), "0xb111\n").unwrap();
        assert_eq!(read::device_id(&p, "nvme0n2p1").as_deref(), Some("5ab1c0de-0000-4000-8000-00000000c0de"));
        let s = survey(&p, &FixtureLsblk(fx), VolumeType::Data).unwrap();
        // /boot (ext4, 920 MiB, a UUID) would pass every other rule: only the OS disk's namespace keeps it out;
        // the data disk is another namespace of the same controller
        assert_eq!(names(&s.selected), ["/dev/nvme0n2p1"]);
        let why = |n: &str| s.skipped.iter().find(|k| k.name == n).unwrap().why.clone();
        assert!(why("nvme0n1p16").contains("special Azure device"), "{}", why("nvme0n1p16"));
        assert!(why("nvme1n1").contains("no filesystem"), "{}", why("nvme1n1"));
    }

    #[test]
    fn encrypt_format_all_on_the_gen2_tree_needs_the_partitions_azure_link() {
        let (d, fx) = ubuntu_gen2();
        let p = Paths::under(d.path());
        assert!(read::azure_named(&p).contains(Path::new("/dev/sdc")));
        let s = survey_for(&p, &FixtureLsblk(fx.clone()), VolumeType::Data, true).unwrap();
        assert!(s.selected.is_empty(), "{:?}", s.selected);
        // waagent's rules also link each partition: lun0-part1
        symlink("../../../sdc1", d.path().join("dev/disk/azure/scsi1/lun0-part1")).unwrap();
        let s = survey_for(&p, &FixtureLsblk(fx), VolumeType::Data, true).unwrap();
        assert_eq!(names(&s.selected), ["/dev/sdc1"]);
        let why = s.skipped.iter().find(|k| k.name == "datavg-lv").unwrap().why.clone();
        assert!(why.contains("/dev/disk/azure"), "{why}");
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
        // lsblk failing on one device is named with its command, exit code and message
        let partial = tempfile::tempdir().unwrap();
        for f in ["lsblk.txt", "lsblk@sda.txt", "lsblk@sdb.txt"] {
            std::fs::copy(fx.join(f), partial.path().join(f)).unwrap();
        }
        let e = survey(&p, &FixtureLsblk(partial.path().into()), VolumeType::Data).unwrap_err().to_string();
        assert_eq!(
            e,
            "lsblk -b -n -P -o NAME,TYPE,FSTYPE,MOUNTPOINT,LABEL,UUID,MODEL,SIZE,MAJ:MIN /dev/sdc1: exit 32: lsblk: \
             /dev/sdc1: not a block device"
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

    #[test]
    fn a_crypttab_line_by_uuid_names_the_volume_by_its_luks_uuid() {
        let (d, fx) = ubuntu_gen2();
        let p = Paths::under(d.path());
        let v = survey(&p, &FixtureLsblk(fx.clone()), VolumeType::Data).unwrap().selected.remove(0);
        // the header unreadable here (an empty node) but lsblk says crypto_LUKS, with the LUKS UUID
        let fx2 = tempfile::tempdir().unwrap();
        std::fs::write(
            fx2.path().join("lsblk@sdc1.txt"),
            "NAME=\"sdc1\" TYPE=\"part\" FSTYPE=\"crypto_LUKS\" MOUNTPOINT=\"\" LABEL=\"\" UUID=\"1u65-luks\" MODEL=\"\" \
             SIZE=\"10736352768\" MAJ:MIN=\"8:33\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/fstab"), "/dev/mapper/c0ffee /data ext4 nofail,defaults 0 2\n").unwrap();
        let crypttab = |dev: &str| format!("c0ffee {dev} /mnt/azure_bek_disk/LinuxPassPhraseFileName luks,nofail\n");
        std::fs::write(d.path().join("etc/crypttab"), crypttab("UUID=1u65-luks")).unwrap();
        let lsblk = FixtureLsblk(fx2.path().into());
        assert_eq!(verify(&p, &lsblk, &v), Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() });
        std::fs::write(d.path().join("etc/crypttab"), crypttab("UUID=another")).unwrap();
        match verify(&p, &lsblk, &v) {
            Verdict::NotEncrypted { why } => assert!(why.contains("/etc/crypttab has no entry"), "{why}"),
            e => panic!("{e:?}"),
        }
    }

    const LUKS_HEADER: &[u8] = b"LUKS\xba\xbe\x00\x01";

    /// A real LUKS header: a loop device, formatted by the real cryptsetup, read back through the real lsblk and
    /// the device's first bytes; crypttab and fstab in a tree whose `/dev/loopN` links to the real device.
    /// (Opening the mapping needs device-mapper, which this test does not assume: the crypt child is fixture-tested.)
    #[test]
    fn real_luks_format_on_a_loop_device_is_seen_encrypted() {
        use std::process::Command;
        let skip = |why: &str| {
            crate::testing::skip_unless(false, why);
        };
        if crate::testing::skip_unless(crate::testing::root(), "needs root") {
            return;
        }
        let run = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output();
        if run(&["cryptsetup", "--version"]).map(|o| !o.status.success()).unwrap_or(true) {
            return skip("needs cryptsetup (apt-get install cryptsetup-bin)");
        }
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        std::fs::File::create(&img).unwrap().set_len(200 << 20).unwrap();
        let o = run(&["losetup", "-f", "--show", img.to_str().unwrap()]).unwrap();
        if !o.status.success() {
            return skip(&format!("losetup: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        let loop_dev = String::from_utf8(o.stdout).unwrap().trim().to_string();
        struct Detach(String);
        impl Drop for Detach {
            fn drop(&mut self) {
                let _ = std::process::Command::new("losetup").args(["-d", &self.0]).status();
            }
        }
        let _detach = Detach(loop_dev.clone());
        let ok = |args: &[&str]| {
            let o = run(args).unwrap();
            assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        ok(&["mkfs.ext4", "-q", "-U", "0d474e00-0000-4000-8000-000000000001", &loop_dev]);
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink(&loop_dev, root.join(&loop_dev[1..])).unwrap();
        let fstab = "UUID=0d474e00-0000-4000-8000-000000000001 /srv/vol ext4 defaults,nofail 0 2\n";
        std::fs::write(root.join("etc/fstab"), fstab).unwrap();
        let p = Paths::under(&root);
        let v = DataVolume {
            device: PathBuf::from(&loop_dev),
            uuid: "0d474e00-0000-4000-8000-000000000001".into(),
            fstype: "ext4".into(),
            mount: Some("/srv/vol".into()),
            size_bytes: 200 << 20,
        };
        let real = crate::runner::RealRunner;
        // ADE's selection over this machine's real lsblk: it parses, and a loop device is never selected
        let s = survey(&Paths::system(), &real, VolumeType::Data).unwrap();
        assert!(s.skipped.iter().any(|k| format!("/dev/{}", k.name) == loop_dev), "{s:?}");
        assert!(!s.selected.iter().any(|v| v.device == Path::new(&loop_dev)), "{s:?}");
        assert_eq!(
            verify(&p, &real, &v),
            Verdict::NotEncrypted { why: format!("{loop_dev} has no LUKS header and no crypt mapping over it") }
        );
        let key = d.path().join("key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let fmt = ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2"];
        ok(&[&fmt[..], &["--pbkdf-force-iterations", "1000", &loop_dev, key.to_str().unwrap()]].concat());
        // ADE's step skipped after the header: no crypttab entry
        let why = match verify(&p, &real, &v) {
            Verdict::NotEncrypted { why } => why,
            e => panic!("{e:?}"),
        };
        assert!(why.contains("is LUKS but /etc/crypttab has no entry"), "{why}");
        let crypttab = format!("c0ffee {loop_dev} /mnt/azure_bek_disk/LinuxPassPhraseFileName luks,nofail\n");
        std::fs::write(root.join("etc/crypttab"), crypttab).unwrap();
        let why = match verify(&p, &real, &v) {
            Verdict::NotEncrypted { why } => why,
            e => panic!("{e:?}"),
        };
        assert!(why.starts_with("/etc/fstab still mounts UUID=0d474e00"), "{why}");
        std::fs::write(root.join("etc/fstab"), "/dev/mapper/c0ffee /srv/vol ext4 nofail,defaults 0 2\n").unwrap();
        assert_eq!(verify(&p, &real, &v), Verdict::Encrypted { mapper: "/dev/mapper/c0ffee".into() });
    }
}
