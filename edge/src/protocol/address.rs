//! Mailbox and path syntax of [RFC 5321 §4.1.2], with the UTF-8 extensions of [RFC 6531 §3.3].
//!
//! Parsing is strict where strictness protects the relay decision (quoted local parts and source
//! routes are kept visible to the policy instead of being folded away) and checks the length
//! limits of [RFC 5321 §4.5.3.1].
//!
//! [RFC 5321 §4.1.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.2
//! [RFC 6531 §3.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.3
//! [RFC 5321 §4.5.3.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets ([RFC 5321 §4.5.3.1.1]).
///
/// [RFC 5321 §4.5.3.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.1
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets ([RFC 5321 §4.5.3.1.2]).
///
/// [RFC 5321 §4.5.3.1.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.2
pub const MAX_DOMAIN: usize = 255;
/// Longest path including the angle brackets, in octets ([RFC 5321 §4.5.3.1.3]).
///
/// [RFC 5321 §4.5.3.1.3]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.3
pub const MAX_PATH: usize = 256;

/// The part after `@`: a domain name or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A domain name, lower-cased (ASCII letters only; U-labels are kept as sent).
    Name(String),
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Ipv4(ip) => write!(f, "[{ip}]"),
            Domain::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

/// A mailbox: `Local-part "@" ( Domain / address-literal )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part as it appeared on the wire: a dot-string, or a quoted string with its quotes.
    pub local: String,
    /// The domain.
    pub domain: Domain,
    /// Whether the local part was a quoted string.
    pub quoted: bool,
    /// Whether a source route (`@a,@b:`) preceded the mailbox; [RFC 5321 §4.1.2] says to ignore it,
    /// but a relay policy must see it.
    ///
    /// [RFC 5321 §4.1.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.2
    pub source_route: bool,
}

