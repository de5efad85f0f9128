//! One SMTP session as a state machine: bytes in, replies and events out.
//!
//! Method kinds, in the order a driver uses them:
//! - input: [`Connection::handle_input`], [`Connection::handle_spooled`],
//!   [`Connection::handle_timeout`], [`Connection::handle_shutdown`];
//! - output, polled after every input: [`Connection::poll_event`] until `None` (events come in
//!   the order the driver must act on them), [`Connection::poll_transmit`] (replies, in order),
//!   then [`Connection::poll_timeout`] for the next deadline.
//!
//! Every timer is the engine's: the greeting delay, then the command and data timeouts of
//! RFC 5321 §4.5.3.2. [`Connection::poll_timeout`] gives the next one, and
//! [`Connection::handle_timeout`] acts on whichever has passed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::auth::{SaslExchange, SaslStep, MAX_AUTH_LINE, MECHANISMS};
use super::command::{self, Command, CommandError};
use super::data::{DataFault, DataReceiver, LineCheck};
use super::envelope::{self, MailFrom};
use super::event::{CloseReason, Event, Rejection, SenderVerdict, SourceVerdict, SpoolFault};
use super::policy::{EngineConfig, Role, MAX_COMMAND_LINE};
use super::reply::{Closing, Reply};
use super::transaction::{Envelope, Greeting, TxnId};
use super::{address, Mailbox};

mod content;
mod mail;
mod security;

/// Content is handed to the driver at least this often, so one session never buffers more.
const MAX_BODY_CHUNK: usize = 256 * 1024;

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Reading command lines.
    Command,
    /// Reading a `DATA` body.
    Data(DataReceiver),
    /// Reading the octets of a `BDAT` chunk.
    Bdat(BdatChunk),
    /// Content complete; waiting for [`Connection::handle_spooled`].
    Spooling(TxnId),
    /// STARTTLS accepted; waiting for [`Connection::handle_tls_established`].
    TlsPending,
    /// AUTH sent a 334 challenge; the next line is the client's response.
    AuthResponse(SaslExchange),
    /// Credentials handed out; waiting for [`Connection::handle_auth`].
    AuthPending,
    /// `MAIL` arrived before the verdict on the client's address; waiting for
    /// [`Connection::handle_source_verdict`], then the line is carried out.
    SourcePending(Vec<u8>),
    /// `MAIL` handed out for a check; waiting for [`Connection::handle_sender_checked`].
    SenderPending(MailFrom),
    /// Done; nothing more is read.
    Closed,
}

/// A `BDAT` chunk being read ([RFC 3030 §2]).
///
/// [RFC 3030 §2]: https://www.rfc-editor.org/rfc/rfc3030#section-2
#[derive(Debug)]
struct BdatChunk {
    remaining: u64,
    size: u64,
    last: bool,
    /// The chunk is read and thrown away, then this reply is sent (RFC 3030 §2: a refused BDAT
    /// still carries its octets).
    refused: Option<Reply>,
}

/// The open transaction: after `MAIL`, until the end of data or `RSET`.
#[derive(Debug)]
struct Transaction {
    id: TxnId,
    mail: MailFrom,
    rcpts: Vec<Mailbox>,
    /// Content already announced to the driver (`MessageStart` sent), by `BDAT`.
    started: bool,
    /// Content octets so far across `BDAT` chunks.
    size: u64,
    /// The text rules `DATA` enforces, applied to `BDAT` content.
    lines: LineCheck,
}

