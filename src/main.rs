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
    ade_prep::events::init_output(cli.verbose);
    match ade_prep::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ade-prep: {}", ade_prep::text::escape_controls(&format!("{e:#}")));
            ExitCode::from(ade_prep::exit::code_of(&e))
        }
    }
}
