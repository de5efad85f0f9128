//! `smtp-edge queue list|show|flush|delete|bounce`: a running server's queue, through its
//! control socket.
//!
//! ```text
//! smtp-edge queue list [--json] [--config FILE]   every message: id, size, arrival, state,
//!                                                 sender, then each recipient and its state
//! smtp-edge queue show ID [--config FILE]         one message, every field (JSON)
//! smtp-edge queue flush [ID] [--config FILE]      attempt now (all without ID)
//! smtp-edge queue delete ID [--config FILE]       remove, without telling the sender
//! smtp-edge queue bounce ID [--config FILE]       fail what is left, and tell the sender
//! ```
//!
//! Exit status: 0 on success, 2 on a usage error or a bad FILE, 1 when the operation fails
//! (no server answers, an id that is not queued).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use super::MessageInfo;
use crate::cli::{self, CliError};
use crate::control::cli::{exchange, socket_of};
use crate::control::{Request, Response};
use crate::spool::push_date_time;

/// `smtp-edge queue list|show|flush|delete|bounce`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(
    after_help = "Talks to the running server on control.socket of FILE (default: the \
                        embedded configuration)."
)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: Command,
    /// The running server's configuration (TOML), which names its control socket.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
enum Command {
    /// Every queued message and the state of each recipient.
    List {
        /// The same as JSON: an array of messages.
        #[arg(long)]
        json: bool,
    },
    /// One message, every field, as JSON.
    Show {
        /// Its queue id (from the 250 reply, the log, or `list`).
        id: String,
    },
    /// Attempt the message (or every one) now, deferred recipients too.
    Flush {
        /// Its queue id; without it, every message.
        id: Option<String>,
    },
    /// Remove the message; its sender is not told.
    Delete {
        /// Its queue id.
        id: String,
    },
    /// Fail every recipient not yet delivered; the sender gets a DSN.
    Bounce {
        /// Its queue id.
        id: String,
    },
}

impl Command {
    fn request(&self) -> Request {
        match self {
            Command::List { .. } => Request::QueueList {},
            Command::Show { id } => Request::QueueShow { id: id.clone() },
            Command::Flush { id } => Request::QueueFlush { id: id.clone() },
            Command::Delete { id } => Request::QueueDelete { id: id.clone() },
            Command::Bounce { id } => Request::QueueBounce { id: id.clone() },
        }
    }
}

/// Runs `smtp-edge queue ...`.
pub fn run(args: &QueueArgs) -> ExitCode {
    cli::finish(execute(args), "queue")
}

fn execute(args: &QueueArgs) -> Result<String, CliError> {
    let socket = socket_of(args.config.as_deref())?;
    match (exchange(&socket, &args.command.request())?, &args.command) {
        (Response::Queue { messages }, Command::Show { .. }) => match messages.first() {
            Some(m) => Ok(format!("{}\n", to_json(m)?)),
            None => Err(CliError::Failed("no such message".into())),
        },
        (Response::Queue { messages }, Command::List { json: true }) => {
            Ok(format!("{}\n", to_json(&messages)?))
        }
        (Response::Queue { messages }, _) => Ok(listing(&messages)),
        (Response::QueueDone { messages }, Command::Flush { .. }) => {
            Ok(format!("flushed {messages} message(s)\n"))
        }
        (Response::QueueDone { .. }, Command::Delete { id }) => Ok(format!("deleted {id}\n")),
        (Response::QueueDone { .. }, Command::Bounce { id }) => Ok(format!("bounced {id}\n")),
        (Response::Error { message }, _) => Err(CliError::Failed(message)),
        (other, _) => Err(CliError::Failed(format!("unexpected answer: {other:?}"))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::Failed(e.to_string()))
}

/// The `list` text: a line per message, then one indented line per recipient, in the manner
/// of Postfix's `mailq`.
fn listing(messages: &[MessageInfo]) -> String {
    let mut out = String::new();
    for m in messages {
        let mut arrival = String::new();
        push_date_time(&mut arrival, UNIX_EPOCH + Duration::from_secs(m.arrival));
        let from = if m.from.is_empty() { "<>" } else { &m.from };
        let _ = writeln!(
            out,
            "{} {:>9} {arrival} {:<8} {from}",
            m.id, m.size, m.state
        );
        for r in &m.recipients {
            let _ = write!(out, "    {} {}", r.address, r.state.as_str());
            if r.attempts > 0 {
                let _ = write!(out, " attempts={}", r.attempts);
            }
            if let Some(reply) = &r.last_reply {
                let _ = write!(out, " ({reply})");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "-- {} message(s)", messages.len());
    out
}
