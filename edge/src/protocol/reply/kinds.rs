//! The replies this server sends, one constructor per kind. Each fixes the reply code and the
//! enhanced status ([RFC 3463]) of its kind; the status class is taken from the code, so the
//! two cannot disagree.
//!
//! [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463

use std::borrow::Cow;

use super::{Code, Reply, Status};

/// Why the server closes the channel with a 421 ([RFC 5321 §3.8]); each reason has its
/// enhanced status and its text.
///
/// [RFC 5321 §3.8]: https://www.rfc-editor.org/rfc/rfc5321#section-3.8
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client was silent past its timeout (4.4.2, "bad connection").
    Timeout,
    /// The server is stopping (4.3.2, "system not accepting network messages").
    Shutdown,
    /// The client sent too many bad commands (4.7.0, "other security or policy status").
    TooManyErrors,
    /// The client's address is banned (4.7.0).
    Blocked,
    /// The client's address has too many connections open (4.7.0).
    TooManyConnections,
    /// The server holds as many connections as it can serve (4.3.2, "system not accepting
    /// network messages").
    ServerFull,
}

impl Closing {
    fn status_and_text(self) -> ((u16, u16), &'static str) {
        match self {
            Closing::Timeout => ((4, 2), "Timeout waiting for client input"),
            Closing::Shutdown => ((3, 2), "Service shutting down"),
            Closing::TooManyErrors => ((7, 0), "Too many errors; closing"),
            Closing::Blocked => (
                (7, 0),
                "Your address is temporarily blocked; try again later",
            ),
            Closing::TooManyConnections => (
                (7, 0),
                "Too many connections from your address; try again later",
            ),
            Closing::ServerFull => ((3, 2), "Too many connections; try again later"),
        }
    }
}

