//! The control socket: a running server answers local commands (`smtp-edge ban ...`) on a Unix
//! socket, on a thread of its own, never on an io_uring worker.
//!
//! ```text
//!  smtp-edge ban list ──► connect(control.socket) ──► {"request":"ban_list"}\n
//!                                                      ◄── {"response":"bans","bans":[...]}\n
//! ```
//!
//! One connection carries one request and its response, each one line of JSON ([`Request`],
//! [`Response`]), so that a new kind of request (the queue, a reload) is one more variant on
//! both sides. The socket is mode 0600: whoever may connect may lift bans.
//!
//! - [`protocol`]: the request and response types.
//! - [`server`]: [`ControlServer`], the listening thread, and what each request does.
//! - [`cli`]: `smtp-edge ban list|add|del`, the client.
//! - [`reload`]: `smtp-edge reload`, the client.

pub mod cli;
pub mod protocol;
pub mod reload;
mod server;

use std::path::PathBuf;

pub use protocol::{BanEntry, Request, Response, MAX_LINE};
pub use server::{ControlError, ControlServer};

/// Where the control socket goes when `control.socket` is not set: this name in the spool
/// directory.
pub const DEFAULT_CONTROL_SOCKET: &str = "control.sock";

/// The validated `[control]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// `control.socket`: the Unix socket's path (absolute).
    pub socket: PathBuf,
}
