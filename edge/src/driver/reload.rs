//! Reloading the configuration of a running server (SIGHUP, `smtp-edge reload`).
//!
//! The file is read and checked whole, and every certificate loaded, before anything changes:
//! a reload either applies or leaves everything as it was. Then each part takes its share:
//!
//! ```text
//!  file ──► Config::load ──► keep_restart_keys ──► preflight ──► certificates loaded
//!                │ errors: nothing changes          │ errors: nothing changes (either)
//!                ▼                                ▼
//!   TLS (new handshakes) · auth (users, aliases, failure limits) · guard (trusted, limits,
//!   ban length) · queue (domains, routes, retry policy, rewriting) · relay (routes, TLS
//!   policy, smarthost) · the session snapshot (domains, recipients, limits, hostname)
//! ```
//!
//! Sessions already open keep the snapshot they started with; attempts already under way
//! keep their settings. The keys that only a restart can change keep their running values
//! and are named in one warning line ([`Config::keep_restart_keys`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::context::{LiveConfig, Snapshot};
use crate::auth::AuthServices;
use crate::clock;
use crate::config::{Config, ConfigErrors, TlsMode};
use crate::guard::{capacity, Guard};
use crate::queue::QueueHandle;
use crate::relay::RelayHandle;
use crate::tls::{TlsContext, TlsError};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or does not validate.
    #[error("{0}")]
    Config(ConfigErrors),
    /// A certificate or key of the new file cannot be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl ReloadError {
    /// Each problem, as one `key: problem` line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ReloadError::Config(errors) => errors.0.iter().map(ToString::to_string).collect(),
            ReloadError::Tls(e) => vec![e.to_string()],
        }
    }
}

/// What a reload that applied did not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys the file changed that need a restart; they keep their running values.
    pub restart_needed: Vec<&'static str>,
}

/// Re-reads the configuration and hands each running part its share. Shared by the signal
/// thread and the control socket; one reload runs at a time.
pub struct Reloader {
    /// The file the server was started with; `None`: the embedded default.
    source: Option<PathBuf>,
    live: LiveConfig,
    tls: Option<Arc<TlsContext>>,
    auth: Arc<AuthServices>,
    guard: Arc<Guard>,
    queue: QueueHandle,
    relay: RelayHandle,
    /// Worker threads running: the derived connection cap depends on them.
    workers: usize,
    /// Held for the whole of a reload: two at once could apply halves of two files.
    one_at_a_time: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The running parts a [`Reloader`] reconfigures.
pub(super) struct Parts {
    pub(super) source: Option<PathBuf>,
    pub(super) live: LiveConfig,
    pub(super) tls: Option<Arc<TlsContext>>,
    pub(super) auth: Arc<AuthServices>,
    pub(super) guard: Arc<Guard>,
    pub(super) queue: QueueHandle,
    pub(super) relay: RelayHandle,
    pub(super) workers: usize,
}

impl Reloader {
    pub(super) fn new(parts: Parts) -> Reloader {
        Reloader {
            source: parts.source,
            live: parts.live,
            tls: parts.tls,
            auth: parts.auth,
            guard: parts.guard,
            queue: parts.queue,
            relay: parts.relay,
            workers: parts.workers,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// Reads the file again and, if all of it is good, applies it to new sessions and next
    /// attempts; otherwise nothing changes. Logs the outcome either way. Blocking file I/O:
    /// call it from a thread that may block (the signal thread, the control thread).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = self.apply();
        match &result {
            Ok(done) => {
                if !done.restart_needed.is_empty() {
                    tracing::warn!(
                        keys = %done.restart_needed.join(", "),
                        "reload: these keys need a restart; they keep their running values"
                    );
                }
                tracing::info!("reload: configuration applied to new sessions");
            }
            Err(e) => tracing::error!(
                problems = %e.problems().join("; "),
                "reload: configuration refused; everything stays as it was"
            ),
        }
        result
    }

    fn apply(&self) -> Result<Reloaded, ReloadError> {
        let mut fresh = match &self.source {
            Some(path) => Config::load(path),
            None => Config::from_toml_str(crate::config::DEFAULT_TOML),
        }
        .map_err(ReloadError::Config)?;
        let running = self.live.load_full();
        let restart_needed = fresh.keep_restart_keys(&running.config);
        // Everything that can fail comes before the first change: what `check-config` checks,
        // then the certificates as the TLS context loads them.
        let findings = fresh.preflight(clock::wall());
        if !findings.errors.is_empty() {
            return Err(ReloadError::Config(ConfigErrors(findings.errors)));
        }
        for w in &findings.warnings {
            tracing::warn!("reload: {w}");
        }
        let uses_tls = fresh.listeners.iter().any(|l| l.tls != TlsMode::None);
        let certificates = match &self.tls {
            Some(tls) if uses_tls => Some(tls.load(&fresh.tls, clock::wall())?),
            _ => None,
        };

        if let (Some(tls), Some(certificates)) = (&self.tls, certificates) {
            tls.install(certificates);
        }
        self.auth.reconfigure(&fresh.auth);
        self.guard.reconfigure(
            &fresh.guard,
            fresh.limits.max_connections_per_ip,
            capacity::max_connections(fresh.limits.max_connections, self.workers),
            Duration::from_secs(fresh.shield.ban_secs),
        );
        self.queue.reconfigure(super::queue_config(&fresh, 0));
        self.relay.reconfigure(Arc::new(fresh.relay.clone()));
        self.live
            .store(Arc::new(Snapshot::new(fresh, self.tls.as_ref())));
        Ok(Reloaded { restart_needed })
    }
}
