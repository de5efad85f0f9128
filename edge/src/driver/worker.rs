//! One worker: a thread with its own io_uring runtime, its own `SO_REUSEPORT` sockets, its own
//! registered buffers and spool writer. Nothing here is shared with other workers except the
//! read-only engine configs, the metrics slot this worker alone writes, and the delivery queue
//! (touched once per accepted message, after its 250).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::session::{self, ListenerSpec};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use ipnet::IpNet;

use crate::auth::{source_of, AbuseTracker, AuthConfig, CredentialStore, Verifier};
use crate::delivery::DeliveryHandle;
use crate::guard::Guard;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::spool::{QueueIdGen, SpoolWriter};
use crate::transport::{BufferPool, Listener};

/// Registered receive buffers per worker; connections beyond these get heap buffers.
const FIXED_BUFFERS: usize = 512;
/// Size of one registered receive buffer: a typical 10 KB message arrives in one read.
const RECV_BUFFER: usize = 16 * 1024;
/// Size of a heap receive buffer, for connections beyond the registered pool: small, so that
/// 10,000 idle connections cost little memory (a pending read holds its buffer).
const HEAP_RECV_BUFFER: usize = 4 * 1024;
/// Pause after a failed accept (out of descriptors, memory): long enough not to spin, short
/// enough not to notice.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Submission queue entries of each ring.
const RING_ENTRIES: u32 = 4096;

/// What a worker thread is started with.
pub struct WorkerSetup {
    /// Index of this worker, also part of its queue ids.
    pub id: usize,
    /// This worker's sockets, each with what its listener's sessions start with.
    pub(super) listeners: Vec<(std::net::TcpListener, ListenerSpec)>,
    /// The spool directory.
    pub spool_dir: std::path::PathBuf,
    /// Our hostname, for trace headers.
    pub hostname: String,
    /// This run's generation ([`crate::spool::next_generation`]): keeps queue ids unique
    /// across restarts.
    pub generation: u64,
    /// Where accepted messages go next.
    pub delivery: DeliveryHandle,
    /// Shared metrics; this worker writes only its own slot.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the server stops.
    pub shutdown: watch::Receiver<bool>,
    /// How long sessions with a message in flight may go on after shutdown.
    pub grace: Duration,
    /// Authentication: the shared verifier pool, credential store and failure tracker.
    pub auth: Arc<AuthServices>,
    /// Admission and bans.
    pub guard: Arc<Guard>,
}

/// What sessions need for SMTP AUTH, shared by every worker. Touched once per AUTH attempt and
/// once per connection (the ban check), never per command.
pub struct AuthServices {
    /// `[auth]` as configured (trusted networks, trace policy).
    pub config: AuthConfig,
    /// The users and their aliases.
    pub store: Arc<CredentialStore>,
    /// Password checks, off the rings.
    pub verifier: Verifier,
    /// Failed logins per source, and bans.
    pub abuse: AbuseTracker,
    /// Password checks in flight per source, so that one source cannot fill the verifier's
    /// queue and lock everyone else out with 454s.
    pub in_flight: Mutex<HashMap<IpNet, u32>>,
}

/// Password checks one source may have in flight at once.
pub const MAX_CHECKS_PER_SOURCE: u32 = 2;

impl AuthServices {
    /// Takes a verification slot for `ip`'s source, or `None` if it has its share in flight.
    pub fn begin_check(&self, ip: IpAddr) -> Option<CheckSlot<'_>> {
        let source = source_of(ip);
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(source).or_insert(0);
        if *n >= MAX_CHECKS_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(CheckSlot {
            services: self,
            source,
        })
    }
}

/// One password check in flight, released on drop.
pub struct CheckSlot<'a> {
    services: &'a AuthServices,
    source: IpNet,
}

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .services
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

/// Per-worker state shared by this worker's sessions (single-threaded, hence `Rc`).
pub(super) struct WorkerCtx {
    pub(super) buffers: BufferPool,
    pub(super) spool: Rc<SpoolWriter>,
    pub(super) delivery: DeliveryHandle,
    pub(super) hostname: String,
    pub(super) auth: Arc<AuthServices>,
    pub(super) guard: Arc<Guard>,
    metrics: Arc<Metrics>,
    id: usize,
    active: Cell<usize>,
    idle: Notify,
}