impl Reply {
    /// A one-line reply whose status class is the code's first digit.
    fn enhanced(
        code: Code,
        (subject, detail): (u16, u16),
        text: impl Into<Cow<'static, str>>,
    ) -> Reply {
        Reply {
            code,
            status: Some(Status((code.get() / 100) as u8, subject, detail)),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status ([RFC 2034 §3]: the greeting and HELO/EHLO; the
    /// intermediate replies carry none either).
    ///
    /// [RFC 2034 §3]: https://www.rfc-editor.org/rfc/rfc2034#section-3
    fn plain(code: Code, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    // 2xx

    /// `214 2.0.0`: the commands we know.
    pub fn help() -> Reply {
        Reply::enhanced(
            Code::Help,
            (0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
        )
    }

    /// `220 <hostname> ESMTP smtp-edge`: the greeting ([RFC 5321 §4.3.1]).
    ///
    /// [RFC 5321 §4.3.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.3.1
    pub fn greeting(hostname: &str) -> Reply {
        Reply::plain(
            Code::ServiceReady,
            vec![format!("{hostname} ESMTP smtp-edge").into()],
        )
    }

    /// `220 2.0.0`: go ahead with the TLS handshake ([RFC 3207 §4]).
    ///
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    pub fn ready_for_tls() -> Reply {
        Reply::enhanced(Code::ServiceReady, (0, 0), "Ready to start TLS")
    }

    /// `221 2.0.0`: the answer to QUIT.
    pub fn bye(hostname: &str) -> Reply {
        Reply::enhanced(Code::Closing, (0, 0), format!("{hostname} Bye"))
    }

    /// `235 2.7.0` ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    pub fn auth_succeeded() -> Reply {
        Reply::enhanced(Code::AuthSucceeded, (7, 0), "Authentication successful")
    }

    /// `250 2.0.0 Ok`.
    pub fn ok() -> Reply {
        Reply::enhanced(Code::Ok, (0, 0), "Ok")
    }

    /// `250` with the EHLO/HELO lines (no enhanced status, [RFC 2034 §3]).
    ///
    /// [RFC 2034 §3]: https://www.rfc-editor.org/rfc/rfc2034#section-3
    pub fn ehlo(lines: Vec<Cow<'static, str>>) -> Reply {
        Reply::plain(Code::Ok, lines)
    }

    /// `250 2.0.0`: the message is on disk under `queue_id`.
    pub fn queued(queue_id: &str) -> Reply {
        Reply::enhanced(Code::Ok, (0, 0), format!("Ok: queued as {queue_id}"))
    }

    /// `250 2.0.0`: a non-final BDAT chunk of `size` octets arrived ([RFC 3030 §2]).
    ///
    /// [RFC 3030 §2]: https://www.rfc-editor.org/rfc/rfc3030#section-2
    pub fn chunk_received(size: u64) -> Reply {
        Reply::enhanced(Code::Ok, (0, 0), format!("{size} octets received"))
    }

    /// `250 2.1.0`: MAIL accepted.
    pub fn sender_ok() -> Reply {
        Reply::enhanced(Code::Ok, (1, 0), "Sender ok")
    }

    /// `250 2.1.5`: RCPT accepted.
    pub fn recipient_ok() -> Reply {
        Reply::enhanced(Code::Ok, (1, 5), "Recipient ok")
    }

    /// `252 2.5.0`: VRFY is not answered, but mail would be taken ([RFC 5321 §3.5.3]).
    ///
    /// [RFC 5321 §3.5.3]: https://www.rfc-editor.org/rfc/rfc5321#section-3.5.3
    pub fn cannot_verify() -> Reply {
        Reply::enhanced(
            Code::CannotVerify,
            (5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }

    // 3xx

    /// `334` with a base64 challenge ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    pub fn auth_challenge(base64: &'static str) -> Reply {
        Reply::plain(Code::AuthChallenge, vec![base64.into()])
    }

    /// `354`: send the DATA body.
    pub fn start_data() -> Reply {
        Reply::plain(
            Code::StartInput,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        )
    }

    // 4xx

    /// `421 <hostname> ...`: the server closes the channel, for `why`.
    pub fn service_closing(hostname: &str, why: Closing) -> Reply {
        let (status, text) = why.status_and_text();
        Reply::enhanced(
            Code::ServiceUnavailable,
            status,
            format!("{hostname} {text}"),
        )
    }

    /// `451 4.3.0`: the message could not be stored ([RFC 3463 §3.4]: other mail system status).
    ///
    /// [RFC 3463 §3.4]: https://www.rfc-editor.org/rfc/rfc3463#section-3.4
    pub fn storage_failed() -> Reply {
        Reply::enhanced(
            Code::LocalError,
            (3, 0),
            "Temporary failure storing the message; try again later",
        )
    }

    /// `452 4.5.3` ([RFC 5321 §4.5.3.1.10]).
    ///
    /// [RFC 5321 §4.5.3.1.10]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.10
    pub fn too_many_recipients() -> Reply {
        Reply::enhanced(Code::InsufficientStorage, (5, 3), "Too many recipients")
    }

    /// `454 4.7.0`: the credentials could not be checked now ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    pub fn auth_unavailable() -> Reply {
        Reply::enhanced(
            Code::AuthTemporaryFailure,
            (7, 0),
            "Temporary authentication failure",
        )
    }

    // 5xx

    /// `500 5.5.2`: the line is not a command we can read; `text` says why.
    pub fn unrecognized(text: &'static str) -> Reply {
        Reply::enhanced(Code::Unrecognized, (5, 2), text)
    }

    /// `501 5.5.4` with the command's usage ([RFC 3463 §3.6]: invalid arguments).
    ///
    /// [RFC 3463 §3.6]: https://www.rfc-editor.org/rfc/rfc3463#section-3.6
    pub fn syntax(usage: &'static str) -> Reply {
        Reply::enhanced(Code::BadArguments, (5, 4), format!("Syntax: {usage}"))
    }

    /// `501 5.5.4`: an argument has a value we do not take; `text` says which.
    pub fn bad_argument(text: &'static str) -> Reply {
        Reply::enhanced(Code::BadArguments, (5, 4), text)
    }

    /// `501 5.5.4`: the EHLO/HELO argument is not a domain or an address literal
    /// ([RFC 5321 §4.1.1.1]). The argument is not echoed.
    ///
    /// [RFC 5321 §4.1.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1
    pub fn bad_helo() -> Reply {
        Reply::enhanced(
            Code::BadArguments,
            (5, 4),
            "Invalid EHLO/HELO argument: a domain or address literal is required",
        )
    }

    /// `501 5.1.7`: the MAIL address does not parse; `text` says how.
    pub fn bad_sender(text: &'static str) -> Reply {
        Reply::enhanced(Code::BadArguments, (1, 7), text)
    }

    /// `501 5.1.3`: the RCPT address does not parse; `text` says how.
    pub fn bad_recipient(text: &'static str) -> Reply {
        Reply::enhanced(Code::BadArguments, (1, 3), text)
    }

    /// `501 5.7.0`: the client cancelled AUTH with `*` ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    pub fn auth_cancelled() -> Reply {
        Reply::enhanced(Code::BadArguments, (7, 0), "Authentication cancelled")
    }

    /// `501 5.5.2`: an AUTH response that is not base64.
    pub fn bad_base64() -> Reply {
        Reply::enhanced(Code::BadArguments, (5, 2), "Invalid base64 data")
    }

    /// `502 5.5.1`: a command we do not offer here; `text` names it.
    pub fn not_available(text: &'static str) -> Reply {
        Reply::enhanced(Code::NotImplemented, (5, 1), text)
    }

    /// `503 5.5.1`: the command is valid but out of sequence.
    pub fn bad_sequence(text: &'static str) -> Reply {
        Reply::enhanced(Code::BadSequence, (5, 1), text)
    }

    /// `504 5.5.4`: an AUTH mechanism we do not offer ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    pub fn unknown_mechanism() -> Reply {
        Reply::enhanced(
            Code::ParameterNotImplemented,
            (5, 4),
            "Unrecognized authentication type",
        )
    }

    /// `530 5.7.0`: STARTTLS must come first ([RFC 3207 §4]).
    ///
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    pub fn tls_required() -> Reply {
        Reply::enhanced(
            Code::AuthRequired,
            (7, 0),
            "Must issue a STARTTLS command first",
        )
    }

    /// `530 5.7.0`: MAIL on submission before AUTH ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    pub fn auth_required() -> Reply {
        Reply::enhanced(Code::AuthRequired, (7, 0), "Authentication required")
    }

    /// `535 5.7.8` ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    pub fn auth_invalid() -> Reply {
        Reply::enhanced(
            Code::AuthInvalid,
            (7, 8),
            "Authentication credentials invalid",
        )
    }

