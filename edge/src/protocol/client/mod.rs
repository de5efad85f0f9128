//! The client side of SMTP ([RFC 5321]) and LMTP ([RFC 2033]) as a sans-IO state machine:
//! reply bytes in, command bytes out, an outcome per recipient.
//!
//! ```text
//!   socket ──read──► handle_input(now, bytes)         ──► poll_event(): Ready · StartTls ·
//!   socket ◄─write── poll_transmit(&mut out)          ◄──   SendBody · Done(report) · Closed
//!                    send_message · send_body · end_body · quit · handle_tls_established
//! ```
//!
//! General SMTP client libraries report one result per message; a mail relay needs one per
//! recipient (a 550 for one address must bounce that address only, and LMTP answers each
//! recipient separately after the content, [RFC 2033 §4.2]). Every message handed to
//! [`Client::send_message`] gets exactly one [`Event::Done`] with an [`Outcome`] per recipient,
//! whatever happens to the connection: a lost connection, a timeout or a server that breaks the
//! protocol defers what is not yet answered, never loses it.
//!
//! Method kinds, in the order a driver uses them:
//! - input: [`Client::handle_input`] (it returns the octets consumed), [`Client::handle_timeout`],
//!   [`Client::handle_tls_established`], [`Client::handle_close`];
//! - requests: [`Client::send_message`] (any time, even before the greeting: messages wait
//!   their turn), [`Client::send_body`] and [`Client::end_body`] after [`Event::SendBody`],
//!   [`Client::quit`];
//! - output, polled after every input or request: [`Client::poll_event`] until `None`, then
//!   [`Client::poll_transmit`] (commands, in order), then [`Client::poll_timeout`] for the next
//!   deadline ([RFC 5321 §4.5.3.2]);
//! - getters: [`Client::capabilities`], [`Client::is_secure`], [`Client::is_authenticated`],
//!   [`Client::is_closed`].
//!
//! The session: greeting; `EHLO` (`HELO` if EHLO is refused with 5xx; `LHLO` for LMTP);
//! `STARTTLS` by [`TlsPolicy`], then `EHLO` again ([RFC 3207 §4.2]); `AUTH` when credentials are
//! set ([RFC 4954]); then transactions. With PIPELINING ([RFC 2920]) a transaction's `MAIL`,
//! `RCPT`s and `DATA` go out as one group and the replies are read in order; without it, one
//! command per reply. A completed transaction is followed directly by the next `MAIL`; one that
//! ended before its content is reset with `RSET` first. The driver does the TLS: the engine
//! only says when ([`Event::StartTls`]), and drops whatever the server sent in the clear after
//! its 220, since an attacker on the path could have put it there.
//!
//! [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321
//! [RFC 2033]: https://www.rfc-editor.org/rfc/rfc2033
//! [RFC 2033 §4.2]: https://www.rfc-editor.org/rfc/rfc2033#section-4.2
//! [RFC 5321 §4.5.3.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2
//! [RFC 3207 §4.2]: https://www.rfc-editor.org/rfc/rfc3207#section-4.2
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
//! [RFC 2920]: https://www.rfc-editor.org/rfc/rfc2920

mod capabilities;
mod config;
mod outcome;
mod reply;
mod sasl;
mod stuffing;
mod transaction;

#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

pub use capabilities::Capabilities;
pub use config::{ClientConfig, ClientCredentials, ClientTimeouts, Dialect, TlsPolicy};
pub use outcome::{Cause, Event, Message, MessageId, Outcome, Report, SessionEnd, Stage};
pub use reply::{EnhancedStatus, ProtocolError, ServerReply, MAX_REPLY_LINE, MAX_REPLY_LINES};

use reply::ReplyReader;
use sasl::Mechanism;
use transaction::Transaction;

