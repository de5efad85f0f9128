//! Black-box tests of the smtp-edge binary.
//!
//! Each test starts the real `smtp-edge serve` on `127.0.0.1:0` ports (see [`harness`]), talks
//! to it the way a user or a real client would, and asserts what that user would notice: the
//! replies on the wire, the files in Maildir, the exit status, the metrics.
//!
//! Run: `cargo test -p smtp-edge --test blackbox` (needs `python3`, `swaks` and `curl`; the
//! root-only tests are ignored unless run with `--include-ignored`, as `cargo xtask test` does
//! as root).

// `clippy.toml` bans clock reads so that `protocol/` stays deterministic. These tests drive real
// processes and sockets, and every wait in them has a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

mod client_runs;
#[path = "../dns/mod.rs"]
mod dns;
mod harness;
mod maildir;
mod service;
mod session;

mod auth;
mod auth_clients;
mod ban;
mod checks;
mod clients;
mod command_line;
mod config;
mod crash;
mod disk_full;
mod dkim;
mod dnsbl;
mod envelope;
mod greeting;
mod guard;
mod lifecycle;
mod limits;
mod log_full;
mod logs;
mod metrics;
mod next_hop;
mod postfix_hop;
mod proxy;
mod queue;
mod real_senders;
mod recipients;
mod relay;
mod reload;
mod rewrite;
mod shield;
mod shield_frames;
mod shield_lab;
mod shield_server;
mod shield_spoof;
mod smuggling;
mod spool;
mod spool_log;
mod tls;
mod tls_clients;
mod tls_faults;
mod tls_reload;
mod tls_starttls;
mod transfer;
