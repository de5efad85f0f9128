//! Carrying out the engine's events: spool writes for message content, the password check and
//! the `auth` decision on it, the guard's judgement when a session ends, metrics and log lines
//! (`log.rs`).

use super::{Checking, Held, InFlight, Session};
use crate::checks::{strip_forged, Check, CheckMode, Results, Verdict};
use crate::clock;
use crate::dkim::{Hold, SignError, Step};
use crate::metrics::{AuthResult, RecipientReason, RejectReason};
use crate::protocol::{
    AuthOutcome, CloseReason, Credentials, Envelope, Event, Mailbox, Rejection, Role,
    SenderVerdict, SourceVerdict, SpoolFault, TxnId,
};
use crate::spool::{Committed, Place, TraceInfo};

impl Session {
    /// Acts on every event the engine has queued, in order; returns true on STARTTLS.
    pub(super) async fn drain_events(&mut self) -> bool {
        let mut starttls = false;
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::MessageStart { txn, envelope } => {
                    let trace = TraceInfo {
                        peer: self.peer,
                        helo: envelope.helo.clone(),
                        greeting: envelope.greeting,
                        smtputf8: envelope.smtputf8,
                        hostname: self.config.config.hostname.clone(),
                        received_at: clock::wall(),
                        tls: self.tls.as_deref().and_then(|t| t.trace().cloned()),
                        authenticated: envelope.login.is_some(),
                        login: envelope
                            .login
                            .clone()
                            .filter(|_| self.config.config.auth.trace_login),
                    };
                    if self.checks.is_some() {
                        self.checking = Some(Box::new(Checking {
                            txn,
                            envelope,
                            trace,
                            content: Vec::new(),
                        }));
                        continue;
                    }
                    let signable = self.role == Role::Submission
                        && envelope.login.is_some()
                        && !self.config.config.dkim.is_empty();
                    if signable {
                        let hold = Hold::new(self.config.config.dkim.clone());
                        self.held = Some(Box::new(Held {
                            txn,
                            envelope,
                            trace,
                            hold,
                        }));
                    } else {
                        self.begin_spool(txn, envelope, &trace).await;
                    }
                }
                Event::MessageData { txn, data } => {
                    if let Some(c) = self.checking.as_mut().filter(|c| c.txn == txn) {
                        c.content.extend_from_slice(&data);
                        self.conn.recycle(data);
                        continue;
                    }
                    match &mut self.held {
                        Some(held) if held.txn == txn => self.hold(data).await,
                        _ => self.append(txn, data).await,
                    }
                }
                Event::CheckSender { helo, mail_from } => {
                    self.check_sender(&helo, mail_from.as_ref()).await;
                }
                Event::MessageEnd { txn } => {
                    if let Some(c) = self.checking.take_if(|c| c.txn == txn) {
                        self.check_and_commit(*c).await;
                        continue;
                    }
                    if let Some(held) = self.held.take_if(|h| h.txn == txn) {
                        if let Err(e) = self.seal(*held).await {
                            tracing::error!(error = %e, "dkim: cannot sign; replying 451");
                            self.reject_message(None, RejectReason::SpoolFailure);
                            self.conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
                            continue;
                        }
                    }
                    self.commit(txn).await;
                }
                Event::MessageAbort { txn, reason } => {
                    self.checking = None;
                    self.sender_check = None;
                    self.held.take_if(|h| h.txn == txn);
                    let aborted = self.in_flight.take().filter(|f| f.txn == txn).map(|f| *f);
                    if let Some(r) = reason {
                        let envelope = aborted.as_ref().map(|f| &f.envelope);
                        self.reject_message(envelope, reject_reason(r));
                    }
                    if let Some(InFlight {
                        entry: Ok(incoming),
                        ..
                    }) = aborted
                    {
                        incoming.abort().await;
                    }
                }
                Event::StartTls => starttls = true,
                Event::Authenticate(credentials) => self.authenticate(credentials).await,
                Event::SourceCheck => {
                    // A lookup that failed (it cannot panic, but a task can be cancelled)
                    // lets the client through, as an unanswered list does.
                    let verdict = match self.source_check.take() {
                        Some(lookups) => lookups.await.unwrap_or(SourceVerdict::Clear),
                        None => SourceVerdict::Clear,
                    };
                    self.conn.handle_source_verdict(clock::now(), verdict);
                }
                Event::Rejected(r) => self.reject_message(None, reject_reason(r)),
                Event::RecipientRejected {
                    rejection,
                    recipient,
                } => self.reject_recipient(&recipient, recipient_reason(rejection)),
                Event::Close(reason) => {
                    let ip = self.peer.ip();
                    self.ctx.guard.session_closed(ip, clock::now(), reason);
                    self.summary.outcome = outcome(reason);
                }
            }
        }
        starttls
    }

    /// Has the password checked off the ring, then carries out `auth`'s decision: the tarpit
    /// delay, the verdict, and closing the session when it says so.
    async fn authenticate(&mut self, credentials: Credentials) {
        let ip = self.peer.ip();
        let verdict = self.ctx.auth.check(ip, &credentials).await;
        let decision =
            self.ctx
                .auth
                .decide(&mut self.auth, ip, clock::now(), verdict, &self.ctx.guard);
        let result = match &decision.outcome {
            AuthOutcome::Success { login, .. } => {
                self.login = Some(login.clone());
                AuthResult::Success
            }
            AuthOutcome::Invalid => {
                self.log_auth_failed(&credentials, &decision);
                AuthResult::Failure
            }
            AuthOutcome::Unavailable => AuthResult::Unavailable,
        };
        self.metrics().auth(result);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        self.closing |= decision.close;
        self.conn.handle_auth(clock::now(), decision.outcome);
    }

    /// SPF at `MAIL` ([RFC 7208 §2.4]); under `enforce` a `fail` is refused there.
    ///
    /// [RFC 7208 §2.4]: https://www.rfc-editor.org/rfc/rfc7208#section-2.4
    async fn check_sender(&mut self, helo: &str, mail_from: Option<&Mailbox>) {
        let Some(checks) = self.checks.clone() else {
            // No verifier (its resolver could not be built): nothing to judge by.
            return self
                .conn
                .handle_sender_checked(clock::now(), SenderVerdict::Accept);
        };
        let check = checks.sender(self.peer.ip(), helo, mail_from).await;
        let verdict = check.verdict();
        self.metrics().check(Check::Spf, verdict);
        self.summary.spf.push(verdict.as_str());
        let refuse = checks.config().spf == CheckMode::Enforce && verdict == Verdict::Fail;
        self.sender_check = (!refuse).then(|| Box::new(check));
        let answer = if refuse {
            SenderVerdict::SpfFail
        } else {
            SenderVerdict::Accept
        };
        self.conn.handle_sender_checked(clock::now(), answer);
    }

    /// The end of a held message: the checks over the whole of it, then the DMARC policy under
    /// `enforce` (`p=reject` refused, `p=quarantine` marked in the header), then the spool: our `Authentication-Results:` goes in after our `Received:`,
    /// ahead of the message, whose own fields claiming our host name are left out.
    async fn check_and_commit(&mut self, checking: Checking) {
        let Checking {
            txn,
            envelope,
            trace,
            content,
        } = checking;
        let Some(checks) = self.checks.clone() else {
            return;
        };
        let mut results = checks
            .message(
                &content,
                self.peer.ip(),
                &envelope.helo,
                envelope.mail_from.as_ref(),
                self.sender_check.take().map(|c| *c),
            )
            .await;
        self.count(&results);
        let cfg = checks.config();
        if let (CheckMode::Enforce, Some(dmarc)) = (cfg.dmarc, results.dmarc_rejects()) {
            let domain = dmarc.domain.clone();
            return self.conn.handle_dmarc_rejected(clock::now(), txn, &domain);
        }
        // RFC 7489 §6.3: `p=quarantine` asks for the mail to be treated as suspicious, which
        // here is the junk folder; the header carries that to Maildir delivery
        // (`checks::quarantined`), next hops get the message as it is, tagged.
        results.quarantined =
            cfg.dmarc == CheckMode::Enforce && results.dmarc_quarantines().is_some();
        let hostname = &self.config.config.hostname;
        let mut header = results.header(hostname).into_bytes();
        match strip_forged(&content, hostname) {
            Some(kept) => header.extend_from_slice(&kept),
            None => header.extend_from_slice(&content),
        }
        drop(content);
        self.begin_spool(txn, envelope, &trace).await;
        // A write failure is kept in the entry: the commit then answers 451.
        let _ = self.write(txn, header).await;
        self.commit(txn).await;
    }

    /// Counts the message's check results; SPF was counted at `MAIL`.
    fn count(&mut self, results: &Results) {
        let m = self.ctx.metrics();
        for sig in results.dkim.iter().flatten() {
            m.check(Check::Dkim, sig.verdict);
        }
        if results.dkim.as_ref().is_some_and(Vec::is_empty) {
            m.check(Check::Dkim, Verdict::None);
        }
        if let Some(dmarc) = &results.dmarc {
            m.check(Check::Dmarc, dmarc.verdict);
            self.summary.dmarc.push(dmarc.verdict.as_str());
        }
        if let Some(arc) = results.arc {
            m.check(Check::Arc, arc);
        }
    }

    /// A message refused at MAIL (no envelope yet) or whole after its data.
    fn reject_message(&mut self, envelope: Option<&Envelope>, reason: RejectReason) {
        self.summary.rejected(reason.label());
        self.metrics().message_rejected(reason);
        self.log_message_rejected(envelope, reason.label());
    }

    /// One recipient refused at RCPT.
    fn reject_recipient(&mut self, recipient: &str, reason: RecipientReason) {
        self.summary.rejected(reason.label());
        self.metrics().recipient_rejected(reason);
        self.log_recipient_rejected(recipient, reason.label());
    }

    /// Creates the message's spool entry: the envelope and the `Received:` header.
    async fn begin_spool(&mut self, txn: TxnId, envelope: Envelope, trace: &TraceInfo) {
        let entry = self.ctx.spool.begin(&envelope, trace).await;
        if let Err(e) = &entry {
            tracing::error!(error = %e, "spool: cannot start a message");
        }
        self.in_flight = Some(Box::new(InFlight {
            txn,
            entry,
            envelope,
            size: 0,
        }));
    }

    /// Writes content to the spool entry, and hands the emptied buffer back to the engine.
    async fn append(&mut self, txn: TxnId, data: Vec<u8>) {
        if let Some(emptied) = self.write(txn, data).await {
            self.conn.recycle(emptied);
        }
    }

    /// Writes content to the spool entry of `txn`; returns the buffer, emptied.
    async fn write(&mut self, txn: TxnId, data: Vec<u8>) -> Option<Vec<u8>> {
        let entry = match &mut self.in_flight {
            Some(f) if f.txn == txn => {
                f.size += data.len() as u64;
                &mut f.entry
            }
            _ => return Some(data),
        };
        let Ok(incoming) = entry else {
            // The entry already failed: the content is dropped, the end gets 451.
            return Some(data);
        };
        let (res, emptied) = incoming.append(data).await;
        if let Err(e) = res {
            tracing::error!(error = %e, "spool: write failed");
            if let Ok(failed) = std::mem::replace(entry, Err(e)) {
                failed.abort().await;
            }
        }
        Some(emptied)
    }

    /// Content of a held submission: kept until its header section says whether it is signed;
    /// written out as soon as it is known not to be.
    async fn hold(&mut self, data: Vec<u8>) {
        let Some(held) = &mut self.held else {
            return self.conn.recycle(data);
        };
        let step = held.hold.push(&data);
        self.conn.recycle(data);
        if step == Step::Release {
            if let Some(Held {
                txn,
                envelope,
                trace,
                hold,
            }) = self.held.take().map(|h| *h)
            {
                self.begin_spool(txn, envelope, &trace).await;
                // Held content can be as large as a message: not kept as the engine's buffer.
                self.write(txn, hold.release()).await;
            }
        }
    }

    /// The end of a held submission: signs it if its `From:` domain has a key, then spools it
    /// with the `DKIM-Signature:` field first (after our `Received:`), for the commit to follow.
    async fn seal(&mut self, held: Held) -> Result<(), SignError> {
        let Held {
            txn,
            envelope,
            trace,
            hold,
        } = held;
        let (signature, message) = hold.finish()?;
        self.begin_spool(txn, envelope, &trace).await;
        if let Some(signature) = signature {
            tracing::debug!("dkim: message signed");
            self.write(txn, signature.into_bytes()).await;
        }
        self.write(txn, message).await;
        Ok(())
    }

    /// Makes the message durable, then lets the engine answer: 250 only after the fsyncs.
    async fn commit(&mut self, txn: TxnId) {
        let (verdict, envelope, size) = match self.in_flight.take().map(|f| *f) {
            Some(InFlight {
                txn: t,
                entry: Ok(incoming),
                envelope,
                size,
            }) if t == txn => (incoming.commit().await, envelope, size),
            Some(InFlight {
                entry: Err(e),
                envelope,
                size,
                ..
            }) => (Err(e), envelope, size),
            _ => {
                tracing::error!("spool: message end without a spool entry");
                return self.conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
            }
        };
        match verdict {
            Ok(Committed {
                id,
                place,
                fsync,
                shape,
            }) => {
                self.metrics().observe_fsync(fsync);
                self.metrics().message_accepted();
                self.conn.handle_spooled(clock::now(), txn, Ok(id.as_str()));
                self.log_message_accepted(&id, &envelope, size);
                self.summary.queue_ids.push(id);
                match (place, shape) {
                    (Place::Log(placed), Some(shape)) => self
                        .ctx
                        .queue
                        .enqueue_described(id, placed, envelope, shape),
                    (Place::Log(placed), None) => self.ctx.queue.enqueue_logged(id, placed),
                    (Place::File, _) => self.ctx.queue.enqueue(id),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: commit failed; replying 451");
                self.reject_message(Some(&envelope), RejectReason::SpoolFailure);
                self.conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
            }
        }
    }
}

