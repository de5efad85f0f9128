//! smtp-edge: an SMTP edge for inbound MX (delivery) and authenticated submission, on io_uring.
//!
//! A message crosses these layers, each in its own module:
//!
//! ```text
//!  NIC ─► shield (XDP) ─► transport ─► driver ─► tls (pump) ─► protocol::Connection ─► events
//!                         (ring)       (guard    (only when     (sans-IO state machine:
//!                                       admits)   the session    bytes in, replies out)
//!                                                 has TLS)             │
//!          auth (password checks, off the ring) ◄─ Authenticate ───────┤
//!          spool (tmp/ → fsync → queue/, then 250) ◄─ message content ──┘
//!            └─► queue (per-recipient state, retries, notices) ─┬─► delivery (Maildir)
//!                                                                 └─► relay (LMTP, SMTP, MX;
//!                                                                     its own thread and ring)
//! ```
//!
//! The [`protocol`] engine performs no I/O and reads no clock: the [`driver`] feeds it bytes and the
//! current time, writes the replies it produces, and turns its events into spool writes, TLS
//! handshakes and password checks. That keeps every protocol rule testable in memory, byte by
//! byte, without sockets or sleeps, and keeps the ring underneath replaceable: only [`transport`]
//! names tokio-uring. The [`tls`] pump is sans-IO in the same way.
//!
//! The driver decides nothing itself: the [`guard`] admits connections and bans from the
//! engine's close events, [`auth`] decides on each login attempt (its delay, its verdict, whether
//! the session goes on), and the driver carries out their decisions. The time comes from
//! [`clock`], the one place it is read. The [`control`] socket lets `smtp-edge ban` and
//! `smtp-edge queue` act on a running server, off the rings.

#![warn(missing_docs)]

pub mod auth;
pub mod build_info;
pub mod checks;
pub mod cidr;
mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dkim;
pub mod driver;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod queue;
pub mod relay;
pub mod rewrite;
pub mod service;
pub mod shield;
pub mod spool;
pub mod tls;
pub mod transport;
