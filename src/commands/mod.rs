//! One file per verb: each wires the real edges together, calls the window, the checks or the lock, and prints
//! what people see. The verbs own the command line's behaviour (root checks, exit codes, output); they must not
//! decide what to stop or how to undo it (the window does) nor read outside facts themselves (the edges do).

pub mod check;
pub mod config;
pub mod fleet;
pub mod lock;
pub mod prepare;
pub mod report;
pub mod restore;
pub mod run;
pub mod scan;
pub mod status;

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context};

use crate::config::Settings;
use crate::exit;
use crate::paths::Paths;
use crate::runner::RealRunner;
use crate::scan::ProcFs;
use crate::selinux::SelinuxFs;
use crate::systemd::Systemd;
use crate::window::Machine;

/// Whether the process runs as root.
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}

pub(crate) fn need_root(what: &str) -> anyhow::Result<()> {
    if is_root() {
        Ok(())
    } else {
        Err(exit::with_code(exit::NOT_ROOT, anyhow!("{what} changes the machine: run it as root")))
    }
}

/// The path given on the command line exists (exit 2 otherwise).
pub(crate) fn existing(mount: &Path) -> anyhow::Result<()> {
    if mount.exists() {
        Ok(())
    } else {
        Err(exit::with_code(exit::USAGE, anyhow!("{}: no such file or directory", mount.display())))
    }
}

/// The real edges of this machine.
pub struct RealEdges {
    procs: ProcFs,
    systemd: Systemd,
    selinux: SelinuxFs,
    runner: RealRunner,
    paths: Paths,
}

impl RealEdges {
    /// Connects to the system bus.
    pub fn new(paths: &Paths) -> anyhow::Result<Self> {
        Ok(RealEdges {
            procs: ProcFs::new(paths.proc()),
            systemd: Systemd::system()?,
            selinux: SelinuxFs::new(paths),
            runner: RealRunner,
            paths: paths.clone(),
        })
    }

    /// The machine view execution works through.
    pub fn machine<'a>(&'a self, settings: &'a Settings) -> Machine<'a> {
        Machine {
            procs: &self.procs,
            systemd: &self.systemd,
            selinux: &self.selinux,
            runner: &self.runner,
            settings,
            paths: &self.paths,
        }
    }
}
