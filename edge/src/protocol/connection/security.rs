//! STARTTLS ([RFC 3207]) and AUTH ([RFC 4954]): the commands that change who the session is.
//!
//! [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954

use super::*;

impl Connection {
    /// `AUTH` ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    pub(super) fn auth(&mut self, arg: &str) {
        if !self.cfg.auth_offered {
            return self.bad_command_reply(Reply::not_available("AUTH not available"));
        }
        if !self.secure && !self.cfg.auth_plaintext {
            // RFC 4954 §6: 538 when the mechanism needs an encrypted session.
            return self.reply(Reply::encryption_required());
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

    pub(super) fn auth_response(&mut self, line: &[u8]) {
        let Phase::AuthResponse(exchange) = &mut self.phase else {
            return;
        };
        let step = exchange.respond(line);
        self.sasl_step(step);
    }

    pub(super) fn sasl_step(&mut self, step: SaslStep) {
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
    pub(super) fn starttls(&mut self, has_args: bool) {
        if has_args {
            return self.bad_command_reply(Reply::syntax("STARTTLS"));
        }
        if self.secure {
            return self.bad_command_reply(Reply::bad_sequence("TLS already active"));
        }
        if !self.cfg.tls_offered {
            return self.bad_command_reply(Reply::not_available("STARTTLS not available"));
        }
        self.abort_content();
        self.txn = None;
        self.reply(Reply::ready_for_tls());
        self.phase = Phase::TlsPending;
        self.events.push_back(Event::StartTls);
    }
}

/// Commands allowed in the clear where TLS is required ([RFC 3207 §4]).
///
/// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
pub(super) fn allowed_before_tls(cmd: &Command<'_>) -> bool {
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
