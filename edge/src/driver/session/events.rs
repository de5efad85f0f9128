//! Carrying out the engine's events: spool writes for message content, the password check and
//! the `auth` decision on it, the guard's judgement when a session ends, metrics.

use super::{InFlight, Session};
use crate::clock;
use crate::metrics::{AuthResult, RejectReason};
use crate::protocol::{AuthOutcome, CloseReason, Credentials, Event, Rejection, SpoolFault, TxnId};
use crate::spool::TraceInfo;

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
                        tls: self.tls.as_ref().and_then(|t| t.trace().cloned()),
                        authenticated: envelope.login.is_some(),
                        login: envelope
                            .login
                            .clone()
                            .filter(|_| self.config.config.auth.trace_login),
                    };
                    let entry = self.ctx.spool.begin(&envelope, &trace).await;
                    if let Err(e) = &entry {
                        tracing::error!(error = %e, "spool: cannot start a message");
                    }
                    self.in_flight = Some(InFlight { txn, entry });
                }
                Event::MessageData { txn, data } => self.append(txn, data).await,
                Event::MessageEnd { txn } => self.commit(txn).await,
                Event::MessageAbort { txn, reason } => {
                    if let Some(InFlight { txn: t, entry }) = self.in_flight.take() {
                        if let (true, Ok(incoming)) = (t == txn, entry) {
                            incoming.abort().await;
                        }
                    }
                    if let Some(r) = reason {
                        self.reject(r);
                    }
                }
                Event::StartTls => starttls = true,
                Event::Authenticate(credentials) => self.authenticate(credentials).await,
                Event::Rejected(r) => self.reject(r),
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
        self.metrics().auth(match decision.outcome {
            AuthOutcome::Success { .. } => AuthResult::Success,
            AuthOutcome::Invalid => AuthResult::Failure,
            AuthOutcome::Unavailable => AuthResult::Unavailable,
        });
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        self.closing |= decision.close;
        self.conn.handle_auth(clock::now(), decision.outcome);
    }

    fn reject(&mut self, r: Rejection) {
        self.summary.rejected += 1;
        self.metrics().message_rejected(reject_reason(r));
    }

    async fn append(&mut self, txn: TxnId, data: Vec<u8>) {
        let entry = match &mut self.in_flight {
            Some(f) if f.txn == txn => &mut f.entry,
            _ => return self.conn.recycle(data),
        };
        let Ok(incoming) = entry else {
            // The entry already failed: the content is dropped, the end gets 451.
            return self.conn.recycle(data);
        };
        let (res, emptied) = incoming.append(data).await;
        self.conn.recycle(emptied);
        if let Err(e) = res {
            tracing::error!(error = %e, "spool: write failed");
            if let Ok(failed) = std::mem::replace(entry, Err(e)) {
                failed.abort().await;
            }
        }
    }

    /// Makes the message durable, then lets the engine answer: 250 only after the fsyncs.
    async fn commit(&mut self, txn: TxnId) {
        let verdict = match self.in_flight.take() {
            Some(InFlight {
                txn: t,
                entry: Ok(incoming),
            }) if t == txn => incoming.commit().await,
            Some(InFlight { entry: Err(e), .. }) => Err(e),
            _ => {
                tracing::error!("spool: message end without a spool entry");
                return self.conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
            }
        };
        match verdict {
            Ok((id, fsync)) => {
                self.metrics().observe_fsync(fsync);
                self.metrics().message_accepted();
                self.conn.handle_spooled(clock::now(), txn, Ok(id.as_str()));
                self.summary.queue_ids.push(id.to_string());
                self.ctx.queue.enqueue(id);
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: commit failed; replying 451");
                self.metrics().message_rejected(RejectReason::SpoolFailure);
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
    }
}

fn reject_reason(r: Rejection) -> RejectReason {
    match r {
        Rejection::RelayDenied => RejectReason::RelayDenied,
        Rejection::UnknownRecipient => RejectReason::UnknownRecipient,
        Rejection::TooManyRecipients => RejectReason::TooManyRecipients,
        Rejection::MessageTooLarge => RejectReason::MessageTooLarge,
        Rejection::BareNewline => RejectReason::BareNewline,
        Rejection::LineTooLong => RejectReason::LineTooLong,
        Rejection::NulOctet => RejectReason::NulOctet,
        Rejection::NotAuthenticated => RejectReason::NotAuthenticated,
        Rejection::SenderNotOwned => RejectReason::SenderNotOwned,
    }
}
