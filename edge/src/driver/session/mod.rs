//! One connection on a worker: the thin loop between the ring and the engine.
//!
//! Receive into an owned buffer, pass it through TLS when the session has it, feed the engine
//! with the current time, carry out its events, send its replies. The engine keeps every
//! protocol timer (greeting delay included); the guard decides admission and bans, and `auth`
//! decides on each AUTH attempt. This loop decides nothing: it executes.

mod events;
mod log;
mod proxy;
mod tls;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::{ListenerId, ListenerSpec, Snapshot, WorkerCtx};
use crate::auth::SessionAuth;
use crate::checks::{SenderCheck, Verifier};
use crate::clock;
use crate::dkim;
use crate::guard::Admission;
use crate::metrics::{RefuseReason, WorkerMetrics};
use crate::protocol::{Closing, Connection, Envelope, Reply, Role, SourceVerdict, TxnId};
use crate::spool::{Incoming, SpoolError, TraceInfo};
use crate::transport::{self, RecvBuf, Stream};
use log::Summary;
use tls::SessionTls;

/// The message being received, and whether its spool entry is still healthy.
struct InFlight {
    txn: TxnId,
    entry: Result<Incoming, SpoolError>,
    /// Its envelope, for the log line when it is accepted or refused.
    envelope: Envelope,
    /// Content octets received so far (after dot-unstuffing).
    size: u64,
}

/// An authenticated submission held in memory until its DKIM signature is known
/// ([`dkim::Hold`]): it reaches the spool at the end of its header section when it is not to be
/// signed, at the end of its data when it is.
struct Held {
    txn: TxnId,
    envelope: Envelope,
    trace: TraceInfo,
    hold: dkim::Hold,
}

/// A message held whole in memory until the checks have judged it (see
/// [`crate::checks::Verifier::message`]: DKIM needs the whole message), then spooled.
struct Checking {
    txn: TxnId,
    envelope: Envelope,
    trace: TraceInfo,
    /// The content as the client sent it; never over `limits.max_message_size`, which the
    /// engine enforces before it hands content out.
    content: Vec<u8>,
}

/// Everything a session owns besides the socket.
struct Session {
    /// How long one send may take before the client is given up on.
    send_timeout: Duration,
    /// The server is stopping; the engine has been told.
    stopping: bool,
    /// Close after the replies now queued: an AUTH decision said so.
    closing: bool,
    auth: SessionAuth,
    ctx: Rc<WorkerCtx>,
    /// The configuration this session started with, kept to its end across reloads.
    config: Arc<Snapshot>,
    /// The client: the socket's peer, or the address a PROXY header named.
    peer: SocketAddr,
    /// The balancer the client came through, when a PROXY header named the client.
    via: Option<SocketAddr>,
    /// The listener that accepted the connection.
    listener: Arc<ListenerId>,
    /// The authenticated login, once AUTH succeeded.
    login: Option<String>,
    conn: Connection,
    /// Boxed: most sessions on an MX never start TLS, and a session's state lives as long as
    /// it does (rustls's connection is over a kilobyte).
    tls: Option<Box<SessionTls>>,
    // The per-message states below are boxed: a session's state lives as long as it does, and
    // a session waiting for its client between messages should not carry them inline.
    in_flight: Option<Box<InFlight>>,
    held: Option<Box<Held>>,
    /// The DNS block list lookups of the client's address, started at admission; the engine
    /// asks for their verdict when the client says `MAIL`.
    source_check: Option<JoinHandle<SourceVerdict>>,
    /// The listener's role: only submissions are signed.
    role: Role,
    /// The message being held for the checks, on a delivery listener with checks on.
    checking: Option<Box<Checking>>,
    /// The SPF result from `MAIL` of the open transaction.
    sender_check: Option<Box<SenderCheck>>,
    /// The checks, on a delivery listener where some are on.
    checks: Option<Rc<Verifier>>,
    summary: Summary,
    /// Plaintext replies waiting to be sent (or sealed).
    out: Vec<u8>,
    /// Ciphertext waiting to be sent.
    wire: Vec<u8>,
    /// Decrypted input waiting for the engine.
    plain: Vec<u8>,
}

/// Why the session loop stops: the socket failed, the peer went away, or TLS failed.
struct Gone;

