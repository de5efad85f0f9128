//! Replies: a reply code ([RFC 5321 §4.2]), an enhanced status code ([RFC 3463]) and text.
//!
//! Replies are values built only by the named constructors in `kinds.rs`, each of which fixes
//! the code and the enhanced status of its kind: a reply with a code outside RFC 5321's set, or
//! with a status whose class contradicts its code, cannot be written down. Only
//! [`Reply::write`] renders the wire form, so tests compare values and no reply is ever
//! assembled from a format string.
//!
//! [RFC 5321 §4.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2
//! [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463

use std::borrow::Cow;
use std::fmt;

mod kinds;

pub use kinds::Closing;

/// A reply code of [RFC 5321 §4.2.3]; only the codes this server sends exist.
///
/// [RFC 5321 §4.2.3]: https://www.rfc-editor.org/rfc/rfc5321#section-4.2.3
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Code {
    /// 214: help message.
    Help = 214,
    /// 220: service ready (the greeting; ready to start TLS).
    ServiceReady = 220,
    /// 221: service closing transmission channel.
    Closing = 221,
    /// 235: authentication succeeded ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    AuthSucceeded = 235,
    /// 250: requested action completed.
    Ok = 250,
    /// 252: cannot verify the user, but will accept the message.
    CannotVerify = 252,
    /// 334: an AUTH challenge ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    AuthChallenge = 334,
    /// 354: start mail input.
    StartInput = 354,
    /// 421: service not available, closing transmission channel.
    ServiceUnavailable = 421,
    /// 451: aborted, local error in processing.
    LocalError = 451,
    /// 452: insufficient system storage (also: too many recipients, §4.5.3.1.10).
    InsufficientStorage = 452,
    /// 454: temporary authentication failure ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    AuthTemporaryFailure = 454,
    /// 500: syntax error, command unrecognized.
    Unrecognized = 500,
    /// 501: syntax error in parameters or arguments.
    BadArguments = 501,
    /// 502: command not implemented.
    NotImplemented = 502,
    /// 503: bad sequence of commands.
    BadSequence = 503,
    /// 504: command parameter not implemented.
    ParameterNotImplemented = 504,
    /// 530: authentication required ([RFC 4954 §6]; also STARTTLS first, [RFC 3207 §4]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    AuthRequired = 530,
    /// 535: authentication credentials invalid ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    AuthInvalid = 535,
    /// 538: encryption required for the mechanism ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    EncryptionRequired = 538,
    /// 550: mailbox unavailable, or the action is refused by policy.
    MailboxUnavailable = 550,
    /// 552: exceeded storage allocation.
    ExceededStorage = 552,
    /// 553: mailbox name not allowed.
    MailboxNameNotAllowed = 553,
    /// 554: transaction failed.
    TransactionFailed = 554,
    /// 555: MAIL or RCPT parameters not recognized or not implemented.
    ParametersNotRecognized = 555,
}

impl Code {
    /// The numeric value.
    pub const fn get(self) -> u16 {
        self as u16
    }

    /// Whether the reply is a success or intermediate one (2xx, 3xx).
    pub const fn is_positive(self) -> bool {
        self.get() < 400
    }
}

/// An enhanced status code `class.subject.detail` ([RFC 3463 §2]); its class always agrees with
/// the reply code it travels with, since only the constructors of [`Reply`] make one.
///
/// [RFC 3463 §2]: https://www.rfc-editor.org/rfc/rfc3463#section-2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u8, u16, u16);

impl Status {
    /// The class: 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub const fn class(self) -> u8 {
        self.0
    }

    /// The subject and the detail.
    pub const fn subject_detail(self) -> (u16, u16) {
        (self.1, self.2)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply, possibly multiline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: Code,
    /// `None` only for the greeting, the HELO/EHLO replies and the intermediate 334 and 354,
    /// where [RFC 2034 §3] leaves it out.
    ///
    /// [RFC 2034 §3]: https://www.rfc-editor.org/rfc/rfc2034#section-3
    status: Option<Status>,
    /// Text lines; the first is never empty.
    lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// The reply code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The enhanced status code, if the reply carries one.
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// The text lines.
    pub fn lines(&self) -> &[Cow<'static, str>] {
        &self.lines
    }

    /// Renders `code SP status SP text CRLF`, with `-` after the code on all but the last line.
    pub fn write(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(&itoa3(self.code.get()));
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
mod tests;
