//! The reading side of the selection and the verification: sysfs, `/dev` links, crypttab, fstab, the device's
//! first bytes, all under [`Paths`]; lsblk through the runner. It must not judge (select/verify do) nor write.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::verify::{parse_crypttab, CryptEntry, Facts, LUKS_MAGIC};
use super::DataVolume;
use crate::fsread::{read_capped, Links};
use crate::paths::Paths;
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
/// `/sys/class/block/<name>`, braces removed.
pub fn device_id(paths: &Paths, name: &str) -> Option<String> {
    let sys = std::fs::canonicalize(paths.sys()).ok()?;
    let mut dir = std::fs::canonicalize(paths.sys().join("class/block").join(name)).ok()?;
    while dir.starts_with(&sys) && dir != sys {
        if let Ok(t) = std::fs::read_to_string(dir.join("device_id")) {
            let t = t.trim();
            return Some(t.trim_start_matches('{').trim_end_matches('}').to_string());
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

/// ADE's special Azure devices (`get_azure_devices`, `DiskUtil.py:1268-1293`): the IDE disks (class id under
/// `/sys/bus/vmbus/devices`), `/dev/disk/azure/scsi0/lun*`, `/dev/disk/azure/{root,resource}`,
/// `/dev/disk/cloud/{azure_root,azure_resource}`; as `/dev/...` paths, links followed, each once.
/// (ADE also adds an NVMe OS disk's namespaces, `DiskUtil.py:1295-1305`; not read here.)
pub fn special_devices(paths: &Paths) -> Vec<String> {
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
    let scsi0 = paths.resolve("/dev/disk/azure/scsi0");
    let mut luns: Vec<String> = std::fs::read_dir(&scsi0)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.strip_prefix("lun").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    luns.sort();
    out.extend(luns.iter().map(|l| PathBuf::from("/dev/disk/azure/scsi0").join(l)));
    for l in [
        "/dev/disk/azure/root",
        "/dev/disk/azure/resource",
        "/dev/disk/cloud/azure_root",
        "/dev/disk/cloud/azure_resource",
    ] {
        if paths.resolve(l).exists() {
            out.push(l.into());
        }
    }
    let mut devs: Vec<String> = vec![];
    for p in out {
        let r = real(paths, &p).unwrap_or(p).display().to_string();
        if !devs.contains(&r) {
            devs.push(r);
        }
    }
    devs
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
    let crypttab_path = paths.resolve("/etc/crypttab");
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
    let fstab_path = paths.resolve("/etc/fstab");
    let fstab = read_capped(&fstab_path, Links::Follow).map_err(|e| format!("{}: {e}", fstab_path.display()));
    Facts { luks_magic, lsblk, crypttab, azure_crypt_mount, fstab }
}
