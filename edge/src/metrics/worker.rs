//! The counters one worker thread owns.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::checks::{Check, Verdict};

/// Why a message was refused (at MAIL, or whole after its data); the `reason` label of
/// `smtp_edge_messages_rejected_total`. Refused recipients are [`RecipientReason`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Over `limits.max_message_size` (552 5.3.4, [RFC 1870]).
    ///
    /// [RFC 1870]: https://www.rfc-editor.org/rfc/rfc1870
    MessageTooLarge,
    /// A bare LF or CR in the body: the SMTP smuggling shape, refused whole.
    BareNewline,
    /// A text line over `limits.max_line_length` octets.
    LineTooLong,
    /// A NUL octet in the body, refused whole like a bare CR or LF.
    NulOctet,
    /// The spool could not make the message durable (451 4.3.0).
    SpoolFailure,
    /// MAIL on the submission port before AUTH (530 5.7.0, [RFC 4954 §6]).
    ///
    /// [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6
    NotAuthenticated,
    /// MAIL FROM an address the authenticated user does not own, or `<>`, on submission
    /// (553 5.7.1).
    SenderNotOwned,
    /// SPF `fail` under `checks.spf = "enforce"`, at MAIL FROM (550 5.7.23).
    SpfFail,
    /// DMARC `fail` under `p=reject` and `checks.dmarc = "enforce"`, after the data (550 5.7.1).
    DmarcReject,
    /// Anything else.
    Other,
}

impl RejectReason {
    /// Every reason, in the order they are rendered.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::MessageTooLarge,
        RejectReason::BareNewline,
        RejectReason::LineTooLong,
        RejectReason::NulOctet,
        RejectReason::SpoolFailure,
        RejectReason::NotAuthenticated,
        RejectReason::SenderNotOwned,
        RejectReason::SpfFail,
        RejectReason::DmarcReject,
        RejectReason::Other,
    ];

    /// The Prometheus label value, snake_case (`message_too_large`), also the `reason` of log
    /// lines.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::MessageTooLarge => "message_too_large",
            RejectReason::BareNewline => "bare_newline",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::NulOctet => "nul_octet",
            RejectReason::SpoolFailure => "spool_failure",
            RejectReason::NotAuthenticated => "not_authenticated",
            RejectReason::SenderNotOwned => "sender_not_owned",
            RejectReason::SpfFail => "spf_fail",
            RejectReason::DmarcReject => "dmarc_reject",
            RejectReason::Other => "other",
        }
    }

    /// Index into [`RejectReason::ALL`] and the per-reason counters.
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a recipient was refused at RCPT; the `reason` label of
/// `smtp_edge_recipients_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientReason {
    /// RCPT TO a foreign domain on the delivery port, or a relay trick (550 5.7.1).
    RelayDenied,
    /// RCPT TO a local address that does not exist (550 5.1.1).
    UnknownRecipient,
    /// More recipients than `limits.max_recipients` (452 4.5.3, [RFC 5321 §4.5.3.1.10]).
    ///
    /// [RFC 5321 §4.5.3.1.10]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.10
    TooManyRecipients,
    /// Anything else.
    Other,
}

impl RecipientReason {
    /// Every reason, in the order they are rendered.
    pub const ALL: [RecipientReason; 4] = [
        RecipientReason::RelayDenied,
        RecipientReason::UnknownRecipient,
        RecipientReason::TooManyRecipients,
        RecipientReason::Other,
    ];

    /// The Prometheus label value, snake_case (`relay_denied`), also the `reason` of log lines.
    pub fn label(&self) -> &'static str {
        match self {
            RecipientReason::RelayDenied => "relay_denied",
            RecipientReason::UnknownRecipient => "unknown_recipient",
            RecipientReason::TooManyRecipients => "too_many_recipients",
            RecipientReason::Other => "other",
        }
    }
}

