//! `smtp-edge reload`: asks the running server to read its configuration file again, through
//! its control socket, and says what came of it.
//!
//! ```text
//! smtp-edge reload [--config FILE]    "reloaded" (and the keys that need a restart), or the
//!                                     problems that kept the server on its configuration
//! ```
//!
//! The server reads the file it was started with; FILE names its control socket (without
//! `--config`, the embedded default's) and is checked first: a file that does not validate
//! is reported here, line by line, and the server is not asked. Exit status: 0 when the
//! configuration was applied, 1 when it was refused (nothing changed) or no server answers, 2
//! on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::cli::exchange;
use super::protocol::{Request, Response};
use crate::cli::{self, CliError};
use crate::config::Config;

/// `smtp-edge reload`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(
    after_help = "Talks to the running server on control.socket of FILE (default: the \
                        embedded configuration); the server reads the file it was started with."
)]
pub struct ReloadArgs {
    /// The running server's configuration (TOML), which names its control socket.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `smtp-edge reload`.
pub fn run(args: &ReloadArgs) -> ExitCode {
    cli::finish(execute(args.config.as_deref()), "reload")
}

fn execute(path: Option<&Path>) -> Result<String, CliError> {
    let config = match path {
        Some(path) => Config::load(path).map_err(|errors| {
            refused(
                errors
                    .0
                    .iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect(),
            )
        })?,
        None => Config::embedded_default(),
    };
    match exchange(&config.control.socket, &Request::Reload {})? {
        Response::Reloaded { restart_needed } if restart_needed.is_empty() => {
            Ok("reloaded\n".to_owned())
        }
        Response::Reloaded { restart_needed } => Ok(format!(
            "reloaded; these keys need a restart and keep their running values: {}\n",
            restart_needed.join(", ")
        )),
        Response::ReloadRefused { problems } => Err(refused(problems)),
        Response::Error { message } => Err(CliError::Failed(message)),
        other => Err(CliError::Failed(format!("unexpected answer: {other:?}"))),
    }
}

/// The failure that lists every problem, one per line, after the verdict.
fn refused(problems: Vec<String>) -> CliError {
    CliError::Failed(format!(
        "configuration refused; the server keeps the one it runs on:\n{}",
        problems.join("\n")
    ))
}
