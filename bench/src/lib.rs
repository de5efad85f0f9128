//! smtp-bench: an SMTP load generator.
//!
//! ```text
//!  corpus (built once) ─┐
//!                       ▼
//!  driver: one thread per core ── epoll ── sockets ──► any SMTP server
//!            │  recv bytes ▲ send bytes
//!            ▼             │
//!  client::Client (sans-IO: replies in, commands out, every code checked)
//! ```
//!
//! The protocol side ([`client`]) is a state machine with no I/O and no clock, like the server's
//! engine; the [`driver`] owns sockets and time. Messages are rendered once into a [`message::Corpus`]
//! before the clock starts, latencies go into fixed-size [`histogram::Histogram`]s, and the run
//! reports its own CPU time so a reader can check the generator is not the bottleneck. TLS
//! ([`tls`]) is rustls's `ClientConnection` pumped between socket and engine by the driver.

#![warn(missing_docs)]

pub mod client;
pub mod driver;
pub mod histogram;
pub mod message;
pub mod options;
pub mod report;
pub mod tls;

use std::time::Instant;

/// The clock, read only by the driver and `main`.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}
