//! EHLO/HELO, MAIL and RCPT ([RFC 5321 §4.1.1.1–§4.1.1.3]): the greeting and the envelope of
//! a transaction, with the sender rule of submission.
//!
//! [RFC 5321 §4.1.1.1–§4.1.1.3]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1

use super::*;

impl Connection {
    /// `EHLO`/`HELO` ([RFC 5321 §4.1.1.1]); also resets any transaction.
    ///
    /// [RFC 5321 §4.1.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1
    pub(super) fn ehlo(&mut self, greeting: Greeting, domain: &str) {
        // Refused before anything changes: the session stays as it was (§4.1.4).
        if !address::is_helo_argument(domain) {
            return self.bad_command_reply(Reply::bad_helo());
        }
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
                // Passwords travel only inside TLS, unless told otherwise.
                if self.cfg.auth_offered
                    && (self.secure || self.cfg.auth_plaintext)
                    && !matches!(self.identity, Identity::User { .. })
                {
                    lines.push(format!("AUTH {MECHANISMS}").into());
                }
                lines
            }
        };
        self.reply(Reply::ehlo(lines));
    }

    pub(super) fn mail(&mut self, arg: &str) {
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
            return self.reply(Reply::auth_required());
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
            Ok(mail) if self.cfg.check_sender => {
                let helo = self.helo().unwrap_or_default().to_owned();
                self.events.push_back(Event::CheckSender {
                    helo,
                    mail_from: mail.path.clone(),
                });
                self.phase = Phase::SenderPending(mail);
            }
            Ok(mail) => self.open_transaction(mail),
            Err((reply, rejection)) => self.refuse(reply, rejection),
        }
    }

    /// Submission's sender rule: no bounces, and only addresses the user owns.
    pub(super) fn check_sender(&self, mail: &MailFrom) -> Result<(), Reply> {
        let Some(path) = &mail.path else {
            return Err(Reply::null_sender_refused());
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
                    Err(Reply::sender_not_owned(login))
                }
            }
            _ => Ok(()),
        }
    }

    pub(super) fn open_transaction(&mut self, mail: MailFrom) {
        self.txn = Some(Transaction {
            id: TxnId(self.next_txn),
            mail,
            rcpts: Vec::new(),
            started: false,
            size: 0,
            lines: LineCheck::new(self.cfg.max_line_length),
        });
        self.next_txn += 1;
        self.reply(Reply::sender_ok());
    }

    pub(super) fn rcpt(&mut self, arg: &str) {
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
            Ok(_) if txn.rcpts.len() >= self.cfg.max_recipients => self.refuse_recipient(
                arg,
                Reply::too_many_recipients(),
                Rejection::TooManyRecipients,
            ),
            Ok(path) => {
                if let Some(txn) = &mut self.txn {
                    txn.rcpts.push(path);
                }
                self.reply(Reply::recipient_ok());
            }
            Err((reply, Some(rejection))) => self.refuse_recipient(arg, reply, rejection),
            Err((reply, None)) => self.bad_command_reply(reply),
        }
    }

    /// Refuses one recipient (the transaction goes on) and tells the driver which, and why.
    fn refuse_recipient(&mut self, arg: &str, reply: Reply, rejection: Rejection) {
        self.events.push_back(Event::RecipientRejected {
            rejection,
            recipient: envelope::path_text(arg).to_owned(),
        });
        self.reply(reply);
    }

    pub(super) fn refuse(&mut self, reply: Reply, rejection: Option<Rejection>) {
        if let Some(r) = rejection {
            self.events.push_back(Event::Rejected(r));
            self.reply(reply);
        } else {
            self.bad_command_reply(reply);
        }
    }
}