/// The session log line's word for how the engine ended it.
fn outcome(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Quit => "quit",
        CloseReason::Timeout => "timeout",
        CloseReason::TooManyErrors => "too many errors",
        CloseReason::Shutdown => "shutdown",
        CloseReason::Pregreet => "pregreet",
        CloseReason::Listed => "dnsbl",
    }
}

/// The metric (and log) reason of a refused message; recipient-only reasons never come here.
fn reject_reason(r: Rejection) -> RejectReason {
    match r {
        Rejection::MessageTooLarge => RejectReason::MessageTooLarge,
        Rejection::BareNewline => RejectReason::BareNewline,
        Rejection::LineTooLong => RejectReason::LineTooLong,
        Rejection::NulOctet => RejectReason::NulOctet,
        Rejection::NotAuthenticated => RejectReason::NotAuthenticated,
        Rejection::SenderNotOwned => RejectReason::SenderNotOwned,
        Rejection::SpfFail => RejectReason::SpfFail,
        Rejection::DmarcReject => RejectReason::DmarcReject,
        Rejection::RelayDenied | Rejection::UnknownRecipient | Rejection::TooManyRecipients => {
            RejectReason::Other
        }
    }
}

/// The metric (and log) reason of a refused recipient.
fn recipient_reason(r: Rejection) -> RecipientReason {
    match r {
        Rejection::RelayDenied => RecipientReason::RelayDenied,
        Rejection::UnknownRecipient => RecipientReason::UnknownRecipient,
        Rejection::TooManyRecipients => RecipientReason::TooManyRecipients,
        _ => RecipientReason::Other,
    }
}
