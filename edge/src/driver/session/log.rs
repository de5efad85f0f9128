//! The session's INFO lines, one per thing an operator asks about: the session, each accepted
//! message, each refused recipient or message, each failed AUTH. They are written from the
//! engine's events and the guard's and `auth`'s decisions as the driver carries them out; the
//! engine itself logs nothing.
//!
//! Every line names its `peer` and `listener`, so lines of one client or one port can be
//! picked out, in text or in JSON (`log.format`). Field names are stable: a new field is a
//! new name, added to the line's `tracing::info!` here (and, for the session line, to
//! [`Summary`], which gathers what the session did).
//!
//! Text fields are `Display`ed, so the text format shows them bare (`reason=relay_denied`),
//! but for `outcome`, quoted since it may be several words; JSON has them all as strings. Client text (HELO, addresses, user names) goes through [`ClientText`], which escapes
//! control characters and backslashes, so nothing a client sends can forge a line or a
//! field. Lists are written by `Display` adapters straight into the line: no `String` is
//! built for a line beyond what `tracing` itself does.

use std::fmt::{self, Write as _};

use super::Session;
use crate::auth::AuthDecision;
use crate::protocol::address::Mailbox;
use crate::protocol::{Credentials, Envelope};
use crate::spool::QueueId;

/// What the session line reports, gathered as the session goes.
#[derive(Debug)]
pub(super) struct Summary {
    /// How it ended: `quit`, `timeout`, `banned`, `tls handshake failed`, ...
    pub(super) outcome: &'static str,
    /// The queue ids of the messages accepted, in order.
    pub(super) queue_ids: Vec<QueueId>,
    /// Recipients and messages refused.
    pub(super) rejected: u32,
    /// The distinct reasons of those refusals (metric labels), in the order first seen.
    pub(super) reasons: Vec<&'static str>,
    /// The SPF result of each transaction checked, in order (delivery listeners).
    pub(super) spf: Vec<&'static str>,
    /// The DMARC result of each message checked, in order (delivery listeners).
    pub(super) dmarc: Vec<&'static str>,
}

impl Summary {
    pub(super) fn new() -> Summary {
        Summary {
            outcome: "disconnected",
            queue_ids: Vec::new(),
            rejected: 0,
            reasons: Vec::new(),
            spf: Vec::new(),
            dmarc: Vec::new(),
        }
    }

    /// Counts one refusal for `reason`.
    pub(super) fn rejected(&mut self, reason: &'static str) {
        self.rejected += 1;
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

impl Session {
    /// The session line, written once when it ends.
    pub(super) fn log_session(&self, tls: &str) {
        tracing::info!(
            peer = %self.peer,
            // Behind a PROXY balancer: the balancer; `peer` is the client its header named.
            via = self.via.map(tracing::field::display),
            listener = %self.listener.name,
            local = %self.listener.addr,
            helo = %ClientText(self.conn.helo().unwrap_or_default()),
            tls = %tls,
            login = %ClientText(self.login.as_deref().unwrap_or_default()),
            // Quoted in text: some outcomes are several words.
            outcome = self.summary.outcome,
            queued = %Joined(&self.summary.queue_ids),
            rejected = self.summary.rejected,
            reasons = %Joined(&self.summary.reasons),
            spf = %Joined(&self.summary.spf),
            dmarc = %Joined(&self.summary.dmarc),
            "session"
        );
    }

    /// A message made durable and answered 250.
    pub(super) fn log_message_accepted(&self, id: &QueueId, envelope: &Envelope, size: u64) {
        tracing::info!(
            peer = %self.peer,
            listener = %self.listener.name,
            queue_id = %id,
            from = %Sender(envelope.mail_from.as_ref()),
            size,
            nrcpt = envelope.rcpt_to.len(),
            to = %Recipients(&envelope.rcpt_to),
            login = %ClientText(envelope.login.as_deref().unwrap_or_default()),
            "message accepted"
        );
    }

    /// A recipient refused at RCPT.
    pub(super) fn log_recipient_rejected(&self, recipient: &str, reason: &'static str) {
        tracing::info!(
            peer = %self.peer,
            listener = %self.listener.name,
            to = %Angled(recipient),
            reason = %reason,
            "recipient rejected"
        );
    }

    /// A message refused: at MAIL (no sender to name), or whole after its data.
    pub(super) fn log_message_rejected(&self, envelope: Option<&Envelope>, reason: &'static str) {
        match envelope {
            Some(envelope) => tracing::info!(
                peer = %self.peer,
                listener = %self.listener.name,
                from = %Sender(envelope.mail_from.as_ref()),
                nrcpt = envelope.rcpt_to.len(),
                reason = %reason,
                "message rejected"
            ),
            None => tracing::info!(
                peer = %self.peer,
                listener = %self.listener.name,
                reason = %reason,
                "message rejected"
            ),
        }
    }

    /// A failed AUTH: who tried which name how, and what `auth` decided. Never the password.
    pub(super) fn log_auth_failed(&self, credentials: &Credentials, decision: &AuthDecision) {
        tracing::info!(
            peer = %self.peer,
            listener = %self.listener.name,
            mechanism = %credentials.mechanism,
            user = %ClientText(&credentials.username),
            delay_ms = u64::try_from(decision.delay.as_millis()).unwrap_or(u64::MAX),
            banned = decision.banned,
            closing = decision.close,
            "auth failed"
        );
    }
}

/// Client text made safe for a log line: control characters (CR, LF, ESC, ...), backslashes
/// and invisible characters are written as Rust escapes (`\n`, `\u{1b}`); everything else as
/// it is. An empty string stays empty.
pub(super) struct ClientText<'a>(pub(super) &'a str);

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaping(f).write_str(self.0)
    }
}

