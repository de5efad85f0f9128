//! One SMTP session as a state machine: bytes in, replies and events out.
//!
//! Method kinds, in the order a driver uses them:
//! - input: [`Connection::handle_input`], [`Connection::handle_spooled`],
//!   [`Connection::handle_timeout`], [`Connection::handle_shutdown`];
//! - output, polled after every input: [`Connection::poll_event`] until `None` (events come in
//!   the order the driver must act on them), [`Connection::poll_transmit`] (replies, in order),
//!   then [`Connection::poll_timeout`] for the next deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::auth::{SaslExchange, SaslStep, MAX_AUTH_LINE, MECHANISMS};
use super::command::{self, Command, CommandError};
use super::data::{DataFault, DataReceiver};
use super::envelope::{self, MailFrom};
use super::event::{CloseReason, Event, Rejection, SpoolFault};
use super::policy::{EngineConfig, Role, MAX_COMMAND_LINE};
use super::reply::{Reply, Status};
use super::transaction::{Envelope, Greeting, TxnId};
use super::Mailbox;

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
    deadline: Instant,
    /// Shutdown asked for while a message was in flight: close after its reply.
    closing: bool,
    /// The session runs over TLS (after STARTTLS, or from the start on an implicit listener).
    secure: bool,
    /// Who the client is, as far as MAIL on a submission listener is concerned.
    identity: Identity,
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
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new session; the 220 greeting is queued.
    pub fn new(cfg: Arc<EngineConfig>, now: Instant) -> Self {
        let mut conn = Connection {
            deadline: now + cfg.timeouts.command,
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
        };
        let banner = format!("{} ESMTP smtp-edge", conn.cfg.hostname);
        conn.reply(Reply::bare(220, vec![banner.into()]));
        conn
    }

    /// A new session on a connection that is already encrypted (implicit TLS, [RFC 8314 §3.3]);
    /// the 220 greeting is queued.
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    pub fn new_secure(cfg: Arc<EngineConfig>, now: Instant) -> Self {
        let mut conn = Connection::new(cfg, now);
        conn.secure = true;
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
                self.reply(Reply::new(
                    235,
                    Status(2, 7, 0),
                    "Authentication successful",
                ));
            }
            AuthOutcome::Invalid => self.reply(Reply::new(
                535,
                Status(5, 7, 8),
                "Authentication credentials invalid",
            )),
            AuthOutcome::Unavailable => self.reply(Reply::new(
                454,
                Status(4, 7, 0),
                "Temporary authentication failure",
            )),
        }
        if self.closing {
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
                Phase::Spooling(_) | Phase::TlsPending | Phase::AuthPending | Phase::Closed => {
                    break
                }
            };
        }
        self.flush_body();
        self.deadline = now
            + match self.phase {
                Phase::Data(_) | Phase::Bdat(_) => self.cfg.timeouts.data_block,
                _ => self.cfg.timeouts.command,
            };
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
                let text = format!("Ok: queued as {queue_id}");
                self.reply(Reply::new(250, Status(2, 0, 0), text));
            }
            // RFC 3463 §3.4: 4.3.0, "other or undefined mail system status".
            Err(SpoolFault) => self.reply(Reply::new(
                451,
                Status(4, 3, 0),
                "Temporary failure storing the message; try again later",
            )),
        }
        if self.closing {
            self.close_shutdown();
        }
    }

    /// Ends the session with 421 if its deadline has passed; earlier calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            let text = format!("{} Timeout waiting for client input", self.cfg.hostname);
            self.reply(Reply::new(421, Status(4, 4, 2), text));
            self.close(CloseReason::Timeout);
        }
    }

    /// The server is stopping: an idle session gets 421 now; one with a message in flight
    /// finishes it first.
    pub fn handle_shutdown(&mut self) {
        match self.phase {
            Phase::Command => self.close_shutdown(),
            Phase::Closed => {}
            _ => self.closing = true,
        }
    }

    /// Appends queued replies to `out`; returns whether there were any.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.replies.is_empty() {
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

    /// When [`Connection::handle_timeout`] should next be called ([RFC 5321 §4.5.3.2]);
    /// `None` while the server itself is busy (spooling) or the session is over.
    ///
    /// [RFC 5321 §4.5.3.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Spooling(_) | Phase::TlsPending | Phase::AuthPending | Phase::Closed => None,
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

    fn close_shutdown(&mut self) {
        let text = format!("{} Service shutting down", self.cfg.hostname);
        // RFC 3463 §3.4: 4.3.2, "system not accepting network messages".
        self.reply(Reply::new(421, Status(4, 3, 2), text));
        self.close(CloseReason::Shutdown);
    }

    /// Reads one command line (or part of one) from `input`; returns octets consumed.
    /// The longest line allowed now: [`MAX_AUTH_LINE`] for AUTH and its responses, else
    /// [`MAX_COMMAND_LINE`]. `start` is the beginning of the line.
    fn line_limit(&self, start: &[u8]) -> usize {
        let is_auth = start
            .get(..5)
            .is_some_and(|verb| verb.eq_ignore_ascii_case(b"AUTH "));
        if is_auth || matches!(self.phase, Phase::AuthResponse(_)) {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        }
    }

    fn read_command(&mut self, input: &[u8]) -> usize {
        let start = if self.line.is_empty() {
            input
        } else {
            &self.line
        };
        let limit = self.line_limit(start);
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
                if matches!(self.phase, Phase::AuthResponse(_)) {
                    self.phase = Phase::Command;
                }
                self.bad_command(CommandError::BareNewline);
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
            let text = format!("{} Too many errors; closing", self.cfg.hostname);
            self.reply(Reply::new(421, Status(4, 7, 0), text));
            self.close(CloseReason::TooManyErrors);
        } else {
            self.reply(reply);
        }
    }

    fn execute(&mut self, line: &[u8]) {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(err) => return self.bad_command(err),
        };
        if self.cfg.tls_required && !self.secure && !allowed_before_tls(&cmd) {
            return self.reply(Reply::new(
                530,
                Status(5, 7, 0),
                "Must issue a STARTTLS command first",
            ));
        }
        match cmd {
            Command::Ehlo(domain) => self.ehlo(Greeting::Ehlo, domain),
            Command::Helo(domain) => self.ehlo(Greeting::Helo, domain),
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
                let text = format!("{} Bye", self.cfg.hostname);
                self.reply(Reply::new(221, Status(2, 0, 0), text));
                self.close(CloseReason::Quit);
            }
            // RFC 5321 §3.5.3: 252 when we will not confirm, but would accept.
            Command::Vrfy => self.reply(Reply::new(
                252,
                Status(2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.reply(Reply::new(502, Status(5, 5, 1), "EXPN not available")),
            Command::Help => self.reply(Reply::new(
                214,
                Status(2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            )),
            Command::StartTls { has_args } => self.starttls(has_args),
            Command::Auth(arg) => self.auth(arg),
        }
    }

    /// `AUTH` ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    fn auth(&mut self, arg: &str) {
        if !self.cfg.auth_offered {
            return self.bad_command_reply(Reply::new(502, Status(5, 5, 1), "AUTH not available"));
        }
        if !self.secure {
            // RFC 4954 §6: 538 when the mechanism needs an encrypted session.
            return self.reply(Reply::new(
                538,
                Status(5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.greeting.is_none() {
            return self.bad_command_reply(Reply::bad_sequence("Send EHLO first"));
        }
        if matches!(self.identity, Identity::User { .. }) {
            return self.bad_command_reply(Reply::bad_sequence("Already authenticated"));
        }
        if self.txn.is_some() {
            return self.bad_command_reply(Reply::bad_sequence(
                "AUTH not allowed during a mail transaction",
            ));
        }
        let (exchange, step) = SaslExchange::start(arg);
        if let Some(exchange) = exchange {
            self.phase = Phase::AuthResponse(exchange);
        }
        self.sasl_step(step);
    }

    fn auth_response(&mut self, line: &[u8]) {
        let Phase::AuthResponse(exchange) = &mut self.phase else {
            return;
        };
        let step = exchange.respond(line);
        self.sasl_step(step);
    }

    fn sasl_step(&mut self, step: SaslStep) {
        match step {
            SaslStep::Challenge(reply) => self.reply(reply),
            SaslStep::Done(credentials) => {
                self.phase = Phase::AuthPending;
                self.events.push_back(Event::Authenticate(credentials));
            }
            SaslStep::Fail(reply) => {
                self.phase = Phase::Command;
                self.reply(reply);
            }
        }
    }

    /// `STARTTLS` ([RFC 3207 §4]).
    ///
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    fn starttls(&mut self, has_args: bool) {
        if has_args {
            return self.bad_command_reply(Reply::syntax("STARTTLS"));
        }
        if self.secure {
            return self.bad_command_reply(Reply::bad_sequence("TLS already active"));
        }
        if !self.cfg.tls_offered {
            return self.bad_command_reply(Reply::new(
                502,
                Status(5, 5, 1),
                "STARTTLS not available",
            ));
        }
        self.abort_content();
        self.txn = None;
        self.reply(Reply::new(220, Status(2, 0, 0), "Ready to start TLS"));
        self.phase = Phase::TlsPending;
        self.events.push_back(Event::StartTls);
    }

    /// `EHLO`/`HELO` ([RFC 5321 §4.1.1.1]); also resets any transaction.
    ///
    /// [RFC 5321 §4.1.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1
    fn ehlo(&mut self, greeting: Greeting, domain: &str) {
        self.abort_content();
        self.txn = None;
        self.greeting = Some((greeting, domain.to_owned()));
        let first = format!("{} Hello {}", self.cfg.hostname, domain);
        let lines = match greeting {
            Greeting::Helo => vec![first.into()],
            Greeting::Ehlo => {
                let mut lines = vec![
                    first.into(),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.cfg.max_message_size).into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "CHUNKING".into(),
                ];
                // RFC 3207 §4.2: not offered again once TLS is up.
                if self.cfg.tls_offered && !self.secure {
                    lines.push("STARTTLS".into());
                }
                // Passwords travel only inside TLS.
                if self.cfg.auth_offered
                    && self.secure
                    && !matches!(self.identity, Identity::User { .. })
                {
                    lines.push(format!("AUTH {MECHANISMS}").into());
                }
                lines
            }
        };
        self.reply(Reply::bare(250, lines));
    }

    fn mail(&mut self, arg: &str) {
        let Some((greeting, _)) = &self.greeting else {
            return self.bad_command_reply(Reply::bad_sequence("Send HELO/EHLO first"));
        };
        let esmtp = *greeting == Greeting::Ehlo;
        if self.txn.is_some() {
            return self.bad_command_reply(Reply::bad_sequence("Nested MAIL command"));
        }
        if self.cfg.role == Role::Submission && self.identity == Identity::Anonymous {
            self.events
                .push_back(Event::Rejected(Rejection::NotAuthenticated));
            return self.reply(Reply::new(530, Status(5, 7, 0), "Authentication required"));
        }
        match envelope::mail(arg, esmtp, &self.cfg) {
            Ok(mail) if self.cfg.role == Role::Submission => {
                if let Err(reply) = self.check_sender(&mail) {
                    self.events
                        .push_back(Event::Rejected(Rejection::SenderNotOwned));
                    return self.reply(reply);
                }
                self.open_transaction(mail);
            }
            Ok(mail) => self.open_transaction(mail),
            Err((reply, rejection)) => self.refuse(reply, rejection),
        }
    }

    /// Submission's sender rule: no bounces, and only addresses the user owns.
    fn check_sender(&self, mail: &MailFrom) -> Result<(), Reply> {
        let Some(path) = &mail.path else {
            return Err(Reply::new(
                553,
                Status(5, 7, 1),
                "Null sender not allowed on submission",
            ));
        };
        match &self.identity {
            Identity::User { login, senders } => {
                let address = format!(
                    "{}@{}",
                    path.local_unquoted().to_ascii_lowercase(),
                    path.domain
                );
                if senders.contains(&address) {
                    Ok(())
                } else {
                    Err(Reply::new(
                        553,
                        Status(5, 7, 1),
                        format!("Sender address not owned by user {login}"),
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    fn open_transaction(&mut self, mail: MailFrom) {
        self.txn = Some(Transaction {
            id: TxnId(self.next_txn),
            mail,
            rcpts: Vec::new(),
            started: false,
            size: 0,
        });
        self.next_txn += 1;
        self.reply(Reply::new(250, Status(2, 1, 0), "Sender ok"));
    }

    fn rcpt(&mut self, arg: &str) {
        let Some(txn) = &self.txn else {
            return self.bad_command_reply(Reply::bad_sequence("Need MAIL command first"));
        };
        if txn.started {
            return self.bad_command_reply(Reply::bad_sequence("RCPT not allowed during BDAT"));
        }
        // Only a submission session that passed the MAIL checks has an identity here: it may
        // address any domain.
        let may_relay = self.cfg.role == Role::Submission && self.identity != Identity::Anonymous;
        match envelope::rcpt(arg, &txn.mail, &self.cfg, may_relay) {
            Ok(_) if txn.rcpts.len() >= self.cfg.max_recipients => self.refuse(
                // RFC 5321 §4.5.3.1.10: 452 for too many recipients.
                Reply::new(452, Status(4, 5, 3), "Too many recipients"),
                Some(Rejection::TooManyRecipients),
            ),
            Ok(path) => {
                if let Some(txn) = &mut self.txn {
                    txn.rcpts.push(path);
                }
                self.reply(Reply::new(250, Status(2, 1, 5), "Recipient ok"));
            }
            Err((reply, rejection)) => self.refuse(reply, rejection),
        }
    }

    fn refuse(&mut self, reply: Reply, rejection: Option<Rejection>) {
        if let Some(r) = rejection {
            self.events.push_back(Event::Rejected(r));
            self.reply(reply);
        } else {
            self.bad_command_reply(reply);
        }
    }

    /// Whether a transaction may take content now; else the reply refusing it.
    fn content_ready(&self) -> Result<(), Reply> {
        match &self.txn {
            None => Err(Reply::bad_sequence("Need MAIL command first")),
            // RFC 2920 §3.1: DATA with no valid recipients gets 554.
            Some(t) if t.rcpts.is_empty() => {
                Err(Reply::new(554, Status(5, 5, 1), "No valid recipients"))
            }
            Some(_) => Ok(()),
        }
    }

    fn data(&mut self) {
        if let Err(reply) = self.content_ready() {
            return self.bad_command_reply(reply);
        }
        if self.txn.as_ref().is_some_and(|t| t.started) {
            return self.bad_command_reply(Reply::bad_sequence("DATA not allowed after BDAT"));
        }
        self.start_content();
        self.phase = Phase::Data(DataReceiver::new(self.cfg.max_message_size));
        self.reply(Reply::bare(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let refused = match self.content_ready() {
            Err(reply) => Some(reply),
            Ok(()) => {
                if !self.txn.as_ref().is_some_and(|t| t.started) {
                    self.start_content();
                }
                None
            }
        };
        self.phase = Phase::Bdat(BdatChunk {
            remaining: size,
            size,
            last,
            refused,
        });
        if size == 0 {
            self.end_of_chunk();
        }
    }

    fn start_content(&mut self) {
        let Some(txn) = &mut self.txn else { return };
        txn.started = true;
        let (greeting, helo) = self
            .greeting
            .clone()
            .unwrap_or((Greeting::Helo, String::new()));
        let envelope = Envelope {
            helo,
            greeting,
            mail_from: txn.mail.path.clone(),
            rcpt_to: txn.rcpts.clone(),
            body: txn.mail.body,
            smtputf8: txn.mail.smtputf8,
            login: match &self.identity {
                Identity::User { login, .. } => Some(login.clone()),
                _ => None,
            },
        };
        self.events.push_back(Event::MessageStart {
            txn: txn.id,
            envelope,
        });
    }

    fn read_bdat(&mut self, input: &[u8]) -> usize {
        let Phase::Bdat(chunk) = &mut self.phase else {
            return 0;
        };
        let take = usize::try_from(chunk.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        chunk.remaining -= take as u64;
        let keep = chunk.refused.is_none();
        let done = chunk.remaining == 0;
        if keep {
            if let Some(txn) = &mut self.txn {
                txn.size = txn.size.saturating_add(take as u64);
                if txn.size <= self.cfg.max_message_size {
                    self.body
                        .extend_from_slice(input.get(..take).unwrap_or_default());
                    if self.body.len() >= MAX_BODY_CHUNK {
                        self.flush_body();
                    }
                }
            }
        }
        if done {
            self.end_of_chunk();
        }
        take
    }

    /// All octets of the current `BDAT` chunk are in.
    fn end_of_chunk(&mut self) {
        let Phase::Bdat(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if let Some(reply) = chunk.refused {
            return self.bad_command_reply(reply);
        }
        let too_large = self
            .txn
            .as_ref()
            .is_some_and(|t| t.size > self.cfg.max_message_size);
        if too_large {
            self.reply(envelope::too_large());
            self.abort_message(Rejection::MessageTooLarge);
        } else if chunk.last {
            self.flush_body();
            self.await_spool();
        } else {
            let text = format!("{} octets received", chunk.size);
            self.reply(Reply::new(250, Status(2, 0, 0), text));
        }
    }

    /// The `DATA` terminator arrived.
    fn end_of_data(&mut self) {
        let Phase::Data(rx) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        match rx.fault() {
            None => {
                self.flush_body();
                self.await_spool();
            }
            Some(fault) => {
                let (reply, reason) = match fault {
                    DataFault::TooLarge => (envelope::too_large(), Rejection::MessageTooLarge),
                    DataFault::BareNewline => (
                        Reply::new(
                            550,
                            Status(5, 6, 0),
                            "Message refused: bare CR or LF; lines end in CRLF (RFC 5321 2.3.8)",
                        ),
                        Rejection::BareNewline,
                    ),
                    DataFault::LineTooLong => (
                        Reply::new(
                            550,
                            Status(5, 6, 0),
                            "Message refused: line over 1000 octets (RFC 5321 4.5.3.1.6)",
                        ),
                        Rejection::LineTooLong,
                    ),
                };
                self.reply(reply);
                self.abort_message(reason);
            }
        }
    }

    fn await_spool(&mut self) {
        if let Some(txn) = &self.txn {
            self.events.push_back(Event::MessageEnd { txn: txn.id });
            self.phase = Phase::Spooling(txn.id);
        }
    }

    /// Drops the message in progress after its refusal reply; the transaction ends.
    fn abort_message(&mut self, reason: Rejection) {
        self.body.clear();
        if let Some(txn) = self.txn.take() {
            self.events.push_back(Event::MessageAbort {
                txn: txn.id,
                reason: Some(reason),
            });
        }
        if self.closing {
            self.close_shutdown();
        }
    }

    /// Tells the driver to drop content it was given for a transaction now abandoned.
    fn abort_content(&mut self) {
        if let Some(txn) = &self.txn {
            if txn.started && !matches!(self.phase, Phase::Spooling(_)) {
                self.body.clear();
                self.events.push_back(Event::MessageAbort {
                    txn: txn.id,
                    reason: None,
                });
            }
        }
    }

    fn flush_body(&mut self) {
        if self.body.is_empty() {
            return;
        }
        if let Some(txn) = &self.txn {
            let data = std::mem::take(&mut self.body);
            self.events
                .push_back(Event::MessageData { txn: txn.id, data });
        } else {
            self.body.clear();
        }
    }
}

/// Commands allowed in the clear where TLS is required ([RFC 3207 §4]).
///
/// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
fn allowed_before_tls(cmd: &Command<'_>) -> bool {
    matches!(
        cmd,
        Command::Ehlo(_)
            | Command::Helo(_)
            | Command::StartTls { .. }
            | Command::Noop
            | Command::Rset
            | Command::Quit
    )
}
