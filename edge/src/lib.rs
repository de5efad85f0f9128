//! smtp-edge: an SMTP edge for inbound MX (delivery) and authenticated submission, on io_uring.
//!
//! A message crosses four layers, each in its own module:
//!
//! ```text
//!  socket ──► transport ──► driver ──► protocol::Connection ──► events ──► spool ──► delivery
//!  (ring)     (recv/send,    (one task    (sans-IO state machine:        (tmp/ → queue/,   (Maildir,
//!              file ops)      per conn)    bytes in, replies out)          fsync, 250)      off the ring)
//! ```
//!
//! The [`protocol`] engine performs no I/O and reads no clock: the [`driver`] feeds it bytes and the
//! current time, writes the replies it produces, and turns its events into spool writes. That keeps
//! every protocol rule testable in memory, byte by byte, without sockets or sleeps, and keeps the ring
//! underneath replaceable: only [`transport`] names tokio-uring.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod delivery;
pub mod driver;
pub mod guard;
pub mod metrics;
pub mod protocol;
pub mod shield;
pub mod spool;
pub mod tls;
pub mod transport;