/// A `fmt::Write` that escapes what passes through it, as [`ClientText`] describes, so that a
/// `Display` value made of client text (a [`Mailbox`]) is escaped without being collected
/// into a `String` first.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == ' ' || (c.is_ascii_graphic() && c != '\\') {
                self.0.write_char(c)?;
            } else {
                // Printable non-ASCII passes unchanged; the rest becomes an escape.
                for e in c.escape_debug() {
                    self.0.write_char(e)?;
                }
            }
        }
        Ok(())
    }
}

/// `<local@domain>`, or `<>` for the null sender, as Postfix writes them.
struct Sender<'a>(Option<&'a Mailbox>);

impl fmt::Display for Sender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('<')?;
        if let Some(mailbox) = self.0 {
            write!(Escaping(f), "{mailbox}")?;
        }
        f.write_char('>')
    }
}

/// `<a@b>,<c@d>`.
struct Recipients<'a>(&'a [Mailbox]);

impl fmt::Display for Recipients<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, mailbox) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            Sender(Some(mailbox)).fmt(f)?;
        }
        Ok(())
    }
}

/// A path as the client wrote it, escaped, in angle brackets.
struct Angled<'a>(&'a str);

impl fmt::Display for Angled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('<')?;
        Escaping(f).write_str(self.0)?;
        f.write_char('>')
    }
}

/// Items joined by commas; the items are our own text (queue ids, reason labels).
struct Joined<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            item.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_break_a_line_or_a_field() {
        let shown = ClientText("mx.example\r\nINFO forged=1 \u{1b}[31m\\").to_string();
        assert_eq!(shown, "mx.example\\r\\nINFO forged=1 \\u{1b}[31m\\\\");
        assert!(!shown.contains(['\r', '\n', '\u{1b}']));
        // Printable UTF-8 (SMTPUTF8 addresses) is kept as written.
        assert_eq!(
            ClientText("jösé@exämple.test").to_string(),
            "jösé@exämple.test"
        );
        // Invisible format characters are shown, not hidden.
        assert_eq!(ClientText("a\u{200b}b").to_string(), "a\\u{200b}b");
    }

    #[test]
    fn lists_are_joined_in_order() {
        let ids = [QueueId::from_parts(1, 0, 1), QueueId::from_parts(1, 0, 2)];
        assert_eq!(
            Joined(&ids).to_string(),
            format!("{},{}", ids[0].as_str(), ids[1].as_str())
        );
        assert_eq!(Joined::<String>(&[]).to_string(), "");
        assert_eq!(Sender(None).to_string(), "<>");
        assert_eq!(Angled("x\ny@z").to_string(), "<x\\ny@z>");
    }

    #[test]
    fn a_reason_is_listed_once_however_often_it_is_counted() {
        let mut s = Summary::new();
        s.rejected("relay_denied");
        s.rejected("unknown_recipient");
        s.rejected("relay_denied");
        assert_eq!(
            (s.rejected, s.reasons.as_slice()),
            (3, &["relay_denied", "unknown_recipient"][..])
        );
    }
}
