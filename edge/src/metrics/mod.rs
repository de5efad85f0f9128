//! Prometheus metrics, with nothing shared on the data path.
//!
//! ```text
//!  worker 0 ──► WorkerMetrics[0] ─┐
//!  worker 1 ──► WorkerMetrics[1] ─┼──► Metrics::render (sums) ──► GET /metrics (serve thread)
//!  queue ────► delivery counters ┘
//! ```
//!
//! Each io_uring worker thread counts into its own [`WorkerMetrics`], on cache lines no other
//! thread writes, with `Relaxed` atomic adds: counting costs a few nanoseconds and never
//! contends. Only a scrape reads across workers, and it sums. The text is the Prometheus
//! exposition format 0.0.4; [`serve`] exposes it over a small blocking HTTP/1.1 server on its
//! own thread (the control plane, kept off the rings).
//!
//! Exported series (each with `# HELP` and `# TYPE`; `listener` is the listener's `name`, or
//! its bound address):
//!
//! | name | type |
//! |---|---|
//! | `smtp_edge_connections_accepted_total{listener}` | counter |
//! | `smtp_edge_connections_active{listener}` | gauge: accepted − closed |
//! | `smtp_edge_messages_accepted_total` | counter |
//! | `smtp_edge_messages_rejected_total{reason}` | counter, every [`RejectReason`] always present |
//! | `smtp_edge_recipients_rejected_total{reason}` | counter, every [`RecipientReason`] always present |
//! | `smtp_edge_banned_connections_total{listener}` | counter: refused at connect, source banned |
//! | `smtp_edge_connections_refused_total{listener,reason}` | counter: `per_ip`, `max_connections` caps |
//! | `smtp_edge_checks_total{check,result}` | counter: `check` = `spf`, `dkim`, `dmarc`, `arc`; `result` = RFC 8601's `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror` |
//! | `smtp_edge_bytes_received_total` | counter |
//! | `smtp_edge_spool_fsync_seconds` | histogram, buckets [`FSYNC_BUCKETS`] |
//! | `smtp_edge_messages_delivered_total` | counter: recipients delivered (Maildir or next hop) |
//! | `smtp_edge_delivery_attempts_total{via,result}` | counter: one per recipient per attempt; `via` = `maildir`, `lmtp`, `smtp`, `mx`; `result` = `sent`, `deferred`, `bounced` |
//! | `smtp_edge_queue_messages{state}` | gauge: `active` (not attempted yet), `deferred` |
//! | `smtp_edge_shield_packets_total{action}` | counter: `passed`, `dropped_rate`, `dropped_banned`, `dropped_malformed` |
//! | `smtp_edge_shield_bans_active` | gauge |
//! | `smtp_edge_dnsbl_hits_total{zone}` | counter: clients each `[[checks.dnsbl]]` zone listed (only with lists) |
//! | `smtp_edge_build_info{version,commit}` | gauge, always 1 |
//! | `process_open_fds`, `process_max_fds`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_start_time_seconds` | gauges, from `/proc/self` |
//! | `process_cpu_seconds_total` | counter, from `/proc/self` |
//!
//! The shield series come from a late-bound source ([`Metrics::set_shield_source`]): the shield
//! loads after the metrics exist, and its counters live in the kernel (or in the server's
//! userspace ban list). Until a source is set, and when none is, they are all zero.

mod http;
mod process;
mod render;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crate::guard::DnsblHits;
use crate::relay::{Verdict, Via};

pub use http::{serve, MAX_CONNECTIONS, MAX_REQUEST_HEAD, REQUEST_DEADLINE};
pub use process::ProcessStats;
pub use worker::{
    AuthResult, RecipientReason, RefuseReason, RejectReason, WorkerMetrics, AUTH_RESULTS,
    FSYNC_BUCKETS, TLS_VERSIONS,
};

/// All the counters of the process: one [`WorkerMetrics`] per worker, the delivery stage's, and
/// the shield's source once set.
pub struct Metrics {
    workers: Vec<WorkerMetrics>,
    /// The `listener` label of each listener, in config order.
    listeners: Vec<String>,
    delivery: DeliveryMetrics,
    shield: OnceLock<ShieldSource>,
    /// Hits per DNS block list, once the lists are known.
    dnsbl: OnceLock<Arc<DnsblHits>>,
}

/// Reads the shield's counters at scrape time (see [`Metrics::set_shield_source`]).
pub type ShieldSource = Box<dyn Fn() -> ShieldStats + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("workers", &self.workers)
            .field("listeners", &self.listeners)
            .field("delivery", &self.delivery)
            .field("shield_source", &self.shield.get().is_some())
            .finish()
    }
}

