//! Destinations and their connections, on the relay thread: attempts wait per destination,
//! at most `relay.max_connections_per_domain` connections serve each, and every connection
//! carries waiting attempts until none is left, then waits up to `relay.idle_secs` for more
//! before QUIT.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::sync::Notify;

use crate::protocol::client::{ClientConfig as SessionConfig, Dialect, Outcome, TlsPolicy};
use crate::transport::{self, Stream};

use super::resolve::{Resolver, Target};
use super::session::{self, Ended};
use super::{
    outcome, Attempt, AttemptResult, Peer, RcptOutcome, RelayConfig, Report, Route, Verdict, Via,
};

/// Attempts that share connections: the same recipient domain by MX, or the same configured
/// next hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum DestKey {
    /// `relay.remote = "mx"`: the domain's MX hosts.
    Mx(String),
    /// A configured next hop (LMTP or SMTP).
    Hop(Route),
}

impl DestKey {
    fn of(attempt: &Attempt) -> DestKey {
        match &attempt.route {
            Route::Mx => DestKey::Mx(attempt.domain.to_ascii_lowercase()),
            route => DestKey::Hop(route.clone()),
        }
    }

    fn via(&self) -> Via {
        match self {
            DestKey::Mx(_) => Via::Mx,
            DestKey::Hop(route) => route.via(),
        }
    }
}

/// One destination: what waits for it, and how many connections serve it.
#[derive(Default)]
struct Dest {
    pending: VecDeque<Attempt>,
    active: usize,
    /// Signalled (one permit) for each attempt queued: an idle connection takes it.
    work: Rc<Notify>,
}

/// Everything the relay thread's tasks share (the thread is single-threaded: `Rc` and
/// `RefCell`, borrowed only between awaits).
pub(super) struct Shared {
    /// The settings in force; a reload replaces them for connections opened after it.
    cfg: RefCell<Arc<RelayConfig>>,
    pub(super) tls: Arc<ClientConfig>,
    resolver: Resolver,
    results: Box<dyn Report>,
    dests: RefCell<HashMap<DestKey, Dest>>,
    /// Attempts submitted and not yet reported, by token: what shutdown reports deferred.
    outstanding: RefCell<HashMap<u64, Attempt>>,
    /// Signalled whenever a connection ends.
    pub(super) idle: Notify,
    /// Shutdown began: idle connections QUIT instead of waiting.
    closing: Cell<bool>,
}

/// Where one connection goes.
enum Endpoint {
    Tcp(Target),
    Unix(std::path::PathBuf),
}

impl Shared {
    pub(super) fn new(
        cfg: Arc<RelayConfig>,
        results: Box<dyn Report>,
        resolver: Resolver,
        tls: Arc<ClientConfig>,
    ) -> Shared {
        Shared {
            cfg: RefCell::new(cfg),
            tls,
            resolver,
            results,
            dests: RefCell::default(),
            outstanding: RefCell::default(),
            idle: Notify::new(),
            closing: Cell::new(false),
        }
    }

    /// The settings in force now.
    pub(super) fn cfg(&self) -> Arc<RelayConfig> {
        self.cfg.borrow().clone()
    }

    /// Puts a reload's settings in place for connections opened from now on.
    pub(super) fn reconfigure(&self, cfg: Arc<RelayConfig>) {
        *self.cfg.borrow_mut() = cfg;
    }

    /// Queues `attempt` for its destination and opens a connection if the destination may
    /// have one more.
    pub(super) fn submit(self: &Rc<Self>, attempt: Attempt) {
        if attempt.route == Route::Maildir || attempt.to.is_empty() {
            let detail = "maildir is written by the delivery stage, not the relay".to_owned();
            let outcome = outcome::local(Verdict::Deferred, "4.3.5", detail);
            return self.report(
                Via::Maildir,
                &attempt,
                vec![outcome; attempt.to.len()],
                None,
            );
        }
        self.outstanding
            .borrow_mut()
            .insert(attempt.token, attempt.clone());
        let key = DestKey::of(&attempt);
        {
            let mut dests = self.dests.borrow_mut();
            let dest = dests.entry(key.clone()).or_default();
            dest.pending.push_back(attempt);
            dest.work.notify_one();
        }
        self.maybe_connect(&key);
    }

    /// A new connection for `key` when more attempts wait than connections serve it, within
    /// the per-destination bound.
    fn maybe_connect(self: &Rc<Self>, key: &DestKey) {
        let mut dests = self.dests.borrow_mut();
        let Some(dest) = dests.get_mut(key) else {
            return;
        };
        if dest.pending.len() > dest.active && dest.active < self.cfg().max_connections_per_domain {
            dest.active += 1;
            let shared = Rc::clone(self);
            let key = key.clone();
            transport::spawn(async move {
                shared.connection(&key).await;
                shared.connection_ended(&key);
            });
        }
    }

