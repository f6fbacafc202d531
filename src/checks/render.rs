//! The human table of `ade-prep check` (the JSON is the [`Report`] itself).
//! It owns the layout only; it must not decide a result.

use std::fmt::Write;

use super::{Report, Status};

fn colour(s: Status) -> &'static str {
    match s {
        Status::Pass => "\x1b[32m",
        Status::Info => "\x1b[36m",
        Status::Warn => "\x1b[33m",
        Status::Fail => "\x1b[1;31m",
        Status::NotApplicable => "\x1b[2m",
        Status::Unknown => "\x1b[35m",
    }
}

/// One line per check (result, id, evidence), the fix below each one that does not pass, then the counts;
/// `colour` only when writing to a terminal.
pub fn text(r: &Report, colour_on: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<14} {:<18} EVIDENCE", "RESULT", "CHECK");
    for c in &r.checks {
        let res = format!("{:<14}", c.result.as_str());
        let res = if colour_on { format!("{}{res}\x1b[0m", colour(c.result)) } else { res };
        let _ = writeln!(o, "{res} {:<18} {}", c.id, crate::text::escape_controls(&c.evidence));
        if matches!(c.result, Status::Warn | Status::Fail | Status::Info) {
            let _ = writeln!(o, "{:<14} {:<18} fix: {}", "", "", c.fix);
        }
    }
    let s = &r.summary;
    let _ = writeln!(
        o,
        "\n{} pass, {} info, {} warn, {} fail, {} not-applicable, {} unknown",
        s.pass, s.info, s.warn, s.fail, s.not_applicable, s.unknown
    );
    if r.has_failures() {
        let _ = writeln!(
            o,
            "failed: {} (fix them, or override with `ade-prep prepare --force {}`)",
            r.failed.join(", "),
            r.failed.join(",")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::*;

    #[test]
    fn colour_only_when_asked() {
        let r = run(&super::super::tests::unreadable_inputs("x"));
        let plain = text(&r, false);
        assert!(!plain.contains('\x1b'));
        assert!(plain.starts_with("RESULT"));
        assert!(plain.contains("unknown        memory             x\n"), "{plain}");
        assert!(text(&r, true).contains("\x1b[35munknown"));
    }
}
