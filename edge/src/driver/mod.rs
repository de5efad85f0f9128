//! The io_uring server: binds the listeners, starts one worker per core, and runs each
//! connection's thin I/O loop around a [`crate::protocol::Connection`].
//!
//! Startup order matters for "never lose mail": the spool is locked first (a second server on
//! the same spool stops there, before it binds or recovers anything), then prepared, and the
//! queue has taken over whatever a crash left in it before any worker accepts a connection.

mod context;
mod reload;
mod session;
mod worker;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::auth::AuthServices;
use crate::clock;
use crate::config::{Config, TlsMode};
use crate::control::ControlServer;
use crate::guard::{capacity, DnsblHits, Guard};
use crate::metrics::ShieldStats;
use crate::metrics::{self, Metrics};
use crate::protocol::Role;
use crate::queue::{self, QueueConfig, QueueHandle, RelayLink};
use crate::relay::Relay;
use crate::service::privileges::{self, PrivilegeError, RunAs};
use crate::spool::{self, LockError, SpoolError, SpoolLock};
use crate::tls::CertSource;
use crate::tls::{TlsContext, TlsError};
use crate::transport;
use context::{ListenerId, Snapshot};
pub use reload::{ReloadError, Reloaded, Reloader};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("listener[{index}].addr: cannot bind {addr}: {source}")]
    Bind {
        /// Position of the listener in the config.
        index: usize,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("metrics.addr: cannot bind {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The spool directory is unusable.
    #[error("spool.dir: {0}")]
    Spool(#[from] SpoolError),
    /// The spool directory is locked by another server, or cannot be locked.
    #[error("spool.dir: {0}")]
    SpoolLock(#[from] LockError),
    /// The queue could not start.
    #[error("queue: {0}")]
    Queue(String),
    /// The TLS certificates could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The shield is required and could not be loaded.
    #[error("shield: {0}")]
    Shield(#[from] crate::shield::ShieldError),
    /// The password verification threads could not start.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The control socket could not be opened.
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
    /// The Maildir root could not be created.
    #[error("delivery.maildir: cannot create {}: {source}", path.display())]
    Maildir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Privileges could not be dropped to `user`.
    #[error("{0}")]
    Privileges(#[from] PrivilegeError),
    /// A worker thread could not be spawned.
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

/// A running server.
pub struct Running {
    /// Each listener's role and bound address (port 0 resolved), in config order.
    pub listeners: Vec<(Role, SocketAddr)>,
    /// The metrics endpoint's address, if enabled.
    pub metrics: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<std::io::Result<()>>>,
    queue: QueueHandle,
    reloader: Arc<Reloader>,
    /// Held until the server has stopped: no other server may use this spool meanwhile.
    spool_lock: SpoolLock,
    /// Removed (and its thread stopped) when the server has stopped.
    control: ControlServer,
}

/// Asks a running server to stop; cheap to clone and to send to a signal thread.
#[derive(Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Stops accepting, lets messages in flight finish within the grace period, answers 421
    /// to idle sessions.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Gives the spool, the Maildir root and the self-signed certificate directory to `run_as`,
/// lets its registered buffers be locked in memory, and switches the process to it.
fn become_user(cfg: &Config, run_as: &RunAs, tls: bool, workers: usize) -> Result<(), StartError> {
    if privileges::is_root() {
        run_as.chown(&cfg.spool_dir, true)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::delivery::dir_mode(cfg.maildir_mode))
            .create(&cfg.maildir)
            .map_err(|source| StartError::Maildir {
                path: cfg.maildir.clone(),
                source,
            })?;
        run_as.chown(&cfg.maildir, false)?;
        if let (true, CertSource::SelfSigned { dir, .. }) = (tls, &cfg.tls.default_cert) {
            run_as.chown(dir, true)?;
        }
        // Registered buffers count against RLIMIT_MEMLOCK once we are not root; only root
        // may raise the hard limit, so do it now.
        privileges::raise_memlock(worker::REGISTERED_BYTES * workers as u64);
    }
    privileges::drop_to(run_as)?;
    tracing::info!(user = %run_as.user, uid = run_as.uid, group = %run_as.group, gid = run_as.gid, "running as {}", run_as.user);
    Ok(())
}

/// Binds everything, recovers the spool and starts the workers. `source` is the file `cfg`
/// was read from, which a reload reads again (`None`: the embedded default).
pub fn start(cfg: &Config, source: Option<&Path>) -> Result<Running, StartError> {
    let workers = cfg.worker_count().max(1);
    // Before anything else: a second server on this spool must not bind ports (with
    // SO_REUSEPORT it would succeed and take half the connections) nor run recovery (which would
    // delete the messages the first one is receiving).
    let spool_lock = SpoolLock::acquire(&cfg.spool_dir)?;
    // One TLS context for every worker and listener, loaded before anything is bound so that a
    // bad certificate fails the start, not the first handshake.
    let tls = if cfg.listeners.iter().any(|l| l.tls != TlsMode::None) {
        Some(Arc::new(TlsContext::new(&cfg.tls, clock::wall())?))
    } else {
        None
    };
    // Bind first: a port in use is the most common start failure, and should be reported
    // before anything else happens. Every address is probed before any is bound, so that only
    // another process's listener (a second server on the same ports, which SO_REUSEPORT would
    // let in) counts as in use, never one of ours.
    for (index, l) in cfg.listeners.iter().enumerate() {
        transport::ensure_unused(l.addr).map_err(|source| StartError::Bind {
            index,
            addr: l.addr,
            source,
        })?;
    }
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    for (index, l) in cfg.listeners.iter().enumerate() {
        let bind_err = |source| StartError::Bind {
            index,
            addr: l.addr,
            source,
        };
        let first = transport::bind_reuseport(l.addr).map_err(bind_err)?;
        // Port 0: every worker's socket must share the port the first one got.
        let addr = first.local_addr().map_err(bind_err)?;
        listeners.push((l.role, addr));
        let mut per_worker = vec![first];
        for _ in 1..workers {
            per_worker.push(transport::bind_reuseport(addr).map_err(bind_err)?);
        }
        for (w, socket) in per_worker.into_iter().enumerate() {
            if let Some(list) = sockets.get_mut(w) {
                list.push(socket);
            }
        }
    }

    // Each listener's name in metrics and logs: its `name`, or the address it is bound to.
    let ids: Vec<Arc<ListenerId>> = cfg
        .listeners
        .iter()
        .zip(&listeners)
        .enumerate()
        .map(|(index, (l, (_, addr)))| {
            let name = l.name.clone().unwrap_or_else(|| addr.to_string());
            Arc::new(ListenerId {
                index,
                name: name.into(),
                addr: *addr,
            })
        })
        .collect();
    let metrics = Metrics::new(workers, ids.iter().map(|id| id.name.to_string()).collect());
    let metrics_addr = match cfg.metrics_addr {
        Some(addr) => Some(
            metrics::serve(addr, metrics.clone())
                .map_err(|source| StartError::Metrics { addr, source })?
                .0,
        ),
        None => None,
    };

    spool::prepare(&cfg.spool_dir)?;
    let max_connections = capacity::max_connections(cfg.limits.max_connections, workers);
    let guard = Guard::start(
        &cfg.shield,
        &cfg.guard,
        cfg.limits.max_connections_per_ip,
        max_connections,
    )?;
    let stats_guard = guard.clone();
    metrics.set_shield_source(Box::new(move || {
        let (c, bans_active) = stats_guard.stats(clock::now());
        ShieldStats {
            passed: c.passed,
            dropped_rate: c.dropped_rate,
            dropped_banned: c.dropped_banned,
            dropped_malformed: c.dropped_malformed,
            bans_active,
        }
    }));
    // Everything that needs root is open: the listeners, the shield, the spool's lock and the
    // TLS keys. Hand the server's own files to `user` and become it, before any thread that
    // touches a file (queue, relay, control socket, workers) starts.
    match &cfg.run_as {
        Some(run_as) => become_user(cfg, run_as, tls.is_some(), workers)?,
        None if privileges::is_root() => tracing::warn!(
            "running as root: set `user` (and `group`) to drop privileges once the listeners \
             are bound"
        ),
        None => {}
    }
    // The top of every queue id of this run: the start time in µs, or one more than the last
    // run's if the clock went back, so ids never repeat across restarts.
    let now_micros = clock::wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let generation = spool::next_generation(&cfg.spool_dir, now_micros)?;
    // The relay first: the queue hands it network recipients as soon as it starts.
    let inbox = queue::Inbox::new();
    let relay = Relay::start(Arc::new(cfg.relay.clone()), inbox.reports())
        .map_err(|e| StartError::Queue(format!("starting the relay: {e}")))?;
    let queue = queue::start(
        queue_config(cfg, generation),
        metrics.clone(),
        inbox,
        Some(RelayLink {
            handle: relay.clone(),
            grace: cfg.shutdown_grace,
        }),
    )
    .map_err(|e| StartError::Queue(e.to_string()))?;

    let auth = Arc::new(AuthServices::start(&cfg.auth)?);
    let live = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        cfg.clone(),
        tls.as_ref(),
    )));
    let reloader = Arc::new(Reloader::new(reload::Parts {
        source: source.map(Path::to_path_buf),
        live: live.clone(),
        tls,
        auth: auth.clone(),
        guard: guard.clone(),
        queue: queue.clone(),
        relay,
        workers,
    }));
    let control = ControlServer::start(
        &cfg.control.socket,
        guard.clone(),
        queue.clone(),
        reloader.clone(),
    )?;
    let (stop, stop_rx) = watch::channel(false);
    // Clients each DNS list listed: counted by the workers, read by the metrics endpoint.
    let dnsbl_hits = Arc::new(DnsblHits::default());
    metrics.set_dnsbl_hits(dnsbl_hits.clone());
    let mut handles = Vec::new();
    for (id, worker_sockets) in sockets.into_iter().enumerate() {
        let setup = worker::WorkerSetup {
            id,
            listeners: worker_sockets,
            spool_dir: cfg.spool_dir.clone(),
            config: live.clone(),
            generation,
            queue: queue.clone(),
            metrics: metrics.clone(),
            listener_ids: ids.clone(),
            shutdown: stop_rx.clone(),
            grace: cfg.shutdown_grace,
            auth: auth.clone(),
            guard: guard.clone(),
            dnsbl_hits: dnsbl_hits.clone(),
            nameservers: cfg.relay.nameservers.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("smtp-edge-w{id}"))
            .spawn(move || worker::run(setup))
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }
    Ok(Running {
        listeners,
        metrics: metrics_addr,
        stop,
        workers: handles,
        queue,
        reloader,
        spool_lock,
        control,
    })
}

/// What the queue runs on, from `cfg`; `generation` is this run's.
fn queue_config(cfg: &Config, generation: u64) -> QueueConfig {
    QueueConfig {
        spool_dir: cfg.spool_dir.clone(),
        generation,
        hostname: cfg.hostname.clone(),
        local_domains: cfg.local_domains.iter().cloned().collect(),
        maildir: cfg.maildir.clone(),
        maildir_mode: cfg.maildir_mode,
        retry: queue::RetryPolicy::of(&cfg.relay),
        routes: (cfg.relay.local.clone(), cfg.relay.remote.clone()),
        rewrite: cfg.rewrite.clone(),
    }
}

impl Running {
    /// A handle that stops this server.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// What reloads this server's configuration (SIGHUP; the control socket has its own).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Waits for every worker to finish, then for the queue to finish its round.
    pub fn wait(self) -> std::io::Result<()> {
        let mut result = Ok(());
        for handle in self.workers {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(std::io::Error::other("worker thread panicked")),
            }
        }
        drop(self.stop);
        drop(self.control);
        self.queue.shutdown();
        drop(self.spool_lock);
        result
    }
}
