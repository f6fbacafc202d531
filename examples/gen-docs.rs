//! Generates the man pages and the shell completions from the clap definitions (`ade_prep::cli::Cli`), so that they
//! cannot drift from the binary. Run by the package builds: `cargo run --example gen-docs -- OUTDIR` writes
//! OUTDIR/man/ade-prep.1 and one page per subcommand (ade-prep-scan.1, ...), and
//! OUTDIR/completions/{ade-prep.bash,_ade-prep,ade-prep.fish}. With SOURCE_DATE_EPOCH set (the package builds set it)
//! the pages carry that date, so the output is reproducible.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The command as the pages show it: built (subcommands named `ade-prep-NAME`), without clap's `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = ade_prep::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `YYYY-MM-DD` of a Unix time (the date part of the journal's UTC format).
fn date_of(epoch: i64) -> String {
    ade_prep::clock::format_utc(epoch.max(0) as u64)[..10].to_string()
}

fn write_page(cmd: clap::Command, version: &str, date: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd).source(format!("ade-prep {version}")).manual("ade-prep").date(date);
    let path = dir.join(man.get_filename());
    let mut f = std::fs::File::create(&path)?;
    man.render(&mut f)?;
    f.flush()?;
    Ok(path)
}

/// Writes every man page and completion file under `out`; returns the files written.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let cmd = command();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let date = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).map(date_of).unwrap_or_default();
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut written = vec![write_page(cmd.clone(), &version, &date, &man)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(write_page(sub.clone(), &version, &date, &man)?);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = ade_prep::cli::Cli::command();
        written.push(clap_complete::generate_to(shell, &mut c, "ade-prep", &completions)?);
    }
    Ok(written)
}

#[allow(dead_code)] // tests/packaging/docs.rs includes this file for `generate` alone
fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {}: {e}", Path::new(&out).display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::date_of(0), "1970-01-01");
        assert_eq!(super::date_of(951_782_400), "2000-02-29");
        assert_eq!(super::date_of(1_714_564_700), "2024-05-01");
    }
}
