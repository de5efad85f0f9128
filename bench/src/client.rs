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
//! [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321
//! [RFC 2920]: https://www.rfc-editor.org/rfc/rfc2920

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
            Stage::Greeting => code == 220,
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
        Client {
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

    /// The server closed the connection (EOF or error).
    pub fn handle_close(&mut self) {
        if !self.finished {
            self.finish(false);
        }
    }

    /// Consumes reply bytes; all of `input` is always consumed.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) {
        let mut rest = input;
        while !rest.is_empty() && !self.finished {
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
            Stage::Ehlo if ok => {
                self.pipelining = self.want_pipelining && self.ehlo_pipelining_seen;
                self.events.push_back(Event::Ready);
            }
            Stage::Greeting | Stage::Ehlo => self.quit(),
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