/// Serves one connection of listener `index` until it closes, on the configuration `config`.
///
/// The task lives as long as the connection, and an async fn's future is as large as its
/// largest state: every step that runs only while input is handled (feeding the engine, spool
/// writes, password checks, sending, the PROXY header, the end) is boxed at its call, so it is
/// allocated only while it runs, and a session that waits holds little more than its state.
pub(super) async fn serve(
    ctx: Rc<WorkerCtx>,
    stream: Stream,
    peer: SocketAddr,
    config: Arc<Snapshot>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (Some(spec), Some(listener)) = (
        config.listeners.get(index).cloned(),
        ctx.listeners.get(index).cloned(),
    ) else {
        tracing::error!(index, "no listener with this index in the configuration");
        return;
    };
    let mut arrival = proxy::Proxied {
        peer,
        via: None,
        early: Vec::new(),
    };
    if let Some(cfg) = &spec.proxy {
        // Before admission: the guard judges the client the header names, not the balancer.
        if proxy::admit(&stream, peer, cfg).is_err() {
            return;
        }
        match Box::pin(proxy::read_header(&stream, &ctx.buffers, peer, cfg)).await {
            Ok(proxied) => arrival = proxied,
            Err(proxy::Refused) => return,
        }
    }
    let now = clock::now();
    let mut s = Session::new(ctx, config, arrival.peer, listener, &spec, now);
    s.via = arrival.via;
    let peer = s.peer;
    // Admission before any TLS or SMTP work.
    let slot = match s.ctx.guard.admit(peer.ip(), now) {
        Admission::Admit(slot) => slot,
        refused => return Box::pin(s.refuse(&stream, refused)).await,
    };
    if slot.is_trusted() {
        // Our own software is not tested for pregreeting.
        s.conn.skip_greeting_delay();
    } else if spec.engine.role == Role::Delivery {
        s.check_source();
    }
    s.begin(&spec, &mut shutdown);
    if spec.implicit && !s.start_tls(&spec, now) {
        return Box::pin(s.finish()).await;
    }
    // What a balancer relayed behind its PROXY header, fed as if just received.
    let mut early = arrival.early;
    loop {
        // Replies first: the client waits for them before it sends more (RFC 2920 §3.1).
        if Box::pin(s.flush(&stream)).await.is_err() {
            break;
        }
        if s.conn.is_closed() || s.closing {
            stream.shutdown();
            break;
        }
        if !early.is_empty() {
            let input = std::mem::take(&mut early);
            s.metrics().bytes_received(input.len() as u64);
            if Box::pin(s.input(&input, &spec)).await.is_err() {
                let _ = Box::pin(s.flush(&stream)).await;
                break;
            }
            continue;
        }
        // The buffer is the pool's only while its bytes are fed: a session waiting for its
        // client holds none, and nothing else it no longer needs.
        s.trim();
        let buf = match s.recv(&stream, &mut shutdown).await {
            Some(filled) => filled,
            None => break,
        };
        if Box::pin(s.input(buf.filled(), &spec)).await.is_err() {
            // Send what TLS has to say (an alert), then go.
            let _ = Box::pin(s.flush(&stream)).await;
            break;
        }
    }
    Box::pin(s.finish()).await;
}

