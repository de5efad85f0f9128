//! What the client engine is given (messages) and what it reports (events, per-recipient
//! outcomes).

use std::fmt;

use super::reply::{ProtocolError, ServerReply};
use crate::protocol::Mailbox;

/// A message to send: the envelope and what the content needs from the server. The content
/// itself is handed over after [`Event::SendBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The reverse-path; `None` is the null sender `<>` (bounces).
    pub from: Option<Mailbox>,
    /// The recipients, one `RCPT` each; outcomes come back in this order.
    pub to: Vec<Mailbox>,
    /// The content's size in octets, sent as `SIZE=` when offered ([RFC 1870]).
    ///
    /// [RFC 1870]: https://www.rfc-editor.org/rfc/rfc1870
    pub size: Option<u64>,
    /// The content holds octets above 127: `BODY=8BITMIME` when offered ([RFC 6152]). A server
    /// without 8BITMIME gets the message as it is, as Postfix does: downgrading to 7 bit
    /// would rewrite signed content, and refusing would bounce mail that nearly every server
    /// stores intact.
    ///
    /// [RFC 6152]: https://www.rfc-editor.org/rfc/rfc6152
    pub eight_bit: bool,
    /// The headers hold UTF-8 ([RFC 6532]), so the message needs SMTPUTF8. Non-ASCII
    /// addresses in the envelope need it too; the engine checks those itself.
    ///
    /// [RFC 6532]: https://www.rfc-editor.org/rfc/rfc6532
    pub smtputf8: bool,
}

impl Message {
    /// Whether the message needs the server to offer SMTPUTF8 ([RFC 6531 §3.4]).
    ///
    /// [RFC 6531 §3.4]: https://www.rfc-editor.org/rfc/rfc6531#section-3.4
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || self.from.as_ref().is_some_and(Mailbox::is_utf8)
            || self.to.iter().any(Mailbox::is_utf8)
    }
}

/// Names one message handed to [`super::Client::send_message`] in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub u64);

/// The command a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The 220 greeting.
    Greeting,
    /// `EHLO`, `HELO` or `LHLO`.
    Hello,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH` and its continuation lines.
    Auth,
    /// `RSET` between transactions.
    Rset,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA`, waiting for 354.
    Data,
    /// Sending the content.
    Body,
    /// The final dot, waiting for the verdict.
    EndOfData,
    /// `QUIT`.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "greeting",
            Stage::Hello => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "message content",
            Stage::EndOfData => "end of data",
            Stage::Quit => "QUIT",
        })
    }
}

/// Why a recipient was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The server's reply to a command.
    Reply {
        /// The command it answered.
        stage: Stage,
        /// The reply.
        reply: ServerReply,
    },
    /// No reply within the RFC 5321 §4.5.3.2 timeout of the command.
    Timeout(Stage),
    /// The connection closed (or the caller reported it broken) before the final reply.
    ConnectionLost(Stage),
    /// The server broke the protocol.
    Protocol(ProtocolError),
    /// TLS is required and the server does not offer STARTTLS.
    TlsUnavailable,
    /// Credentials are set, but the server offers no AUTH mechanism we speak, or the session
    /// is not encrypted and plaintext AUTH is not allowed.
    AuthUnavailable,
    /// The message needs SMTPUTF8 and the server does not offer it ([RFC 6531 §3.4]).
    ///
    /// [RFC 6531 §3.4]: https://www.rfc-editor.org/rfc/rfc6531#section-3.4
    Smtputf8Unsupported,
    /// The message is larger than the server's declared `SIZE` limit ([RFC 1870 §6]).
    ///
    /// [RFC 1870 §6]: https://www.rfc-editor.org/rfc/rfc1870#section-6
    TooLarge {
        /// The server's limit, in octets.
        limit: u64,
    },
    /// An address would not fit on a command line as it is (a control character, or a path
    /// over the RFC 5321 §4.5.3.1.3 limit).
    BadAddress,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Reply { stage, reply } => write!(f, "{reply} (in reply to {stage})"),
            Cause::Timeout(stage) => write!(f, "timeout waiting for the reply to {stage}"),
            Cause::ConnectionLost(stage) => write!(f, "connection lost during {stage}"),
            Cause::Protocol(err) => write!(f, "protocol error: {err}"),
            Cause::TlsUnavailable => f.write_str("TLS is required but STARTTLS is not available"),
            Cause::AuthUnavailable => f.write_str("no usable AUTH mechanism for the credentials"),
            Cause::Smtputf8Unsupported => {
                f.write_str("the message needs SMTPUTF8 and the server does not offer it")
            }
            Cause::TooLarge { limit } => {
                write!(f, "message larger than the server limit of {limit} octets")
            }
            Cause::BadAddress => f.write_str("address cannot be sent on a command line"),
        }
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility for the message: its final reply (for LMTP, the reply
    /// for this recipient).
    Delivered(ServerReply),
    /// A temporary failure (4xx, a lost connection, a timeout, a protocol error): try again
    /// later.
    Deferred(Cause),
    /// A permanent failure (5xx, or a need the server cannot meet): bounce.
    Failed(Cause),
}

impl Outcome {
    /// The outcome a failure reply gives: 5xx fails, anything else defers.
    pub(crate) fn from_refusal(stage: Stage, reply: &ServerReply) -> Outcome {
        let cause = Cause::Reply {
            stage,
            reply: reply.clone(),
        };
        if reply.is_permanent() {
            Outcome::Failed(cause)
        } else {
            Outcome::Deferred(cause)
        }
    }
}

/// The verdict on one message: an outcome for each recipient, in the order of [`Message::to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The message.
    pub id: MessageId,
    /// One outcome per recipient.
    pub outcomes: Vec<Outcome>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// `QUIT` was sent after the last message (its 221, or the server closing, ended it).
    Quit,
    /// The session failed; every message not yet reported was deferred with this cause.
    Failed(Cause),
}

/// Something the driver must act on, polled in order with [`super::Client::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The session is at a message boundary with nothing to send: call
    /// [`super::Client::send_message`] or [`super::Client::quit`]. Given once per idle spell.
    Ready,
    /// The server accepted `STARTTLS`: start the TLS handshake on the connection (sending
    /// nothing more in the clear), then call [`super::Client::handle_tls_established`].
    StartTls,
    /// The server is ready for the content of `id`: hand it over with
    /// [`super::Client::send_body`], in pieces of any size, then call
    /// [`super::Client::end_body`].
    SendBody(MessageId),
    /// The verdict on a message; every message handed to the engine gets exactly one.
    Done(Report),
    /// The session is over: send what is queued, then close the connection.
    Closed(SessionEnd),
}
