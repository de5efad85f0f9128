//! The SMTP engine: a sans-IO state machine of [RFC 5321] and its extensions.
//!
//! It performs no I/O and reads no clock: the caller feeds it bytes and the time, and polls it
//! for replies, events and the next deadline.
//!
//! [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod address;
mod auth;
pub mod client;
mod command;
mod connection;
mod data;
mod envelope;
mod event;
mod policy;
mod reply;
mod transaction;

pub use address::{Domain, Mailbox};
pub use auth::{decode_base64, Credentials, Secret, MAX_AUTH_LINE, MECHANISMS};
pub use command::{Command, CommandError};
pub use connection::{AuthOutcome, Connection};
pub use data::{DataFault, DataReceiver, LineCheck};
pub use event::{CloseReason, Event, Rejection, SenderVerdict, SourceVerdict, SpoolFault};
pub use policy::{
    EngineConfig, RecipientCheck, Role, Timeouts, DEFAULT_MAX_LINE_LENGTH, MAX_COMMAND_LINE,
    MIN_RECIPIENTS, MIN_TEXT_LINE,
};
pub use reply::{Closing, Code, Reply, Status};
pub use transaction::{BodyType, Envelope, Greeting, TxnId};

#[cfg(test)]
mod tests;
