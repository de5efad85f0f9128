//! What a worker's sessions share: the per-worker context, and how each listener's sessions
//! begin. Both the worker (which builds them) and the session loop (which uses them) depend on
//! this module, and not on each other.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::auth::AuthServices;
use crate::guard::Guard;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::protocol::EngineConfig;
use crate::proxy::ProxyConfig;
use crate::queue::QueueHandle;
use crate::spool::SpoolWriter;
use crate::tls::TlsContext;
use crate::transport::BufferPool;

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

/// Per-worker state shared by this worker's sessions (single-threaded, hence `Rc`).
pub(super) struct WorkerCtx {
    pub(super) buffers: BufferPool,
    pub(super) spool: Rc<SpoolWriter>,
    pub(super) queue: QueueHandle,
    pub(super) hostname: String,
    pub(super) auth: Arc<AuthServices>,
    pub(super) guard: Arc<Guard>,
    pub(super) metrics: Arc<Metrics>,
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
