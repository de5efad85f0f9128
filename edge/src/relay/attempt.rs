//! What the queue hands the relay (an [`Attempt`]) and what it gets back (an
//! [`AttemptResult`] with one [`RcptOutcome`] per recipient).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Route, Via};
use crate::protocol::Mailbox;
use crate::tls::TlsInfo;

/// Where the message content is: `len` octets of the file at `path`, from `offset`. The queue
/// owns the file and must keep it until the [`AttemptResult`] comes back; the relay only reads
/// it, in pieces, never whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The spooled file.
    pub path: PathBuf,
    /// Where the message starts in it (after the queue's own header).
    pub offset: u64,
    /// The message size in octets (also sent as `SIZE=`, [RFC 1870]).
    ///
    /// [RFC 1870]: https://www.rfc-editor.org/rfc/rfc1870
    pub len: u64,
}

/// One delivery attempt: a message for some of its recipients, over one route.
///
/// For [`Route::Mx`] every recipient must be in [`Attempt::domain`]; the relay looks up that
/// domain's MX. Attempts to the same destination (the same domain by MX, the same next hop
/// otherwise) share connections: one connection carries several messages in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The caller's own number for this attempt, given back in [`AttemptResult::token`].
    pub token: u64,
    /// The queue id, for log lines and the relay's own diagnostics.
    pub queue_id: String,
    /// Where to: any route but [`Route::Maildir`] (which the relay answers by deferring every
    /// recipient: it is the delivery stage's own job).
    pub route: Route,
    /// The recipients' domain, lower-cased: what [`Route::Mx`] looks up.
    pub domain: String,
    /// The reverse-path; `None` is the null sender `<>` (bounces).
    pub from: Option<Mailbox>,
    /// The recipients; outcomes come back in this order.
    pub to: Vec<Mailbox>,
    /// The message.
    pub content: Content,
    /// The content holds octets above 127 (`BODY=8BITMIME` when offered, [RFC 6152]).
    ///
    /// [RFC 6152]: https://www.rfc-editor.org/rfc/rfc6152
    pub eight_bit: bool,
    /// The headers hold UTF-8: the message needs SMTPUTF8 ([RFC 6531]); a server without it
    /// fails the recipients.
    ///
    /// [RFC 6531]: https://www.rfc-editor.org/rfc/rfc6531
    pub smtputf8: bool,
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The next hop took responsibility: the recipient is done (`status=sent`).
    Delivered,
    /// A temporary failure: try again later (`status=deferred`).
    Deferred,
    /// A permanent failure: bounce (`status=bounced`).
    Failed,
}

impl Verdict {
    /// The Postfix-style `status=` word: `sent`, `deferred` or `bounced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "sent",
            Verdict::Deferred => "deferred",
            Verdict::Failed => "bounced",
        }
    }
}

/// The outcome for one recipient, with what a log line and a DSN ([RFC 3464]) need.
///
/// [RFC 3464]: https://www.rfc-editor.org/rfc/rfc3464
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    /// Delivered, deferred or failed.
    pub verdict: Verdict,
    /// The enhanced status code ([RFC 3463]), `class.subject.detail`: the server's when its
    /// reply carried one, else one for the reply class or for the local cause (`4.4.1` no
    /// answer from the host, `4.4.3` DNS failure, `5.1.2` no such domain, `5.1.10` null MX).
    /// Goes in the DSN's `Status:` field.
    ///
    /// [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463
    pub status: String,
    /// The server's reply, `code [enhanced] text` on one line (multi-line replies joined with
    /// spaces), when one decided the outcome: the DSN's `Diagnostic-Code: smtp; ...`.
    pub reply: Option<String>,
    /// A one-line account for the log line and the DSN: the reply with the command it answered
    /// (`550 5.1.1 No such user (in reply to RCPT TO)`), or the local cause
    /// (`connect to 192.0.2.1:25: Connection refused`).
    pub detail: String,
}

impl fmt::Display for RcptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.verdict.as_str(), self.detail)
    }
}

/// Which host gave the verdict, for the log line (`relay=mx.example.net[192.0.2.1]:25`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The host name the relay connected to (an MX name, a next hop as configured), or the
    /// socket path for LMTP over a Unix socket.
    pub host: String,
    /// The address connected to; `None` for a Unix socket.
    pub addr: Option<SocketAddr>,
    /// The TLS the session ran over, if any (version and cipher for the log).
    pub tls: Option<TlsInfo>,
}

impl fmt::Display for Peer {
    /// `host[ip]:port`, or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{}[{}]:{}", self.host, addr.ip(), addr.port()),
            None => f.write_str(&self.host),
        }
    }
}

/// Where the relay hands each [`AttemptResult`]: a channel's sender, or the queue's own
/// inbox, which takes it straight into its commands (no thread moving results from one
/// channel to another, no wake-up of one more thread per message).
pub trait Report: Send + 'static {
    /// Hands over one result. When the receiver is gone (the queue shutting down) it is
    /// dropped: there is nobody left to tell.
    fn report(&self, result: AttemptResult);
}

impl Report for std::sync::mpsc::Sender<AttemptResult> {
    fn report(&self, result: AttemptResult) {
        let _ = self.send(result);
    }
}

/// The result of one [`Attempt`], handed to the [`Report`] given to
/// [`super::Relay::start`]. Every submitted attempt gets exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// [`Attempt::token`].
    pub token: u64,
    /// [`Attempt::queue_id`].
    pub queue_id: String,
    /// How it went out (the `via` label).
    pub via: Via,
    /// One per recipient, in the order of [`Attempt::to`].
    pub outcomes: Vec<RcptOutcome>,
    /// The host that gave the verdict; `None` when no session got that far (DNS failures,
    /// every address refusing connections).
    pub peer: Option<Peer>,
}
