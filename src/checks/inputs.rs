//! Reading the machine for the checks: every file through [`Paths`], each input kept as its text (or a small
//! listing) with the error that stopped it, so that the checks stay pure and an odd input becomes `unknown`.
//! It owns the reading for the checks; it must not judge (the checks do) nor parse what an edge already parses.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::classify::{classify, Class};
use crate::config::Settings;
use crate::fsread::{list_dir, read_optional, read_text};
use crate::mountinfo::{self, Mount};
use crate::paths::{self, Paths};
use crate::procs::{self, Process};
use crate::scan::Scan;

use super::agent::agent_from_processes;
use super::VolumeInputs;

/// An input, or why it could not be had (naming the path).
pub type Input<T> = Result<T, String>;

/// A device-mapper device from `/sys/block/dm-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDevice {
    /// The kernel name (`dm-0`).
    pub node: String,
    /// Its device number, from `dev`.
    pub dev: Option<(u32, u32)>,
    /// The mapper name (`rootvg-rootlv`, `osencrypt`), from `dm/name`.
    pub name: String,
    /// `dm/uuid`: `LVM-...` for logical volumes, `CRYPT-...` for dm-crypt.
    pub uuid: Option<String>,
}

impl DmDevice {
    /// An LVM logical volume.
    pub fn is_lvm(&self) -> bool {
        self.uuid.as_deref().is_some_and(|u| u.starts_with("LVM-"))
    }
    /// A dm-crypt volume.
    pub fn is_crypt(&self) -> bool {
        self.uuid.as_deref().is_some_and(|u| u.starts_with("CRYPT-"))
    }
}

/// SELinux's `enforce` file: where it was looked for and what it holds (None: there is none, SELinux is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selinux {
    /// The file, as a path of the machine (`/sys/fs/selinux/enforce`).
    pub path: String,
    /// Its content.
    pub enforce: Input<Option<String>>,
}

/// The ADE extension's newest handler folder and its last status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdeState {
    /// The handler folder name (`Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.53`).
    pub handler: String,
    /// The newest `config/<seq>.settings`, if any.
    pub seq: Option<u64>,
    /// The text of `status/<seq>.status`, if written yet.
    pub status: Option<String>,
}

/// A process holding `/` that prepare would stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadHolder {
    pub pid: i32,
    /// `comm`.
    pub comm: String,
    /// The unit prepare would stop (None: a stray process no unit runs).
    pub unit: Option<String>,
    /// The workload's name in the catalogue.
    pub workload: String,
}

/// Everything the checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// `/etc/os-release`.
    pub os_release: Input<String>,
    /// `/etc/redhat-release` (CentOS's minor version), when readable.
    pub redhat_release: Option<String>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Input<String>,
    /// `/proc/meminfo`.
    pub meminfo: Input<String>,
    /// `/proc/self/mountinfo`, parsed.
    pub mounts: Input<Vec<Mount>>,
    /// `/sys/block/dm-*`.
    pub dm: Input<Vec<DmDevice>>,
    /// The process table (ade-prep and its ancestors left out).
    pub processes: Input<Vec<Process>>,
    /// `waagent --version`'s output, asked only when no `-run-exthandlers` process names the agent's version.
    pub waagent_version: Option<Input<String>>,
    /// Names in `/var/lib/waagent` (None: no such folder).
    pub waagent_entries: Input<Option<Vec<String>>>,
    /// ADE's `azure_crypt_request_queue.ini` (None: absent).
    pub ade_queue: Input<Option<String>>,
    /// ADE's `os_encryption_markers` folder (None: absent).
    pub ade_markers: Input<Option<Vec<String>>>,
    /// The OS volume is encrypted by ADE's own test, as `run` reads it ([`crate::extension::ade::machine::os_encrypted`]).
    pub os_encrypted: bool,
    /// The ADE extension's status (None: no ADE handler folder).
    pub ade_state: Input<Option<AdeState>>,
    pub selinux: Selinux,
    /// Workload processes holding `/`.
    pub workloads: Input<Vec<WorkloadHolder>>,
    /// The other writers of `/` (from the same scan; set by [`super::check_machine`], not read by [`gather`]).
    pub writers: Input<Vec<crate::classify::Writer>>,
    /// `[policy] writers`.
    pub writers_policy: crate::config::WritersPolicy,
    /// ade-prep's hold list left with no window open (None: no list, or a window is open).
    pub stale_hold: Input<Option<StaleHold>>,
    /// ADE's data-volume selection and what judging it needs ([`gather_volumes`]).
    pub volumes: VolumeInputs,
    /// ADE's packages: read by packages.rs (dpkg's status file, `rpm -q`).
    pub packages: super::packages::PackageFacts,
    /// ADE's network paths: read by network.rs (waagent.conf, the wire server file, proxy variables, routes).
    pub network: super::network::NetFacts,
}