/// What the shield has done since it loaded, as exported under `smtp_edge_shield_*`.
///
/// The packet counters are segments to protected ports judged by the XDP program (or, with
/// the userspace fallback, connections judged at accept); `bans_active` is the number of bans
/// in force now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShieldStats {
    /// Let through.
    pub passed: u64,
    /// SYNs dropped over the per-source rate.
    pub dropped_rate: u64,
    /// Dropped because the source is banned.
    pub dropped_banned: u64,
    /// Dropped because the TCP header could not be judged (fragments of TCP, overlong IPv6
    /// header chains, truncation).
    pub dropped_malformed: u64,
    /// Bans in force.
    pub bans_active: u64,
}

/// The queue's counters. It is one thread, off the rings, so these need no per-thread split;
/// the alignment keeps them off the workers' lines all the same.
#[repr(align(128))]
#[derive(Debug, Default)]
struct DeliveryMetrics {
    delivered: AtomicU64,
    /// `[via][result]`, indexed like [`Via::ALL`] and [`VERDICTS`].
    attempts: [[AtomicU64; 3]; 4],
    queued_active: AtomicU64,
    queued_deferred: AtomicU64,
}

/// The `result` label values of `smtp_edge_delivery_attempts_total`, in index order.
pub const VERDICTS: [Verdict; 3] = [Verdict::Delivered, Verdict::Deferred, Verdict::Failed];

impl Metrics {
    /// Counters for `workers` worker threads, all zero. Pass
    /// [`Config::worker_count`](crate::config::Config::worker_count), and the `listener` label
    /// of each listener in config order: connection counters are kept per listener, indexed
    /// like `listeners`.
    pub fn new(workers: usize, listeners: Vec<String>) -> Arc<Metrics> {
        Arc::new(Metrics {
            workers: (0..workers)
                .map(|_| WorkerMetrics::new(listeners.len()))
                .collect(),
            listeners,
            delivery: DeliveryMetrics::default(),
            shield: OnceLock::new(),
            dnsbl: OnceLock::new(),
        })
    }

    /// Sets where `smtp_edge_dnsbl_hits_total{zone}` comes from (the lists of `[checks]`).
    /// Only the first call takes effect.
    pub fn set_dnsbl_hits(&self, hits: Arc<DnsblHits>) {
        let _ = self.dnsbl.set(hits);
    }

    /// Each DNS block list and how many clients it listed; empty without lists.
    pub fn dnsbl_hits(&self) -> Vec<(String, u64)> {
        self.dnsbl.get().map(|h| h.snapshot()).unwrap_or_default()
    }

    /// Sets where the `smtp_edge_shield_*` series come from: `source` is called on every
    /// scrape, on the metrics thread (off the rings), so it may take a lock or read a BPF map.
    /// Only the first call takes effect; later ones are ignored (and return false).
    pub fn set_shield_source(&self, source: ShieldSource) -> bool {
        self.shield.set(source).is_ok()
    }

    /// The shield's counters now: zeros until [`Metrics::set_shield_source`] is called.
    pub fn shield_stats(&self) -> ShieldStats {
        self.shield.get().map_or_else(ShieldStats::default, |f| f())
    }

    /// The counters of worker `i`, which only that worker's thread should write.
    ///
    /// # Panics
    ///
    /// If `i` is not below the `workers` given to [`Metrics::new`]: a caller bug, never input.
    pub fn worker(&self, i: usize) -> &WorkerMetrics {
        &self.workers[i]
    }

    /// How many workers these metrics were made for.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The queue now holds `active` messages not attempted yet and `deferred` ones waiting
    /// for a retry.
    pub fn set_queue_size(&self, active: u64, deferred: u64) {
        self.delivery.queued_active.store(active, Relaxed);
        self.delivery.queued_deferred.store(deferred, Relaxed);
    }

    /// One recipient's attempt went `via` and ended in `verdict`
    /// (`smtp_edge_delivery_attempts_total{via,result}`); a delivery also counts in
    /// `smtp_edge_messages_delivered_total`. Called from the queue's thread, off the rings.
    pub fn delivery_attempt(&self, via: Via, verdict: Verdict) {
        let v = Via::ALL.iter().position(|&x| x == via).unwrap_or(0);
        let r = VERDICTS.iter().position(|&x| x == verdict).unwrap_or(0);
        self.delivery.attempts[v][r].fetch_add(1, Relaxed);
        if verdict == Verdict::Delivered {
            self.delivery.delivered.fetch_add(1, Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series, summed across workers,
    /// with the build and the process's figures read now from `/proc/self`.
    pub fn render(&self) -> String {
        render::render(self, &process::read())
    }
}

#[cfg(test)]
mod tests;