impl Session {
    fn new(
        ctx: Rc<WorkerCtx>,
        config: Arc<Snapshot>,
        peer: SocketAddr,
        listener: Arc<ListenerId>,
        spec: &ListenerSpec,
        now: Instant,
    ) -> Session {
        let conn = if spec.implicit {
            Connection::new_secure(spec.engine.clone(), now)
        } else {
            Connection::new(spec.engine.clone(), now)
        };
        let checks = ctx
            .checks
            .clone()
            .filter(|_| spec.engine.role == Role::Delivery);
        Session {
            send_timeout: spec.engine.timeouts.command,
            stopping: false,
            closing: false,
            auth: SessionAuth::default(),
            ctx,
            config,
            peer,
            via: None,
            listener,
            login: None,
            conn,
            tls: None,
            in_flight: None,
            held: None,
            source_check: None,
            role: spec.engine.role,
            checking: None,
            sender_check: None,
            checks,
            summary: Summary::new(),
            out: Vec::new(),
            wire: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Frees what a session waiting for input does not need: empty buffers' memory, here and
    /// in the engine.
    fn trim(&mut self) {
        self.conn.trim();
        for buf in [&mut self.out, &mut self.wire, &mut self.plain] {
            if buf.is_empty() {
                *buf = Vec::new();
            }
        }
    }

    fn metrics(&self) -> &WorkerMetrics {
        self.ctx.metrics()
    }

    /// Starts the DNS block list lookups of the client (never for trusted sources, which never
    /// get here), and has the engine wait for their verdict at `MAIL`.
    fn check_source(&mut self) {
        if !self.config.config.checks.dnsbl.is_enabled() {
            return;
        }
        let checker = self.ctx.dnsbl.clone();
        let config = self.config.clone();
        let ip = self.peer.ip();
        self.source_check = Some(transport::spawn(async move {
            checker.check(ip, &config.config.checks.dnsbl).await
        }));
        self.conn.require_source_verdict();
    }

    /// Tells the engine what it must know before the first input: a trusted source, a server
    /// already stopping.
    fn begin(&mut self, spec: &ListenerSpec, shutdown: &mut watch::Receiver<bool>) {
        let trusted = self.config.config.auth.is_trusted(self.peer.ip());
        if spec.engine.role == Role::Submission && trusted {
            self.conn.grant_trusted();
        }
        self.stopping = *shutdown.borrow_and_update();
        if self.stopping {
            self.conn.handle_shutdown();
        }
    }

    /// The guard refused the connection: one 421, then close.
    async fn refuse(mut self, stream: &Stream, refused: Admission) {
        let why = match refused {
            Admission::TooMany => {
                // Only this connection is refused: the source's other sessions (a transfer in
                // DATA, say) go on, and nothing is banned.
                self.metrics()
                    .connection_refused(self.listener.index, RefuseReason::PerIp);
                self.summary.outcome = "too many connections";
                Closing::TooManyConnections
            }
            Admission::Full => {
                self.metrics()
                    .connection_refused(self.listener.index, RefuseReason::MaxConnections);
                self.summary.outcome = "server full";
                Closing::ServerFull
            }
            // `Admit` never comes here: the caller serves it.
            Admission::Banned | Admission::Admit(_) => {
                self.metrics().banned_refused(self.listener.index);
                self.summary.outcome = "banned";
                Closing::Blocked
            }
        };
        let mut out = Vec::new();
        Reply::service_closing(&self.config.config.hostname, why).write(&mut out);
        let _ = stream.send_all(out).await;
        stream.shutdown();
        self.finish().await;
    }

    /// The next moment something must happen without input: the engine's next timer, or the
    /// end of the TLS handshake's allowance.
    fn deadline(&self) -> Option<Instant> {
        let handshake = self.tls.as_deref().and_then(SessionTls::deadline);
        match (self.conn.poll_timeout(), handshake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits for input, meanwhile handing the engine its deadlines and the shutdown; takes a
    /// buffer from the pool only once input is there. `None` once the session is over.
    async fn recv(
        &mut self,
        stream: &Stream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<RecvBuf> {
        let ctx = self.ctx.clone();
        let read = stream.recv_when_ready(|| ctx.buffers.take());
        tokio::pin!(read);
        loop {
            tokio::select! {
                (res, filled) = &mut read => return self.received(res, filled),
                _ = sleep_until(self.deadline()) => {
                    let now = clock::now();
                    if self.tls.as_deref().and_then(SessionTls::deadline).is_some_and(|d| now >= d) {
                        // No SMTP reply can be sent mid-handshake: just go.
                        self.metrics().tls_handshake_failed();
                        self.summary.outcome = "tls handshake timeout";
                        stream.abort();
                        return None;
                    }
                    self.conn.handle_timeout(now);
                }
                // A dropped sender also means the server is going away.
                _ = shutdown.changed(), if !self.stopping => {
                    self.stopping = true;
                    self.conn.handle_shutdown();
                }
            }
            Box::pin(self.drain_events()).await;
            // The greeting the engine released, or its 421; the read in flight goes on.
            if Box::pin(self.flush(stream)).await.is_err() {
                return None;
            }
            if self.conn.is_closed() {
                // The read in flight ends with the socket.
                stream.abort();
                return None;
            }
        }
    }

    /// The outcome of a receive: the buffer to feed, or `None` when the peer has gone.
    fn received(&mut self, res: std::io::Result<usize>, filled: RecvBuf) -> Option<RecvBuf> {
        match res {
            Ok(n) if n > 0 => {
                self.metrics().bytes_received(n as u64);
                Some(filled)
            }
            _ => {
                if self.tls.as_deref().is_some_and(SessionTls::is_handshaking) {
                    self.metrics().tls_handshake_failed();
                    self.summary.outcome = "tls handshake abandoned";
                }
                None
            }
        }
    }

    /// Puts a TLS layer under the engine; false (and the session ends) if there is no context
    /// or it fails to start a session.
    fn start_tls(&mut self, spec: &ListenerSpec, now: Instant) -> bool {
        let Some(ctx) = &spec.tls else {
            tracing::error!("TLS requested on a listener without a TLS context");
            return false;
        };
        match SessionTls::start(ctx, now, spec.handshake_timeout) {
            Ok(tls) => {
                self.tls = Some(Box::new(tls));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a TLS session");
                self.metrics().tls_handshake_failed();
                false
            }
        }
    }

    /// Sends queued replies (sealed, under TLS) and any TLS records.
    async fn flush(&mut self, stream: &Stream) -> Result<(), Gone> {
        if self.conn.poll_transmit(&mut self.out) {
            if let Some(tls) = &mut self.tls {
                let sealed = tls.seal(&self.out, &mut self.wire);
                self.out.clear();
                if let Err(e) = sealed {
                    tracing::debug!(peer = %self.peer, error = %e, "tls: cannot seal");
                    return Err(Gone);
                }
            } else {
                let out = std::mem::take(&mut self.out);
                self.out = self.send(stream, out).await?;
            }
        }
        if self.conn.is_closed() {
            if let Some(tls) = &mut self.tls {
                tls.close(&mut self.wire);
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
    async fn send(&self, stream: &Stream, buf: Vec<u8>) -> Result<Vec<u8>, Gone> {
        match tokio::time::timeout(self.send_timeout, stream.send_all(buf)).await {
            Ok((Ok(()), emptied)) => Ok(emptied),
            Ok((Err(_), _)) => Err(Gone),
            Err(_) => {
                tracing::debug!(peer = %self.peer, "client stopped reading; closing");
                stream.abort();
                Err(Gone)
            }
        }
    }

    /// Feeds received bytes to the engine, through TLS when the session has it.
    async fn input(&mut self, input: &[u8], spec: &ListenerSpec) -> Result<(), Gone> {
        if self.tls.is_some() {
            self.input_tls(input).await
        } else {
            self.input_plain(input, spec).await
        }
    }

    /// Feeds cleartext input to the engine. After STARTTLS, whatever the client sent behind
    /// the command is dropped unread (RFC 3207 §4.2; CVE-2011-0411).
    async fn input_plain(&mut self, mut input: &[u8], spec: &ListenerSpec) -> Result<(), Gone> {
        while !input.is_empty() {
            let used = self.conn.handle_input(clock::now(), input);
            input = input.get(used..).unwrap_or_default();
            if self.drain_events().await {
                // The 220 goes out in the clear; everything after it is TLS.
                let _ = self.conn.poll_transmit(&mut self.out);
                return self.begin_starttls(spec, clock::now());
            }
            if self.conn.is_closed() {
                // Input after QUIT, or after a 421 or 554, is never read.
                break;
            }
        }
        Ok(())
    }

    /// The engine accepted STARTTLS: its 220 is in `out` (still cleartext), the rest of the
    /// input is gone; put TLS in place for everything that follows.
    fn begin_starttls(&mut self, spec: &ListenerSpec, now: Instant) -> Result<(), Gone> {
        let cleartext = std::mem::take(&mut self.out);
        if !self.start_tls(spec, now) {
            return Err(Gone);
        }
        // The 220 must not be sealed: it travels ahead of the handshake, in the clear.
        self.wire.extend_from_slice(&cleartext);
        self.conn.handle_tls_established(now);
        Ok(())
    }

    /// Decrypts input and feeds the plaintext to the engine.
    async fn input_tls(&mut self, input: &[u8]) -> Result<(), Gone> {
        let mut off = 0;
        while off < input.len() {
            let Some(tls) = &mut self.tls else {
                return Err(Gone);
            };
            let was_handshaking = tls.is_handshaking();
            let cipher = input.get(off..).unwrap_or_default();
            let fed = match tls.feed(cipher, &mut self.plain, &mut self.wire) {
                Ok(fed) => fed,
                Err(e) => {
                    if was_handshaking {
                        self.metrics().tls_handshake_failed();
                        self.summary.outcome = "tls handshake failed";
                    } else {
                        self.summary.outcome = "tls error";
                    }
                    tracing::debug!(peer = %self.peer, error = %e, "tls");
                    return Err(Gone);
                }
            };
            off += fed.used;
            if let Some(version) = fed.handshake_done {
                self.metrics().tls_handshake(version);
            }
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
            if fed.peer_closed || fed.used == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Cleans up and writes the session's log line.
    async fn finish(mut self) {
        if let Some(lookups) = self.source_check.take() {
            // The session ended before MAIL: nobody needs the answers.
            lookups.abort();
        }
        if let Some(InFlight {
            entry: Ok(entry), ..
        }) = self.in_flight.take().map(|f| *f)
        {
            entry.abort().await;
        }
        let tls = self.tls.as_deref().and_then(SessionTls::trace);
        self.log_session(tls.map_or("", |t| t.version.as_str()));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
