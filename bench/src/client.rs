//! The client side of one SMTP session ([RFC 5321]), sans-IO: reply bytes in, command bytes out.
//!
//! ```text
//!   socket ──read──► handle_input(now, bytes) ──► events (Ready, Refused, Delivered, Finished)
//!   socket ◄─write── poll_transmit(&mut out)  ◄── start_message(body) / quit()
//! ```
//!
//! The engine never touches a socket or a clock: the driver passes `now` in, so latencies are
//! measured against the driver's clock and the engine is testable in memory. Every reply code is
//! checked against what the command in flight expects (220, 250, 354, 221); anything else is
//! reported as [`Event::Refused`] with the code, and a 421 or a malformed reply ends the session.
//!
//! With PIPELINING ([RFC 2920]) the envelope (`MAIL`, every `RCPT`, `DATA`) goes out as one group,
//! and the next message's envelope (or `QUIT`) follows the end of the previous body at once: the
//! message content may be the first "command" of a group (RFC 2920 §3.1). Without it, the engine
//! sends one command and waits for its reply, as `smtp-source` does.
//!
//! With [`Script::starttls`], the EHLO reply is followed by `STARTTLS` ([RFC 3207]); its 220 is
//! [`Event::StartTls`]: the driver starts TLS and calls [`Client::tls_started`], which drops any
//! plaintext that followed the 220 (RFC 3207 §4.2) and sends `EHLO` again, now inside TLS. With
//! [`Script::auth`], `AUTH PLAIN` (with an initial response) or `AUTH LOGIN` ([RFC 4954]) follows
//! the (last) EHLO, before the first message; its 235 is [`Event::Authenticated`].
//!
//! [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321
//! [RFC 2920]: https://www.rfc-editor.org/rfc/rfc2920
//! [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512 octets; we allow slack).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines in one multi-line reply, so a hostile server cannot grow the buffer forever.
pub const MAX_REPLY_LINES: usize = 100;

/// Which command a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The 220 greeting.
    Greeting,
    /// `EHLO`.
    Ehlo,
    /// `STARTTLS` (expects 220).
    StartTls,
    /// `AUTH` and its responses (expects 334 challenges, then 235).
    Auth,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA` (expects 354).
    Data,
    /// The end of the message content (the final reply).
    EndOfData,
    /// `RSET` after a refused transaction.
    Rset,
    /// `QUIT`.
    Quit,
}

impl Stage {
    /// The command's name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "end-of-data",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        }
    }

    fn accepts(self, code: u16) -> bool {
        match self {
            Stage::Greeting | Stage::StartTls => code == 220,
            Stage::Auth => code == 235,
            Stage::Data => code == 354,
            Stage::Quit => code == 221,
            _ => (200..300).contains(&code),
        }
    }
}

/// What the driver must act on; polled with [`Client::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// At a message boundary: call [`Client::start_message`] or [`Client::quit`].
    Ready,
    /// `STARTTLS` got its 220: start TLS on the connection, then call [`Client::tls_started`].
    StartTls,
    /// `AUTH` succeeded (235).
    Authenticated {
        /// From the `AUTH` command leaving the engine to the 235.
        latency: Duration,
    },
    /// A reply other than the expected success.
    Refused {
        /// The command it answered.
        stage: Stage,
        /// Its code.
        code: u16,
    },
    /// The final reply to a message's content arrived.
    Delivered {
        /// A 2xx final reply.
        accepted: bool,
        /// From the end of the content leaving the engine to the reply.
        latency: Duration,
        /// Content octets of the message (after unstuffing).
        size: usize,
    },
    /// The session is over; close the socket.
    Finished {
        /// The `QUIT` got its 221; otherwise the server ended it (421) or broke the protocol.
        clean: bool,
    },
}

/// The fixed parts of a session.
#[derive(Debug, Clone)]
pub struct Script {
    /// The `EHLO` argument.
    pub helo: String,
    /// The reverse-path.
    pub from: String,
    /// The forward-paths, one `RCPT` each.
    pub rcpts: Vec<String>,
    /// Pipeline when the server offers PIPELINING.
    pub pipelining: bool,
    /// Send `STARTTLS` after the first EHLO.
    pub starttls: bool,
    /// Authenticate after the (last) EHLO.
    pub auth: Option<Auth>,
}

