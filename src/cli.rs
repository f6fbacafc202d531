//! The command line (clap derive), one subcommand per verb, and the dispatch to the library.
//! The same definitions generate the man page and shell completions for the packages.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::checks;
use crate::config;
use crate::exit;
use crate::paths::Paths;
use crate::report;
use crate::scan::{ProcFs, ProcessTable};

/// Prepares a Linux VM for Azure Disk Encryption of its OS disk: frees `/` of workloads for the encryption window,
/// then puts everything back.
#[derive(Debug, Parser)]
#[command(name = "ade-prep", version, about, max_term_width = 100)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Resolve every system path (/etc, /proc, /var/lib, /run) under this folder instead of /; for tests.
    #[arg(long, global = true, hide = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the processes holding the filesystem of PATH (default /), with fuser's access codes and their class.
    Scan {
        /// A path on the filesystem to scan.
        #[arg(long, value_name = "PATH", default_value = "/")]
        mount: PathBuf,
        /// Print JSON (shape in README.md).
        #[arg(long)]
        json: bool,
    },
    /// Free the filesystem for ADE: check, plan, then stop the workloads (masked for the window), set SELinux
    /// permissive and hold the lock; the window stays open until `restore` (or the daemon sees ADE finish).
    Prepare {
        /// Print the ordered plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON: the plan, and the journal when executed.
        #[arg(long)]
        json: bool,
        /// A path on the filesystem to free.
        #[arg(long, value_name = "PATH", default_value = "/")]
        mount: PathBuf,
        /// Check ids whose failure not to refuse on (comma-separated; see `ade-prep check`).
        #[arg(long, value_name = "CHECK_ID,...", value_delimiter = ',')]
        force: Vec<String>,
        /// Seconds to wait for the lock (default: as long as it takes).
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Undo everything the journal records (start units, unmask, SELinux back) and close the window.
    Restore {
        /// Seconds to wait for the lock (default: as long as it takes).
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// The unit's entry (Type=notify): when ADE's settings ask to encrypt the OS volume, prepare, wait for ADE
    /// through the reboot, restore; after a reboot, resume the open window.
    Run {
        /// Check ids whose failure not to refuse on (comma-separated).
        #[arg(long, value_name = "CHECK_ID,...", value_delimiter = ',')]
        force: Vec<String>,
    },
    /// Show the window (open or not, since when, what was changed) and the lock holder.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration as TOML (defaults, config.toml, config.d/*.toml).
    Config,
    /// Check every precondition of ADE's troubleshooting guide, with the fix for each; exit 1 when one fails.
    Check {
        /// Print JSON (shape in docs/checks.md).
        #[arg(long)]
        json: bool,
    },
    /// Run CMD holding the serialisation lock, once no encryption window is open; CMD's exit code passes through
    /// (5 when the wait ran out).
    Lock {
        /// Seconds to wait for the lock and the window (0: one try); without it, wait as long as it takes.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn out(text: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let paths = cli.root.clone().map_or_else(Paths::system, Paths::under);
    let settings = config::load(&paths, is_root())?;
    match cli.command {
        Command::Scan { mount, json } => {
            if !mount.exists() {
                return Err(exit::with_code(
                    exit::USAGE,
                    anyhow::anyhow!("{}: no such file or directory", mount.display()),
                ));
            }
            let scan = ProcFs::new(paths.proc()).scan(&mount)?;
            let r = report::scan_report(&scan, &settings);
            if json {
                out(&(serde_json::to_string_pretty(&r)? + "\n"))?;
            } else {
                out(&report::scan_text(&r))?;
            }
            if scan.unreadable_count() > 0 {
                log::warn!(
                    "{} entries could not be read{}",
                    scan.unreadable_count(),
                    if is_root() { "" } else { " (not root)" }
                );
            }
            Ok(exit::OK)
        }
        Command::Prepare { dry_run, json, mount, force, wait } => {
            if !mount.exists() {
                return Err(exit::with_code(
                    exit::USAGE,
                    anyhow::anyhow!("{}: no such file or directory", mount.display()),
                ));
            }
            let opts = crate::commands::PrepareOpts { dry_run, force, lock_wait: wait };
            let (prepared, _guard) = crate::commands::prepare(&paths, &settings, &mount, &opts)?;
            match prepared {
                None => out("no preparation needed: ADE encrypts this distribution's OS disk online\n")?,
                Some(p) if json => out(&(serde_json::to_string_pretty(&p)? + "\n"))?,
                Some(p) if !p.executed => out(&format!("{}(dry run: nothing was changed)\n", p.plan))?,
                Some(p) => out(&format!(
                    "{}window open: {}\n",
                    p.plan,
                    p.journal.as_ref().map(crate::commands::summary).unwrap_or_default()
                ))?,
            }
            Ok(exit::OK)
        }
        Command::Restore { wait } => {
            match crate::commands::restore(&paths, &settings, wait)? {
                None => out("nothing to restore: no window is open\n")?,
                Some(r) => out(&format!("restored: {}\n", r.summary()))?,
            }
            Ok(exit::OK)
        }
        Command::Run { force } => crate::daemon::run(&paths, &settings, &crate::daemon::RunOpts { force }),
        Command::Status { json } => {
            let s = crate::commands::status(&paths)?;
            if json {
                out(&(serde_json::to_string_pretty(&s)? + "\n"))?;
            } else {
                out(&crate::commands::status_text(&s))?;
            }
            Ok(exit::OK)
        }
        Command::Lock { wait, command } => {
            crate::lock::run_holding(&paths, wait.map(std::time::Duration::from_secs), &command)
        }
        Command::Config => {
            let files = config::files(&paths)?;
            let mut text = String::from("# effective configuration: built-in defaults");
            for f in &files {
                text.push_str(&format!(", then {}", f.display()));
            }
            text.push('\n');
            text.push_str(&settings.to_toml());
            out(&text)?;
            Ok(exit::OK)
        }
        Command::Check { json } => {
            let report = checks::check_machine(&paths, &settings, &checks::Waagent::for_paths(&paths));
            if json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                use std::io::IsTerminal;
                out(&checks::render::text(&report, std::io::stdout().is_terminal()))?;
            }
            Ok(if report.has_failures() { exit::FAILED } else { exit::OK })
        }
    }
}