impl Mailbox {
    /// Whether the address holds non-ASCII text, which needs SMTPUTF8 ([RFC 6531 §3.4]).
    ///
    /// [RFC 6531 §3.4]: https://www.rfc-editor.org/rfc/rfc6531#section-3.4
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || matches!(&self.domain, Domain::Name(d) if !d.is_ascii())
    }

    /// The local part with quoting removed (`"a b"` gives `a b`).
    pub fn local_unquoted(&self) -> String {
        if !self.quoted {
            return self.local.clone();
        }
        let inner = self
            .local
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(&self.local);
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why a path failed to parse; each maps to a reply in `envelope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not `<...>`, or a character that the grammar does not allow.
    Syntax,
    /// Local part over [`MAX_LOCAL_PART`], domain over [`MAX_DOMAIN`] or path over [`MAX_PATH`].
    TooLong,
}

/// Parses a `Path` (`"<" [ A-d-l ":" ] Mailbox ">"`) and returns the mailbox and the rest of the
/// argument (the ESMTP parameters). `allow_null` admits `<>` (the reverse-path of `MAIL`), which
/// gives `None`. Non-ASCII is accepted here; the caller checks it against SMTPUTF8.
pub fn parse_path(arg: &str, allow_null: bool) -> Result<(Option<Mailbox>, &str), AddressError> {
    let rest = arg.strip_prefix('<').ok_or(AddressError::Syntax)?;
    // A quoted local part may hold '>', so find the closing bracket by scanning past quotes.
    let close = find_path_end(rest).ok_or(AddressError::Syntax)?;
    let inner = &rest[..close];
    let after = &rest[close + 1..];
    if close + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if !after.is_empty() && !after.starts_with(' ') {
        return Err(AddressError::Syntax);
    }
    if inner.is_empty() {
        return if allow_null {
            Ok((None, after.trim_start_matches(' ')))
        } else {
            Err(AddressError::Syntax)
        };
    }
    let (route, mailbox) = split_source_route(inner)?;
    let mut mbox = parse_mailbox(mailbox)?;
    mbox.source_route = route;
    Ok((Some(mbox), after.trim_start_matches(' ')))
}

/// Returns the index of the `>` that closes the path, skipping over a quoted local part.
fn find_path_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    while let Some(&b) = bytes.get(i) {
        match (in_quotes, b) {
            (true, b'\\') => i += 1,
            (_, b'"') => in_quotes = !in_quotes,
            (false, b'>') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits `@a,@b:mailbox` into (true, mailbox); checks the route's domains for syntax.
fn split_source_route(inner: &str) -> Result<(bool, &str), AddressError> {
    if !inner.starts_with('@') {
        return Ok((false, inner));
    }
    let colon = inner.find(':').ok_or(AddressError::Syntax)?;
    for hop in inner[..colon].split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
        parse_domain(domain)?;
    }
    Ok((true, &inner[colon + 1..]))
}

/// Parses `Local-part "@" ( Domain / address-literal )`.
pub fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    let at = if s.starts_with('"') {
        let end = quoted_end(s).ok_or(AddressError::Syntax)?;
        if s.as_bytes().get(end) != Some(&b'@') {
            return Err(AddressError::Syntax);
        }
        end
    } else {
        s.rfind('@').ok_or(AddressError::Syntax)?
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    let quoted = local.starts_with('"');
    if quoted {
        check_quoted(local)?;
    } else {
        check_dot_string(local)?;
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong);
    }
    Ok(Mailbox {
        local: local.to_owned(),
        domain: parse_domain(domain)?,
        quoted,
        source_route: false,
    })
}

/// Index just past the closing quote of a quoted string starting at 0.
fn quoted_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// `atext` of RFC 5322 §3.2.3, plus UTF-8 (RFC 6531 §3.3).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_visible_utf8(c)
}

/// Whether `c` is a non-ASCII character that may stand in a name: UTF-8 is allowed (RFC 6531
/// §3.3), but not the C1 controls (U+0080–U+009F, among them a terminal's CSI), nor spaces,
/// nor the invisible format characters that reorder or hide text (bidirectional overrides,
/// zero-width characters, the byte order mark, the soft hyphen). None belongs in an address
/// or a host name, and each can make a log line or a header show something it does not hold.
fn is_visible_utf8(c: char) -> bool {
    !c.is_ascii()
        && !c.is_control()
        && !c.is_whitespace()
        && !matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Whether `arg` may be the argument of `EHLO` or `HELO`: a domain or an address literal
/// ([RFC 5321 §4.1.1.1]), read as liberally as real clients need.
///
/// Accepted: host names of letters, digits, `-`, `.` and `_` (Windows and embedded devices use
/// underscores; Postfix accepts them), bare names without a dot, a bare IPv4 address, UTF-8
/// names, and any `[...]` literal of printable ASCII. Refused: anything with a control octet
/// (NUL, ESC, BEL, DEL, C1), a space or an invisible format character, or other punctuation a
/// host name never holds; the argument is echoed in the reply and written to the
/// `Received:` header and the session log, so what passes here is safe in all three.
///
/// [RFC 5321 §4.1.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1
pub fn is_helo_argument(arg: &str) -> bool {
    if arg.is_empty() || arg.len() > MAX_DOMAIN {
        return false;
    }
    if let Some(literal) = arg.strip_prefix('[') {
        // General-address-literal: dcontent is %d33-90 / %d94-126 (§4.1.3).
        return literal.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty() && inner.bytes().all(|b| matches!(b, 33..=90 | 94..=126))
        });
    }
    arg.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || is_visible_utf8(c))
}

fn check_dot_string(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::Syntax);
    }
    for atom in local.split('.') {
        if atom.is_empty() || !atom.chars().all(is_atext) {
            return Err(AddressError::Syntax);
        }
    }
    Ok(())
}

/// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE` (RFC 5321 §4.1.2; UTF-8 per RFC 6531 §3.3).
fn check_quoted(local: &str) -> Result<(), AddressError> {
    let inner = local
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or(AddressError::Syntax)?;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            // quoted-pairSMTP = %d92 %d32-126
            '\\' => match chars.next() {
                Some(' '..='~') => {}
                _ => return Err(AddressError::Syntax),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126
            ' '..='!' | '#'..='[' | ']'..='~' => {}
            c if is_visible_utf8(c) => {}
            _ => return Err(AddressError::Syntax),
        }
    }
    Ok(())
}

