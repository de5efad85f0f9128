//! One connection on a worker: the thin loop between the ring and the engine.
//!
//! Receive into an owned buffer, pass it through TLS when the session has it, feed the engine
//! with the current time, act on its events (spool writes, STARTTLS), send its replies. The
//! engine decides everything else.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::worker::WorkerCtx;
use zeroize::Zeroizing;

use crate::auth::Verdict;
use crate::clock;
use crate::guard::{Admission, BanReason};
use crate::metrics::{AuthResult, RejectReason, WorkerMetrics};
use crate::protocol::{
    AuthOutcome, CloseReason, Closing, Connection, Credentials, EngineConfig, Event, Rejection,
    Reply, Role, SpoolFault, TxnId,
};
use crate::spool::{Incoming, SpoolError, TlsTrace, TraceInfo};
use crate::tls::{TlsContext, TlsPump};

use crate::transport::Stream;

/// How a listener's connections begin.
#[derive(Clone)]
pub(super) struct ListenerSpec {
    /// The engine configuration of the listener.
    pub(super) engine: Arc<EngineConfig>,
    /// The TLS context, if the listener offers STARTTLS or is implicit TLS.
    pub(super) tls: Option<Arc<TlsContext>>,
    /// The handshake starts at connect ([RFC 8314 §3.3]).
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    pub(super) implicit: bool,
    /// How long a client may take over the TLS handshake.
    pub(super) handshake_timeout: Duration,
    /// How long to hold the banner back; a client that talks first is banned (pregreet).
    pub(super) greet_delay: Duration,
}

/// The message being received, and whether its spool entry is still healthy.
struct InFlight {
    txn: TxnId,
    entry: Result<Incoming, SpoolError>,
}

/// What the per-session log line reports.
struct Summary {
    outcome: &'static str,
    queue_ids: Vec<String>,
    rejected: u32,
}

/// The session's TLS state, when it has one.
struct Tls {
    pump: TlsPump,
    /// When the handshake must be over; `None` once it is.
    handshake_deadline: Option<Instant>,
    /// What the handshake settled, for the trace header.
    trace: Option<TlsTrace>,
}

/// Everything a session owns besides the socket.
struct Session {
    /// How long one send may take before the client is given up on.
    send_timeout: Duration,
    /// The banner is held back until then (`greet_delay_ms`); input before it is a pregreet.
    greet_at: Option<Instant>,
    /// AUTH failures on this session, for the tarpit.
    auth_failures: u32,
    /// The source was banned during this session: close after the reply.
    banned: bool,
    ctx: Rc<WorkerCtx>,
    peer: SocketAddr,
    conn: Connection,
    tls: Option<Tls>,
    in_flight: Option<InFlight>,
    summary: Summary,
    /// Plaintext replies waiting to be sent (or sealed).
    out: Vec<u8>,
    /// Ciphertext waiting to be sent.
    wire: Vec<u8>,
    /// Decrypted input waiting for the engine.
    plain: Vec<u8>,
}

/// Failed AUTH attempts one session may make before it is closed.
const MAX_AUTH_FAILURES_PER_SESSION: u32 = 3;

/// Why the session loop stops.
enum Stop {
    /// The socket failed, the peer went away, or TLS failed.
    Gone,
}