/// A hold list on disk while no window is open: the generator masks its units at the next boot or daemon-reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleHold {
    /// The list's path.
    pub path: String,
    /// The units it names (comments and blank lines left out).
    pub units: Vec<String>,
}

/// The guest agent's `waagent --version`, behind a trait so that tests do not run it.
pub trait AgentVersion {
    /// The command's output, or why it could not be had.
    fn waagent_version(&self) -> Result<String, String>;
}

/// Runs `waagent --version` (ten seconds at most); only on the running system, since under another root the
/// program found would be this machine's, not the tree's.
#[derive(Debug, Clone)]
pub struct Waagent {
    system: bool,
}

impl Waagent {
    /// For the machine `paths` points at.
    pub fn for_paths(paths: &Paths) -> Self {
        Waagent { system: paths.is_system() }
    }
}

const WAAGENT_TIMEOUT: Duration = Duration::from_secs(10);

impl AgentVersion for Waagent {
    fn waagent_version(&self) -> Result<String, String> {
        if !self.system {
            return Err("`waagent --version` not run: the root is not /".into());
        }
        // Not always on a non-root PATH.
        let prog =
            ["/usr/sbin/waagent", "/usr/bin/waagent"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("waagent");
        let mut child = Command::new(prog)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{prog} --version: {e}"))?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() < WAAGENT_TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{prog} --version: no answer in {}s", WAAGENT_TIMEOUT.as_secs()));
                }
                Err(e) => return Err(format!("{prog} --version: {e}")),
            }
        };
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut out).map_err(|e| format!("{prog} --version: {e}"))?;
        }
        if !status.success() {
            return Err(format!("{prog} --version: {status}"));
        }
        Ok(out)
    }
}