    fn connection_ended(self: &Rc<Self>, key: &DestKey) {
        {
            let mut dests = self.dests.borrow_mut();
            if let Some(dest) = dests.get_mut(key) {
                dest.active -= 1;
                if dest.active == 0 && dest.pending.is_empty() {
                    dests.remove(key);
                }
            }
        }
        self.maybe_connect(key);
        self.idle.notify_waiters();
    }

    /// The next attempt waiting for `key`, for a session that is ready.
    fn take_next(&self, key: &DestKey) -> Option<Attempt> {
        self.dests.borrow_mut().get_mut(key)?.pending.pop_front()
    }

    /// The next attempt for `key`, for a session that is ready: one waiting now, or one
    /// submitted within `relay.idle_secs` (the connection is kept for it, as Postfix's
    /// connection cache does, instead of a new TCP and TLS handshake per trickle of mail).
    /// `None`: QUIT.
    pub(super) async fn next_or_idle(&self, key: &DestKey) -> Option<Attempt> {
        if let Some(attempt) = self.take_next(key) {
            return Some(attempt);
        }
        let idle = self.cfg().idle;
        if idle.is_zero() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            if self.closing.get() {
                return None;
            }
            let work = Rc::clone(&self.dests.borrow().get(key)?.work);
            // A permit left by an attempt another connection took wakes this one for nothing:
            // it looks again and goes back to waiting until the deadline.
            if tokio::time::timeout_at(deadline, work.notified())
                .await
                .is_err()
            {
                return self.take_next(key);
            }
            if let Some(attempt) = self.take_next(key) {
                return Some(attempt);
            }
        }
    }

    /// Reports every attempt still waiting for `key` with `outcome` for each recipient: the
    /// destination cannot be reached now.
    fn fail_waiting(&self, key: &DestKey, outcome: &RcptOutcome, peer: Option<Peer>) {
        let waiting: Vec<Attempt> = match self.dests.borrow_mut().get_mut(key) {
            Some(dest) => dest.pending.drain(..).collect(),
            None => Vec::new(),
        };
        for attempt in waiting {
            let outcomes = vec![outcome.clone(); attempt.to.len()];
            self.finish(key, &attempt, outcomes, peer.clone());
        }
    }

    /// Reports the result of `attempt`.
    pub(super) fn finish(
        &self,
        key: &DestKey,
        attempt: &Attempt,
        outcomes: Vec<RcptOutcome>,
        peer: Option<Peer>,
    ) {
        self.outstanding.borrow_mut().remove(&attempt.token);
        self.report(key.via(), attempt, outcomes, peer);
    }

    fn report(&self, via: Via, attempt: &Attempt, outcomes: Vec<RcptOutcome>, peer: Option<Peer>) {
        tracing::debug!(
            queue_id = %attempt.queue_id,
            via = via.as_str(),
            relay = %peer.as_ref().map(ToString::to_string).unwrap_or_default(),
            outcomes = ?outcomes.iter().map(|o| o.verdict.as_str()).collect::<Vec<_>>(),
            "relay attempt"
        );
        self.results.report(AttemptResult {
            token: attempt.token,
            queue_id: attempt.queue_id.clone(),
            via,
            outcomes,
            peer,
        });
    }

    /// Shutdown: every attempt not yet started is deferred now, and idle connections QUIT.
    pub(super) fn defer_waiting(&self) {
        self.closing.set(true);
        for dest in self.dests.borrow().values() {
            dest.work.notify_waiters();
        }
        let keys: Vec<DestKey> = self.dests.borrow().keys().cloned().collect();
        let outcome = outcome::local(
            Verdict::Deferred,
            "4.3.2",
            "the relay is shutting down".to_owned(),
        );
        for key in keys {
            self.fail_waiting(&key, &outcome, None);
        }
    }

    /// Whether no connection is open.
    pub(super) fn is_idle(&self) -> bool {
        self.dests.borrow().values().all(|d| d.active == 0)
    }

    /// Shutdown, after the grace: attempts still in a session are deferred.
    pub(super) fn defer_outstanding(&self) {
        let left: Vec<Attempt> = self
            .outstanding
            .borrow_mut()
            .drain()
            .map(|(_, a)| a)
            .collect();
        for attempt in left {
            let detail = "the relay stopped during delivery".to_owned();
            let outcome = outcome::local(Verdict::Deferred, "4.3.2", detail);
            let via = DestKey::of(&attempt).via();
            self.report(via, &attempt, vec![outcome; attempt.to.len()], None);
        }
    }

    /// One connection for `key`: finds its hosts, tries them in order until one carries
    /// mail, and defers what waits if none does.
    async fn connection(self: &Rc<Self>, key: &DestKey) {
        let endpoints = match key {
            DestKey::Mx(domain) => self.resolver.mx(domain, self.cfg().mx_port).await,
            DestKey::Hop(Route::Lmtp(hop) | Route::Smtp(hop)) => self.resolver.next_hop(hop).await,
            DestKey::Hop(Route::LmtpUnix(path)) => {
                return self
                    .try_endpoints(key, vec![Endpoint::Unix(path.clone())])
                    .await;
            }
            // Never keyed: submit answers Maildir itself, and Mx keys by domain.
            DestKey::Hop(Route::Maildir | Route::Mx) => Ok(Vec::new()),
        };
        match endpoints {
            Ok(targets) => {
                let endpoints = targets.into_iter().map(Endpoint::Tcp).collect();
                self.try_endpoints(key, endpoints).await;
            }
            Err(unreachable) => {
                let outcome =
                    outcome::local(unreachable.verdict, unreachable.status, unreachable.detail);
                self.fail_waiting(key, &outcome, None);
            }
        }
    }

    async fn try_endpoints(self: &Rc<Self>, key: &DestKey, endpoints: Vec<Endpoint>) {
        let mut last = outcome::local(
            Verdict::Deferred,
            "4.4.1",
            "no host to connect to".to_owned(),
        );
        let mut last_peer = None;
        for endpoint in endpoints {
            if self
                .dests
                .borrow()
                .get(key)
                .is_none_or(|d| d.pending.is_empty())
            {
                return;
            }
            let peer = match &endpoint {
                Endpoint::Tcp(target) => Peer {
                    host: target.host.clone(),
                    addr: Some(target.addr),
                    tls: None,
                },
                Endpoint::Unix(path) => Peer {
                    host: path.display().to_string(),
                    addr: None,
                    tls: None,
                },
            };
            let connected = self.reconnect(&endpoint).await;
            let stream = match connected {
                Ok(stream) => stream,
                Err(e) => {
                    // X.4.1: no answer from host.
                    last = outcome::local(
                        Verdict::Deferred,
                        "4.4.1",
                        format!("connect to {peer}: {e}"),
                    );
                    last_peer = None;
                    continue;
                }
            };
            let cfg = self.session_config(key);
            let plaintext_retry = cfg.tls == TlsPolicy::Opportunistic;
            let mut ended = session::run(self, key, stream, peer.clone(), cfg).await;
            if let (Ended::TlsFailed(_), true) = (&ended, plaintext_retry) {
                // Opportunistic TLS (Postfix's `may`): a host whose TLS is broken still
                // gets its mail, in the clear, on a new connection without STARTTLS.
                if let Ok(stream) = self.reconnect(&endpoint).await {
                    let mut cfg = self.session_config(key);
                    cfg.tls = TlsPolicy::None;
                    ended = session::run(self, key, stream, peer.clone(), cfg).await;
                }
            }
            match ended {
                Ended::Served => return,
                Ended::Unready(cause) | Ended::TlsFailed(cause) => {
                    // RFC 5321 §5.1: a host that will not take mail now sends us to the next.
                    let mut o = outcome::from_engine(&Outcome::Deferred(cause));
                    o.verdict = Verdict::Deferred;
                    if let Some(rest) = o.status.strip_prefix('5') {
                        o.status = format!("4{rest}");
                    }
                    o.detail = format!("host {peer} said: {}", o.detail);
                    last = o;
                    last_peer = Some(peer);
                }
            }
        }
        self.fail_waiting(key, &last, last_peer);
    }

    /// A connection to `endpoint`, within `relay.connect_timeout_secs`.
    async fn reconnect(&self, endpoint: &Endpoint) -> std::io::Result<Stream> {
        match endpoint {
            Endpoint::Tcp(target) => {
                let limit = self.cfg().connect_timeout;
                match tokio::time::timeout(limit, Stream::connect(target.addr)).await {
                    Ok(res) => res,
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Endpoint::Unix(path) => Stream::connect_unix(path).await,
        }
    }

    /// The client engine's settings for a session to `key`.
    fn session_config(&self, key: &DestKey) -> SessionConfig {
        let relay = self.cfg();
        let (dialect, tls) = match key {
            // A mail store is local: LMTP never uses STARTTLS.
            DestKey::Hop(Route::Lmtp(_) | Route::LmtpUnix(_)) => (Dialect::Lmtp, TlsPolicy::None),
            _ => (Dialect::Smtp, relay.tls),
        };
        let mut cfg = SessionConfig::new(dialect, &relay.helo);
        cfg.tls = tls;
        cfg.timeouts = relay.timeouts;
        let smarthost =
            matches!(key, DestKey::Hop(route @ Route::Smtp(_)) if *route == relay.remote);
        if smarthost {
            cfg.credentials = relay.smarthost_credentials.clone();
        }
        cfg
    }
}