/// Upper bounds (inclusive, in seconds) of the `smtp_edge_spool_fsync_seconds` buckets, from
/// 50 µs (a write-back cache) to 1 s (a disk in trouble); slower fsyncs land in `+Inf`.
pub const FSYNC_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// [`FSYNC_BUCKETS`] in nanoseconds, so that `observe_fsync` compares integers.
const FSYNC_BUCKETS_NANOS: [u64; 14] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// The counters of one worker thread. Only its owner writes them; a scrape reads them all.
///
/// Every write is one `Relaxed` `fetch_add` on memory no other thread writes, so the data path
/// never waits on another core: there is no lock and no shared cache line. The struct is
/// aligned to 128 bytes, so in `Vec<WorkerMetrics>` each worker's counters start on their own
/// pair of cache lines (128 rather than 64 because x86 and Apple cores prefetch lines in
/// adjacent pairs; crossbeam's `CachePadded` makes the same choice).
///
/// A scrape may see one counter updated and a related one not yet (for example a connection
/// accepted but `bytes_received` from it not yet counted); every counter is still monotonic.
#[repr(align(128))]
#[derive(Debug)]
pub struct WorkerMetrics {
    /// Connection counters per listener, indexed like the listeners given to
    /// [`super::Metrics::new`].
    pub(super) listeners: Box<[ListenerCounters]>,
    pub(super) messages_accepted: AtomicU64,
    pub(super) messages_rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Refused recipients, indexed like [`RecipientReason::ALL`].
    pub(super) recipients_rejected: [AtomicU64; RecipientReason::ALL.len()],
    pub(super) bytes_received: AtomicU64,
    /// Per-bucket (not cumulative) fsync counts; the last is `+Inf`. Cumulated at render time
    /// so that `observe_fsync` touches one bucket.
    pub(super) fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    /// Total fsync time in nanoseconds; wraps after 584 years of fsync.
    pub(super) fsync_nanos: AtomicU64,
    /// Completed TLS handshakes, indexed like [`TLS_VERSIONS`].
    pub(super) tls_handshakes: [AtomicU64; TLS_VERSIONS.len()],
    /// TLS handshakes that failed (bad input, timeout, peer gone).
    pub(super) tls_failures: AtomicU64,
    /// AUTH attempts, indexed like [`AUTH_RESULTS`].
    pub(super) auth: [AtomicU64; AUTH_RESULTS.len()],
    /// Check results, `[check][verdict]`, indexed like [`Check::ALL`] and [`Verdict::ALL`].
    pub(super) checks: [[AtomicU64; Verdict::ALL.len()]; Check::ALL.len()],
}

/// One listener's connection counters on one worker. Aligned like [`WorkerMetrics`], so that
/// the boxed slice of each worker (a separate allocation) shares no cache line with another's.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct ListenerCounters {
    pub(super) accepted: AtomicU64,
    pub(super) closed: AtomicU64,
    /// Refused at connect because the source is banned.
    pub(super) banned: AtomicU64,
    /// Refused at connect by a cap, indexed like [`RefuseReason::ALL`].
    pub(super) refused: [AtomicU64; RefuseReason::ALL.len()],
}

/// Which cap refused a connection; the `reason` label of
/// `smtp_edge_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Its source already held `limits.max_connections_per_ip` connections.
    PerIp,
    /// The server already held `limits.max_connections` connections.
    MaxConnections,
}

impl RefuseReason {
    /// Every reason, in the order they are rendered.
    pub const ALL: [RefuseReason; 2] = [RefuseReason::PerIp, RefuseReason::MaxConnections];

    /// The Prometheus label value.
    pub fn label(&self) -> &'static str {
        match self {
            RefuseReason::PerIp => "per_ip",
            RefuseReason::MaxConnections => "max_connections",
        }
    }
}

/// The `result` label values of `smtp_edge_auth_total`.
pub const AUTH_RESULTS: [&str; 3] = ["success", "failure", "unavailable"];

/// How an AUTH attempt ended, for [`WorkerMetrics::auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// 235.
    Success,
    /// 535: wrong user or password.
    Failure,
    /// 454: the check could not be made.
    Unavailable,
}

/// The `version` label values of `smtp_edge_tls_handshakes_total`: rustls speaks these two.
pub const TLS_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

impl WorkerMetrics {
    /// Counters for a worker serving `listeners` listeners, all zero.
    pub(super) fn new(listeners: usize) -> WorkerMetrics {
        WorkerMetrics {
            listeners: (0..listeners)
                .map(|_| ListenerCounters::default())
                .collect(),
            messages_accepted: AtomicU64::default(),
            messages_rejected: Default::default(),
            recipients_rejected: Default::default(),
            bytes_received: AtomicU64::default(),
            fsync_buckets: Default::default(),
            fsync_nanos: AtomicU64::default(),
            tls_handshakes: Default::default(),
            tls_failures: AtomicU64::default(),
            auth: Default::default(),
            checks: Default::default(),
        }
    }

