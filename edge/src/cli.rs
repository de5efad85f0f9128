//! What the `smtp-edge` subcommands (`user`, `shield`, `ban`, `queue`) share: their error type,
//! how it maps to a line on stderr and an exit status, and how a result ends the command.

use std::process::ExitCode;

/// What went wrong, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line is wrong: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The operation failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

/// Ends `smtp-edge <command>`: prints the text of a success on stdout (it carries its own
/// newlines), or reports the error; returns the exit status.
pub(crate) fn finish(result: Result<String, CliError>, command: &str) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => e.report(command),
    }
}

impl CliError {
    /// Prints the error for `smtp-edge <command>` and returns its exit status.
    pub(crate) fn report(&self, command: &str) -> ExitCode {
        match self {
            CliError::Usage(problem) => {
                eprintln!("smtp-edge {command}: {problem} (see `smtp-edge {command} --help`)");
                ExitCode::from(2)
            }
            CliError::Failed(problem) => {
                eprintln!("smtp-edge {command}: {problem}");
                ExitCode::from(1)
            }
        }
    }
}
