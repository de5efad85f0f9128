//! DATA ([RFC 5321 §4.1.1.4]) and BDAT ([RFC 3030]): message content, from the command to the
//! spool's verdict.
//!
//! [RFC 5321 §4.1.1.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.4
//! [RFC 3030]: https://www.rfc-editor.org/rfc/rfc3030

use super::*;

impl Connection {
    /// Whether a transaction may take content now; else the reply refusing it.
    pub(super) fn content_ready(&self) -> Result<(), Reply> {
        match &self.txn {
            None => Err(Reply::bad_sequence("Need MAIL command first")),
            // RFC 2920 §3.1: DATA with no valid recipients gets 554.
            Some(t) if t.rcpts.is_empty() => Err(Reply::no_valid_recipients()),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn data(&mut self) {
        if let Err(reply) = self.content_ready() {
            // RFC 2920 §3.1: a pipelining client sends DATA before it sees its RCPTs refused;
            // that 554 is not a client error. DATA without MAIL is.
            return if self.txn.is_some() {
                self.reply(reply)
            } else {
                self.bad_command_reply(reply)
            };
        }
        if self.txn.as_ref().is_some_and(|t| t.started) {
            return self.bad_command_reply(Reply::bad_sequence("DATA not allowed after BDAT"));
        }
        self.start_content();
        self.phase = Phase::Data(DataReceiver::new(
            self.cfg.max_message_size,
            self.cfg.max_line_length,
        ));
        self.reply(Reply::start_data());
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
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

    /// Refuses a `BDAT` command whose chunk of `size` octets follows it: the octets are read and
    /// dropped, then `reply` is sent ([RFC 3030 §2]: a refused BDAT still carries its data, which
    /// must never be run as commands). `bad` counts the command toward `max_bad_commands`; at
    /// the limit the session ends at once instead, and nothing more is read.
    ///
    /// [RFC 3030 §2]: https://www.rfc-editor.org/rfc/rfc3030#section-2
    pub(super) fn refuse_chunk(&mut self, size: u64, reply: Reply, bad: bool) {
        if bad {
            if self.bad_commands.saturating_add(1) >= self.cfg.max_bad_commands {
                // Counts it, and ends the session with 421.
                return self.bad_command_reply(reply);
            }
            self.bad_commands += 1;
        }
        self.phase = Phase::Bdat(BdatChunk {
            remaining: size,
            size,
            last: false,
            refused: Some(reply),
        });
        if size == 0 {
            self.end_of_chunk();
        }
    }

    pub(super) fn start_content(&mut self) {
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

    pub(super) fn read_bdat(&mut self, input: &[u8]) -> usize {
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
                let content = input.get(..take).unwrap_or_default();
                // Without BINARYMIME, BDAT carries text under DATA's rules; refusing it here
                // keeps bare line endings out of anything downstream (SMTP smuggling).
                txn.lines.feed(content);
                if txn.size <= self.cfg.max_message_size {
                    self.body.extend_from_slice(content);
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
    pub(super) fn end_of_chunk(&mut self) {
        let Phase::Bdat(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if let Some(reply) = chunk.refused {
            // Pipelined chunks after a refused one (RFC 3030 §4.2) are the client's normal
            // course, not errors to count toward a ban.
            return self.reply(reply);
        }
        let too_large = self
            .txn
            .as_ref()
            .is_some_and(|t| t.size > self.cfg.max_message_size);
        let text_fault = match &mut self.txn {
            Some(txn) if chunk.last => {
                txn.lines.finish();
                txn.lines.fault()
            }
            _ => None,
        };
        if too_large {
            self.reply(Reply::too_large());
            self.abort_message(Rejection::MessageTooLarge);
        } else if let Some(fault) = text_fault {
            self.refuse_content(fault);
        } else if chunk.last {
            self.flush_body();
            self.await_spool();
        } else {
            self.reply(Reply::chunk_received(chunk.size));
        }
    }

    /// The `DATA` terminator arrived.
    pub(super) fn end_of_data(&mut self) {
        let Phase::Data(rx) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        match rx.fault() {
            None => {
                self.flush_body();
                self.await_spool();
            }
            Some(fault) => self.refuse_content(fault),
        }
    }

    /// Refuses the content of the open transaction for `fault`: the reply, then the abort.
    pub(super) fn refuse_content(&mut self, fault: DataFault) {
        let (reply, reason) = match fault {
            DataFault::TooLarge => (Reply::too_large(), Rejection::MessageTooLarge),
            DataFault::BareNewline => (
                Reply::content_refused(
                    "Message refused: bare CR or LF; lines end in CRLF (RFC 5321 2.3.8)",
                ),
                Rejection::BareNewline,
            ),
            DataFault::LineTooLong => (
                Reply::line_too_long(self.cfg.max_line_length),
                Rejection::LineTooLong,
            ),
            DataFault::Nul => (
                Reply::content_refused("Message refused: NUL octet in content (RFC 2045 2.8)"),
                Rejection::NulOctet,
            ),
        };
        self.reply(reply);
        self.abort_message(reason);
    }

    pub(super) fn await_spool(&mut self) {
        if let Some(txn) = &self.txn {
            self.events.push_back(Event::MessageEnd { txn: txn.id });
            self.phase = Phase::Spooling(txn.id);
        }
    }

    /// Drops the message in progress after its refusal reply; the transaction ends.
    pub(super) fn abort_message(&mut self, reason: Rejection) {
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
    pub(super) fn abort_content(&mut self) {
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

    pub(super) fn flush_body(&mut self) {
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
