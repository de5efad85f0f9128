//! The relay: one delivery attempt to one destination, carried out over the network, with an
//! outcome per recipient.
//!
//! ```text
//!   queue ──Attempt──► RelayHandle::submit ──► relay thread (its own ring)
//!                                                 destination: MX by DNS, or a next hop
//!                                                 connection ─► protocol::client::Client
//!   queue ◄──AttemptResult (Report)────────────── one RcptOutcome per recipient
//! ```
//!
//! The queue decides *what* to send and *when* (retries, backoff, bounces); the relay decides
//! *how*: it finds the hosts, connects, speaks SMTP or LMTP through the sans-IO client engine
//! ([`crate::protocol::client`]), and reports.
//!
//! # The API
//!
//! - [`Relay::start`]`(cfg, results)` starts the relay thread (its own io_uring
//!   runtime, so intake never waits for the network) and returns a [`RelayHandle`]; results
//!   go to `results`, a [`Report`]: the queue's inbox (the scheduler's own command channel,
//!   on which it waits with `recv_timeout` until its next retry is due), or any
//!   `std::sync::mpsc::Sender<AttemptResult>`.
//! - [`RelayHandle::submit`]`(attempt)` returns at once; every attempt gets exactly one
//!   [`AttemptResult`]. [`RelayHandle::shutdown`]`(grace)` defers what has not started,
//!   lets sessions finish within `grace`, defers the rest, and joins the thread.
//! - [`RelayConfig`]: `[relay]` and `[dns]`, validated by [`crate::config`]
//!   (`config.relay`). [`RelayConfig::route`] picks [`RelayConfig::local`] or
//!   [`RelayConfig::remote`] for a recipient; [`RelayConfig::retry_delay`] and
//!   [`RelayConfig::max_age`] are the queue's schedule.
//! - [`Route`]: `Maildir` (the delivery stage writes it; submitted here it is deferred),
//!   `Lmtp`, `LmtpUnix`, `Smtp` (a next hop, or the smarthost when it is
//!   [`RelayConfig::remote`]: then AUTH with [`RelayConfig::smarthost_credentials`]) or `Mx`.
//!   [`Route::via`] gives the [`Via`] label for logs and
//!   `smtp_edge_delivery_attempts_total{via,result}`, which the queue counts for every
//!   outcome, the relay's included ([`AttemptResult::via`]).
//! - [`Attempt`]: the caller's token and queue id, the route, the recipients' domain, the
//!   envelope, and where the content is ([`Content`]: a file, an offset and a length; the
//!   queue keeps the file until the result is in).
//! - [`AttemptResult`]: the token, one [`RcptOutcome`] per recipient (a [`Verdict`]:
//!   delivered, deferred or failed; the enhanced status; the server's reply; a one-line
//!   detail), and the [`Peer`] that answered (host, address, TLS version and cipher): what
//!   the queue's per-recipient log line and DSN need. The relay logs each attempt at DEBUG
//!   only; the queue writes the INFO line.
//!
//! # How an attempt is carried
//!
//! Attempts wait per destination (a recipient domain for MX, the configured host for a next
//! hop). A destination gets a new connection while more attempts wait than connections serve
//! it, up to `relay.max_connections_per_domain`; each connection, once its session is ready,
//! takes the next waiting attempt, and sends `QUIT` when none is left, so one connection
//! carries many messages (PIPELINING, SIZE, 8BITMIME and SMTPUTF8 are the client engine's).
//! For MX ([`RelayConfig::mx_port`], default 25), hosts are tried by preference (equal
//! preferences shuffled), each host's IPv6 then IPv4 addresses; a refused or timed-out
//! connection, or a session that fails before it is ready (a 4xx or 5xx greeting, EHLO,
//! STARTTLS or AUTH failure), moves on to the next address (RFC 5321 §5.1). When none
//! takes the mail, everything waiting for the destination is deferred with the last cause.
//! STARTTLS follows [`RelayConfig::tls`] (whose doc says why certificates are not verified);
//! with `"opportunistic"`, a host whose handshake fails gets a second, plaintext connection.
//! LMTP never uses STARTTLS.
//!
//! Message content goes as it was spooled, but for lines over 998 octets (RFC 5321
//! §4.5.3.1.6): intake stores them byte-exact, and the client engine folds them with `CRLF SP`
//! as it sends, as Postfix does (`protocol/client/stuffing.rs`).
//!
//! Which outcome, and why:
//! - delivered: the server's 250 (for LMTP, that recipient's own reply after the content);
//! - deferred: a 4xx, a timeout, a lost or refused connection, a TLS failure, a DNS
//!   failure other than "no such domain";
//! - failed: a 5xx, a domain that does not exist (NXDOMAIN), a null MX ([RFC 7505]), a
//!   message that needs SMTPUTF8 to a server without it ([RFC 6531]).
//!
//! [RFC 7505]: https://www.rfc-editor.org/rfc/rfc7505
//! [RFC 6531]: https://www.rfc-editor.org/rfc/rfc6531

mod attempt;
mod config;
mod dispatch;
mod handle;
mod outcome;
mod resolve;
mod route;
mod session;
mod tls;

pub use attempt::{Attempt, AttemptResult, Content, Peer, RcptOutcome, Report, Verdict};
pub use config::{
    RelayConfig, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_IDLE_SECS, DEFAULT_MAX_AGE_SECS,
    DEFAULT_MAX_CONNECTIONS_PER_DOMAIN, DEFAULT_MX_PORT, DEFAULT_RETRY_SECS,
    MAX_CONNECTIONS_PER_DOMAIN, MAX_IDLE_SECS,
};
pub use handle::{Relay, RelayHandle};
pub use route::{Host, NextHop, Route, Via};
pub use tls::AnyCertificate;