fn read_mounts(paths: &Paths) -> Input<Vec<Mount>> {
    let mounts = mountinfo::read(paths).map_err(|e| e.to_string())?;
    if mounts.is_empty() {
        return Err(format!("{}: no mount could be parsed", paths.proc().join("self/mountinfo").display()));
    }
    Ok(mounts)
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_dm(paths: &Paths) -> Input<Vec<DmDevice>> {
    let block = paths.sys().join("block");
    let names = list_dir(&block)?.ok_or_else(|| format!("{}: not found", block.display()))?;
    let mut out = vec![];
    for node in names.into_iter().filter(|n| n.starts_with("dm-")) {
        let d = block.join(&node);
        let name = read_text(&d.join("dm/name"))?.trim().to_string();
        let dev = std::fs::read_to_string(d.join("dev")).ok().and_then(|t| parse_dev(&t));
        let uuid = std::fs::read_to_string(d.join("dm/uuid")).ok().map(|u| u.trim().to_string());
        out.push(DmDevice { node, dev, name, uuid });
    }
    Ok(out)
}

/// Leaves out `me` and its ancestors: ade-prep run from a Custom Script is not another extension at work.
fn without_chain(mut procs: Vec<Process>, me: i32) -> Vec<Process> {
    let mut chain = vec![me];
    let mut cur = me;
    while let Some(pp) = procs.iter().find(|p| p.pid == cur).and_then(|p| p.ppid) {
        if pp <= 1 || chain.contains(&pp) {
            break;
        }
        chain.push(pp);
        cur = pp;
    }
    procs.retain(|p| !chain.contains(&p.pid));
    procs
}

/// The newest ADE handler folder, the sequence number ADE reports under and that sequence's status text.
fn read_ade_state(waagent: &Path, entries: &Input<Option<Vec<String>>>) -> Input<Option<AdeState>> {
    let Some(entries) = entries.clone()? else { return Ok(None) };
    // The same finder as `run`'s (extension::ade).
    let Some(handler) = crate::extension::ade::newest_handler(entries.iter().map(String::as_str)) else {
        return Ok(None);
    };
    let dir = waagent.join(handler);
    // ADE writes its status to the highest seq's file, rejected or not (FINDINGS 2): the same reader as `run`'s.
    let seq = crate::extension::ade::status_seq(&dir).map_err(|e| e.to_string())?;
    let status = match seq {
        Some(s) => read_optional(&dir.join(format!("status/{s}.status")))?,
        None => None,
    };
    Ok(Some(AdeState { handler: handler.to_string(), seq, status }))
}

fn read_selinux(paths: &Paths, mounts: &Input<Vec<Mount>>) -> Selinux {
    let mount_point = crate::selinux::selinuxfs_in(mounts.as_deref().unwrap_or_default());
    let file = mount_point.join("enforce");
    let mut enforce = read_optional(&paths.resolve(&file));
    if let (Ok(None), Err(e)) = (&enforce, mounts) {
        // Absent at the default place says nothing when selinuxfs could be mounted elsewhere.
        enforce = Err(format!("no {} and selinuxfs not looked up: {e}", file.display()));
    }
    Selinux { path: file.display().to_string(), enforce }
}

/// The workload processes of a scan of `/`, as classified with the settings.
pub fn workload_holders(scan: &Scan, settings: &Settings) -> Vec<WorkloadHolder> {
    scan.holders
        .iter()
        .filter_map(|h| {
            let c = classify(h, settings);
            (c.class == Class::Workload).then(|| WorkloadHolder {
                pid: h.pid,
                comm: h.comm.clone(),
                unit: h.unit.clone(),
                workload: c.workload.unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads every input under `paths`; `workloads` comes from the caller's scan.
pub fn gather(paths: &Paths, agent: &dyn AgentVersion, workloads: Input<Vec<WorkloadHolder>>) -> Inputs {
    let proc = paths.proc();
    let mounts = read_mounts(paths);
    let mut processes = procs::list(&proc);
    if paths.is_system() {
        processes = processes.map(|p| without_chain(p, std::process::id() as i32));
    }
    let waagent_version = match &processes {
        Ok(p) if agent_from_processes(p).is_some() => None,
        _ => Some(agent.waagent_version()),
    };
    let waagent_entries = list_dir(&paths.waagent_dir());
    let network = super::network::gather_here(paths, &processes);
    let ade_dir = paths.ade_config_dir();
    let rh = |p: &str| std::fs::read_to_string(paths.resolve(p)).ok();
    let os_encrypted = mounts.as_ref().is_ok_and(|m| crate::extension::ade::machine::os_encrypted(paths, m));
    Inputs {
        os_release: read_text(&paths.os_release()),
        redhat_release: rh(paths::CENTOS_RELEASE).or_else(|| rh(paths::REDHAT_RELEASE)),
        kernel_release: read_text(&proc.join("sys/kernel/osrelease")),
        meminfo: read_text(&proc.join("meminfo")),
        dm: read_dm(paths),
        selinux: read_selinux(paths, &mounts),
        mounts,
        processes,
        waagent_version,
        ade_state: read_ade_state(&paths.waagent_dir(), &waagent_entries),
        waagent_entries,
        ade_queue: read_optional(&ade_dir.join(ADE_QUEUE_FILE)),
        ade_markers: list_dir(&ade_dir.join(ADE_MARKERS_DIR)),
        os_encrypted,
        workloads,
        writers: Err("not read (the scan is check_machine's)".into()),
        writers_policy: Default::default(),
        stale_hold: read_stale_hold(paths),
        volumes: VolumeInputs::not_read("data volumes not read (lsblk is run by check_machine)"),
        packages: super::packages::gather(paths),
        network,
    }
}

/// ADE's data-volume selection (lsblk through `runner`), fstab, swaps, the free space of the selected mounted
/// volumes, the paths fstab names that exist, and each selected volume verified.
/// The selection follows ADE's newest settings in `ade`: VolumeType All, else Data's stricter rule; the
/// EncryptFormatAll rule for that operation.
pub fn gather_volumes(
    paths: &Paths,
    runner: &dyn crate::runner::Runner,
    ade: &Input<Option<AdeState>>,
) -> VolumeInputs {
    use crate::volumes;
    let settings = match ade {
        Ok(Some(AdeState { handler, seq: Some(seq), .. })) => {
            crate::extension::ade::read_settings(&paths.waagent_dir().join(handler), *seq).ok()
        }
        _ => None,
    };
    let request = settings.as_ref().and_then(|s| s.volume_type.clone());
    let all = request.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("all"));
    let vt = if all { volumes::VolumeType::All } else { volumes::VolumeType::Data };
    let format_all = settings.and_then(|s| s.encryption_operation).as_deref() == Some("EnableEncryptionFormatAll");
    let survey = volumes::survey_for(paths, runner, vt, format_all).map_err(|e| e.to_string());
    let fstab = read_text(&paths.resolve(paths::FSTAB));
    let swaps = read_text(&paths.proc().join("swaps"));
    let mut free = vec![];
    let mut verdicts = vec![];
    if let Ok(s) = &survey {
        for v in &s.selected {
            if let Some(mp) = &v.mount {
                if let Ok(st) = nix::sys::statvfs::statvfs(&paths.resolve(mp)) {
                    free.push((mp.clone(), st.blocks_free() * st.fragment_size()));
                }
            }
            verdicts.push((v.clone(), volumes::verify(paths, runner, v)));
        }
    }
    let mut existing = vec![];
    if let Ok(t) = &fstab {
        for (dev, mp, _, _) in volumes::verify::parse_fstab(t) {
            for p in [dev, mp] {
                if p.starts_with('/') && paths.resolve(&p).exists() {
                    existing.push(std::path::PathBuf::from(p));
                }
            }
        }
    }
    VolumeInputs { survey, fstab, swaps, free, existing, verdicts, request, format_all }
}

/// The hold list when no window is open (the journal says so); an unreadable journal or list is the error.
fn read_stale_hold(paths: &Paths) -> Input<Option<StaleHold>> {
    use crate::window::store::{FileStore, Store};
    let path = paths.hold_file();
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    let store = FileStore::new(paths);
    let open =
        store.load().map_err(|e| format!("{}: {e}", store.location().display()))?.is_some_and(|r| r.is_window_open());
    let units = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from);
    Ok((!open).then(|| StaleHold { path: path.display().to_string(), units: units.collect() }))
}

/// ADE's queue of requests and its phase markers: the names are extension::ade::machine's, shared with `run`.
use crate::extension::ade::machine::{MARKERS_DIR as ADE_MARKERS_DIR, QUEUE_FILE as ADE_QUEUE_FILE};

#[cfg(test)]
mod tests {
    use super::*;

    struct NoAgent;
    impl AgentVersion for NoAgent {
        fn waagent_version(&self) -> Result<String, String> {
            Err("asked".into())
        }
    }

    fn p(pid: i32, ppid: i32) -> Process {
        Process { pid, ppid: Some(ppid), comm: "x".into(), cmdline: vec![], cwd: None }
    }

    #[test]
    fn own_chain_is_left_out() {
        let procs = vec![p(1, 0), p(50, 1), p(60, 50), p(70, 60), p(80, 1)];
        let left: Vec<i32> = without_chain(procs, 70).iter().map(|p| p.pid).collect();
        assert_eq!(left, vec![1, 80]);
    }

    #[test]
    fn odd_tree_gives_reasons_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        // directories where files are expected, a file where a folder is expected
        for d in ["etc/os-release", "proc/meminfo", "proc/self/mountinfo", "sys/block/dm-0/dm/name"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::fs::write(r.join("var/lib/waagent"), "not a folder").unwrap();
        let inp = gather(&Paths::under(r), &NoAgent, Err("not scanned".into()));
        for (what, e) in [
            ("os-release", inp.os_release.as_ref().err()),
            ("meminfo", inp.meminfo.as_ref().err()),
            ("mounts", inp.mounts.as_ref().err()),
            ("dm", inp.dm.as_ref().err()),
            ("waagent", inp.waagent_entries.as_ref().err()),
            ("ade", inp.ade_state.as_ref().err()),
        ] {
            let e = e.unwrap_or_else(|| panic!("{what} should fail"));
            assert!(e.contains(&r.display().to_string()), "{what}: {e}");
        }
        // no proc/<pid>: no processes, so the agent is asked
        assert_eq!(inp.processes, Ok(vec![]));
        assert_eq!(inp.waagent_version, Some(Err("asked".into())));
        // selinuxfs not looked up in unreadable mountinfo, absent at the default place: unknown
        assert_eq!(inp.selinux.path, "/sys/fs/selinux/enforce");
        assert!(inp.selinux.enforce.as_ref().unwrap_err().contains("selinuxfs not looked up"));
        assert_eq!(inp.ade_queue, Ok(None));
    }

    #[test]
    fn waagent_is_not_run_under_another_root() {
        let w = Waagent::for_paths(&Paths::under("/tmp/x"));
        assert!(w.waagent_version().unwrap_err().contains("not run"));
    }
}
