//! Text shown to people: escaping what a process or a file controls before it reaches a terminal. A leaf; it must
//! not decide what is shown.

/// `s` with every control character (C0, DEL, C1) written as `\xNN`, so that a command line cannot move the
/// cursor, clear the screen or forge a line of output.
pub fn escape_controls(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            o.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            o.push(c);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("a\x1b[2Jb\nc\u{9b}é"), "a\\x1b[2Jb\\x0ac\\x9bé");
    }
}
