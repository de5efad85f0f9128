//! The relay: one delivery attempt to one destination, carried out over the network, with an
//! outcome per recipient.
//!
//! ```text
//!   queue ──Attempt──► RelayHandle::submit ──► relay thread (its own ring)
//!                                                 destination: MX by DNS, or a next hop
//!                                                 connection ─► protocol::client::Client
//!   queue ◄──AttemptResult (mpsc)──────────────── one RcptOutcome per recipient
//! ```
//!
//! The queue decides *what* to send and *when* (retries, backoff, bounces); the relay decides
//! *how*: it finds the hosts, connects, speaks SMTP or LMTP through the sans-IO client engine
//! ([`crate::protocol::client`]), and reports.
//!
//! # The API
//!
//! - [`RelayConfig`]: `[relay]` and `[dns]`, validated by [`crate::config`]
//!   (`config.relay`). [`RelayConfig::route`] picks [`RelayConfig::local`] or
//!   [`RelayConfig::remote`] for a recipient; [`RelayConfig::retry_delay`] and
//!   [`RelayConfig::max_age`] are the queue's schedule.
//! - [`Route`]: `Maildir` (the delivery stage writes it; never submitted here), `Lmtp`,
//!   `LmtpUnix`, `Smtp` (a next hop or smarthost) or `Mx`. [`Route::via`] gives the
//!   [`Via`] label for logs and `smtp_edge_delivery_attempts_total{via,result}`.
//! - [`Attempt`]: the caller's token and queue id, the route, the recipients' domain, the
//!   envelope, and where the content is ([`Content`]: a file, an offset and a length; the
//!   queue keeps the file until the result is in).
//! - [`AttemptResult`]: the token, one [`RcptOutcome`] per recipient (a [`Verdict`]:
//!   delivered, deferred or failed; the enhanced status; the server's reply; a one-line
//!   detail), and the [`Peer`] that answered (host, address, TLS version and cipher).
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
mod route;

pub use attempt::{Attempt, AttemptResult, Content, Peer, RcptOutcome, Verdict};
pub use config::{
    RelayConfig, DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_CONNECTIONS_PER_DOMAIN, DEFAULT_MX_PORT,
    DEFAULT_RETRY_SECS, MAX_CONNECTIONS_PER_DOMAIN,
};
pub use route::{Host, NextHop, Route, Via};