/// A SASL mechanism ([RFC 4954]).
///
/// [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `AUTH PLAIN` with an initial response ([RFC 4616](https://www.rfc-editor.org/rfc/rfc4616)).
    Plain,
    /// `AUTH LOGIN`: user name and password, each in answer to a 334.
    Login,
}

/// Credentials for `AUTH`.
#[derive(Clone)]
pub struct Auth {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The authentication identity.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Auth {
    /// The `AUTH` command, and the lines that answer each 334 in turn.
    fn dialogue(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        match self.mechanism {
            Mechanism::Plain => {
                let ir = base64(format!("\0{}\0{}", self.user, self.password).as_bytes());
                (format!("AUTH PLAIN {ir}\r\n").into_bytes(), Vec::new())
            }
            Mechanism::Login => (
                b"AUTH LOGIN\r\n".to_vec(),
                vec![
                    format!("{}\r\n", base64(self.user.as_bytes())).into_bytes(),
                    format!("{}\r\n", base64(self.password.as_bytes())).into_bytes(),
                ],
            ),
        }
    }
}

/// Standard base64 with padding ([RFC 4648 §4](https://www.rfc-editor.org/rfc/rfc4648#section-4)).
pub fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// A message ready for the wire: content already dot-stuffed and ended by `CRLF . CRLF`.
#[derive(Debug, Clone, Copy)]
pub struct Message<'m> {
    /// The wire form, terminator included.
    pub wire: &'m [u8],
    /// Content octets after unstuffing (what the server stores).
    pub size: usize,
}

/// One SMTP client session.
#[derive(Debug)]
pub struct Client<'m> {
    /// Commands rendered once per session: `MAIL FROM:<..>\r\n`, the `RCPT TO` lines one by
    /// one and all together (for a pipelined group).
    mail_cmd: Vec<u8>,
    rcpt_each: Vec<Vec<u8>>,
    rcpt_cmds: Vec<u8>,
    ehlo_cmd: Vec<u8>,
    rcpt_count: usize,
    /// `STARTTLS` is still to be sent (after the first EHLO).
    starttls: bool,
    /// Between the 220 to STARTTLS and [`Client::tls_started`]: input is dropped.
    awaiting_tls: bool,
    /// The `AUTH` command (sent once) and the responses to its 334s, in order.
    auth_cmd: Option<Vec<u8>>,
    auth_responses: VecDeque<Vec<u8>>,
    auth_sent: Option<Instant>,
    want_pipelining: bool,
    /// The server offered PIPELINING.
    pipelining: bool,
    /// Replies owed by the server, oldest first.
    expect: VecDeque<Stage>,
    /// Bytes to send, appended to the caller's buffer by `poll_transmit`.
    out: Vec<u8>,
    /// Partial reply text carried across reads, bounded by `MAX_REPLY_LINE`.
    line: Vec<u8>,
    lines_in_reply: usize,
    ehlo_pipelining_seen: bool,
    /// The message whose 354 we wait for, when not pipelining its content yet.
    pending: Option<Message<'m>>,
    /// Messages whose content was sent, awaiting their final reply: (size, sent at).
    in_flight: VecDeque<(usize, Instant)>,
    /// The last transaction was refused before its content; RSET before the next MAIL.
    needs_rset: bool,
    /// Without pipelining: commands of the envelope still to send, one per reply.
    rcpts_left: usize,
    /// Messages whose final reply (or DATA refusal) arrived.
    answered: u64,
    quitting: bool,
    finished: bool,
    events: VecDeque<Event>,
}

impl<'m> Client<'m> {
    /// A session that waits for the greeting.
    pub fn new(script: &Script) -> Self {
        let rcpt_each: Vec<Vec<u8>> = script
            .rcpts
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n").into_bytes())
            .collect();
        let (auth_cmd, auth_responses) = match &script.auth {
            Some(a) => {
                let (cmd, responses) = a.dialogue();
                (Some(cmd), VecDeque::from(responses))
            }
            None => (None, VecDeque::new()),
        };
        Client {
            starttls: script.starttls,
            awaiting_tls: false,
            auth_cmd,
            auth_responses,
            auth_sent: None,
            rcpt_cmds: rcpt_each.concat(),
            rcpt_each,
            mail_cmd: format!("MAIL FROM:<{}>\r\n", script.from).into_bytes(),
            ehlo_cmd: format!("EHLO {}\r\n", script.helo).into_bytes(),
            rcpt_count: script.rcpts.len(),
            want_pipelining: script.pipelining,
            pipelining: false,
            expect: VecDeque::from([Stage::Greeting]),
            out: Vec::new(),
            line: Vec::new(),
            lines_in_reply: 0,
            ehlo_pipelining_seen: false,
            pending: None,
            in_flight: VecDeque::new(),
            needs_rset: false,
            rcpts_left: 0,
            answered: 0,
            quitting: false,
            finished: false,
            events: VecDeque::new(),
        }
    }