/// Serves one connection until it closes.
pub(super) async fn serve(
    ctx: Rc<WorkerCtx>,
    stream: Stream,
    peer: SocketAddr,
    spec: ListenerSpec,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = clock::now();
    let mut s = Session {
        send_timeout: spec.engine.timeouts.command,
        greet_at: (!spec.greet_delay.is_zero() && !spec.implicit).then(|| now + spec.greet_delay),
        auth_failures: 0,
        banned: false,
        conn: if spec.implicit {
            Connection::new_secure(spec.engine.clone(), now)
        } else {
            Connection::new(spec.engine.clone(), now)
        },
        ctx,
        peer,
        tls: None,
        in_flight: None,
        summary: Summary {
            outcome: "disconnected",
            queue_ids: Vec::new(),
            rejected: 0,
        },
        out: Vec::with_capacity(512),
        wire: Vec::new(),
        plain: Vec::new(),
    };
    // Admission before any TLS or SMTP work: banned sources (when the shield is not there to
    // drop them earlier) and sources over their connection limit get 421 and nothing more.
    let _slot = match s.ctx.guard.admit(peer.ip(), now) {
        Admission::Admit(slot) => slot,
        refused => {
            let why = if matches!(refused, Admission::TooMany) {
                s.ctx
                    .guard
                    .ban(peer.ip(), now, BanReason::TooManyConnections);
                s.summary.outcome = "too many connections";
                Closing::TooManyConnections
            } else {
                s.metrics().banned_refused();
                s.summary.outcome = "banned";
                Closing::Blocked
            };
            refuse(&stream, &Reply::service_closing(&s.ctx.hostname, why)).await;
            stream.shutdown();
            return s.finish().await;
        }
    };
    if spec.engine.role == Role::Submission && s.ctx.auth.config.is_trusted(peer.ip()) {
        s.conn.grant_trusted();
    }
    if spec.implicit && !s.start_tls(&spec, now) {
        return s.finish().await;
    }
    let mut buf = s.ctx.buffers.take();
    let mut stopping = *shutdown.borrow_and_update();
    if stopping {
        s.conn.handle_shutdown();
    }
    'session: loop {
        // Replies first: the client waits for them before it sends more (RFC 2920 §3.1).
        if s.flush(&stream).await.is_err() {
            break;
        }
        if s.conn.is_closed() || s.banned {
            stream.shutdown();
            break;
        }
        let read = stream.recv(buf);
        tokio::pin!(read);
        let (res, filled) = loop {
            tokio::select! {
                r = &mut read => break r,
                _ = sleep_until(s.deadline()) => {
                    let now = clock::now();
                    if s.greet_at.is_some_and(|at| now >= at) {
                        // The client waited, as it should: now the banner.
                        s.greet_at = None;
                        if s.flush(&stream).await.is_err() {
                            break 'session;
                        }
                        continue;
                    }
                    if s.tls.as_ref().and_then(|t| t.handshake_deadline).is_some_and(|d| now >= d) {
                        // No SMTP reply can be sent mid-handshake: just go.
                        s.metrics().tls_handshake_failed();
                        s.summary.outcome = "tls handshake timeout";
                        stream.abort();
                        break 'session;
                    }
                    s.conn.handle_timeout(now);
                }
                // A dropped sender also means the server is going away.
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    s.conn.handle_shutdown();
                }
            }
            s.drain_events().await;
            if s.conn.is_closed() {
                // Timeout or shutdown: say why, then go; the read in flight ends with the socket.
                let _ = s.flush(&stream).await;
                stream.abort();
                break 'session;
            }
        };
        buf = filled;
        let n = match res {
            Ok(0) | Err(_) => {
                if s.tls.as_ref().is_some_and(|t| t.pump.is_handshaking()) {
                    // The peer went away mid-handshake.
                    s.metrics().tls_handshake_failed();
                    s.summary.outcome = "tls handshake abandoned";
                }
                break;
            }
            Ok(n) => n,
        };
        if s.greet_at.is_some() {
            // It talked before the banner: a bot that does not wait for replies.
            s.ctx
                .guard
                .ban(peer.ip(), clock::now(), BanReason::Pregreet);
            s.summary.outcome = "pregreet";
            refuse(&stream, &Reply::pregreet(&s.ctx.hostname)).await;
            stream.abort();
            break;
        }
        s.metrics().bytes_received(n as u64);
        let input = buf.filled();
        let result = if s.tls.is_some() {
            s.input_tls(input).await
        } else {
            s.input_plain(input, &spec).await
        };
        if result.is_err() {
            // Send what TLS has to say (an alert), then go.
            let _ = s.flush(&stream).await;
            break;
        }
    }
    s.finish().await;
}

impl Session {
    fn metrics(&self) -> &WorkerMetrics {
        self.ctx.metrics()
    }

