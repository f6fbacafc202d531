//! The reading side of the selection and the verification: sysfs, `/dev` links, crypttab, fstab, the device's
//! first bytes, all under [`Paths`]; lsblk through the runner. It must not judge (select/verify do) nor write.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::verify::{parse_crypttab, CryptEntry, Facts, LUKS_MAGIC};
use super::DataVolume;
use crate::fsread::{read_capped, Links};
use crate::paths::{Paths, CRYPTTAB, DEV_DISK_AZURE, DEV_DISK_CLOUD, FSTAB};
use crate::runner::Runner;

/// Hyper-V's IDE controller class (`DiskUtil.py:50`).
const IDE_CLASS_ID: &str = "{32412632-86cb-44a2-9b5c-50d1417354f5}";

/// A path of the machine, its links followed inside the root: the machine path it leads to (None: dangling).
fn real(paths: &Paths, abs: &Path) -> Option<PathBuf> {
    let c = std::fs::canonicalize(paths.resolve(abs)).ok()?;
    let rel = c.strip_prefix(std::fs::canonicalize(paths.root()).ok()?).ok()?;
    Some(Path::new("/").join(rel))
}

/// The Hyper-V device id above a block device, as `udevadm info -a | grep device_id` finds it (ADE's
/// `get_device_id`, `DiskUtil.py:790-795`): the first `device_id` attribute walking up from
/// `/sys/class/block/<name>` whose value is in braces, braces removed.
pub fn device_id(paths: &Paths, name: &str) -> Option<String> {
    let sys = std::fs::canonicalize(paths.sys()).ok()?;
    let mut dir = std::fs::canonicalize(paths.sys().join("class/block").join(name)).ok()?;
    while dir.starts_with(&sys) && dir != sys {
        // ADE's regex takes the first `"{...}"` value (DiskUtil.py:794): a device_id without braces is passed over
        let id = std::fs::read_to_string(dir.join("device_id")).ok();
        if let Some(inner) = id.as_deref().map(str::trim).and_then(|t| t.strip_prefix('{')?.strip_suffix('}')) {
            return Some(inner.to_string());
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

/// ADE's special Azure devices (`get_azure_devices`, `DiskUtil.py:1268-1293`): the IDE disks (class id under
/// `/sys/bus/vmbus/devices`), `/dev/disk/azure/scsi0/lun*`, `/dev/disk/azure/{root,resource}`,
/// `/dev/disk/cloud/{azure_root,azure_resource}`, and an NVMe OS disk ([`nvme_os_disk`]); as `/dev/...` paths,
/// links followed, each once.
pub fn special_devices(paths: &Paths, mounts: &[crate::mountinfo::Mount]) -> Vec<String> {
    let mut out: Vec<PathBuf> = vec![];
    let vmbus = paths.sys().join("bus/vmbus/devices");
    for e in std::fs::read_dir(&vmbus).into_iter().flatten().flatten() {
        let class = std::fs::read_to_string(e.path().join("class_id")).unwrap_or_default();
        if class.trim() == IDE_CLASS_ID {
            if let Some(b) = block_below(&e.path()) {
                out.push(PathBuf::from("/dev").join(b));
            }
        }
    }
    let scsi0 = paths.resolve(Path::new(DEV_DISK_AZURE).join("scsi0"));
    let mut luns: Vec<String> = std::fs::read_dir(&scsi0)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.strip_prefix("lun").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    luns.sort();
    out.extend(luns.iter().map(|l| Path::new(DEV_DISK_AZURE).join("scsi0").join(l)));
    let links = [
        (DEV_DISK_AZURE, "root"),
        (DEV_DISK_AZURE, "resource"),
        (DEV_DISK_CLOUD, "azure_root"),
        (DEV_DISK_CLOUD, "azure_resource"),
    ];
    for (dir, name) in links {
        let l = Path::new(dir).join(name);
        if paths.resolve(&l).exists() {
            out.push(l);
        }
    }
    out.extend(nvme_os_disk(paths, mounts));
    let mut devs: Vec<String> = vec![];
    for p in out {
        let r = real(paths, &p).unwrap_or(p).display().to_string();
        if !devs.contains(&r) {
            devs.push(r);
        }
    }
    devs
}

/// The NVMe disk under `/`, as ADE's `is_os_disk_nvme` finds it (`DiskUtil.py:1147-1189`: the device of `/`, or of
/// `/oldroot` in the RAM root, through LVM or the OS mapper down to its block device; ADE then takes every
/// `/dev/nvme0n1*`, `:1295-1305`). Read from sysfs: `/sys/dev/block/<maj:min>` of the mount, its `slaves` followed
/// down to the partitions, the disk holding a partition named `nvme*`.
pub fn nvme_os_disk(paths: &Paths, mounts: &[crate::mountinfo::Mount]) -> Option<PathBuf> {
    let root = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/oldroot"))
        .or_else(|| mounts.iter().rev().find(|m| m.mount_point == Path::new("/")))?;
    let sys = std::fs::canonicalize(paths.sys()).ok()?;
    let first = std::fs::canonicalize(paths.sys().join(format!("dev/block/{}:{}", root.dev.0, root.dev.1))).ok()?;
    let mut stack = vec![first];
    while let Some(dev) = stack.pop() {
        let slaves: Vec<PathBuf> = std::fs::read_dir(dev.join("slaves"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::canonicalize(e.path()).ok())
            .collect();
        if !slaves.is_empty() {
            stack.extend(slaves);
            continue;
        }
        let name = dev.file_name()?.to_string_lossy().into_owned();
        if name.starts_with("nvme") && dev.starts_with(&sys) {
            // a partition's folder sits in its disk's folder; a whole namespace is its own disk
            let disk = if dev.join("partition").exists() { dev.parent()?.file_name()? } else { dev.file_name()? };
            return Some(PathBuf::from("/dev").join(disk));
        }
    }
    None
}

/// Where the `/dev/disk/azure` links lead: its top-level links and those one folder down (`scsi1/lun0-part1`),
/// as `/dev/...` paths (`get_block_device_to_azure_udev_table`, `DiskUtil.py:827-843`).
pub fn azure_named(paths: &Paths) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let top = Path::new(DEV_DISK_AZURE);
    for e in std::fs::read_dir(paths.resolve(top)).into_iter().flatten().flatten() {
        let p = top.join(e.file_name());
        let links: Vec<PathBuf> = if paths.resolve(&p).is_dir() && !e.path().is_symlink() {
            std::fs::read_dir(e.path()).into_iter().flatten().flatten().map(|l| p.join(l.file_name())).collect()
        } else {
            vec![p]
        };
        out.extend(links.iter().filter_map(|l| real(paths, l)));
    }
    out
}

/// The first name under a `block` folder below a vmbus device (ADE's `find_block_sdx_path`, `DiskUtil.py:1367-1377`).
fn block_below(dir: &Path) -> Option<String> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut subs: Vec<PathBuf> =
            rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
        subs.sort();
        if d.file_name().is_some_and(|n| n == "block") {
            return subs.first().and_then(|s| s.file_name()).map(|n| n.to_string_lossy().into_owned());
        }
        stack.extend(subs.into_iter().rev());
    }
    None
}

fn read_opt(path: &Path) -> Result<Option<String>, String> {
    match read_capped(path, Links::Follow) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Everything [`super::verify::decide`] needs about `v`.
pub fn facts(paths: &Paths, runner: &dyn Runner, v: &DataVolume) -> Facts {
    let dev = paths.resolve(&v.device);
    let luks_magic = (|| {
        let mut f = std::fs::File::open(&dev)?;
        let mut b = [0u8; 6];
        f.read_exact(&mut b)?;
        Ok::<_, std::io::Error>(&b == LUKS_MAGIC)
    })()
    .map_err(|e| format!("{}: {e}", v.device.display()));
    let lsblk = super::run_lsblk(runner, Some(&v.device.display().to_string())).map_err(|e| e.to_string());
    let luks_uuid =
        lsblk.as_ref().ok().and_then(|i| i.first()).filter(|i| i.fstype == "crypto_LUKS").map(|i| i.uuid.clone());
    let me = real(paths, &v.device);
    let names_volume = |field: &str| -> bool {
        if let Some(u) = field.strip_prefix("UUID=") {
            return luks_uuid.as_deref() == Some(u.trim_matches('"'));
        }
        field.starts_with('/')
            && (Path::new(field) == v.device || (me.is_some() && real(paths, Path::new(field)) == me))
    };
    let crypttab_path = paths.resolve(CRYPTTAB);
    let crypttab = read_opt(&crypttab_path).map(|t| {
        parse_crypttab(&t.unwrap_or_default())
            .into_iter()
            .map(|(name, dev)| CryptEntry { is_volume: names_volume(&dev), name, dev, mount_point: None })
            .collect()
    });
    let acm = paths.ade_config_dir().join("azure_crypt_mount");
    let azure_crypt_mount = read_opt(&acm)
        .ok()
        .flatten()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            // mapper dev header mount_point fs cleartext [slot] (CryptMountConfigUtil.py:99-112)
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| CryptEntry {
                name: f[0].into(),
                dev: f[1].into(),
                is_volume: names_volume(f[1]),
                mount_point: Some(f[3].into()),
            })
        })
        .collect();
    let fstab_path = paths.resolve(FSTAB);
    let fstab = read_capped(&fstab_path, Links::Follow).map_err(|e| format!("{}: {e}", fstab_path.display()));
    Facts { luks_magic, lsblk, crypttab, azure_crypt_mount, fstab }
}
