//! What the engine asks of its driver.

use super::auth::Credentials;
use super::transaction::{Envelope, TxnId};
use super::Mailbox;

/// Something the driver must act on, polled in order with `Connection::poll_event`.
#[derive(Debug)]
pub enum Event {
    /// `DATA` or the first `BDAT` of a transaction was accepted: open a spool entry.
    MessageStart {
        /// The transaction.
        txn: TxnId,
        /// Its envelope.
        envelope: Envelope,
    },
    /// Message content, already dot-unstuffed, to append to the spool entry. Hand the emptied
    /// buffer back with `Connection::recycle` to avoid an allocation per chunk.
    MessageData {
        /// The transaction.
        txn: TxnId,
        /// The content.
        data: Vec<u8>,
    },
    /// The content is complete: make it durable, then call `Connection::handle_spooled`. The
    /// engine consumes no input until then, so the reply order of RFC 2920 holds.
    MessageEnd {
        /// The transaction.
        txn: TxnId,
    },
    /// The content will not be kept: refused (its reply is already queued), or abandoned by
    /// `RSET`, `EHLO` or the end of the session. Discard the spool entry.
    MessageAbort {
        /// The transaction.
        txn: TxnId,
        /// The refusal, or `None` if the client abandoned the message.
        reason: Option<Rejection>,
    },
    /// The 220 reply to STARTTLS is queued: send it in the clear, drop every byte the client sent
    /// after the command (RFC 3207 §4.2; CVE-2011-0411), start the TLS handshake, then call
    /// `Connection::handle_tls_established`.
    StartTls,
    /// The client presented credentials: check them off the engine, then call
    /// `Connection::handle_auth`. Nothing more is read until then.
    Authenticate(Credentials),
    /// The client sent `MAIL` while the verdict on its address (DNS block and allow lists,
    /// asked for with `Connection::require_source_verdict`) is not in: get it, then call
    /// `Connection::handle_source_verdict`. Nothing more is read until then.
    SourceCheck,
    /// `MAIL` was accepted by the engine's rules, and [`EngineConfig::check_sender`] asks for
    /// the sender to be checked (SPF, RFC 7208 §2.4): check it, then call
    /// `Connection::handle_sender_checked`. Nothing more is read until then.
    ///
    /// [`EngineConfig::check_sender`]: super::EngineConfig::check_sender
    CheckSender {
        /// The `HELO`/`EHLO` argument.
        helo: String,
        /// The reverse-path; `None` is the null sender `<>`.
        mail_from: Option<Mailbox>,
    },
    /// `MAIL` was refused (the reply is queued); for counting and logging.
    Rejected(Rejection),
    /// One `RCPT` was refused (the reply is queued; the transaction goes on); for counting and
    /// logging.
    RecipientRejected {
        /// Why.
        rejection: Rejection,
        /// The path as the client wrote it, without angle brackets or parameters: client text,
        /// to be escaped wherever it is written.
        recipient: String,
    },
    /// The session is over: flush the replies, then close.
    Close(CloseReason),
}

/// Why mail or a recipient was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A recipient outside our domains, or a relay trick, on the delivery role.
    RelayDenied,
    /// A local recipient that does not exist.
    UnknownRecipient,
    /// More recipients than `max_recipients`.
    TooManyRecipients,
    /// Declared or actual size over the limit.
    MessageTooLarge,
    /// Bare CR or LF in the content.
    BareNewline,
    /// A content line over `limits.max_line_length` octets.
    LineTooLong,
    /// A NUL octet in the content.
    NulOctet,
    /// MAIL on submission without authentication.
    NotAuthenticated,
    /// MAIL FROM an address the authenticated user does not own, or the null sender, on
    /// submission.
    SenderNotOwned,
    /// The sender's domain does not authorise the client (SPF `fail`, RFC 7208 §8.4).
    SpfFail,
    /// The From: domain's DMARC policy is `p=reject` and the message did not pass
    /// (RFC 7489 §6.6.2).
    DmarcReject,
}

/// The outcome of [`Event::CheckSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderVerdict {
    /// Go on: the 250 to `MAIL`.
    Accept,
    /// Refuse the sender: `550 5.7.23` (RFC 7372 §3.2).
    SpfFail,
}

/// Why the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// The client was idle past the timeout (421 sent).
    Timeout,
    /// Too many bad commands (421 sent).
    TooManyErrors,
    /// The server is shutting down (421 sent).
    Shutdown,
    /// The client talked before the greeting, which `EngineConfig::greet_delay` held back
    /// (554 sent in place of the 220, [RFC 5321 §3.1]): a bot that does not wait for replies.
    ///
    /// [RFC 5321 §3.1]: https://www.rfc-editor.org/rfc/rfc5321#section-3.1
    Pregreet,
    /// The client's address scored at or over the threshold of the DNS block lists (554 sent
    /// in reply to `MAIL`).
    Listed,
}

/// The verdict on the client's address, for `Connection::handle_source_verdict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVerdict {
    /// Not listed, outweighed by allow lists, or the lists could not be asked: go on.
    Clear,
    /// Listed at or over the threshold; `zone` is the list with the largest weight among those
    /// that list it, named in the reply.
    Listed {
        /// The list's DNS zone.
        zone: String,
    },
}

/// A failure of the spool, reported to the engine after `Event::MessageEnd`; the client gets
/// 451 4.3.0 and may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolFault;
