//! What one mail transaction collects: the envelope ([RFC 5321 §3.3]) handed to the spool.
//!
//! [RFC 5321 §3.3]: https://www.rfc-editor.org/rfc/rfc5321#section-3.3

use super::address::Mailbox;

/// Identifies one transaction within a connection, so a late spool result cannot be applied to a
/// later message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnId(pub u64);

/// The `BODY=` parameter of `MAIL` ([RFC 6152]).
///
/// [RFC 6152]: https://www.rfc-editor.org/rfc/rfc6152
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No `BODY=`, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The session's greeting verb, which decides the `with` clause of the trace header
/// ([RFC 3848]).
///
/// [RFC 3848]: https://www.rfc-editor.org/rfc/rfc3848
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// `HELO`: plain SMTP.
    Helo,
    /// `EHLO`: ESMTP.
    Ehlo,
}

/// The envelope of an accepted message: the reverse-path, the accepted forward-paths and the
/// parameters that matter downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The argument of `HELO`/`EHLO`, as the client sent it.
    pub helo: String,
    /// Which greeting the client used.
    pub greeting: Greeting,
    /// `MAIL FROM`; `None` is the null reverse-path `<>` (bounces).
    pub mail_from: Option<Mailbox>,
    /// Accepted `RCPT TO` paths, in order, at most `max_recipients`.
    pub rcpt_to: Vec<Mailbox>,
    /// `BODY=` of `MAIL`.
    pub body: BodyType,
    /// `SMTPUTF8` was given on `MAIL` ([RFC 6531 §3.4]).
    ///
    /// [RFC 6531 §3.4]: https://www.rfc-editor.org/rfc/rfc6531#section-3.4
    pub smtputf8: bool,
    /// The authenticated login that submitted the message, if any (RFC 4954).
    pub login: Option<String>,
}
