//! The Prometheus text exposition format, version 0.0.4.
//!
//! <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>
//!
//! Written by hand rather than with the `prometheus` or `metrics` crates: their registries own
//! the counters (shared atomics or a global recorder, behind locks or hashing on every
//! update), while ours live in per-worker cache lines that only a scrape sums. Rendering those
//! sums is a few `writeln!`s per series; a crate would add a second copy of every counter or a
//! lookup on the hot path, for a format this small.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::process::ProcessStats;
use super::worker::{
    ListenerCounters, RecipientReason, RefuseReason, RejectReason, WorkerMetrics, AUTH_RESULTS,
    FSYNC_BUCKETS, TLS_VERSIONS,
};
use super::{Metrics, VERDICTS};
use crate::build_info;
use crate::checks::{Check, Verdict};
use crate::relay::Via;

/// Sums the counters of every worker and writes every series, then the build and the
/// process's figures `process` holds.
pub(super) fn render(m: &Metrics, process: &ProcessStats) -> String {
    let sum = |f: fn(&WorkerMetrics) -> u64| m.workers.iter().map(f).fold(0u64, u64::wrapping_add);

    let mut out = String::with_capacity(4096);
    per_listener(
        &mut out,
        m,
        ("smtp_edge_connections_accepted_total", "counter"),
        "Connections accepted, by listener.",
        |l| l.accepted.load(Relaxed),
    );
    header(
        &mut out,
        "smtp_edge_connections_active",
        "Connections open now (accepted minus closed), by listener.",
        "gauge",
    );
    for (i, label) in m.listeners.iter().enumerate() {
        let of = |f: fn(&ListenerCounters) -> &AtomicU64| {
            m.workers
                .iter()
                .filter_map(|w| w.listeners.get(i))
                .map(|l| f(l).load(Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        let accepted = of(|l| &l.accepted);
        // `closed` is loaded after `accepted`, so it can include a close whose accept was not
        // yet counted; saturate rather than wrap to 2^64.
        let closed = of(|l| &l.closed);
        let _ = writeln!(
            out,
            "smtp_edge_connections_active{{listener=\"{}\"}} {}",
            LabelValue(label),
            accepted.saturating_sub(closed)
        );
    }
    counter(
        &mut out,
        "smtp_edge_messages_accepted_total",
        "Messages spooled and answered 250.",
        sum(|w| w.messages_accepted.load(Relaxed)),
    );

    // Every label value, zeros included, so that rate() sees a series from the start.
    let reasons: Vec<&str> = RejectReason::ALL.iter().map(|r| r.label()).collect();
    labelled(
        &mut out,
        m,
        Family {
            name: "smtp_edge_messages_rejected_total",
            help: "Messages refused (at MAIL, or whole after their data), by reason.",
            label: "reason",
            values: &reasons,
        },
        |w| &w.messages_rejected,
    );
    let reasons: Vec<&str> = RecipientReason::ALL.iter().map(|r| r.label()).collect();
    labelled(
        &mut out,
        m,
        Family {
            name: "smtp_edge_recipients_rejected_total",
            help: "Recipients refused at RCPT, by reason.",
            label: "reason",
            values: &reasons,
        },
        |w| &w.recipients_rejected,
    );
    labelled(
        &mut out,
        m,
        Family {
            name: "smtp_edge_tls_handshakes_total",
            help: "TLS handshakes completed, by protocol version.",
            label: "version",
            values: &TLS_VERSIONS,
        },
        |w| &w.tls_handshakes,
    );
    labelled(
        &mut out,
        m,
        Family {
            name: "smtp_edge_auth_total",
            help: "SMTP AUTH attempts, by result.",
            label: "result",
            values: &AUTH_RESULTS,
        },
        |w| &w.auth,
    );
    per_listener(
        &mut out,
        m,
        ("smtp_edge_banned_connections_total", "counter"),
        "Connections refused with 421 because their source is banned, by listener.",
        |l| l.banned.load(Relaxed),
    );
    let name = "smtp_edge_connections_refused_total";
    header(
        &mut out,
        name,
        "Connections refused with 421 by a connection cap (per source, or global), by listener.",
        "counter",
    );
    for (i, label) in m.listeners.iter().enumerate() {
        for (r, reason) in RefuseReason::ALL.iter().enumerate() {
            let n = m
                .workers
                .iter()
                .filter_map(|w| w.listeners.get(i)?.refused.get(r))
                .map(|c| c.load(Relaxed))
                .fold(0u64, u64::wrapping_add);
            let _ = writeln!(
                out,
                "{name}{{listener=\"{}\",reason=\"{}\"}} {n}",
                LabelValue(label),
                reason.label()
            );
        }
    }
    counter(
        &mut out,
        "smtp_edge_tls_handshake_failures_total",
        "TLS handshakes that failed: bad input, timeout, or the peer went away.",
        sum(|w| w.tls_failures.load(Relaxed)),
    );

    let name = "smtp_edge_checks_total";
    header(
        &mut out,
        name,
        "Results of the inbound checks (SPF per transaction, DKIM per signature, DMARC and \
         ARC per message), by check and RFC 8601 result.",
        "counter",
    );
    for (c, check) in Check::ALL.iter().enumerate() {
        for (v, verdict) in Verdict::ALL.iter().enumerate() {
            let n = m
                .workers
                .iter()
                .filter_map(|w| w.checks.get(c).and_then(|row| row.get(v)))
                .map(|x| x.load(Relaxed))
                .fold(0u64, u64::wrapping_add);
            let (check, result) = (check.as_str(), verdict.as_str());
            let _ = writeln!(out, "{name}{{check=\"{check}\",result=\"{result}\"}} {n}");
        }
    }

    counter(
        &mut out,
        "smtp_edge_bytes_received_total",
        "Bytes read from clients.",
        sum(|w| w.bytes_received.load(Relaxed)),
    );

    header(
        &mut out,
        "smtp_edge_spool_fsync_seconds",
        "Time to fsync a spooled message, the wait before each 250.",
        "histogram",
    );
    let mut cumulative = 0u64;
    for (i, le) in FSYNC_BUCKETS
        .iter()
        .map(|le| le.to_string())
        .chain(std::iter::once("+Inf".to_owned()))
        .enumerate()
    {
        let n = m
            .workers
            .iter()
            .filter_map(|w| w.fsync_buckets.get(i))
            .map(|c| c.load(Relaxed))
            .fold(0u64, u64::wrapping_add);
        cumulative = cumulative.wrapping_add(n);
        let _ = writeln!(
            out,
            "smtp_edge_spool_fsync_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let nanos = sum(|w| w.fsync_nanos.load(Relaxed));
    let _ = writeln!(
        out,
        "smtp_edge_spool_fsync_seconds_sum {}",
        nanos as f64 / 1e9
    );
    // _count is the +Inf bucket by definition; deriving it from the buckets keeps the two equal
    // even when a scrape races an observation.
    let _ = writeln!(out, "smtp_edge_spool_fsync_seconds_count {cumulative}");

    counter(
        &mut out,
        "smtp_edge_messages_delivered_total",
        "Message copies delivered: one per recipient, to a Maildir or accepted by the next hop.",
        m.delivery.delivered.load(Relaxed),
    );
    let name = "smtp_edge_delivery_attempts_total";
    header(
        &mut out,
        name,
        "Delivery attempts per recipient, by route kind and result.",
        "counter",
    );
    for (v, via) in Via::ALL.iter().enumerate() {
        for (r, verdict) in VERDICTS.iter().enumerate() {
            let n = m.delivery.attempts[v][r].load(Relaxed);
            let (via, result) = (via.as_str(), verdict.as_str());
            let _ = writeln!(out, "{name}{{via=\"{via}\",result=\"{result}\"}} {n}");
        }
    }
    header(
        &mut out,
        "smtp_edge_queue_messages",
        "Messages in the queue: active (not attempted yet) or deferred (waiting for a retry).",
        "gauge",
    );
    for (state, n) in [
        ("active", &m.delivery.queued_active),
        ("deferred", &m.delivery.queued_deferred),
    ] {
        let _ = writeln!(
            out,
            "smtp_edge_queue_messages{{state=\"{state}\"}} {}",
            n.load(Relaxed)
        );
    }

    // Both families always, zeros before the shield (or without one), so that rate() and
    // alerts see the series from the first scrape.
    let shield = m.shield_stats();
    header(
        &mut out,
        "smtp_edge_shield_packets_total",
        "Segments to protected ports judged by the shield, by action.",
        "counter",
    );
    for (action, n) in [
        ("passed", shield.passed),
        ("dropped_rate", shield.dropped_rate),
        ("dropped_banned", shield.dropped_banned),
        ("dropped_malformed", shield.dropped_malformed),
    ] {
        let _ = writeln!(
            out,
            "smtp_edge_shield_packets_total{{action=\"{action}\"}} {n}"
        );
    }
    gauge(
        &mut out,
        "smtp_edge_shield_bans_active",
        "Sources banned now (IPv6: /64 prefixes).",
        shield.bans_active,
    );

    let dnsbl = m.dnsbl_hits();
    if !dnsbl.is_empty() {
        header(
            &mut out,
            "smtp_edge_dnsbl_hits_total",
            "Clients each DNS block or allow list listed (checks.dnsbl), by zone.",
            "counter",
        );
        for (zone, n) in dnsbl {
            let _ = writeln!(out, "smtp_edge_dnsbl_hits_total{{zone=\"{zone}\"}} {n}");
        }
    }

    header(
        &mut out,
        "smtp_edge_build_info",
        "The running build: its version and git commit, in labels; the value is always 1.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "smtp_edge_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        LabelValue(build_info::VERSION),
        LabelValue(build_info::COMMIT),
    );
    write_process(&mut out, process);
    out
}

/// The `process_*` series client libraries export; each is left out when its figure could not
/// be read.
fn write_process(out: &mut String, p: &ProcessStats) {
    let gauges = [
        ("process_open_fds", "Open file descriptors.", p.open_fds),
        (
            "process_max_fds",
            "The limit on open file descriptors (RLIMIT_NOFILE, soft).",
            p.max_fds,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory in bytes.",
            p.resident_memory_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory in bytes.",
            p.virtual_memory_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            gauge(out, name, help, v);
        }
    }
    if let Some(v) = p.cpu_seconds {
        header(
            out,
            "process_cpu_seconds_total",
            "User and system CPU time, in seconds.",
            "counter",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {v}");
    }
    if let Some(v) = p.start_time_seconds {
        header(
            out,
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            "gauge",
        );
        let _ = writeln!(out, "process_start_time_seconds {v}");
    }
}

/// A label value as the text format writes it: backslash, double quote and line feed escaped.
struct LabelValue<'a>(&'a str);

impl std::fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// A family with one series per listener, `(name, type)`, the value summed across workers.
fn per_listener(
    out: &mut String,
    m: &Metrics,
    (name, kind): (&str, &str),
    help: &str,
    value: fn(&ListenerCounters) -> u64,
) {
    header(out, name, help, kind);
    for (i, label) in m.listeners.iter().enumerate() {
        let n = m
            .workers
            .iter()
            .filter_map(|w| w.listeners.get(i))
            .map(value)
            .fold(0u64, u64::wrapping_add);
        let _ = writeln!(out, "{name}{{listener=\"{}\"}} {n}", LabelValue(label));
    }
}

/// A labelled counter family: one series per label value.
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'a [&'a str],
}

/// Writes `family`, summing across workers the counter array `counters` picks, indexed like
/// `family.values`.
fn labelled(
    out: &mut String,
    m: &Metrics,
    family: Family<'_>,
    counters: fn(&WorkerMetrics) -> &[AtomicU64],
) {
    header(out, family.name, family.help, "counter");
    for (i, value) in family.values.iter().enumerate() {
        let n = m
            .workers
            .iter()
            .filter_map(|w| counters(w).get(i))
            .map(|c| c.load(Relaxed))
            .fold(0u64, u64::wrapping_add);
        let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", family.name, family.label);
    }
}