/// One SMTP session, server side.
pub struct Connection {
    cfg: Arc<EngineConfig>,
    phase: Phase,
    greeting: Option<(Greeting, String)>,
    txn: Option<Transaction>,
    next_txn: u64,
    bad_commands: u32,
    /// A command line split across inputs; never longer than [`MAX_COMMAND_LINE`].
    line: Vec<u8>,
    /// The current line passed [`MAX_COMMAND_LINE`]; it is skipped up to its LF.
    line_too_long: bool,
    /// Content not yet handed out as [`Event::MessageData`].
    body: Vec<u8>,
    replies: Vec<u8>,
    events: VecDeque<Event>,
    /// The 220 is held back until then ([`EngineConfig::greet_delay`]); input before it is a
    /// pregreet.
    greet_at: Option<Instant>,
    deadline: Instant,
    /// Shutdown asked for while a message was in flight: close after its reply.
    closing: bool,
    /// The session runs over TLS (after STARTTLS, or from the start on an implicit listener).
    secure: bool,
    /// Who the client is, as far as MAIL on a submission listener is concerned.
    identity: Identity,
    /// Complete command lines read so far: the command timeout restarts only when one ends.
    lines_read: u64,
    /// The verdict on the client's address, when `MAIL` must wait for it.
    source: Source,
}

/// Where the verdict on the client's address stands ([`Connection::require_source_verdict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// None is needed, or it came in clear.
    Clear,
    /// Needed before `MAIL` is answered, not in yet.
    Pending,
    /// Listed: `MAIL` gets 554 naming the zone, and the session ends.
    Listed(String),
}

/// Who may submit mail on this session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    /// Nobody yet.
    Anonymous,
    /// A host in the operator's trusted networks: any sender.
    Trusted,
    /// An authenticated user, who may use the listed senders (lower-cased addresses).
    User { login: String, senders: Vec<String> },
}

