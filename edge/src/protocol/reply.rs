//! Replies: a reply code ([RFC 5321 §4.2]), an enhanced status code ([RFC 3463]) and text.
//!
//! Replies are values; only [`Reply::write`] renders the wire form, so tests compare values and
//! no reply is ever assembled from a format string.
//!
//! [RFC 5321 §4.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2
//! [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463

use std::borrow::Cow;
use std::fmt;

/// A reply code, `2xx` to `5xx` ([RFC 5321 §4.2.1]).
///
/// [RFC 5321 §4.2.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(u16);

impl Code {
    /// `code` if it is a valid reply code (200..=599), else `None`.
    pub const fn new(code: u16) -> Option<Code> {
        if code >= 200 && code <= 599 {
            Some(Code(code))
        } else {
            None
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether the reply is a success or intermediate one (2xx, 3xx).
    pub const fn is_positive(self) -> bool {
        self.0 < 400
    }
}

/// An enhanced status code `class.subject.detail` ([RFC 3463 §2]).
///
/// [RFC 3463 §2]: https://www.rfc-editor.org/rfc/rfc3463#section-2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply, possibly multiline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code.
    pub code: Code,
    /// The enhanced status code; `None` only for the greeting and the HELO/EHLO replies, where
    /// [RFC 2034 §3] leaves it out.
    ///
    /// [RFC 2034 §3]: https://www.rfc-editor.org/rfc/rfc2034#section-3
    pub status: Option<Status>,
    /// Text lines; the first is never empty.
    pub lines: Vec<Cow<'static, str>>,
}

/// Builds a reply from constants; the code is checked at compile time.
const fn code(c: u16) -> Code {
    match Code::new(c) {
        Some(c) => c,
        None => panic!("reply code out of range"),
    }
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(c: u16, status: Status, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code: Code::new(c).unwrap_or(code(451)),
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, HELO/EHLO).
    pub fn bare(c: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code: Code::new(c).unwrap_or(code(451)),
            status: None,
            lines,
        }
    }

    /// `250 2.0.0 Ok`.
    pub fn ok() -> Reply {
        Reply::new(250, Status(2, 0, 0), "Ok")
    }

    /// `501 5.5.4` with the command's usage ([RFC 3463 §3.6]: invalid arguments).
    ///
    /// [RFC 3463 §3.6]: https://www.rfc-editor.org/rfc/rfc3463#section-3.6
    pub fn syntax(usage: &'static str) -> Reply {
        Reply::new(501, Status(5, 5, 4), Cow::Owned(format!("Syntax: {usage}")))
    }

    /// `503 5.5.1`: the command is valid but out of sequence.
    pub fn bad_sequence(text: &'static str) -> Reply {
        Reply::new(503, Status(5, 5, 1), text)
    }

    /// Renders `code SP status SP text CRLF`, with `-` after the code on all but the last line.
    pub fn write(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(&itoa3(self.code.0));
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(status) = self.status {
                // Each line carries the status (RFC 2034 §3).
                push_num(out, u16::from(status.0));
                out.push(b'.');
                push_num(out, status.1);
                out.push(b'.');
                push_num(out, status.2);
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

fn itoa3(n: u16) -> [u8; 3] {
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

fn push_num(out: &mut Vec<u8>, n: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_line_with_status() {
        assert_eq!(wire(&Reply::ok()), "250 2.0.0 Ok\r\n");
        assert_eq!(
            wire(&Reply::new(550, Status(5, 7, 1), "Relay denied")),
            "550 5.7.1 Relay denied\r\n"
        );
        assert_eq!(
            wire(&Reply::new(553, Status(5, 6, 7), "x")),
            "553 5.6.7 x\r\n"
        );
    }

    #[test]
    fn multiline_marks_continuations() {
        let r = Reply::bare(250, vec!["host".into(), "PIPELINING".into(), "HELP".into()]);
        assert_eq!(wire(&r), "250-host\r\n250-PIPELINING\r\n250 HELP\r\n");
    }

    #[test]
    fn code_range_is_enforced() {
        assert!(Code::new(199).is_none());
        assert!(Code::new(600).is_none());
        assert_eq!(Code::new(421).map(Code::get), Some(421));
    }

    #[test]
    fn multi_digit_status_parts() {
        assert_eq!(
            wire(&Reply::new(538, Status(5, 7, 11), "Encryption required")),
            "538 5.7.11 Encryption required\r\n"
        );
    }
}
