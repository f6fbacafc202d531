//! The command line (clap derive), one subcommand per verb, and the dispatch to the library.
//! The same definitions generate the man page and shell completions for the packages.
//! It owns parsing and dispatch; it must not do a verb's work (the commands do).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::config;
use crate::paths::Paths;

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
        /// List every process, kernel threads included, in pid order (text only; JSON always lists all).
        #[arg(long)]
        all: bool,
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
        /// A path on the filesystem to free (the OS volume's; not part of the window with `--volume-type data`).
        #[arg(long, value_name = "PATH", default_value = "/")]
        mount: PathBuf,
        /// Which volumes ADE will encrypt, as ADE's VolumeType (any case): `os` frees `/`, `data` the data volumes
        /// ADE selects (each unmounted by ADE with a plain umount, skipped when busy), `all` both.
        #[arg(long, value_name = "TYPE", default_value = "os", ignore_case = true)]
        volume_type: crate::datavol::VolumeType,
        /// Free this mount point as a data volume instead of ADE's selection (repeatable; needs `--volume-type
        /// data` or `all`).
        #[arg(long, value_name = "PATH")]
        data_mount: Vec<PathBuf>,
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
        /// The journal cannot be read: restore from its previous version (state.json.prev), keeping the unreadable
        /// one as state.json.corrupt.
        #[arg(long)]
        from_prev: bool,
        /// Only when the open window is past its deadline (window.timeout_hours after it opened); otherwise say
        /// when that is and exit 0. Run by ade-prep-deadline.timer.
        #[arg(long, conflicts_with = "from_prev")]
        past_deadline: bool,
        /// Close an entry whose undo failed and cannot succeed (its target is gone for good), recorded in the
        /// journal, then restore the rest; ENTRY is its number in `ade-prep status`. Repeatable.
        #[arg(long, value_name = "ENTRY", conflicts_with = "past_deadline")]
        abandon: Vec<u32>,
        /// Close every entry whose undo failed (as --abandon each), then restore the rest.
        #[arg(long = "abandon-all", alias = "all", conflicts_with_all = ["abandon", "past_deadline"])]
        all: bool,
        /// Start the workloads even where a filesystem they stood on when the window opened is not mounted again
        /// (a disk gone for good); recorded in the journal.
        #[arg(long, conflicts_with = "past_deadline")]
        without_ground: bool,
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
    /// Collect a support bundle (.tar.gz): check, scan and status as JSON, the journal, the hold list, the units,
    /// ade-prep's journald entries, ADE's logs, settings and status (secrets redacted) and markers, with a manifest.
    Report {
        /// Where to write it (default: ade-prep-report-HOST-TIME.tar.gz in the current folder).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Fleet rollouts: take, give back or show a slot of the group semaphore ([fleet] in the configuration), so that
    /// no more than N VMs of a group are encrypted at once (docs/fleet.md).
    Fleet {
        /// The group (default: fleet.group).
        #[arg(long, global = true, value_name = "GROUP")]
        group: Option<String>,
        /// The VM's id (default: fleet.id, else this VM's SMBIOS UUID).
        #[arg(long, global = true, value_name = "ID")]
        id: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: FleetAction,
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

/// `fleet`'s verbs.
#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Take a slot for this VM (or --id), recorded on this VM until `restore` gives it back; exit 5 when the group
    /// stays full.
    Acquire {
        /// Seconds to retry while the group is full (default 0: one try).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
    },
    /// Give this VM's slot back (`--id ID --force`: a dead VM's).
    Release {
        /// Release another VM's slot (--id).
        #[arg(long)]
        force: bool,
    },
    /// Show the group's slots and holders, with since-when, and this VM's record.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line; returns the exit code.
///
/// Verbs that start something new (scan, prepare, check, config, run's next prepare) refuse a configuration that
/// does not load (exit 2). Verbs that end or report a window (restore, status, lock, run's waiting and restoring)
/// never depend on it: the journal records what they need (the deadline), and for the rest (how long a start job
/// may take) they fall back to the built-in catalogue, with a warning.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let paths = cli.root.clone().map_or_else(Paths::system, Paths::under);
    let loaded = config::load(&paths, commands::is_root());
    match cli.command {
        Command::Scan { mount, json, all } => commands::scan::run(&paths, &loaded?, &mount, json, all),
        Command::Prepare { dry_run, json, mount, volume_type, data_mount, force, wait } => {
            let opts = commands::prepare::PrepareOpts {
                dry_run,
                force,
                lock_wait: wait,
                lock_override_after: None,
                volume_type,
                data_mounts: data_mount,
            };
            commands::prepare::run(&paths, &loaded?, &mount, &opts, json)
        }
        Command::Restore { wait, from_prev, past_deadline, abandon, all, without_ground } => {
            use commands::restore::Abandon;
            let abandon =
                if all { Some(Abandon::AllFailed) } else { (!abandon.is_empty()).then_some(Abandon::Entries(abandon)) };
            let opts =
                commands::restore::RestoreOpts { lock_wait: wait, from_prev, past_deadline, abandon, without_ground };
            commands::restore::run(&paths, &config::or_builtin(loaded), &opts)
        }
        Command::Run { force } => commands::run::run(&paths, loaded, &commands::run::RunOpts { force }),
        Command::Status { json } => {
            config::or_builtin(loaded);
            commands::status::run(&paths, json)
        }
        Command::Lock { wait, command } => {
            config::or_builtin(loaded);
            commands::lock::run(&paths, wait, &command)
        }
        Command::Fleet { group, id, action } => {
            let action = match action {
                FleetAction::Acquire { wait } => commands::fleet::Action::Acquire { wait },
                FleetAction::Release { force } => commands::fleet::Action::Release { force },
                FleetAction::Status { json } => commands::fleet::Action::Status { json },
            };
            commands::fleet::run(&paths, &loaded?, &commands::fleet::FleetOpts { group, id }, &action)
        }
        Command::Config => commands::config::run(&paths, &loaded?),
        // The support bundle is most needed when something is wrong, the configuration included.
        Command::Report { output } => commands::report::run(&paths, &config::or_builtin(loaded), output.as_deref()),
        Command::Check { json } => commands::check::run(&paths, &loaded?, json),
    }
}
