//! Where the log goes and in what form: INFO and above (or what `RUST_LOG` says) on stderr,
//! one line per event, as text or as one JSON object per line (`log.format`).
//!
//! The lines themselves are written where the decisions are carried out (the session's lines
//! in `driver/session/log.rs`, the queue's per-recipient lines in `queue/`); this module only
//! sets up the subscriber that renders them.
//!
//! In JSON every line is one object with the same top-level keys: `timestamp` (RFC 3339, UTC),
//! `level`, `target` (the module), `message` (what happened: `session`, `message accepted`,
//! `recipient rejected`, `auth failed`, ...) and then the event's own fields by name, each a
//! string, number or boolean. A field is only ever added, never renamed, so that a query on a
//! field keeps working across releases.

use serde::Deserialize;

/// `log.format`: how each line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO smtp_edge::driver::session::log: session peer=...`:
    /// for people and `grep`.
    #[default]
    Text,
    /// One JSON object per line: for log pipelines (Loki, Elasticsearch, `jq`).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
}

/// Installs the process's subscriber: `RUST_LOG` if set (`info` otherwise), to stderr, in
/// `format`. Call once, before the first line worth keeping; a second call does nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A line that cannot be written (stderr on a full disk, a closed pipe) is lost, nothing
    // more. With internal errors on, the subscriber reports a failed write with `eprintln!`,
    // which panics when stderr fails: the thread that logged would die (a session
    // mid-transaction, the queue's scheduler holding accepted mail) just when the disk the
    // spool shares with the log fills up.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .log_internal_errors(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .log_internal_errors(false)
            // The event's fields beside timestamp, level and message, not nested under
            // "fields"; the server logs no spans, so none are listed.
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
