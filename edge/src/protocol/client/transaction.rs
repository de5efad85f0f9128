//! One mail transaction from the client's side: the envelope commands, the replies that decide
//! each recipient's outcome, and the content.
//!
//! Who decides what ([RFC 5321 §3.3], [RFC 2033 §4.2]):
//! - a refused `MAIL` decides every recipient;
//! - a refused `RCPT` decides its recipient at once;
//! - a refused `DATA` decides every recipient whose `RCPT` was accepted;
//! - after the content, SMTP's one reply decides every accepted recipient, and LMTP's replies
//!   (one per accepted recipient, in `RCPT` order) decide one each.
//!
//! [RFC 5321 §3.3]: https://www.rfc-editor.org/rfc/rfc5321#section-3.3
//! [RFC 2033 §4.2]: https://www.rfc-editor.org/rfc/rfc2033#section-4.2

use std::time::Instant;

use super::capabilities::Capabilities;
use super::config::Dialect;
use super::outcome::{Cause, Event, Message, MessageId, Outcome, Report, Stage};
use super::reply::ServerReply;
use super::stuffing::DotStuffer;
use super::{unexpected, Client, Expect};
use crate::protocol::address::MAX_PATH;
use crate::protocol::Mailbox;

/// A command line and the reply it expects.
pub(crate) type Command = (Vec<u8>, Expect);

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `MAIL`, `RCPT`s and `DATA` sent or to be sent.
    Envelope,
    /// 354 received; the caller sends the content.
    Body,
    /// The final dot sent; waiting for the verdict.
    Ending,
}

/// The transaction in progress.
#[derive(Debug)]
pub(crate) struct Transaction {
    id: MessageId,
    state: State,
    /// Decided outcomes, by recipient index.
    outcomes: Vec<Option<Outcome>>,
    /// Recipients whose `RCPT` got a 2xx, in order.
    accepted: Vec<usize>,
    /// A refused `MAIL`: the outcome of every recipient.
    mail_refusal: Option<Outcome>,
    stuffer: DotStuffer,
}

/// The ESMTP parameters of `MAIL` for `message` on a server offering `caps`.
fn mail_params(message: &Message, caps: &Capabilities) -> String {
    let mut params = String::new();
    if let (Some(_), Some(size)) = (caps.size, message.size) {
        params.push_str(&format!(" SIZE={size}"));
    }
    // SMTPUTF8 headers are 8-bit content too (RFC 6532 §3.2).
    if (message.eight_bit || message.smtputf8) && caps.eight_bit_mime {
        params.push_str(" BODY=8BITMIME");
    }
    if message.needs_smtputf8() {
        params.push_str(" SMTPUTF8");
    }
    params
}

/// `<mailbox>` if it can go on a command line: no control characters, within the RFC 5321
/// §4.5.3.1.3 path limit.
fn path(mailbox: Option<&Mailbox>) -> Option<String> {
    let path = match mailbox {
        Some(m) => format!("<{m}>"),
        None => "<>".to_owned(),
    };
    let clean = path.len() <= MAX_PATH && !path.bytes().any(|b| b.is_ascii_control());
    clean.then_some(path)
}

impl Transaction {
    /// Checks `message` against what the server offers and renders its commands; a message
    /// that cannot be sent is reported at once, without a command.
    pub(crate) fn start(
        id: MessageId,
        message: Message,
        caps: &Capabilities,
    ) -> Result<(Transaction, Vec<Command>), Report> {
        let all = |cause: Cause| Report {
            id,
            outcomes: vec![Outcome::Failed(cause); message.to.len()],
        };
        if message.needs_smtputf8() && !caps.smtputf8 {
            // RFC 6531 §3.4: without SMTPUTF8 on the server the message cannot be sent as it
            // is; RFC 6531 §3.7.4.1 gives 5.6.7 to what cannot be downgraded.
            return Err(all(Cause::Smtputf8Unsupported));
        }
        if let (Some(Some(limit)), Some(size)) = (caps.size, message.size) {
            if size > limit {
                return Err(all(Cause::TooLarge { limit }));
            }
        }
        let Some(from) = path(message.from.as_ref()) else {
            return Err(all(Cause::BadAddress));
        };
        let mut outcomes = vec![None; message.to.len()];
        let mut commands = vec![(
            format!("MAIL FROM:{from}{}\r\n", mail_params(&message, caps)).into_bytes(),
            Expect::Mail,
        )];
        for (i, rcpt) in message.to.iter().enumerate() {
            match (path(Some(rcpt)), outcomes.get_mut(i)) {
                (Some(to), _) => {
                    commands.push((format!("RCPT TO:{to}\r\n").into_bytes(), Expect::Rcpt(i)))
                }
                (None, Some(slot)) => *slot = Some(Outcome::Failed(Cause::BadAddress)),
                (None, None) => {}
            }
        }
        let txn = Transaction {
            id,
            state: State::Envelope,
            outcomes,
            accepted: Vec::new(),
            mail_refusal: None,
            stuffer: DotStuffer::default(),
        };
        if commands.len() == 1 {
            // Every recipient failed already: nothing to send.
            return Err(txn.finish(&Cause::BadAddress));
        }
        commands.push((b"DATA\r\n".to_vec(), Expect::Data));
        Ok((txn, commands))
    }