    /// The next moment something must happen without input: the engine's timeout, or the end
    /// of the TLS handshake's allowance.
    fn deadline(&self) -> Option<Instant> {
        if self.greet_at.is_some() {
            return self.greet_at;
        }
        let handshake = self.tls.as_ref().and_then(|t| t.handshake_deadline);
        match (self.conn.poll_timeout(), handshake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts a TLS layer under the engine; false (and the session ends) if there is no context
    /// or it fails to start a session.
    fn start_tls(&mut self, spec: &ListenerSpec, now: Instant) -> bool {
        let Some(ctx) = &spec.tls else {
            tracing::error!("TLS requested on a listener without a TLS context");
            return false;
        };
        match ctx.pump() {
            Ok(pump) => {
                self.tls = Some(Tls {
                    pump,
                    handshake_deadline: Some(now + spec.handshake_timeout),
                    trace: None,
                });
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a TLS session");
                self.metrics().tls_handshake_failed();
                false
            }
        }
    }

    /// Sends queued replies (sealed, under TLS) and any TLS records; nothing while the banner
    /// is held back.
    async fn flush(&mut self, stream: &Stream) -> Result<(), Stop> {
        if self.greet_at.is_some() {
            return Ok(());
        }
        if self.conn.poll_transmit(&mut self.out) {
            if let Some(tls) = &mut self.tls {
                let sealed = tls.pump.seal(&self.out, &mut self.wire);
                self.out.clear();
                if let Err(e) = sealed {
                    tracing::debug!(peer = %self.peer, error = %e, "tls: cannot seal");
                    return Err(Stop::Gone);
                }
            } else {
                let out = std::mem::take(&mut self.out);
                self.out = self.send(stream, out).await?;
            }
        }
        if self.conn.is_closed() {
            if let Some(tls) = &mut self.tls {
                tls.pump.close(&mut self.wire);
            }
        }
        if !self.wire.is_empty() {
            let wire = std::mem::take(&mut self.wire);
            self.wire = self.send(stream, wire).await?;
        }
        Ok(())
    }

    /// Sends all of `buf` within the command timeout: a client that stops reading cannot hold
    /// the session (and its buffers, and its per-source slot) forever.
    async fn send(&self, stream: &Stream, buf: Vec<u8>) -> Result<Vec<u8>, Stop> {
        match tokio::time::timeout(self.send_timeout, stream.send_all(buf)).await {
            Ok((Ok(()), emptied)) => Ok(emptied),
            Ok((Err(_), _)) => Err(Stop::Gone),
            Err(_) => {
                tracing::debug!(peer = %self.peer, "client stopped reading; closing");
                stream.abort();
                Err(Stop::Gone)
            }
        }
    }

    /// Feeds cleartext input to the engine. After STARTTLS, whatever the client sent behind
    /// the command is dropped unread (RFC 3207 §4.2; CVE-2011-0411).
    async fn input_plain(&mut self, mut input: &[u8], spec: &ListenerSpec) -> Result<(), Stop> {
        while !input.is_empty() {
            let used = self.conn.handle_input(clock::now(), input);
            input = input.get(used..).unwrap_or_default();
            if self.drain_events().await {
                // The 220 goes out in the clear; everything after it is TLS.
                let _ = self.conn.poll_transmit(&mut self.out);
                return self.begin_starttls(spec, clock::now());
            }
            if self.conn.is_closed() {
                // Input after QUIT, or after a 421, is never read.
                break;
            }
        }
        Ok(())
    }

    /// The engine accepted STARTTLS: its 220 is in `out` (still cleartext), the rest of the
    /// input is gone; put TLS in place for everything that follows.
    fn begin_starttls(&mut self, spec: &ListenerSpec, now: Instant) -> Result<(), Stop> {
        let cleartext = std::mem::take(&mut self.out);
        if !self.start_tls(spec, now) {
            return Err(Stop::Gone);
        }
        // The 220 must not be sealed: it travels ahead of the handshake, in the clear.
        self.wire.extend_from_slice(&cleartext);
        self.conn.handle_tls_established(now);
        Ok(())
    }

    /// Decrypts input and feeds the plaintext to the engine.
    async fn input_tls(&mut self, input: &[u8]) -> Result<(), Stop> {
        let mut off = 0;
        while off < input.len() {
            let Some(tls) = &mut self.tls else {
                return Err(Stop::Gone);
            };
            let was_handshaking = tls.pump.is_handshaking();
            let used = match tls.pump.feed(
                input.get(off..).unwrap_or_default(),
                &mut self.plain,
                &mut self.wire,
            ) {
                Ok(used) => used,
                Err(e) => {
                    if was_handshaking {
                        self.metrics().tls_handshake_failed();
                        self.summary.outcome = "tls handshake failed";
                    } else {
                        self.summary.outcome = "tls error";
                    }
                    tracing::debug!(peer = %self.peer, error = %e, "tls");
                    return Err(Stop::Gone);
                }
            };
            off += used;
            if was_handshaking && !tls.pump.is_handshaking() {
                tls.handshake_deadline = None;
                if let Some(info) = tls.pump.info() {
                    self.ctx.metrics().tls_handshake(info.version);
                    tls.trace = Some(TlsTrace {
                        version: info.version.to_owned(),
                        cipher: info.cipher.to_owned(),
                    });
                }
            }
            let peer_closed = tls.pump.peer_closed();
            let mut plain = std::mem::take(&mut self.plain);
            let mut rest: &[u8] = &plain;
            while !rest.is_empty() && !self.conn.is_closed() {
                let used = self.conn.handle_input(clock::now(), rest);
                rest = rest.get(used..).unwrap_or_default();
                // STARTTLS inside TLS is refused by the engine (503), so no event asks for
                // a second layer here.
                let _ = self.drain_events().await;
            }
            plain.clear();
            self.plain = plain;
            if peer_closed || used == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Acts on every event the engine has queued, in order; returns true on STARTTLS.
    async fn drain_events(&mut self) -> bool {
        let mut starttls = false;
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::MessageStart { txn, envelope } => {
                    let trace = TraceInfo {
                        peer: self.peer,
                        helo: envelope.helo.clone(),
                        greeting: envelope.greeting,
                        smtputf8: envelope.smtputf8,
                        hostname: self.ctx.hostname.clone(),
                        received_at: clock::wall(),
                        tls: self.tls.as_ref().and_then(|t| t.trace.clone()),
                        authenticated: envelope.login.is_some(),
                        login: envelope
                            .login
                            .clone()
                            .filter(|_| self.ctx.auth.config.trace_login),
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
                    if reason == CloseReason::TooManyErrors {
                        self.ctx
                            .guard
                            .ban(self.peer.ip(), clock::now(), BanReason::BadCommands);
                    }
                    self.summary.outcome = match reason {
                        CloseReason::Quit => "quit",
                        CloseReason::Timeout => "timeout",
                        CloseReason::TooManyErrors => "too many errors",
                        CloseReason::Shutdown => "shutdown",
                    };
                }
            }
        }
        starttls
    }

    /// Checks credentials off the ring, delays failures (tarpit), counts them toward a ban.
    async fn authenticate(&mut self, credentials: Credentials) {
        let auth = self.ctx.auth.clone();
        let ip = self.peer.ip();
        let verdict = if credentials.authorize_as.is_some() {
            // Acting for another identity is not offered: a failure like any other.
            Verdict::Invalid
        } else if let Some(_slot) = auth.begin_check(ip) {
            let password = Zeroizing::new(credentials.password.expose().to_vec());
            auth.verifier
                .verify(credentials.username.clone(), password)
                .await
        } else {
            // This source already has its share of checks running: 454, try again later.
            Verdict::Busy
        };
        let outcome = match verdict {
            Verdict::Ok { user } => {
                // A success does not clear the source's failures: one good account must not
                // reset the count for guesses against others from the same address.
                self.metrics().auth(AuthResult::Success);
                tracing::info!(peer = %self.peer, login = %user, "authenticated");
                AuthOutcome::Success {
                    senders: auth.store.allowed_senders(&user),
                    login: user,
                }
            }
            Verdict::Invalid => {
                self.auth_failures += 1;
                self.metrics().auth(AuthResult::Failure);
                let now = clock::now();
                if let Some(ban) = auth.abuse.record_failure(ip, now) {
                    // AUTH bans last `auth.ban_secs`, not the shield's default.
                    let duration = ban.until.saturating_duration_since(now);
                    self.ctx
                        .guard
                        .ban_for(ip, now, BanReason::AuthFailures, duration);
                }
                // Close after the reply when the source is banned (by this failure or by
                // another session's), and after a few failures on one session: guesses on
                // connections opened before a ban must not go on uncounted.
                if self.auth_failures >= MAX_AUTH_FAILURES_PER_SESSION
                    || self.ctx.guard.is_banned(ip, now)
                {
                    self.banned = true;
                }
                // The tarpit: a guesser's rate drops with every failure on the session.
                let delay = auth.abuse.tarpit(self.auth_failures);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                AuthOutcome::Invalid
            }
            Verdict::Busy => {
                self.metrics().auth(AuthResult::Unavailable);
                AuthOutcome::Unavailable
            }
        };
        self.conn.handle_auth(clock::now(), outcome);
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
                self.ctx.delivery.enqueue(id);
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: commit failed; replying 451");
                self.metrics().message_rejected(RejectReason::SpoolFailure);
                self.conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
            }
        }
    }

    /// Cleans up and writes the session's log line.
    async fn finish(mut self) {
        if let Some(InFlight {
            entry: Ok(entry), ..
        }) = self.in_flight.take()
        {
            entry.abort().await;
        }
        let tls = self
            .tls
            .as_ref()
            .and_then(|t| t.trace.as_ref())
            .map(|t| t.version.clone())
            .unwrap_or_default();
        tracing::info!(
            peer = %self.peer,
            helo = %self.conn.helo().unwrap_or_default(),
            tls = %tls,
            outcome = self.summary.outcome,
            queued = %self.summary.queue_ids.join(","),
            rejected = self.summary.rejected,
            "session"
        );
    }
}

/// Sends one reply outside the engine's dialogue (the session is refused before or instead of
/// it); the caller closes the connection.
async fn refuse(stream: &Stream, reply: &Reply) {
    let mut out = Vec::new();
    reply.write(&mut out);
    let _ = stream.send_all(out).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
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
        Rejection::NotAuthenticated => RejectReason::NotAuthenticated,
        Rejection::SenderNotOwned => RejectReason::SenderNotOwned,
    }
}
