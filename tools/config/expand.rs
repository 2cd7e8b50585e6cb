//! `$VAR` and `${VAR}` in a config file, expanded the way Litestream does
//! it (Go's `os.ExpandEnv` over the whole text before parsing): unset
//! variables become empty, `$` before anything that is not a name stays
//! as it is, `${}` and an unclosed `${` are dropped.

/// Expand with `lookup` (the environment, in real use).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let s = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0; // start of the text not yet copied
    let mut j = 0;
    while j < s.len() {
        if s[j] == b'$' && j + 1 < s.len() {
            out.push_str(&text[i..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                None if width > 0 => {} // bad syntax: eat it
                None => out.push('$'),
                Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
            }
            j += width;
            i = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[i.min(text.len())..]);
    out
}

/// The variable name after a `$` and how many bytes it takes.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..end + 1]), end + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    ((n > 0).then(|| &s[..n]), n)
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BUCKET" => Some("my-bucket".into()),
            "A_1" => Some("x".into()),
            _ => None,
        }
    }

    #[test]
    fn like_go_expand_env() {
        let cases = [
            ("bucket: $BUCKET", "bucket: my-bucket"),
            ("bucket: ${BUCKET}/db", "bucket: my-bucket/db"),
            ("$A_1-$UNSET.", "x-."),
            ("${UNSET}", ""),
            ("price: 5$", "price: 5$"),
            ("a $ b", "a $ b"),
            ("${}x", "x"),
            ("${unclosed", "unclosed"),
            ("$$", ""),
            ("$1abc", "abc"),
            ("no dollars", "no dollars"),
            ("ü $BUCKET ü", "ü my-bucket ü"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input:?}");
        }
    }
}