    /// Whether the caller is sending the content.
    pub(crate) fn is_sending_body(&self) -> bool {
        self.state == State::Body
    }

    /// Appends a piece of content, dot-stuffed.
    pub(crate) fn stuff(&mut self, content: &[u8], out: &mut Vec<u8>) {
        self.stuffer.push(content, out);
    }

    /// Appends the end of the content; returns the replies it will get.
    pub(crate) fn finish_body(&mut self, dialect: Dialect, out: &mut Vec<u8>) -> Vec<Expect> {
        self.stuffer.finish(out);
        self.state = State::Ending;
        match dialect {
            Dialect::Smtp => vec![Expect::EndOfData],
            Dialect::Lmtp => self.accepted.iter().map(|&i| Expect::LmtpRcpt(i)).collect(),
        }
    }

    /// The report: every undecided recipient gets the MAIL refusal if there was one, else
    /// `Deferred(cause)`.
    pub(crate) fn finish(self, cause: &Cause) -> Report {
        let fallback = self
            .mail_refusal
            .unwrap_or_else(|| Outcome::Deferred(cause.clone()));
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| fallback.clone()))
            .collect();
        Report {
            id: self.id,
            outcomes,
        }
    }

    fn decide(&mut self, i: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }

    /// The same outcome for every accepted recipient.
    fn decide_accepted(&mut self, outcome: &Outcome) {
        for i in std::mem::take(&mut self.accepted) {
            self.decide(i, outcome.clone());
        }
    }
}

impl Client {
    /// A reply to a command of the transaction in progress.
    pub(super) fn on_transaction_reply(
        &mut self,
        now: Instant,
        expect: Expect,
        reply: ServerReply,
    ) {
        let Some(txn) = self.txn.as_mut() else {
            return self.fail(unexpected(&reply), false);
        };
        let stage = expect.stage();
        let refusal = reply.code >= 400;
        match expect {
            Expect::Rset if reply.is_success() => {}
            Expect::Rset if refusal => {
                // The server will not clear the last transaction: nothing sent now is safe.
                self.fail(Cause::Reply { stage, reply }, false);
            }
            Expect::Mail if reply.is_success() => {}
            Expect::Mail if refusal => {
                txn.mail_refusal = Some(Outcome::from_refusal(stage, &reply));
                // Without pipelining the RCPTs were never sent; with it, their replies (and
                // DATA's) are still to come, and are read and ignored.
                self.unsent.clear();
                if self.expect.is_empty() {
                    self.end_transaction(now, false);
                }
            }
            // After a refused MAIL, nothing the server says about recipients counts.
            Expect::Rcpt(_) if txn.mail_refusal.is_some() => {}
            Expect::Rcpt(i) if reply.is_success() || refusal => {
                if reply.is_success() {
                    txn.accepted.push(i);
                } else {
                    txn.decide(i, Outcome::from_refusal(stage, &reply));
                }
                let data_next = matches!(self.unsent.front(), Some((_, Expect::Data)));
                if data_next && txn.accepted.is_empty() {
                    // Nobody to deliver to: no DATA; MAIL opened a transaction, so RSET.
                    self.unsent.clear();
                    self.end_transaction(now, true);
                }
            }
            Expect::Data if reply.code == 354 => {
                if txn.mail_refusal.is_some() || txn.accepted.is_empty() {
                    // A server that gives 354 with nobody accepted (RFC 2920 §3.1) gets an
                    // empty message, which it cannot deliver to anyone.
                    txn.state = State::Ending;
                    txn.stuffer.finish(&mut self.out);
                    self.push_expect(now, Expect::DiscardedDot);
                } else {
                    txn.state = State::Body;
                    self.body_deadline = now.checked_add(self.cfg.timeouts.data_block);
                    self.events.push_back(Event::SendBody(txn.id));
                }
            }
            Expect::Data if refusal => {
                let mail_accepted = txn.mail_refusal.is_none();
                if mail_accepted {
                    txn.decide_accepted(&Outcome::from_refusal(stage, &reply));
                }
                self.end_transaction(now, mail_accepted);
            }
            Expect::DiscardedDot => self.end_transaction(now, false),
            Expect::EndOfData if reply.is_success() || refusal => {
                let outcome = if reply.is_success() {
                    Outcome::Delivered(reply)
                } else {
                    Outcome::from_refusal(stage, &reply)
                };
                txn.decide_accepted(&outcome);
                self.end_transaction(now, false);
            }
            Expect::LmtpRcpt(i) if reply.is_success() || refusal => {
                let outcome = if reply.is_success() {
                    Outcome::Delivered(reply)
                } else {
                    Outcome::from_refusal(stage, &reply)
                };
                txn.decide(i, outcome);
                if !matches!(self.expect.front(), Some(Expect::LmtpRcpt(_))) {
                    self.end_transaction(now, false);
                }
            }
            _ => self.fail(unexpected(&reply), false),
        }
    }

    /// Reports the transaction and moves on to the next message.
    fn end_transaction(&mut self, now: Instant, needs_rset: bool) {
        if let Some(txn) = self.txn.take() {
            // Every recipient is decided by now; the cause is never used.
            let cause = Cause::ConnectionLost(Stage::EndOfData);
            self.events.push_back(Event::Done(txn.finish(&cause)));
        }
        self.needs_rset = needs_rset;
        self.advance(now);
    }
}
