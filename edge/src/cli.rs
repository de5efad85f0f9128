//! What the `smtp-edge` subcommands (`user`, `shield`) share: their error type and how it
//! maps to a line on stderr and an exit status.

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
