//! Lexical helpers shared by the SIP grammar pieces (RFC 3261 §25.1).

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// A non-empty string of token characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// SP or HTAB.
pub(crate) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A cursor over a `&str`, for the small recursive-descent parsers of header values.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest().is_empty()
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(crate) fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start_matches(is_wsp).len();
    }

    /// Consumes `c` (after optional whitespace when `ws`), returning whether it was there.
    pub(crate) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let r = self.rest();
        let end = r.find(|c: char| !f(c)).unwrap_or(r.len());
        self.pos += end;
        r.get(..end).unwrap_or("")
    }

    /// A quoted-string at the cursor: returns (raw text with quotes, decoded content).
    pub(crate) fn quoted(&mut self) -> Option<(&'a str, String)> {
        let r = self.rest();
        let mut chars = r.char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Some((r.get(..=i)?, out));
                }
                '\\' => {
                    let (_, e) = chars.next()?;
                    if e == '\r' || e == '\n' {
                        return None;
                    }
                    out.push(e);
                }
                '\r' | '\n' => return None,
                c => out.push(c),
            }
        }
        None
    }
}

/// Quotes `s` as a quoted-string, escaping `"` and `\`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Removes the quotes and quoted-pairs of a quoted-string, or returns `s` unchanged when it is
/// not quoted.
pub(crate) fn unquote(s: &str) -> String {
    let mut c = Cursor::new(s);
    match c.quoted() {
        Some((_, v)) if c.is_empty() => v,
        _ => s.to_string(),
    }
}

/// Decodes `%XX` escapes (RFC 3261 §25.1 `escaped`); invalid escapes are kept as they are, and
/// bytes that do not form UTF-8 are replaced with U+FFFD.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| hex_val(*x)),
                b.get(i + 2).and_then(|x| hex_val(*x)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Checks that every `%` of `s` starts a valid `%XX` escape and that every other character
/// satisfies `allowed`.
pub(crate) fn check_escaped(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if b.get(i + 1).and_then(|x| hex_val(*x)).is_none()
                || b.get(i + 2).and_then(|x| hex_val(*x)).is_none()
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !c.is_ascii() || !allowed(c as char) {
            return false;
        }
        i += 1;
    }
    true
}

/// RFC 3261 `unreserved` = alphanum / mark.
pub(crate) fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

/// Parses a decimal number of at most `max_digits` digits (leading zeros allowed).
pub(crate) fn parse_decimal(s: &str, max_digits: usize) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    if t.len() > max_digits {
        return None;
    }
    if t.is_empty() {
        return Some(0);
    }
    t.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings() {
        let mut c = Cursor::new(r#""J Rosenberg \\\"" <sip:x@y>"#);
        let (raw, v) = c.quoted().unwrap();
        assert_eq!(raw, r#""J Rosenberg \\\"""#);
        assert_eq!(v, r#"J Rosenberg \""#);
        assert_eq!(c.rest(), " <sip:x@y>");
        assert!(Cursor::new("\"open").quoted().is_none());
        assert!(Cursor::new("\"trailing\\").quoted().is_none());
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(unquote(&quote(r#"a"b\c"#)), r#"a"b\c"#);
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("I%20have%20spaces"), "I have spaces");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%4"), "%zz%4");
        assert!(check_escaped("a%41b", is_unreserved));
        assert!(!check_escaped("a%4", is_unreserved));
        assert!(!check_escaped("a b", is_unreserved));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("0068", 3), Some(68));
        assert_eq!(parse_decimal("000", 3), Some(0));
        assert_eq!(parse_decimal("36893488147419103232", 10), None);
        assert_eq!(parse_decimal("-1", 10), None);
        assert_eq!(parse_decimal("", 10), None);
    }
}