    /// `538 5.7.11`: AUTH outside TLS ([RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    pub fn encryption_required() -> Reply {
        Reply::enhanced(
            Code::EncryptionRequired,
            (7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }

    /// `550 5.7.1`: a recipient we do not take mail for.
    pub fn relay_denied() -> Reply {
        Reply::enhanced(Code::MailboxUnavailable, (7, 1), "Relay access denied")
    }

    /// `550 5.1.1`: a local recipient that does not exist.
    pub fn unknown_user() -> Reply {
        Reply::enhanced(
            Code::MailboxUnavailable,
            (1, 1),
            "Mailbox unavailable: no such user here",
        )
    }

    /// `550 5.1.3`: `""@domain`, which names no mailbox.
    pub fn empty_local_part() -> Reply {
        Reply::enhanced(Code::MailboxUnavailable, (1, 3), "Empty local part")
    }

    /// `550 5.6.0`: the content breaks a rule of RFC 5321; `text` says which. The whole
    /// message is refused.
    pub fn content_refused(text: &'static str) -> Reply {
        Reply::enhanced(Code::MailboxUnavailable, (6, 0), text)
    }

    /// `550 5.6.0`: a line of the content is longer than `limit` octets (CRLF included), the
    /// server's `limits.max_line_length`. The whole message is refused, after its data.
    pub fn line_too_long(limit: usize) -> Reply {
        Reply::enhanced(
            Code::MailboxUnavailable,
            (6, 0),
            format!("Message refused: a line is longer than {limit} octets"),
        )
    }

    /// `552 5.3.4` ([RFC 1870 §6], [RFC 3463 §3.4]).
    ///
    /// [RFC 1870 §6]: https://www.rfc-editor.org/rfc/rfc1870#section-6
    /// [RFC 3463 §3.4]: https://www.rfc-editor.org/rfc/rfc3463#section-3.4
    pub fn too_large() -> Reply {
        Reply::enhanced(
            Code::ExceededStorage,
            (3, 4),
            "Message size exceeds fixed maximum message size",
        )
    }

    /// `553 5.7.1`: the null sender on submission.
    pub fn null_sender_refused() -> Reply {
        Reply::enhanced(
            Code::MailboxNameNotAllowed,
            (7, 1),
            "Null sender not allowed on submission",
        )
    }

    /// `550 5.7.23`: the sender's domain does not authorise this client ([RFC 7372 §3.2]:
    /// SPF validation failed).
    ///
    /// [RFC 7372 §3.2]: https://www.rfc-editor.org/rfc/rfc7372#section-3.2
    pub fn spf_failed(domain: &str) -> Reply {
        Reply::enhanced(
            Code::MailboxUnavailable,
            (7, 23),
            format!("SPF validation failed: {domain} does not authorise this host"),
        )
    }

    /// `550 5.7.1`: the From: domain's DMARC policy rejects the message ([RFC 7489 §6.6.2]).
    ///
    /// [RFC 7489 §6.6.2]: https://www.rfc-editor.org/rfc/rfc7489#section-6.6.2
    pub fn dmarc_rejected(domain: &str) -> Reply {
        Reply::enhanced(
            Code::MailboxUnavailable,
            (7, 1),
            format!("Message rejected by the DMARC policy of {domain}"),
        )
    }

    /// `553 5.7.1`: a sender address `login` may not use.
    pub fn sender_not_owned(login: &str) -> Reply {
        Reply::enhanced(
            Code::MailboxNameNotAllowed,
            (7, 1),
            format!("Sender address not owned by user {login}"),
        )
    }

    /// `553 5.6.7` ([RFC 6531 §3.5]).
    ///
    /// [RFC 6531 §3.5]: https://www.rfc-editor.org/rfc/rfc6531#section-3.5
    pub fn needs_smtputf8() -> Reply {
        Reply::enhanced(
            Code::MailboxNameNotAllowed,
            (6, 7),
            "Non-ASCII address needs the SMTPUTF8 parameter",
        )
    }

    /// `554 5.5.1`: DATA with no accepted recipient ([RFC 2920 §3.1]).
    ///
    /// [RFC 2920 §3.1]: https://www.rfc-editor.org/rfc/rfc2920#section-3.1
    pub fn no_valid_recipients() -> Reply {
        Reply::enhanced(Code::TransactionFailed, (5, 1), "No valid recipients")
    }

    /// `554 5.5.1 <hostname> ...`: the client spoke before the greeting ([RFC 5321 §4.3.1]
    /// has the client wait for it), and is sent away.
    ///
    /// [RFC 5321 §4.3.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.3.1
    pub fn pregreet(hostname: &str) -> Reply {
        Reply::enhanced(
            Code::TransactionFailed,
            (5, 1),
            format!("{hostname} Protocol error: talked before the greeting"),
        )
    }

    /// `554 5.7.1`: the client's address is on DNS block lists scoring at or over the
    /// threshold; `zone` names the list, as Postfix's postscreen does ([RFC 5782]).
    ///
    /// [RFC 5782]: https://www.rfc-editor.org/rfc/rfc5782
    pub fn source_listed(zone: &str) -> Reply {
        Reply::enhanced(
            Code::TransactionFailed,
            (7, 1),
            format!("Service unavailable; client blocked using {zone}"),
        )
    }

    /// `555 5.5.4`: a MAIL or RCPT parameter we do not know ([RFC 5321 §4.1.1.11]).
    ///
    /// [RFC 5321 §4.1.1.11]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.11
    pub fn unsupported_parameter() -> Reply {
        Reply::enhanced(
            Code::ParametersNotRecognized,
            (5, 4),
            "Unsupported parameter",
        )
    }
}
