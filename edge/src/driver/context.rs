//! What a worker's sessions share: the per-worker context, the configuration snapshot, and
//! how each listener's sessions begin. Both the worker (which builds them) and the session
//! loop (which uses them) depend on this module, and not on each other.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::auth::AuthServices;
use crate::checks::Verifier;
use crate::config::{Config, TlsMode};
use crate::guard::{DnsblChecker, Guard};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::protocol::EngineConfig;
use crate::proxy::ProxyConfig;
use crate::queue::QueueHandle;
use crate::spool::SpoolWriter;
use crate::tls::TlsContext;
use crate::transport::BufferPool;

/// A listener as its metrics and log lines name it; fixed at start, like the listeners.
#[derive(Debug)]
pub(super) struct ListenerId {
    /// Its place in the config, which indexes its connection counters.
    pub(super) index: usize,
    /// `listener[i].name`, or its bound address: the `listener` label and log field.
    pub(super) name: Arc<str>,
    /// The address it is bound to (port 0 resolved).
    pub(super) addr: SocketAddr,
}

/// How a listener's connections begin.
#[derive(Clone)]
pub(super) struct ListenerSpec {
    /// The engine configuration of the listener (its greeting delay included).
    pub(super) engine: Arc<EngineConfig>,
    /// The TLS context, if the listener offers STARTTLS or is implicit TLS.
    pub(super) tls: Option<Arc<TlsContext>>,
    /// The handshake starts at connect ([RFC 8314 §3.3]).
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    pub(super) implicit: bool,
    /// How long a client may take over the TLS handshake.
    pub(super) handshake_timeout: Duration,
    /// With `proxy_protocol = true`: every connection starts with a PROXY header from one of
    /// these balancers.
    pub(super) proxy: Option<Arc<ProxyConfig>>,
}

/// The configuration sessions run on: the validated file and, built from it once, each
/// listener's [`ListenerSpec`] (in config order). A session loads the snapshot in force when
/// it is accepted and keeps it to its end, so it never sees half of a reload; a reload
/// ([`super::Reloader`]) publishes a new one for the sessions after it.
pub(super) struct Snapshot {
    pub(super) config: Config,
    pub(super) listeners: Vec<ListenerSpec>,
}

impl Snapshot {
    /// The snapshot of `config`; listeners with TLS use `tls`.
    pub(super) fn new(config: Config, tls: Option<&Arc<TlsContext>>) -> Snapshot {
        let proxy = Arc::new(config.proxy.clone());
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerSpec {
                engine: Arc::new(config.engine_config(l)),
                tls: (l.tls != TlsMode::None).then(|| tls.cloned()).flatten(),
                implicit: l.tls == TlsMode::Implicit,
                handshake_timeout: config.tls.handshake_timeout,
                proxy: l.proxy_protocol.then(|| proxy.clone()),
            })
            .collect();
        Snapshot { config, listeners }
    }
}

/// The snapshot in force, shared by every worker and swapped whole by a reload.
pub(super) type LiveConfig = Arc<ArcSwap<Snapshot>>;

/// Per-worker state shared by this worker's sessions (single-threaded, hence `Rc`).
pub(super) struct WorkerCtx {
    pub(super) buffers: BufferPool,
    pub(super) spool: Rc<SpoolWriter>,
    pub(super) queue: QueueHandle,
    /// The configuration in force; each session loads it once, when it is accepted.
    pub(super) config: LiveConfig,
    pub(super) auth: Arc<AuthServices>,
    pub(super) guard: Arc<Guard>,
    /// This worker's DNS block list lookups (its own resolver and cache).
    pub(super) dnsbl: DnsblChecker,
    /// SPF, DKIM, DMARC and ARC for delivery sessions; `None` when every check is off (or
    /// there is no delivery listener).
    pub(super) checks: Option<Rc<Verifier>>,
    pub(super) metrics: Arc<Metrics>,
    /// Every listener's name and address, in config order.
    pub(super) listeners: Vec<Arc<ListenerId>>,
    pub(super) id: usize,
    /// Sessions open on this worker, for the shutdown grace period.
    pub(super) active: Cell<usize>,
    /// Signalled whenever a session ends.
    pub(super) idle: Notify,
}

impl WorkerCtx {
    /// This worker's metrics slot.
    pub(super) fn metrics(&self) -> &WorkerMetrics {
        self.metrics.worker(self.id)
    }
}