    /// Listener `listener`'s counters; `None` for an index past the listeners given at start,
    /// which is then not counted rather than a panic on the data path.
    #[inline]
    fn listener(&self, listener: usize) -> Option<&ListenerCounters> {
        self.listeners.get(listener)
    }

    /// A connection was accepted on listener `listener`.
    #[inline]
    pub fn connection_accepted(&self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.accepted.fetch_add(1, Relaxed);
        }
    }

    /// A connection accepted by this worker on listener `listener` was closed, for whatever
    /// reason. Must be paired with one [`WorkerMetrics::connection_accepted`] on the same worker
    /// and listener, or the active gauge drifts.
    #[inline]
    pub fn connection_closed(&self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.closed.fetch_add(1, Relaxed);
        }
    }

    /// A message was spooled and answered 250.
    #[inline]
    pub fn message_accepted(&self) {
        self.messages_accepted.fetch_add(1, Relaxed);
    }

    /// A recipient was refused for `reason`.
    #[inline]
    pub fn recipient_rejected(&self, reason: RecipientReason) {
        if let Some(counter) = self.recipients_rejected.get(reason as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// A message was refused for `reason`.
    #[inline]
    pub fn message_rejected(&self, reason: RejectReason) {
        // `index` is below `ALL.len()` by construction (one arm per variant); `get` keeps a
        // future variant missing from `ALL` from panicking the data path.
        if let Some(counter) = self.messages_rejected.get(reason.index()) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `n` bytes were read from a client (before TLS, if any).
    #[inline]
    pub fn bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Relaxed);
    }

    /// A TLS handshake completed with `version` (one of [`TLS_VERSIONS`]; others are not
    /// counted).
    #[inline]
    pub fn tls_handshake(&self, version: &str) {
        if let Some(i) = TLS_VERSIONS.iter().position(|v| *v == version) {
            if let Some(counter) = self.tls_handshakes.get(i) {
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    /// An AUTH attempt ended with `result`.
    #[inline]
    pub fn auth(&self, result: AuthResult) {
        if let Some(counter) = self.auth.get(result as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// A connection to listener `listener` from a banned source was refused with 421.
    #[inline]
    pub fn banned_refused(&self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.banned.fetch_add(1, Relaxed);
        }
    }

    /// A connection to listener `listener` was refused with 421 by the cap `reason` names.
    #[inline]
    pub fn connection_refused(&self, listener: usize, reason: RefuseReason) {
        if let Some(counter) = self
            .listener(listener)
            .and_then(|l| l.refused.get(reason as usize))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// A check (SPF, DKIM, DMARC, ARC) gave `verdict`.
    #[inline]
    pub fn check(&self, check: Check, verdict: Verdict) {
        let c = Check::ALL.iter().position(|&x| x == check);
        let v = Verdict::ALL.iter().position(|&x| x == verdict);
        if let Some(counter) = c
            .zip(v)
            .and_then(|(c, v)| self.checks.get(c).and_then(|row| row.get(v)))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// A TLS handshake failed.
    #[inline]
    pub fn tls_handshake_failed(&self) {
        self.tls_failures.fetch_add(1, Relaxed);
    }

    /// One spool fsync took `d`.
    #[inline]
    pub fn observe_fsync(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // 14 bounds: a linear scan is as fast as a binary search and easier to trust.
        let bucket = FSYNC_BUCKETS_NANOS
            .iter()
            .position(|&le| nanos <= le)
            .unwrap_or(FSYNC_BUCKETS_NANOS.len());
        if let Some(counter) = self.fsync_buckets.get(bucket) {
            counter.fetch_add(1, Relaxed);
        }
        self.fsync_nanos.fetch_add(nanos, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_place_in_all() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn recipient_reasons_index_their_place_in_all() {
        for (i, r) in RecipientReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn refuse_reasons_index_their_place_in_all() {
        for (i, r) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn bucket_tables_agree() {
        for (s, n) in FSYNC_BUCKETS.iter().zip(FSYNC_BUCKETS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }

    #[test]
    fn workers_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerMetrics>(), 128);
        assert_eq!(std::mem::size_of::<WorkerMetrics>() % 128, 0);
        assert_eq!(std::mem::align_of::<ListenerCounters>(), 128);
        assert_eq!(std::mem::size_of::<ListenerCounters>() % 128, 0);
    }
}