    /// Whether commands are being pipelined (requested and offered).
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// Messages answered: a final reply after the content, or a refusal of `DATA`.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Whether the session is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Appends pending command bytes to `out`; returns whether any were appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        out.append(&mut self.out);
        true
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sends `msg` as the next transaction. Call only after [`Event::Ready`].
    pub fn start_message(&mut self, msg: Message<'m>) {
        debug_assert!(!self.quitting && self.pending.is_none());
        self.pending = Some(msg);
        self.rcpts_left = self.rcpt_count;
        if self.needs_rset {
            self.needs_rset = false;
            self.out.extend_from_slice(b"RSET\r\n");
            self.expect.push_back(Stage::Rset);
            if !self.pipelining {
                // Lock-step: MAIL goes out when the RSET reply arrives.
                return;
            }
        }
        self.out.extend_from_slice(&self.mail_cmd);
        self.expect.push_back(Stage::Mail);
        if self.pipelining {
            self.out.extend_from_slice(&self.rcpt_cmds);
            self.expect
                .extend(std::iter::repeat_n(Stage::Rcpt, self.rcpt_count));
            self.out.extend_from_slice(b"DATA\r\n");
            self.expect.push_back(Stage::Data);
        }
    }

    /// Ends the session with `QUIT`. Call only after [`Event::Ready`].
    pub fn quit(&mut self) {
        if !self.quitting {
            self.quitting = true;
            self.out.extend_from_slice(b"QUIT\r\n");
            self.expect.push_back(Stage::Quit);
        }
    }

