//! One worker: a thread with its own io_uring runtime, its own `SO_REUSEPORT` sockets, its own
//! registered buffers and spool writer. Nothing here is shared with other workers except the
//! read-only engine configs, the metrics slot this worker alone writes, and the delivery queue
//! (touched once per accepted message, after its 250).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::context::{ListenerId, LiveConfig, WorkerCtx};
use super::session;
use crate::auth::AuthServices;
use crate::checks::Verifier;
use crate::guard::{DnsblChecker, DnsblHits, Guard};
use crate::metrics::Metrics;
use crate::protocol::Role;
use crate::queue::QueueHandle;
use crate::spool::log::OnSeal;
use crate::spool::{QueueIdGen, SpoolWriter};
use crate::transport::{self, BufferPool, Listener};

/// Registered receive buffers per worker. A session holds one only while its input is being
/// handled (a session waiting for its client holds none), so these serve far more sessions
/// than their number; reads beyond them get heap buffers.
const FIXED_BUFFERS: usize = 512;
/// Size of one registered receive buffer: a typical 10 KB message arrives in one read.
const RECV_BUFFER: usize = 16 * 1024;
/// Memory each worker registers with its ring (locked, so counted against RLIMIT_MEMLOCK
/// for a user other than root).
pub(super) const REGISTERED_BYTES: u64 = (FIXED_BUFFERS * RECV_BUFFER) as u64;
/// Size of a heap receive buffer, for reads while every registered buffer is in use.
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
    /// This worker's sockets, one per listener, in config order.
    pub(super) listeners: Vec<std::net::TcpListener>,
    /// The spool directory.
    pub spool_dir: std::path::PathBuf,
    /// The configuration in force, swapped by a reload.
    pub(super) config: LiveConfig,
    /// This run's generation ([`crate::spool::next_generation`]): keeps queue ids unique
    /// across restarts.
    pub generation: u64,
    /// Where accepted messages go next.
    pub queue: QueueHandle,
    /// Shared metrics; this worker writes only its own slot.
    pub metrics: Arc<Metrics>,
    /// Every listener's name and address, in config order.
    pub(super) listener_ids: Vec<Arc<ListenerId>>,
    /// Becomes `true` when the server stops.
    pub shutdown: watch::Receiver<bool>,
    /// How long sessions with a message in flight may go on after shutdown.
    pub grace: Duration,
    /// Authentication: the shared verifier pool, credential store and failure tracker.
    pub auth: Arc<AuthServices>,
    /// Admission and bans.
    pub guard: Arc<Guard>,
    /// The DNS lists' hit counters, shared by every worker.
    pub dnsbl_hits: Arc<DnsblHits>,
    /// `dns.nameservers` (empty: the system resolver); bound at start, as for the relay.
    pub nameservers: Vec<std::net::SocketAddr>,
}

/// Runs a worker until shutdown and its grace period are over.
pub fn run(setup: WorkerSetup) -> std::io::Result<()> {
    transport::run(RING_ENTRIES, async move {
        let buffers = match BufferPool::register(FIXED_BUFFERS, RECV_BUFFER, HEAP_RECV_BUFFER) {
            Ok(pool) => pool,
            Err(e) => {
                // Registration can fail under a tight RLIMIT_MEMLOCK; heap buffers still work.
                tracing::warn!(worker = setup.id, error = %e, "cannot register buffers; using heap buffers");
                BufferPool::unregistered(HEAP_RECV_BUFFER)
            }
        };
        let ids = QueueIdGen::new(setup.generation, setup.id as u16);
        // The queue deletes each log segment the worker seals once its messages are done.
        let seals = setup.queue.clone();
        let on_seal: OnSeal = Rc::new(move |segment, messages| seals.sealed(segment, messages));
        let spool = SpoolWriter::open(&setup.spool_dir, ids, on_seal)
            .await
            .map_err(std::io::Error::other)?;
        // The checks as the server started: a reload does not change them (`config/restart.rs`).
        let snapshot = setup.config.load();
        let cfg = &snapshot.config;
        let delivery = cfg.listeners.iter().any(|l| l.role == Role::Delivery);
        let checks = if delivery && cfg.checks.any() {
            // Built here, on the worker's runtime, where its lookups run.
            match Verifier::new(cfg.checks.clone(), &cfg.relay.nameservers, &cfg.hostname) {
                Ok(v) => Some(Rc::new(v)),
                Err(e) => {
                    tracing::error!(worker = setup.id, error = %e, "checks are off on this worker");
                    None
                }
            }
        } else {
            None
        };
        let ctx = Rc::new(WorkerCtx {
            checks,
            buffers,
            spool,
            queue: setup.queue,
            config: setup.config,
            auth: setup.auth,
            guard: setup.guard,
            // Built here, on the worker's runtime, which its resolver's sockets belong to.
            dnsbl: DnsblChecker::new(setup.dnsbl_hits, &setup.nameservers),
            metrics: setup.metrics,
            listeners: setup.listener_ids,
            id: setup.id,
            active: Cell::new(0),
            idle: Notify::new(),
        });
        let mut accept_loops = Vec::new();
        for (index, listener) in setup.listeners.into_iter().enumerate() {
            let listener = Listener::from_std(listener);
            let ctx = ctx.clone();
            let shutdown = setup.shutdown.clone();
            accept_loops.push(transport::spawn(accept_loop(
                ctx, listener, index, shutdown,
            )));
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

/// Accepts on the socket of listener `index` until shutdown.
async fn accept_loop(
    ctx: Rc<WorkerCtx>,
    listener: Listener,
    index: usize,
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
        ctx.metrics().connection_accepted(index);
        ctx.active.set(ctx.active.get() + 1);
        // The session's configuration, for its whole life. Listeners never change on a
        // reload, so the index always names one.
        let snapshot = ctx.config.load_full();
        let session_ctx = ctx.clone();
        let shutdown = shutdown.clone();
        transport::spawn(async move {
            session::serve(session_ctx.clone(), stream, peer, snapshot, index, shutdown).await;
            session_ctx.metrics().connection_closed(index);
            session_ctx.active.set(session_ctx.active.get() - 1);
            session_ctx.idle.notify_waiters();
        });
    }
}
