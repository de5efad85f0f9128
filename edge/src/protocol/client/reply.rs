//! Server replies as the client reads them: `code [SP status] text` lines, multi-line with `-`
//! ([RFC 5321 §4.2]), each line optionally carrying an enhanced status code ([RFC 2034 §4]).
//!
//! The reader is strict where a mistake would desynchronise the dialogue (the code, the
//! separator, one code per reply) and lenient where servers in the wild differ without harm
//! (a bare LF ends a line; text need not be UTF-8).
//!
//! [RFC 5321 §4.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2
//! [RFC 2034 §4]: https://www.rfc-editor.org/rfc/rfc2034#section-4

use std::fmt;

/// Longest reply line accepted, CRLF included. [RFC 5321 §4.5.3.1.5] sets 512 octets, but
/// servers exceed it in reply text (long 5xx explanations with URLs); like Postfix's
/// `line_length_limit`, we take up to 2048 and call anything longer a protocol error.
///
/// [RFC 5321 §4.5.3.1.5]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.5
pub const MAX_REPLY_LINE: usize = 2048;

/// Most lines in one multi-line reply, so a hostile server cannot grow a reply forever (an EHLO
/// reply has about a dozen).
pub const MAX_REPLY_LINES: usize = 100;

/// An enhanced status code `class.subject.detail` read from a reply ([RFC 3463 §2]).
///
/// [RFC 3463 §2]: https://www.rfc-editor.org/rfc/rfc3463#section-2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5; always the first digit of the reply code.
    pub class: u8,
    /// The subject, 0..=999.
    pub subject: u16,
    /// The detail, 0..=999.
    pub detail: u16,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The reply code, 200..=599 ([RFC 5321 §4.2.1]).
    ///
    /// [RFC 5321 §4.2.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1
    pub code: u16,
    /// The enhanced status code of the first line, if it carried one whose class matches the code.
    pub status: Option<EnhancedStatus>,
    /// The text of each line, without code, separator or status; non-UTF-8 octets replaced.
    pub lines: Vec<String>,
}

impl ServerReply {
    /// 2xx: the command succeeded.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: a temporary failure; the same command may succeed later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: a permanent failure.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for ServerReply {
    /// The reply on one line, as a log or a DSN's `Diagnostic-Code` shows it:
    /// `550 5.1.1 first line second line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// How a server broke the protocol. Every one ends the session; the mail is deferred.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A reply line over [`MAX_REPLY_LINE`].
    #[error("reply line longer than {limit} octets")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A multi-line reply over [`MAX_REPLY_LINES`].
    #[error("reply of more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// A line that does not start with a reply code and a separator.
    #[error("malformed reply line")]
    Malformed,
    /// A continuation line with a code other than the first line's.
    #[error("reply code changed within a multi-line reply")]
    CodeMismatch,
    /// A reply that is not among those the command allows, or one no command asked for.
    #[error("unexpected reply {code}")]
    Unexpected {
        /// Its code.
        code: u16,
    },
}

/// Splits the server's byte stream into replies; holds at most one line and one reply.
#[derive(Debug, Default)]
pub(crate) struct ReplyReader {
    /// A line split across inputs; never longer than [`MAX_REPLY_LINE`].
    line: Vec<u8>,
    /// The lines of a multi-line reply read so far.
    partial: Option<ServerReply>,
}

impl ReplyReader {
    /// Reads from `input` up to the end of the first complete reply. Returns the octets consumed
    /// and the reply (or the protocol error) if one completed; the caller offers the rest again.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
    ) -> (usize, Option<Result<ServerReply, ProtocolError>>) {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) {
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                if self.line.len() + rest.len() > MAX_REPLY_LINE {
                    return (input.len(), Some(Err(self.fail_too_long())));
                }
                self.line.extend_from_slice(rest);
                return (input.len(), None);
            };
            used += lf + 1;
            if self.line.len() + lf + 1 > MAX_REPLY_LINE {
                return (used, Some(Err(self.fail_too_long())));
            }
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(rest.get(..lf).unwrap_or_default());
            let result = self.take_line(&line);
            line.clear();
            self.line = line;
            if let Some(done) = result {
                return (used, Some(done));
            }
        }
        (used, None)
    }

    fn fail_too_long(&mut self) -> ProtocolError {
        self.line.clear();
        self.partial = None;
        ProtocolError::LineTooLong {
            limit: MAX_REPLY_LINE,
        }
    }

    /// Adds one line (without its LF); returns the reply once its last line is in.
    fn take_line(&mut self, line: &[u8]) -> Option<Result<ServerReply, ProtocolError>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.partial = None;
                return Some(Err(err));
            }
        };
        let mut reply = match self.partial.take() {
            Some(reply) if reply.code != parsed.code => {
                return Some(Err(ProtocolError::CodeMismatch))
            }
            Some(reply) if reply.lines.len() >= MAX_REPLY_LINES => {
                return Some(Err(ProtocolError::TooManyLines {
                    limit: MAX_REPLY_LINES,
                }))
            }
            Some(reply) => reply,
            None => ServerReply {
                code: parsed.code,
                status: parsed.status,
                lines: Vec::new(),
            },
        };
        reply.lines.push(parsed.text);
        if parsed.last {
            Some(Ok(reply))
        } else {
            self.partial = Some(reply);
            None
        }
    }
}

struct Line {
    code: u16,
    last: bool,
    status: Option<EnhancedStatus>,
    text: String,
}

/// `Reply-code [ SP / "-" text ]` ([RFC 5321 §4.2]); the code's first digit is 2 to 5.
fn parse_line(line: &[u8]) -> Result<Line, ProtocolError> {
    let (digits, rest) = line.split_at_checked(3).ok_or(ProtocolError::Malformed)?;
    let mut code = 0u16;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError::Malformed);
        }
        code = code * 10 + u16::from(d - b'0');
    }
    if !(200..=599).contains(&code) {
        return Err(ProtocolError::Malformed);
    }
    let (last, text) = match rest.split_first() {
        None => (true, &[][..]),
        Some((b' ', text)) => (true, text),
        Some((b'-', text)) => (false, text),
        Some(_) => return Err(ProtocolError::Malformed),
    };
    // The class of the enhanced code must agree with the reply code (RFC 2034 §4); text that
    // merely looks like one is kept as text.
    let class = (code / 100) as u8;
    let (status, text) = match split_status(text) {
        Some((status, text)) if status.class == class => (Some(status), text),
        _ => (None, text),
    };
    Ok(Line {
        code,
        last,
        status,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

/// `class "." subject "." detail` followed by SP or the end ([RFC 3463 §2]: subject and detail
/// are one to three digits).
fn split_status(text: &[u8]) -> Option<(EnhancedStatus, &[u8])> {
    let end = memchr::memchr(b' ', text).unwrap_or(text.len());
    let (token, rest) = text.split_at_checked(end)?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let mut parts = token.split(|&b| b == b'.');
    let class = number(parts.next()?, 1)?;
    let subject = number(parts.next()?, 3)?;
    let detail = number(parts.next()?, 3)?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    let status = EnhancedStatus {
        class: class as u8,
        subject,
        detail,
    };
    Some((status, rest))
}

fn number(digits: &[u8], max_len: usize) -> Option<u16> {
    if digits.is_empty() || digits.len() > max_len || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')),
    )
}