/// The verdict on credentials, for [`Connection::handle_auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Good credentials: `login` may send as any of `senders` (lower-cased addresses, the
    /// login's own among them).
    Success {
        /// The authenticated identity.
        login: String,
        /// MAIL FROM addresses this user may use.
        senders: Vec<String>,
    },
    /// Wrong user or password (535 5.7.8).
    Invalid,
    /// The check could not be made now (454 4.7.0); the client may retry.
    Unavailable,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the body or pending input: they are the user's mail.
        f.debug_struct("Connection")
            .field("phase", &self.phase)
            .field("greeting", &self.greeting)
            .field("bad_commands", &self.bad_commands)
            .field("greet_at", &self.greet_at)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new session; the 220 greeting is queued, and held back for
    /// [`EngineConfig::greet_delay`] if that is set.
    pub fn new(cfg: Arc<EngineConfig>, now: Instant) -> Self {
        let mut conn = Connection {
            deadline: now + cfg.timeouts.command,
            greet_at: (!cfg.greet_delay.is_zero()).then(|| now + cfg.greet_delay),
            cfg,
            phase: Phase::Command,
            greeting: None,
            txn: None,
            next_txn: 0,
            bad_commands: 0,
            line: Vec::new(),
            line_too_long: false,
            body: Vec::new(),
            replies: Vec::with_capacity(256),
            events: VecDeque::new(),
            closing: false,
            secure: false,
            identity: Identity::Anonymous,
            lines_read: 0,
            source: Source::Clear,
        };
        conn.reply(Reply::greeting(&conn.cfg.hostname));
        conn
    }

    /// A new session on a connection that is already encrypted (implicit TLS, [RFC 8314 §3.3]);
    /// the 220 greeting is queued and never held back: the client speaks first, in the handshake.
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    pub fn new_secure(cfg: Arc<EngineConfig>, now: Instant) -> Self {
        let mut conn = Connection::new(cfg, now);
        conn.secure = true;
        conn.greet_at = None;
        conn
    }

    /// The TLS layer is in place after STARTTLS: the session starts over as after the greeting,
    /// forgetting the EHLO and any transaction ([RFC 3207 §4.2]). Ignored in any other state.
    ///
    /// [RFC 3207 §4.2]: https://www.rfc-editor.org/rfc/rfc3207#section-4.2
    pub fn handle_tls_established(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::TlsPending) {
            return;
        }
        self.secure = true;
        self.greeting = None;
        self.txn = None;
        self.line.clear();
        self.line_too_long = false;
        self.phase = Phase::Command;
        self.deadline = now + self.cfg.timeouts.command;
        if self.closing {
            self.close_shutdown();
        }
    }

    /// The client is this host's own software (the guard's trusted networks): the 220 goes out
    /// at once, without the greeting delay, and early input is not a pregreet. Call before the
    /// first input.
    pub fn skip_greeting_delay(&mut self) {
        self.greet_at = None;
    }

    /// The client's address is in the operator's trusted networks: it may submit without
    /// authenticating. Call before the first input.
    pub fn grant_trusted(&mut self) {
        if self.identity == Identity::Anonymous {
            self.identity = Identity::Trusted;
        }
    }

    /// The verdict on the credentials of the last [`Event::Authenticate`]; ignored unless
    /// one is pending.
    pub fn handle_auth(&mut self, now: Instant, outcome: AuthOutcome) {
        if !matches!(self.phase, Phase::AuthPending) {
            return;
        }
        self.phase = Phase::Command;
        self.deadline = now + self.cfg.timeouts.command;
        match outcome {
            AuthOutcome::Success { login, senders } => {
                self.identity = Identity::User { login, senders };
                self.reply(Reply::auth_succeeded());
            }
            AuthOutcome::Invalid => self.reply(Reply::auth_invalid()),
            AuthOutcome::Unavailable => self.reply(Reply::auth_unavailable()),
        }
        if self.closing {
            self.close_shutdown();
        }
    }

    /// The client's address is being looked up in DNS block and allow lists: `MAIL` waits for
    /// [`Connection::handle_source_verdict`] (as postscreen judges a client only once it has
    /// shown itself, and the lookups run while it greets). Call before the first input.
    pub fn require_source_verdict(&mut self) {
        self.source = Source::Pending;
    }

    /// The verdict on the client's address. If `MAIL` is waiting for it, it is answered now:
    /// carried out when clear, `554 5.7.1` naming the zone when listed, and the session ends
    /// ([`CloseReason::Listed`]). Earlier, the verdict is kept for the first `MAIL`.
    pub fn handle_source_verdict(&mut self, now: Instant, verdict: SourceVerdict) {
        if self.source != Source::Pending {
            return;
        }
        self.source = match verdict {
            SourceVerdict::Clear => Source::Clear,
            SourceVerdict::Listed { zone } => Source::Listed(zone),
        };
        let Phase::SourcePending(line) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        self.deadline = now + self.cfg.timeouts.command;
        self.execute(&line);
        if self.closing && !self.is_closed() {
            self.close_shutdown();
        }
    }

    /// The authenticated login, if any.
    pub fn login(&self) -> Option<&str> {
        match &self.identity {
            Identity::User { login, .. } => Some(login),
            _ => None,
        }
    }

    /// Whether the session runs over TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Consumes a prefix of `input` and returns its length; the caller keeps the rest and
    /// offers it again once the engine can go on (after [`Connection::handle_spooled`]).
    /// Commands may be pipelined ([RFC 2920]): replies queue up in order.
    ///
    /// [RFC 2920]: https://www.rfc-editor.org/rfc/rfc2920
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.greet_at.is_some() && !input.is_empty() {
            return self.pregreet(input.len());
        }
        let lines_before = self.lines_read;
        let in_content = matches!(self.phase, Phase::Data(_) | Phase::Bdat(_));
        let mut used = 0;
        while used < input.len() {
            let rest = input.get(used..).unwrap_or_default();
            used += match &mut self.phase {
                Phase::Command => self.read_command(rest),
                Phase::Data(rx) => {
                    let (n, done) = rx.feed(rest, &mut self.body);
                    if done {
                        self.end_of_data();
                    } else if self.body.len() >= MAX_BODY_CHUNK {
                        self.flush_body();
                    }
                    n
                }
                Phase::Bdat(_) => self.read_bdat(rest),
                Phase::AuthResponse(_) => self.read_command(rest),
                // After STARTTLS nothing more is read in the clear: the caller drops the rest.
                Phase::Spooling(_)
                | Phase::TlsPending
                | Phase::AuthPending
                | Phase::SourcePending(_)
                | Phase::SenderPending(_)
                | Phase::Closed => break,
            };
        }
        self.flush_body();
        match self.phase {
            // RFC 5321 §4.5.3.2.5: the data block timeout runs from each piece of content.
            Phase::Data(_) | Phase::Bdat(_) => self.deadline = now + self.cfg.timeouts.data_block,
            // A command must be complete within the command timeout of the previous one: a
            // line trickled in byte by byte (slowloris) does not push the deadline out. Content
            // that ended here (refused, so no spool verdict restarts the clock) counts as a
            // complete line too, so the deadline does not depend on how the input was split.
            _ if self.lines_read != lines_before || in_content => {
                self.deadline = now + self.cfg.timeouts.command;
            }
            _ => {}
        }
        used
    }

    /// Reports the spool's verdict on the message of `txn`; a result for any other
    /// transaction is ignored.
    pub fn handle_spooled(&mut self, now: Instant, txn: TxnId, result: Result<&str, SpoolFault>) {
        if !matches!(self.phase, Phase::Spooling(t) if t == txn) {
            return;
        }
        self.txn = None;
        self.phase = Phase::Command;
        self.deadline = now + self.cfg.timeouts.command;
        match result {
            Ok(queue_id) => {
                self.reply(Reply::queued(queue_id));
                // A client that delivers is not a bot probing commands: past mistakes are
                // forgiven, so a long-lived connection is not cut for errors spread over it.
                self.bad_commands = 0;
            }
            Err(SpoolFault) => self.reply(Reply::storage_failed()),
        }
        if self.closing {
            self.close_shutdown();
        }
    }

    /// The content of `txn` is refused by the From: domain's DMARC policy (`p=reject`,
    /// [RFC 7489 §6.6.2]) and was not stored: `550 5.7.1` in place of the 250. Call it instead
    /// of [`Connection::handle_spooled`] after [`Event::MessageEnd`]; ignored for any other
    /// transaction.
    ///
    /// [RFC 7489 §6.6.2]: https://www.rfc-editor.org/rfc/rfc7489#section-6.6.2
    pub fn handle_dmarc_rejected(&mut self, now: Instant, txn: TxnId, domain: &str) {
        if !matches!(self.phase, Phase::Spooling(t) if t == txn) {
            return;
        }
        self.txn = None;
        self.phase = Phase::Command;
        self.deadline = now + self.cfg.timeouts.command;
        self.events
            .push_back(Event::Rejected(Rejection::DmarcReject));
        self.reply(Reply::dmarc_rejected(domain));
        if self.closing {
            self.close_shutdown();
        }
    }

    /// The verdict on the sender of the last [`Event::CheckSender`]; ignored unless one is
    /// pending.
    pub fn handle_sender_checked(&mut self, now: Instant, verdict: SenderVerdict) {
        if !matches!(self.phase, Phase::SenderPending(_)) {
            return;
        }
        let Phase::SenderPending(mail) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        self.deadline = now + self.cfg.timeouts.command;
        match verdict {
            SenderVerdict::Accept => self.open_transaction(mail),
            SenderVerdict::SpfFail => {
                let domain = mail.path.as_ref().map_or_else(
                    || self.helo().unwrap_or_default().to_owned(),
                    |p| p.domain.to_string(),
                );
                self.events.push_back(Event::Rejected(Rejection::SpfFail));
                self.reply(Reply::spf_failed(&domain));
            }
        }
        if self.closing {
            self.close_shutdown();
        }
    }

    /// Acts on the deadline that has passed: releases the held greeting (the command timeout
    /// then runs from it), or ends the session with 421. Earlier calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.greet_at {
            Some(at) if now >= at => {
                // The client waited, as it should: the banner goes out now.
                self.greet_at = None;
                self.deadline = now + self.cfg.timeouts.command;
                return;
            }
            Some(_) => return,
            None => {}
        }
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.reply(Reply::service_closing(&self.cfg.hostname, Closing::Timeout));
            self.close(CloseReason::Timeout);
        }
    }

    /// The server is stopping: an idle session gets 421 now; one with a message in flight
    /// finishes it first.
    pub fn handle_shutdown(&mut self) {
        if self.greet_at.take().is_some() {
            // The 421 goes out in place of the greeting (RFC 5321 §3.1).
            self.replies.clear();
        }
        match self.phase {
            // Between BDAT chunks a message is still in flight.
            Phase::Command if !self.in_message() => self.close_shutdown(),
            Phase::Closed => {}
            _ => self.closing = true,
        }
    }

    /// Appends queued replies to `out`; returns whether there were any. Nothing comes out while
    /// the greeting is held back.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.replies.is_empty() || self.greet_at.is_some() {
            return false;
        }
        out.append(&mut self.replies);
        true
    }

    /// The next event to act on.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] should next be called: the end of the greeting
    /// delay, then the client's timeout ([RFC 5321 §4.5.3.2]); `None` while the server itself
    /// is busy (spooling) or the session is over.
    ///
    /// [RFC 5321 §4.5.3.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.greet_at.is_some() {
            return self.greet_at;
        }
        match self.phase {
            Phase::Spooling(_)
            | Phase::TlsPending
            | Phase::AuthPending
            | Phase::SourcePending(_)
            | Phase::SenderPending(_)
            | Phase::Closed => None,
            _ => Some(self.deadline),
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The client's HELO/EHLO argument, once given.
    pub fn helo(&self) -> Option<&str> {
        self.greeting.as_ref().map(|(_, helo)| helo.as_str())
    }

    /// Whether a message is being received or spooled.
    pub fn in_message(&self) -> bool {
        matches!(
            self.phase,
            Phase::Data(_) | Phase::Bdat(_) | Phase::Spooling(_)
        ) || self.txn.as_ref().is_some_and(|t| t.started)
    }

    /// Gives back the memory of buffers that hold nothing now (a partial command line, the
    /// replies, the event queue and, between messages, the content buffer), so that a session
    /// waiting for its client's next command keeps only its state: with 100,000 idle
    /// sessions, every retained buffer costs its size a hundred thousand times. Nothing
    /// pending is touched, and during a message the content buffer stays for reuse.
    pub fn trim(&mut self) {
        if self.line.is_empty() {
            self.line = Vec::new();
        }
        if self.replies.is_empty() {
            self.replies = Vec::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.body.is_empty() && !self.in_message() {
            self.body = Vec::new();
        }
    }

    /// Returns an emptied content buffer for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.body.capacity() == 0 {
            buf.clear();
            self.body = buf;
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write(&mut self.replies);
    }

    fn close(&mut self, reason: CloseReason) {
        self.abort_content();
        self.phase = Phase::Closed;
        self.events.push_back(Event::Close(reason));
    }

    /// The client talked while the greeting was held back: 554 in place of the 220
    /// ([RFC 5321 §3.1]), and the session ends without reading any of it.
    ///
    /// [RFC 5321 §3.1]: https://www.rfc-editor.org/rfc/rfc5321#section-3.1
    fn pregreet(&mut self, input_len: usize) -> usize {
        self.greet_at = None;
        self.replies.clear();
        self.reply(Reply::pregreet(&self.cfg.hostname));
        self.close(CloseReason::Pregreet);
        input_len
    }

    fn close_shutdown(&mut self) {
        self.reply(Reply::service_closing(
            &self.cfg.hostname,
            Closing::Shutdown,
        ));
        self.close(CloseReason::Shutdown);
    }

    /// The longest line allowed now: [`MAX_AUTH_LINE`] for AUTH and its responses, else
    /// [`MAX_COMMAND_LINE`]. The line begins with `buffered` then `input`; while fewer than five
    /// octets are known, a line that may still become `AUTH ` gets the AUTH limit, so where the
    /// packets split cannot change the verdict.
    fn line_limit(&self, buffered: &[u8], input: &[u8]) -> usize {
        if matches!(self.phase, Phase::AuthResponse(_)) {
            return MAX_AUTH_LINE;
        }
        const VERB: &[u8] = b"AUTH ";
        let known = buffered.iter().chain(input).take(VERB.len());
        // Every known octet matches: the whole verb, or a prefix of it still in flight.
        if known.zip(VERB).all(|(b, v)| b.eq_ignore_ascii_case(v)) {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        }
    }

    /// Reads one command line (or part of one) from `input`; returns octets consumed.
    fn read_command(&mut self, input: &[u8]) -> usize {
        let limit = self.line_limit(&self.line, input);
        let Some(lf) = memchr::memchr(b'\n', input) else {
            if self.line.len() + input.len() > limit {
                self.line_too_long = true;
                self.line.clear();
            } else if !self.line_too_long {
                self.line.extend_from_slice(input);
            }
            return input.len();
        };
        let used = lf + 1;
        self.lines_read += 1;
        let head = input.get(..lf).unwrap_or_default();
        if self.line_too_long || self.line.len() + used > limit {
            self.line_too_long = false;
            self.line.clear();
            if matches!(self.phase, Phase::AuthResponse(_)) {
                self.phase = Phase::Command;
            }
            self.bad_command(CommandError::LineTooLong);
            return used;
        }
        // The common case, a whole line in this input, is parsed in place; only a line split
        // across inputs was copied into `self.line`.
        let mut joined = std::mem::take(&mut self.line);
        let whole: &[u8] = if joined.is_empty() {
            head
        } else {
            joined.extend_from_slice(head);
            &joined
        };
        // A line ends in CRLF; a bare LF, or a CR anywhere else, is refused (RFC 5321 §2.3.8).
        match whole.split_last() {
            Some((b'\r', text)) if memchr::memchr(b'\r', text).is_none() => {
                if matches!(self.phase, Phase::AuthResponse(_)) {
                    self.auth_response(text);
                } else {
                    self.execute(text);
                }
            }
            _ => {
                let in_auth = matches!(self.phase, Phase::AuthResponse(_));
                if in_auth {
                    self.phase = Phase::Command;
                }
                match command::bdat_chunk_size(whole).filter(|_| !in_auth) {
                    Some(size) => self.refuse_chunk(size, CommandError::BareNewline.reply(), true),
                    None => self.bad_command(CommandError::BareNewline),
                }
            }
        }
        joined.clear();
        self.line = joined;
        used
    }

    fn bad_command(&mut self, err: CommandError) {
        self.bad_command_reply(err.reply());
    }

    /// Counts a refused command; past the limit the session ends with 421 instead.
    fn bad_command_reply(&mut self, reply: Reply) {
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.max_bad_commands {
            let reply = Reply::service_closing(&self.cfg.hostname, Closing::TooManyErrors);
            self.reply(reply);
            self.close(CloseReason::TooManyErrors);
        } else {
            self.reply(reply);
        }
    }

    fn execute(&mut self, line: &[u8]) {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(err) => {
                return match command::bdat_chunk_size(line) {
                    Some(size) => self.refuse_chunk(size, err.reply(), true),
                    None => self.bad_command(err),
                }
            }
        };
        if self.cfg.tls_required && !self.secure && !security::allowed_before_tls(&cmd) {
            return match cmd {
                Command::Bdat { size, .. } => self.refuse_chunk(size, Reply::tls_required(), false),
                _ => self.reply(Reply::tls_required()),
            };
        }
        match cmd {
            Command::Ehlo(domain) => self.ehlo(Greeting::Ehlo, domain),
            Command::Helo(domain) => self.ehlo(Greeting::Helo, domain),
            Command::Mail(_) if self.source == Source::Pending => {
                self.phase = Phase::SourcePending(line.to_vec());
                self.events.push_back(Event::SourceCheck);
            }
            Command::Mail(_) if matches!(self.source, Source::Listed(_)) => {
                if let Source::Listed(zone) = &self.source {
                    let reply = Reply::source_listed(zone);
                    self.reply(reply);
                }
                self.close(CloseReason::Listed);
            }
            Command::Mail(arg) => self.mail(arg),
            Command::Rcpt(arg) => self.rcpt(arg),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_content();
                self.txn = None;
                self.reply(Reply::ok());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Quit => {
                self.reply(Reply::bye(&self.cfg.hostname));
                self.close(CloseReason::Quit);
            }
            Command::Vrfy => self.reply(Reply::cannot_verify()),
            Command::Expn => self.reply(Reply::not_available("EXPN not available")),
            Command::Help => self.reply(Reply::help()),
            Command::StartTls { has_args } => self.starttls(has_args),
            Command::Auth(arg) => self.auth(arg),
        }
    }
}