/// A reply the engine waits for, in the order the commands went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    Lhlo,
    StartTls,
    /// `AUTH PLAIN` with its initial response: 235.
    AuthPlain,
    /// `AUTH LOGIN`: 334 for the user name (0), 334 for the password (1), then 235 (2).
    AuthLogin(u8),
    Rset,
    Mail,
    /// `RCPT` for the recipient at this index of the message.
    Rcpt(usize),
    Data,
    /// SMTP: the one verdict after the final dot.
    EndOfData,
    /// LMTP: the verdict for the recipient at this index.
    LmtpRcpt(usize),
    /// The reply to a lone dot sent only to end a DATA that had nobody to deliver to.
    DiscardedDot,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Ehlo | Expect::Helo | Expect::Lhlo => Stage::Hello,
            Expect::StartTls => Stage::StartTls,
            Expect::AuthPlain | Expect::AuthLogin(_) => Stage::Auth,
            Expect::Rset => Stage::Rset,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::EndOfData | Expect::LmtpRcpt(_) | Expect::DiscardedDot => Stage::EndOfData,
            Expect::Quit => Stage::Quit,
        }
    }

    fn timeout(self, t: &ClientTimeouts) -> Duration {
        match self.stage() {
            Stage::Greeting => t.greeting,
            Stage::Mail => t.mail,
            Stage::Rcpt => t.rcpt,
            Stage::Data => t.data_init,
            Stage::Body => t.data_block,
            Stage::EndOfData => t.data_term,
            _ => t.command,
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Greeting, hello, STARTTLS and AUTH, until the session can carry mail.
    Opening,
    /// STARTTLS got its 220; waiting for [`Client::handle_tls_established`].
    TlsPending,
    /// Carrying mail: a transaction in progress, or idle at a message boundary.
    Open,
    /// QUIT sent; the session ends this way when its 221 (or the close) arrives.
    Quitting(SessionEnd),
    /// Over; nothing more is read or sent.
    Closed,
}

/// One client session, SMTP or LMTP.
pub struct Client {
    cfg: ClientConfig,
    phase: Phase,
    reader: ReplyReader,
    /// Replies owed by the server, oldest first.
    expect: VecDeque<Expect>,
    /// Commands not yet sent: without pipelining, one goes out per reply.
    unsent: VecDeque<(Vec<u8>, Expect)>,
    /// Bytes to send, appended to the caller's buffer by [`Client::poll_transmit`].
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// When the oldest owed reply started to be awaited: the last reply, or the command that
    /// made the queue non-empty.
    waiting_since: Instant,
    /// The content deadline while the caller sends it (RFC 5321 §4.5.3.2.5).
    body_deadline: Option<Instant>,
    caps: Option<Capabilities>,
    secure: bool,
    authenticated: bool,
    /// The server refused STARTTLS (opportunistic TLS goes on in the clear).
    tls_refused: bool,
    queue: VecDeque<(MessageId, Message)>,
    next_id: u64,
    txn: Option<Transaction>,
    /// The last transaction ended before its content: `RSET` before the next `MAIL`.
    needs_rset: bool,
    quit_requested: bool,
    /// [`Event::Ready`] was given for the current idle spell.
    ready_sent: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the output buffer: it holds message content and AUTH lines.
        f.debug_struct("Client")
            .field("phase", &self.phase)
            .field("expect", &self.expect)
            .field("secure", &self.secure)
            .field("authenticated", &self.authenticated)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A session on a new connection; it waits for the server's greeting.
    pub fn new(cfg: ClientConfig, now: Instant) -> Self {
        Client {
            cfg,
            phase: Phase::Opening,
            reader: ReplyReader::default(),
            expect: VecDeque::from([Expect::Greeting]),
            unsent: VecDeque::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            waiting_since: now,
            body_deadline: None,
            caps: None,
            secure: false,
            authenticated: false,
            tls_refused: false,
            queue: VecDeque::new(),
            next_id: 0,
            txn: None,
            needs_rset: false,
            quit_requested: false,
            ready_sent: false,
        }
    }

    /// A session on a connection that is encrypted from the start (implicit TLS, [RFC 8314
    /// §3.3]): no STARTTLS, and AUTH is allowed.
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    pub fn new_secure(cfg: ClientConfig, now: Instant) -> Self {
        let mut client = Client::new(cfg, now);
        client.secure = true;
        client
    }

    /// Hands over a message to send on this session. It goes out when the session is ready and
    /// the messages before it are done; its [`Event::Done`] always comes, at the latest when the
    /// session ends. Handed over after [`Client::quit`] or the end of the session, it is
    /// deferred at once (`ConnectionLost(Stage::Quit)`).
    pub fn send_message(&mut self, now: Instant, message: Message) -> MessageId {
        let id = MessageId(self.next_id);
        self.next_id += 1;
        if self.quit_requested || matches!(self.phase, Phase::Quitting(_) | Phase::Closed) {
            let cause = Cause::ConnectionLost(Stage::Quit);
            let outcomes = vec![Outcome::Deferred(cause); message.to.len()];
            self.events.push_back(Event::Done(Report { id, outcomes }));
            return id;
        }
        self.queue.push_back((id, message));
        self.advance(now);
        id
    }

    /// Appends a piece of the content of the message [`Event::SendBody`] named, as stored
    /// (not dot-stuffed: the engine stuffs it, [RFC 5321 §4.5.2]). Ignored at any other time.
    ///
    /// [RFC 5321 §4.5.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2
    pub fn send_body(&mut self, now: Instant, content: &[u8]) {
        if let Some(txn) = self.txn.as_mut().filter(|t| t.is_sending_body()) {
            txn.stuff(content, &mut self.out);
            self.body_deadline = now.checked_add(self.cfg.timeouts.data_block);
        }
    }

    /// Ends the content with `CRLF . CRLF` and waits for the verdict. Ignored unless content
    /// is being sent.
    pub fn end_body(&mut self, now: Instant) {
        let Some(txn) = self.txn.as_mut().filter(|t| t.is_sending_body()) else {
            return;
        };
        let replies = txn.finish_body(self.cfg.dialect, &mut self.out);
        self.body_deadline = None;
        for expect in replies {
            self.push_expect(now, expect);
        }
    }

    /// Ends the session with `QUIT` once the messages handed over so far are done.
    pub fn quit(&mut self, now: Instant) {
        self.quit_requested = true;
        self.advance(now);
    }

    /// The TLS handshake that followed [`Event::StartTls`] succeeded: the session starts over
    /// with EHLO, forgetting what the server said in the clear ([RFC 3207 §4.2]). Ignored in any
    /// other state. A failed handshake is [`Client::handle_close`].
    ///
    /// [RFC 3207 §4.2]: https://www.rfc-editor.org/rfc/rfc3207#section-4.2
    pub fn handle_tls_established(&mut self, now: Instant) {
        if self.phase != Phase::TlsPending {
            return;
        }
        self.secure = true;
        self.caps = None;
        self.reader = ReplyReader::default();
        self.phase = Phase::Opening;
        self.send_hello(now);
    }

    /// Reads server replies from `input` and returns how many octets it consumed. It stops
    /// early only while the engine waits for the content ([`Event::SendBody`]): the caller keeps
    /// the rest and offers it again after [`Client::end_body`]. Bytes after the 220 to STARTTLS
    /// are consumed and dropped (they came in the clear), as is anything after the session ends.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) {
            let reading = matches!(
                self.phase,
                Phase::Opening | Phase::Open | Phase::Quitting(_)
            );
            if !reading {
                return input.len();
            }
            if self.txn.as_ref().is_some_and(Transaction::is_sending_body) {
                return used;
            }
            let (n, reply) = self.reader.read(rest);
            used += n;
            match reply {
                None => {}
                Some(Ok(reply)) => self.on_reply(now, reply),
                Some(Err(err)) => self.fail(Cause::Protocol(err), false),
            }
        }
        used
    }

    /// Ends the session if the deadline for the awaited reply (or for the next piece of
    /// content) has passed; every recipient not yet answered is deferred. Earlier calls do
    /// nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|deadline| now < deadline) {
            return;
        }
        if let Phase::Quitting(end) = &self.phase {
            let end = end.clone();
            self.close(end);
        } else {
            self.fail(Cause::Timeout(self.stage()), false);
        }
    }

    /// The connection closed or broke (including a failed TLS handshake): every recipient not
    /// yet answered is deferred. After QUIT this is the normal end.
    pub fn handle_close(&mut self) {
        match &self.phase {
            Phase::Closed => {}
            Phase::Quitting(end) => {
                let end = end.clone();
                self.close(end);
            }
            _ => self.fail(Cause::ConnectionLost(self.stage()), false),
        }
    }

    /// The next event to act on.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends the commands (and content) to send to `out`; returns whether there were any.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        out.append(&mut self.out);
        true
    }

    /// When [`Client::handle_timeout`] should next be called; `None` while the engine waits
    /// for the caller (a message, the TLS handshake) or the session is over.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Closed | Phase::TlsPending) {
            return None;
        }
        match self.expect.front() {
            // A timeout too large to add is no deadline at all.
            Some(expect) => self
                .waiting_since
                .checked_add(expect.timeout(&self.cfg.timeouts)),
            None => self.body_deadline,
        }
    }

    /// What the server offers, once its (last) EHLO/LHLO reply is in; empty after HELO.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// Whether TLS is in place (after STARTTLS, or from the start).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The command the session is waiting on, for causes and logs.
    fn stage(&self) -> Stage {
        if let Some(expect) = self.expect.front() {
            return expect.stage();
        }
        match (&self.phase, &self.txn) {
            (Phase::TlsPending, _) => Stage::StartTls,
            (_, Some(txn)) if txn.is_sending_body() => Stage::Body,
            _ => Stage::Mail,
        }
    }

    /// Queues a command whose reply comes back as `expect`.
    fn send(&mut self, now: Instant, line: Vec<u8>, expect: Expect) {
        self.unsent.push_back((line, expect));
        self.flush_commands(now);
    }

    /// Moves queued commands to the output: all of them with PIPELINING, else one when no
    /// reply is owed.
    fn flush_commands(&mut self, now: Instant) {
        let pipelining = self.cfg.pipelining && self.caps.as_ref().is_some_and(|c| c.pipelining);
        while let Some((line, expect)) = self.unsent.pop_front() {
            if !pipelining && !self.expect.is_empty() {
                self.unsent.push_front((line, expect));
                break;
            }
            self.out.extend_from_slice(&line);
            self.push_expect(now, expect);
        }
    }

    fn push_expect(&mut self, now: Instant, expect: Expect) {
        if self.expect.is_empty() {
            self.waiting_since = now;
        }
        self.expect.push_back(expect);
    }

    fn send_hello(&mut self, now: Instant) {
        let (verb, expect) = match self.cfg.dialect {
            Dialect::Smtp => ("EHLO", Expect::Ehlo),
            Dialect::Lmtp => ("LHLO", Expect::Lhlo),
        };
        let line = format!("{verb} {}\r\n", self.cfg.helo).into_bytes();
        self.send(now, line, expect);
    }

    /// One complete reply, matched with the command it answers.
    fn on_reply(&mut self, now: Instant, reply: ServerReply) {
        self.waiting_since = now;
        let Some(expect) = self.expect.pop_front() else {
            // Nothing asked: a 421 is the server giving up (RFC 5321 §3.8); anything else is
            // out of step.
            let cause = if reply.code == 421 {
                Cause::Reply {
                    stage: self.stage(),
                    reply,
                }
            } else {
                Cause::Protocol(ProtocolError::Unexpected { code: reply.code })
            };
            return self.fail(cause, false);
        };
        if let Phase::Quitting(end) = &self.phase {
            // Whatever the reply (221, or a late one to a command before QUIT), the server
            // closes after QUIT; the session ends when the QUIT reply is in.
            if expect == Expect::Quit {
                let end = end.clone();
                self.close(end);
            }
            return;
        }
        // A 421 to any command ends the session; the server closes the connection.
        if reply.code == 421 {
            let stage = expect.stage();
            return self.fail(Cause::Reply { stage, reply }, false);
        }
        match expect {
            Expect::Greeting => self.on_greeting(now, reply),
            Expect::Ehlo | Expect::Helo | Expect::Lhlo => self.on_hello(now, expect, reply),
            Expect::StartTls => self.on_starttls(now, reply),
            Expect::AuthPlain | Expect::AuthLogin(_) => self.on_auth(now, expect, reply),
            Expect::Quit => {}
            Expect::Rset
            | Expect::Mail
            | Expect::Rcpt(_)
            | Expect::Data
            | Expect::EndOfData
            | Expect::LmtpRcpt(_)
            | Expect::DiscardedDot => self.on_transaction_reply(now, expect, reply),
        }
        self.flush_commands(now);
    }

    fn on_greeting(&mut self, now: Instant, reply: ServerReply) {
        if reply.code == 220 {
            self.send_hello(now);
        } else if reply.code >= 400 {
            // A server that will not talk (554, RFC 5321 §3.1) still gets a QUIT.
            self.fail(
                Cause::Reply {
                    stage: Stage::Greeting,
                    reply,
                },
                true,
            );
        } else {
            self.fail(unexpected(&reply), false);
        }
    }

    fn on_hello(&mut self, now: Instant, expect: Expect, reply: ServerReply) {
        if reply.is_success() {
            self.caps = Some(match expect {
                Expect::Helo => Capabilities::default(),
                _ => Capabilities::from_reply(&reply),
            });
            return self.after_hello(now);
        }
        if reply.code < 400 {
            return self.fail(unexpected(&reply), false);
        }
        if expect == Expect::Ehlo && reply.is_permanent() {
            // An SMTP server without extensions (RFC 5321 §3.2).
            let line = format!("HELO {}\r\n", self.cfg.helo).into_bytes();
            return self.send(now, line, Expect::Helo);
        }
        let stage = Stage::Hello;
        self.fail(Cause::Reply { stage, reply }, true);
    }

    /// After EHLO: STARTTLS, AUTH, or mail.
    fn after_hello(&mut self, now: Instant) {
        let caps = self.caps.clone().unwrap_or_default();
        if !self.secure && !self.tls_refused {
            match self.cfg.tls {
                TlsPolicy::Required | TlsPolicy::Opportunistic if caps.starttls => {
                    return self.send(now, b"STARTTLS\r\n".to_vec(), Expect::StartTls);
                }
                TlsPolicy::Required => return self.fail(Cause::TlsUnavailable, true),
                TlsPolicy::Opportunistic | TlsPolicy::None => {}
            }
        }
        if let Some(creds) = self
            .cfg
            .credentials
            .as_ref()
            .filter(|_| !self.authenticated)
        {
            let mechanism = Mechanism::choose(&caps.auth);
            let Some(mechanism) = mechanism.filter(|_| self.secure || creds.allow_plaintext) else {
                return self.fail(Cause::AuthUnavailable, true);
            };
            let line = sasl::command(mechanism, creds);
            let expect = match mechanism {
                Mechanism::Plain => Expect::AuthPlain,
                Mechanism::Login => Expect::AuthLogin(0),
            };
            return self.send(now, line, expect);
        }
        self.phase = Phase::Open;
        self.advance(now);
    }

    fn on_starttls(&mut self, now: Instant, reply: ServerReply) {
        if reply.code == 220 {
            self.phase = Phase::TlsPending;
            self.events.push_back(Event::StartTls);
            return;
        }
        if reply.code < 400 {
            return self.fail(unexpected(&reply), false);
        }
        if self.cfg.tls == TlsPolicy::Required {
            let stage = Stage::StartTls;
            return self.fail(Cause::Reply { stage, reply }, true);
        }
        self.tls_refused = true;
        self.after_hello(now);
    }

    fn on_auth(&mut self, now: Instant, expect: Expect, reply: ServerReply) {
        let Some(creds) = self.cfg.credentials.as_ref() else {
            return self.fail(unexpected(&reply), false);
        };
        match expect {
            Expect::AuthLogin(step @ (0 | 1)) if sasl::is_challenge(&reply) => {
                let line = sasl::login_response(step, creds);
                self.send(now, line, Expect::AuthLogin(step + 1));
            }
            // RFC 4954 says 235; any 2xx is taken as success, as Postfix's client does
            // (smtp-sink answers 250).
            _ if reply.is_success() => {
                self.authenticated = true;
                self.after_hello(now);
            }
            _ if reply.code >= 400 => {
                // Bad credentials are the operator's to fix; the mail waits (Postfix too).
                let stage = Stage::Auth;
                self.fail(Cause::Reply { stage, reply }, true);
            }
            _ => self.fail(unexpected(&reply), false),
        }
    }

    /// At a message boundary: the next message, QUIT, or [`Event::Ready`].
    fn advance(&mut self, now: Instant) {
        if self.phase != Phase::Open || self.txn.is_some() {
            return;
        }
        let caps = self.caps.clone().unwrap_or_default();
        while let Some((id, message)) = self.queue.pop_front() {
            match Transaction::start(id, message, &caps) {
                Ok((txn, commands)) => {
                    self.ready_sent = false;
                    self.txn = Some(txn);
                    if std::mem::take(&mut self.needs_rset) {
                        self.send(now, b"RSET\r\n".to_vec(), Expect::Rset);
                    }
                    for (line, expect) in commands {
                        self.send(now, line, expect);
                    }
                    return;
                }
                Err(report) => self.events.push_back(Event::Done(report)),
            }
        }
        if self.quit_requested {
            self.phase = Phase::Quitting(SessionEnd::Quit);
            self.out.extend_from_slice(b"QUIT\r\n");
            self.push_expect(now, Expect::Quit);
        } else if !self.ready_sent {
            self.ready_sent = true;
            self.events.push_back(Event::Ready);
        }
    }

    /// The session cannot go on: the open transaction and every waiting message are reported
    /// with `cause` for what is unanswered. `polite` sends QUIT first (the dialogue is still in
    /// step); otherwise the session closes at once.
    fn fail(&mut self, cause: Cause, polite: bool) {
        if let Some(txn) = self.txn.take() {
            self.events.push_back(Event::Done(txn.finish(&cause)));
        }
        while let Some((id, message)) = self.queue.pop_front() {
            let outcomes = vec![Outcome::Deferred(cause.clone()); message.to.len()];
            self.events.push_back(Event::Done(Report { id, outcomes }));
        }
        self.unsent.clear();
        self.body_deadline = None;
        let end = SessionEnd::Failed(cause);
        if polite {
            self.expect.clear();
            self.out.extend_from_slice(b"QUIT\r\n");
            self.expect.push_back(Expect::Quit);
            self.phase = Phase::Quitting(end);
        } else {
            self.close(end);
        }
    }

    fn close(&mut self, end: SessionEnd) {
        self.phase = Phase::Closed;
        self.expect.clear();
        self.unsent.clear();
        self.events.push_back(Event::Closed(end));
    }
}

/// A reply of a kind the command does not allow (a 3xx to MAIL, a 2xx to DATA).
fn unexpected(reply: &ServerReply) -> Cause {
    Cause::Protocol(ProtocolError::Unexpected { code: reply.code })
}