/// Parses a domain name or an address literal (RFC 5321 §4.1.3).
pub fn parse_domain(s: &str) -> Result<Domain, AddressError> {
    if s.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(lit) = s.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(AddressError::Syntax)?;
        if let Some(v6) = lit
            .strip_prefix("IPv6:")
            .or_else(|| lit.strip_prefix("ipv6:"))
        {
            return v6
                .parse()
                .map(Domain::Ipv6)
                .map_err(|_| AddressError::Syntax);
        }
        return lit
            .parse()
            .map(Domain::Ipv4)
            .map_err(|_| AddressError::Syntax);
    }
    if s.is_empty() {
        return Err(AddressError::Syntax);
    }
    for label in s.split('.') {
        // sub-domain = Let-dig [Ldh-str]; U-labels may hold UTF-8 (RFC 6531 §3.3).
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_visible_utf8(c));
        if !ok {
            return Err(AddressError::Syntax);
        }
    }
    Ok(Domain::Name(s.to_ascii_lowercase()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn mbox(s: &str) -> Mailbox {
        match parse_path(s, false) {
            Ok((Some(m), "")) => m,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn dot_string_and_domain_case() {
        let m = mbox("<John.Doe@Example.TEST>");
        assert_eq!(m.local, "John.Doe");
        assert_eq!(m.domain, Domain::Name("example.test".into()));
        assert_eq!(m.to_string(), "John.Doe@example.test");
    }

    #[test]
    fn quoted_local_part_may_hold_at_and_bracket() {
        let m = mbox(r#"<"a@b>c\"d"@example.test>"#);
        assert!(m.quoted);
        assert_eq!(m.local_unquoted(), r#"a@b>c"d"#);
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            mbox("<a@[192.0.2.1]>").domain,
            Domain::Ipv4([192, 0, 2, 1].into())
        );
        assert_eq!(
            mbox("<a@[IPv6:2001:db8::1]>").domain,
            Domain::Ipv6("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_path("<a@[300.0.0.1]>", false),
            Err(AddressError::Syntax)
        );
    }

    #[test]
    fn source_route_is_flagged() {
        let m = mbox("<@relay.test,@b.test:user@example.test>");
        assert!(m.source_route);
        assert_eq!(m.to_string(), "user@example.test");
    }

    #[test]
    fn null_path_only_where_allowed() {
        assert_eq!(parse_path("<>", true), Ok((None, "")));
        assert_eq!(parse_path("<>", false), Err(AddressError::Syntax));
    }

    #[test]
    fn parameters_follow_the_path() {
        let (m, rest) = parse_path("<a@b.test> SIZE=10 BODY=8BITMIME", true).unwrap();
        assert_eq!(m.unwrap().local, "a");
        assert_eq!(rest, "SIZE=10 BODY=8BITMIME");
    }

    #[test]
    fn utf8_addresses_parse_and_are_flagged() {
        let m = mbox("<用户@例子.测试>");
        assert!(m.is_utf8());
        assert!(!mbox("<a@b.test>").is_utf8());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a@b.test",
            "<a@b.test",
            "<a..b@b.test>",
            "<.a@b.test>",
            "<a@-b.test>",
            "<a@b..test>",
            "<a b@b.test>",
            "<@b.test>",
            "<a@>",
            "<a@b.test>x",
            "<\"unterminated@b.test>",
        ] {
            assert!(parse_path(bad, true).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(MAX_LOCAL_PART + 1);
        assert_eq!(
            parse_path(&format!("<{local}@b.test>"), false),
            Err(AddressError::TooLong)
        );
        let ok = "a".repeat(MAX_LOCAL_PART);
        assert!(parse_path(&format!("<{ok}@b.test>"), false).is_ok());
    }
}