    /// TLS is up after [`Event::StartTls`] (or at least queued: the driver's TLS layer holds
    /// plaintext until its handshake completes). Sends `EHLO` again (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        if !self.awaiting_tls {
            return;
        }
        self.awaiting_tls = false;
        self.line.clear();
        self.lines_in_reply = 0;
        self.ehlo_pipelining_seen = false;
        self.out.extend_from_slice(&self.ehlo_cmd);
        self.expect.push_back(Stage::Ehlo);
    }

    /// The server closed the connection (EOF or error).
    pub fn handle_close(&mut self) {
        if !self.finished {
            self.finish(false);
        }
    }

    /// Consumes reply bytes; all of `input` is always consumed.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) {
        let mut rest = input;
        // After the 220 to STARTTLS, anything before the TLS handshake is dropped (RFC 3207
        // §4.2): a reply injected there must not be taken for one sent inside TLS.
        while !rest.is_empty() && !self.finished && !self.awaiting_tls {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len() + rest.len() > MAX_REPLY_LINE {
                    return self.protocol_error();
                }
                self.line.extend_from_slice(rest);
                return;
            };
            let (head, tail) = rest.split_at(nl + 1);
            rest = tail;
            if self.line.is_empty() {
                self.handle_line(now, head);
            } else {
                if self.line.len() + head.len() > MAX_REPLY_LINE {
                    return self.protocol_error();
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.handle_line(now, &line);
                line.clear();
                self.line = line;
            }
        }
    }

    fn handle_line(&mut self, now: Instant, line: &[u8]) {
        let (Some(&a), Some(&b), Some(&c)) = (line.first(), line.get(1), line.get(2)) else {
            return self.protocol_error();
        };
        let sep = line.get(3);
        if !(b'2'..=b'5').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
            return self.protocol_error();
        }
        let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
        self.lines_in_reply += 1;
        if self.expect.front() == Some(&Stage::Ehlo) {
            let kw = line.get(4..).unwrap_or_default();
            if kw.len() >= 10 && kw[..10].eq_ignore_ascii_case(b"PIPELINING") {
                self.ehlo_pipelining_seen = true;
            }
        }
        match sep {
            Some(b'-') => {
                if self.lines_in_reply > MAX_REPLY_LINES {
                    self.protocol_error();
                }
            }
            Some(b' ') | Some(b'\r') | Some(b'\n') => {
                self.lines_in_reply = 0;
                self.handle_reply(now, code);
            }
            _ => self.protocol_error(),
        }
    }

    fn handle_reply(&mut self, now: Instant, code: u16) {
        let Some(stage) = self.expect.pop_front() else {
            // A reply nobody asked for.
            return self.protocol_error();
        };
        if stage == Stage::Auth && code == 334 {
            // A challenge: answer it with the next response, or give up with `*`.
            let line = self.auth_responses.pop_front();
            self.out
                .extend_from_slice(line.as_deref().unwrap_or(b"*\r\n"));
            self.expect.push_back(Stage::Auth);
            return;
        }
        let ok = stage.accepts(code);
        if !ok {
            self.events.push_back(Event::Refused { stage, code });
        }
        if code == 421 {
            // Service closing: the server will drop the connection (RFC 5321 §3.8).
            return self.finish(false);
        }
        match stage {
            Stage::Greeting if ok => {
                self.out.extend_from_slice(&self.ehlo_cmd);
                self.expect.push_back(Stage::Ehlo);
            }
            Stage::Ehlo if ok && self.starttls => {
                self.starttls = false;
                self.out.extend_from_slice(b"STARTTLS\r\n");
                self.expect.push_back(Stage::StartTls);
            }
            Stage::Ehlo if ok && self.auth_cmd.is_some() => {
                self.pipelining = self.want_pipelining && self.ehlo_pipelining_seen;
                if let Some(cmd) = self.auth_cmd.take() {
                    self.out.extend_from_slice(&cmd);
                }
                self.auth_sent = Some(now);
                self.expect.push_back(Stage::Auth);
            }
            Stage::Ehlo if ok => {
                self.pipelining = self.want_pipelining && self.ehlo_pipelining_seen;
                self.events.push_back(Event::Ready);
            }
            Stage::StartTls if ok => {
                self.awaiting_tls = true;
                self.events.push_back(Event::StartTls);
            }
            Stage::Auth if ok => {
                let latency = self
                    .auth_sent
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                self.events.push_back(Event::Authenticated { latency });
                self.events.push_back(Event::Ready);
            }
            Stage::Greeting | Stage::Ehlo | Stage::StartTls | Stage::Auth => self.quit(),
            Stage::Mail | Stage::Rcpt | Stage::Rset if self.pipelining => {}
            Stage::Rset => {
                self.out.extend_from_slice(&self.mail_cmd);
                self.expect.push_back(Stage::Mail);
            }
            Stage::Mail | Stage::Rcpt => {
                // Lock-step: the next envelope command, whatever this reply was; the DATA reply
                // decides the transaction, as it does for a pipelined group.
                let next = self.rcpt_count - self.rcpts_left;
                if let Some(cmd) = self.rcpt_each.get(next) {
                    self.out.extend_from_slice(cmd);
                    self.rcpts_left -= 1;
                    self.expect.push_back(Stage::Rcpt);
                } else {
                    self.out.extend_from_slice(b"DATA\r\n");
                    self.expect.push_back(Stage::Data);
                }
            }
            Stage::Data => {
                let Some(msg) = self.pending.take() else {
                    return self.protocol_error();
                };
                if ok {
                    self.out.extend_from_slice(msg.wire);
                    self.in_flight.push_back((msg.size, now));
                    self.expect.push_back(Stage::EndOfData);
                    if self.pipelining {
                        // The next group may follow the content at once (RFC 2920 §3.1).
                        self.events.push_back(Event::Ready);
                    }
                } else {
                    self.needs_rset = true;
                    self.answered += 1;
                    self.events.push_back(Event::Delivered {
                        accepted: false,
                        latency: Duration::ZERO,
                        size: msg.size,
                    });
                    self.events.push_back(Event::Ready);
                }
            }
            Stage::EndOfData => {
                let Some((size, sent)) = self.in_flight.pop_front() else {
                    return self.protocol_error();
                };
                self.answered += 1;
                self.events.push_back(Event::Delivered {
                    accepted: ok,
                    latency: now.saturating_duration_since(sent),
                    size,
                });
                if !self.pipelining {
                    self.events.push_back(Event::Ready);
                }
            }
            Stage::Quit => self.finish(ok),
        }
    }

    fn protocol_error(&mut self) {
        self.events.push_back(Event::Refused {
            stage: self.expect.front().copied().unwrap_or(Stage::Quit),
            code: 0,
        });
        self.finish(false);
    }

    fn finish(&mut self, clean: bool) {
        self.finished = true;
        self.expect.clear();
        self.events.push_back(Event::Finished { clean });
    }
}

#[cfg(test)]
mod tests;