impl WorkerCtx {
    pub(super) fn metrics(&self) -> &WorkerMetrics {
        self.metrics.worker(self.id)
    }
}

/// Runs a worker until shutdown and its grace period are over.
pub fn run(setup: WorkerSetup) -> std::io::Result<()> {
    tokio_uring::builder()
        .entries(RING_ENTRIES)
        .start(async move {
            let buffers = match BufferPool::register(FIXED_BUFFERS, RECV_BUFFER, HEAP_RECV_BUFFER) {
                Ok(pool) => pool,
                Err(e) => {
                    // Registration can fail under a tight RLIMIT_MEMLOCK; heap buffers still work.
                    tracing::warn!(worker = setup.id, error = %e, "cannot register buffers; using heap buffers");
                    BufferPool::unregistered(HEAP_RECV_BUFFER)
                }
            };
            let ids = QueueIdGen::new(setup.generation, setup.id as u16);
            let spool = SpoolWriter::open(&setup.spool_dir, ids)
                .await
                .map_err(std::io::Error::other)?;
            let ctx = Rc::new(WorkerCtx {
                buffers,
                spool,
                delivery: setup.delivery,
                hostname: setup.hostname,
                auth: setup.auth,
                guard: setup.guard,
                metrics: setup.metrics,
                id: setup.id,
                active: Cell::new(0),
                idle: Notify::new(),
            });
            let mut accept_loops = Vec::new();
            for (listener, spec) in setup.listeners {
                let listener = Listener::from_std(listener);
                let ctx = ctx.clone();
                let shutdown = setup.shutdown.clone();
                accept_loops.push(tokio_uring::spawn(accept_loop(ctx, listener, spec, shutdown)));
            }
            let mut shutdown = setup.shutdown;
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            for task in accept_loops {
                let _ = task.await;
            }
            // Sessions heard the shutdown too; wait for them, up to the grace period.
            let drained = async {
                while ctx.active.get() > 0 {
                    ctx.idle.notified().await;
                }
            };
            if tokio::time::timeout(setup.grace, drained).await.is_err() {
                tracing::warn!(
                    worker = setup.id,
                    sessions = ctx.active.get(),
                    "grace period over; dropping the remaining sessions"
                );
            }
            Ok(())
        })
}

async fn accept_loop(
    ctx: Rc<WorkerCtx>,
    listener: Listener,
    spec: ListenerSpec,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: log, keep the listener alive, and let a moment pass (the
                // ring would fail a new accept at once, spinning the worker).
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        ctx.metrics().connection_accepted();
        ctx.active.set(ctx.active.get() + 1);
        let session_ctx = ctx.clone();
        let spec = spec.clone();
        let shutdown = shutdown.clone();
        tokio_uring::spawn(async move {
            session::serve(session_ctx.clone(), stream, peer, spec, shutdown).await;
            session_ctx.metrics().connection_closed();
            session_ctx.active.set(session_ctx.active.get() - 1);
            session_ctx.idle.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_a_bounded_share_of_password_checks() {
        let config = AuthConfig::default();
        let store = Arc::new(CredentialStore::new(&config));
        let services = AuthServices {
            verifier: Verifier::new(store.clone(), 1).expect("one verifier thread"),
            abuse: AbuseTracker::new(&config),
            in_flight: Mutex::default(),
            config,
            store,
        };
        let a: IpAddr = "2001:db8::1".parse().expect("literal");
        let same_64: IpAddr = "2001:db8::2".parse().expect("literal");
        let other: IpAddr = "192.0.2.1".parse().expect("literal");
        let first = services.begin_check(a);
        let second = services.begin_check(same_64);
        assert!(first.is_some() && second.is_some());
        assert!(
            services.begin_check(a).is_none(),
            "a third check from the /64"
        );
        assert!(
            services.begin_check(other).is_some(),
            "other sources are unaffected"
        );
        drop(first);
        assert!(
            services.begin_check(a).is_some(),
            "a finished check frees its slot"
        );
    }
}
