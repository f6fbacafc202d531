//! Outside text made safe to print: [`escape_controls`] turns every control character (C0, DEL, C1) into a visible
//! escape, so that a process title, a unit name or an ADE message cannot move the cursor, colour the terminal or
//! start a new line that looks like one of ours. For human output and log lines only; JSON carries the text exactly
//! (its encoder escapes what JSON needs). It must not change anything else.

use std::borrow::Cow;

/// `text` with control characters as escapes: `\n`, `\r`, `\t`, `\e` (ESC) and `\xHH` / `\u{HHHH}` otherwise;
/// a backslash stays as it is. Borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut o = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\x1b' => o.push_str("\\e"),
            c if c.is_control() && (c as u32) < 0x100 => o.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => o.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape_controls("sshd: root [priv] é"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape_controls("\x1b[2K\x1b[1Gprotected sshd"), "\\e[2K\\e[1Gprotected sshd");
        assert_eq!(escape_controls("\0\x07\x7f\u{9b}x"), "\\x00\\x07\\x7f\\x9bx");
        assert_eq!(escape_controls("back\\slash"), "back\\slash");
    }
}
