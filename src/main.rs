//! Thin entry point: parse, set up logging, run, map the error to an exit code. It must not hold logic of its own.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match ade_prep::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { ade_prep::exit::USAGE } else { ade_prep::exit::OK });
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // No timestamps: journald adds them.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .format_target(false)
        .init();
    match ade_prep::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ade-prep: {e:#}");
            ExitCode::from(ade_prep::exit::code_of(&e))
        }
    }
}
