//! Dotted numeric versions (`2.2.38`, `1.1.0.53`, a kernel's `5.15`): the one parser and the one comparison for
//! the guest agent's, the ADE handler's, the distribution's and the kernel's versions. A leaf: it knows no file.

use std::cmp::Ordering;

/// `2.2.38` → `[2, 2, 38]`; None when empty or any part is not a number.
pub fn parse(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// Compares dotted versions, missing parts counting as 0 (`2.2` == `2.2.0`).
pub fn cmp(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n).map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_with_missing_parts_as_zero() {
        let v = |s| parse(s).unwrap();
        assert_eq!(cmp(&v("2.2.36"), &v("2.2.38")), Ordering::Less);
        assert_eq!(cmp(&v("2.10.0"), &v("2.2.38")), Ordering::Greater);
        assert_eq!(cmp(&v("2.2"), &v("2.2.0")), Ordering::Equal);
        assert_eq!(cmp(&v("1.1.0.100"), &v("1.1.0.53")), Ordering::Greater);
        assert_eq!(parse("2.x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(" 1.2 "), Some(vec![1, 2]));
    }
}
