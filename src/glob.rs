//! Shell-style patterns (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) for unit names, command names and paths.
//! A leaf: it knows nothing of units or files.

/// True when `text` matches `pattern` as a whole. `*` matches any run of characters, `/` included.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, t[ti]) {
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns (matched, index after `]`), or None when
/// the class is not closed (then `[` is literal).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                found = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                found = true;
            }
            i += 1;
        }
    }
    None
}

/// True when any pattern matches.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_questions_and_classes() {
        assert!(matches("docker-*.scope", "docker-0123abcd.scope"));
        assert!(!matches("docker-*.scope", "docker.service"));
        assert!(matches("containerd-shim*", "containerd-shim-runc-v2"));
        assert!(matches("SAP[A-Z0-9][A-Z0-9][A-Z0-9]_[0-9][0-9].service", "SAPHN1_00.service"));
        assert!(!matches("SAP[A-Z0-9][A-Z0-9][A-Z0-9]_[0-9][0-9].service", "SAPHN1_0.service"));
        assert!(matches("hdb?*", "hdbindexserver"));
        assert!(!matches("hdb?*", "hdb"));
        assert!(matches("/var/lib/waagent/*", "/var/lib/waagent/a/b/c"));
        assert!(matches("[!a]x", "bx") && !matches("[!a]x", "ax"));
        assert!(matches("*", "") && !matches("?", ""));
        assert!(matches("a[b", "a[b"));
    }
}
