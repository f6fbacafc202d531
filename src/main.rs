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
    // No timestamps: journald adds them. Messages carry outside text (process titles, unit names, ADE's
    // messages): control characters are escaped, so that each record stays one honest line.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            use std::io::Write;
            let style = buf.default_level_style(record.level());
            let text = record.args().to_string();
            let level = record.level();
            writeln!(buf, "[{style}{level:<5}{style:#}] {}", ade_prep::text::escape_controls(&text))
        })
        .init();
    match ade_prep::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ade-prep: {}", ade_prep::text::escape_controls(&format!("{e:#}")));
            ExitCode::from(ade_prep::exit::code_of(&e))
        }
    }
}
