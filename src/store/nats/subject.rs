//! Subjects: `<prefix>.<MSH-9.1>.<MSH-9.2>`, with tokens that cannot break a subject.

/// `<prefix>.<code>.<event>`, each of `code` and `event` made a safe token by [`token`].
pub(crate) fn subject(prefix: &str, code: &[u8], event: &[u8]) -> String {
    let mut subject = String::with_capacity(prefix.len() + code.len() + event.len() + 2);
    subject.push_str(prefix);
    subject.push('.');
    push_token(&mut subject, code);
    subject.push('.');
    push_token(&mut subject, event);
    subject
}

/// Writes `raw` as one subject token: ASCII letters, digits, `-` and `_` are kept, every other
/// byte (`.`, `*`, `>`, whitespace, escapes, non-ASCII) becomes `_`, and an empty field is `_`.
/// So a message type can never add a token, a wildcard, or an empty token to the subject.
fn push_token(out: &mut String, raw: &[u8]) {
    if raw.is_empty() {
        out.push('_');
        return;
    }
    out.extend(raw.iter().map(|&b| {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            b as char
        } else {
            '_'
        }
    }));
}

/// Checks a subject prefix: dot-separated tokens, none empty, without wildcards, whitespace or
/// control characters.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("the subject prefix is empty");
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err("the subject prefix has an empty token (two dots, or a dot at an end)");
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err("the subject prefix cannot hold wildcards (* or >)");
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the subject prefix cannot hold whitespace");
        }
    }
    Ok(())
}

/// Whether the stream subject `pattern` captures every subject messages go to: each
/// `<prefix>.X.Y`, whatever the tokens `X` and `Y`.
pub(crate) fn covers(pattern: &str, prefix: &str) -> bool {
    // `Some(token)`: a token of the prefix; `None`: a token that can be anything.
    let wanted: Vec<Option<&str>> = prefix.split('.').map(Some).chain([None, None]).collect();
    let mut count = 0;
    for (i, token) in pattern.split('.').enumerate() {
        count = i + 1;
        let Some(ours) = wanted.get(i) else {
            return false; // the pattern is longer than our subjects
        };
        match (token, ours) {
            (">", _) => return true, // one or more tokens: at least ours[i] is left
            ("*", _) => {}
            (literal, Some(ours)) if literal == *ours => {}
            _ => return false,
        }
    }
    count == wanted.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_prefix_code_event() {
        assert_eq!(subject("hl7", b"ADT", b"A01"), "hl7.ADT.A01");
        assert_eq!(subject("site1.hl7", b"ORU", b"R01"), "site1.hl7.ORU.R01");
    }

    #[test]
    fn hostile_or_empty_fields_stay_one_token_each() {
        assert_eq!(subject("hl7", b"A.B", b"*"), "hl7.A_B._");
        assert_eq!(subject("hl7", b">", b"A 01\t"), "hl7._.A_01_");
        assert_eq!(subject("hl7", b"", b""), "hl7._._");
        assert_eq!(
            subject("hl7", "ÄDT".as_bytes(), b"A\\T\\1"),
            "hl7.__DT.A_T_1"
        );
        for s in [subject("p", b"a.b.c", b"..."), subject("p", b"*", b">")] {
            assert_eq!(s.split('.').count(), 3, "{s}");
            assert!(s.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("hl7").is_ok());
        assert!(check_prefix("site-1.hl7_in").is_ok());
        for bad in ["", "hl7.", ".hl7", "a..b", "hl7.*", "hl7.>", "h l7", "a>b"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_patterns() {
        assert!(covers(">", "hl7"));
        assert!(covers("hl7.>", "hl7"));
        assert!(covers("*.>", "hl7"));
        assert!(covers("site.*.>", "site.hl7"));
        assert!(covers("hl7.*.*", "hl7"));
        assert!(!covers("hl7.*", "hl7"));
        assert!(!covers("hl7.*.*.*", "hl7"));
        assert!(!covers("hl7.*.*.>", "hl7"));
        assert!(!covers("hl7.ADT.>", "hl7"));
        assert!(!covers("other.>", "hl7"));
        assert!(!covers("hl7", "hl7"));
    }
}
