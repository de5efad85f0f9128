//! `smtp-edge config show [--config FILE] [--defaults]`: prints the configuration in force
//! ([`super::show`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{self, CliError};

/// `smtp-edge config ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
enum Op {
    /// Print the configuration in force as TOML, every default filled in and every path
    /// absolute (like `postconf`); `--defaults` prints what each optional key is when the file
    /// leaves it out (like `postconf -d`).
    Show {
        /// The configuration file; without it, the embedded default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep only the file's required keys (hostname, local_domains, each listener's addr
        /// and role, spool.dir, delivery.maildir): show the defaults of all the others.
        #[arg(long)]
        defaults: bool,
    },
}

/// Runs `smtp-edge config ...`: the TOML on stdout, or every problem (`key: problem`) on
/// stderr with exit status 2, as `check-config` reports them.
pub fn run(args: &ConfigArgs) -> ExitCode {
    let Op::Show { config, defaults } = &args.op;
    let text = match config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                return cli::finish(
                    Err(CliError::Failed(format!(
                        "cannot read {}: {e}",
                        path.display()
                    ))),
                    "config",
                )
            }
        },
        None => super::DEFAULT_TOML.to_owned(),
    };
    match super::show(&text, *defaults) {
        Ok(toml) => cli::finish(Ok(toml), "config"),
        Err(errors) => {
            let name = config
                .as_ref()
                .map_or_else(|| "(embedded)".to_owned(), |p| p.display().to_string());
            for e in &errors.0 {
                eprintln!("smtp-edge config: {name}: {e}");
            }
            ExitCode::from(2)
        }
    }
}
