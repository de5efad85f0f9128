//! `smtp-edge shield status|list|ban|unban`: the XDP shield of a running server, through its
//! pinned maps.
//!
//! A server pins its maps (and links) under [`PIN_DIR`] when `shield.pin = true`; this command
//! opens them there ([`Shield::open_pinned_at`]), or under `--pin-dir`. It loads and attaches
//! nothing, and a ban made here is enforced by the kernel at once, exactly like the server's.
//!
//! ```text
//! smtp-edge shield status               attachment, settings, counters, bans in force
//! smtp-edge shield list                 one `prefix remaining_secs` line per ban
//! smtp-edge shield ban ADDR [--secs N]  ban ADDR (IPv6: its /64) for N s (default 600)
//! smtp-edge shield unban ADDR           lift the ban on ADDR's source
//! ```
//!
//! Exit status: 0 on success, 2 on a usage error, 1 when the operation fails (no pinned shield,
//! no privilege, a map error, or `unban` of a source that is not banned). Failures are one line
//! on standard error.

use crate::cli::{self, CliError};
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::config::{ShieldConfig, MAX_BAN_SECS};
use super::maps::MAP_BANS;
use super::{Shield, PIN_DIR};

/// `smtp-edge shield status|list|ban|unban`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(
    after_help = "The server must run with shield.pin = true; its maps are under \
                        /sys/fs/bpf/smtp-edge unless --pin-dir names another directory. \
                        Needs root (or CAP_BPF)."
)]
pub struct ShieldArgs {
    #[command(subcommand)]
    command: Command,
    /// Where the running server pinned its maps.
    #[arg(long, global = true, value_name = "DIR", default_value = PIN_DIR,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pin_dir: String,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub(crate) enum Command {
    /// Where the shield is attached, its settings, counters and bans in force.
    Status,
    /// The bans in force: one `prefix remaining_secs` line each.
    List,
    /// Drop ADDR (IPv6: its /64) on the protected ports for N seconds.
    Ban {
        /// An address, or the prefix `list` prints (a /32, or an IPv6 /64).
        #[arg(value_name = "ADDR", value_parser = crate::cidr::ban_source)]
        ip: IpAddr,
        /// How long, in seconds (at most 30 days).
        #[arg(long, value_name = "N", default_value_t = ShieldConfig::default().ban_secs,
              value_parser = clap::value_parser!(u64).range(1..=MAX_BAN_SECS))]
        secs: u64,
    },
    /// Lift the ban on ADDR (IPv6: its /64).
    Unban {
        /// An address, or the prefix `list` prints.
        #[arg(value_name = "ADDR", value_parser = crate::cidr::ban_source)]
        ip: IpAddr,
    },
}

/// Runs `smtp-edge shield ...`. Prints the result on stdout, or one line on stderr.
pub fn run(args: &ShieldArgs) -> ExitCode {
    cli::finish(execute(args), "shield")
}

/// Runs the command; the text to print on success (ending in a newline).
fn execute(args: &ShieldArgs) -> Result<String, CliError> {
    let pin_dir = Path::new(&args.pin_dir);
    match args.command {
        Command::Status => status(pin_dir),
        Command::List => {
            let shield = open(pin_dir)?;
            let bans = shield.list().map_err(failed)?;
            Ok(bans
                .iter()
                .map(|(prefix, left)| format!("{prefix} {}\n", ceil_secs(*left)))
                .collect())
        }
        Command::Ban { ip, secs } => {
            let shield = open(pin_dir)?;
            shield.ban(ip, Duration::from_secs(secs)).map_err(failed)?;
            Ok(format!(
                "banned {} for {secs}s\n",
                super::maps::Source::from_ip(ip).prefix()
            ))
        }
        Command::Unban { ip } => {
            let shield = open(pin_dir)?;
            let prefix = super::maps::Source::from_ip(ip).prefix();
            if shield.unban(ip).map_err(failed)? {
                Ok(format!("unbanned {prefix}\n"))
            } else {
                Err(CliError::Failed(format!("{prefix} is not banned")))
            }
        }
    }
}

fn status(pin_dir: &Path) -> Result<String, CliError> {
    let shield = open(pin_dir)?;
    let settings = shield.settings().map_err(failed)?;
    let counters = shield.counters().map_err(failed)?;
    let bans = shield.bans_active().map_err(failed)?;
    let links = Shield::pinned_links_at(pin_dir);
    let attached = if links.is_empty() {
        "unknown (no pinned link: the program lives as long as the server that loaded it)"
            .to_owned()
    } else {
        links.join(" ")
    };
    let ports: Vec<String> = settings
        .ports
        .iter()
        .take(settings.nports as usize)
        .map(u16::to_string)
        .collect();
    Ok(format!(
        "pin_dir {}\nattached {attached}\nports {}\nsyn_rate {}\nsyn_burst {}\n\
         pressure_syn_rate {}\n\
         passed {}\ndropped_rate {}\ndropped_banned {}\ndropped_malformed {}\n\
         bans_active {bans}\n",
        pin_dir.display(),
        ports.join(" "),
        settings.syn_rate,
        settings.syn_burst,
        settings.pressure_syn_rate,
        counters.passed,
        counters.dropped_rate,
        counters.dropped_banned,
        counters.dropped_malformed,
    ))
}

/// The pinned maps under `pin_dir`, or why there are none, in words an operator can act on.
fn open(pin_dir: &Path) -> Result<Shield, CliError> {
    match std::fs::metadata(pin_dir.join(MAP_BANS)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CliError::Failed(format!(
                "no pinned shield in {}: is the server running with shield.enabled and \
                 shield.pin = true?",
                pin_dir.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(CliError::Failed(format!(
                "cannot read {}: permission denied (run as root)",
                pin_dir.display()
            )))
        }
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read {}: {e}",
                pin_dir.display()
            )))
        }
    }
    Shield::open_pinned_at(pin_dir).map_err(failed)
}

fn failed(e: super::ShieldError) -> CliError {
    CliError::Failed(e.to_string())
}

/// Whole seconds, rounded up: a ban with 0.2 s left is listed as 1, never as 0.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        shield: ShieldArgs,
    }

    fn parse(args: &[&str]) -> Result<ShieldArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("shield").chain(args.iter().copied())).map(|c| c.shield)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn args(pin_dir: &str, command: Command) -> ShieldArgs {
        ShieldArgs {
            command,
            pin_dir: pin_dir.into(),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&["status"]).unwrap(), args(PIN_DIR, Command::Status));
        assert_eq!(
            parse(&["list", "--pin-dir", "/tmp/x"]).unwrap(),
            args("/tmp/x", Command::List)
        );
        assert_eq!(
            parse(&["ban", "192.0.2.7"]).unwrap(),
            args(
                PIN_DIR,
                Command::Ban {
                    ip: ip("192.0.2.7"),
                    secs: 600
                }
            )
        );
        assert_eq!(
            parse(&["ban", "--secs", "60", "2001:db8:1:2::/64"]).unwrap(),
            args(
                PIN_DIR,
                Command::Ban {
                    ip: ip("2001:db8:1:2::"),
                    secs: 60
                }
            )
        );
        assert_eq!(
            parse(&["--pin-dir", "/p", "unban", "192.0.2.7/32"]).unwrap(),
            args(
                "/p",
                Command::Unban {
                    ip: ip("192.0.2.7")
                }
            )
        );
        for help in [&["--help"][..], &["ban", "-h"]] {
            let e = parse(help).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{help:?}");
        }
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "Usage"),
            (&["stats"], "unrecognized subcommand 'stats'"),
            (&["ban"], "<ADDR>"),
            (&["unban"], "<ADDR>"),
            (&["status", "extra"], "unexpected argument 'extra'"),
            (
                &["ban", "1.2.3.4", "5.6.7.8"],
                "unexpected argument '5.6.7.8'",
            ),
            (&["ban", "mx.example.test"], "is not an IP address"),
            (&["ban", "10.0.0.0/8"], "not wider prefixes"),
            (&["unban", "2001:db8::/48"], "not wider prefixes"),
            (&["ban", "10.0.0.1/8"], "host bits"),
            (
                &["ban", "1.2.3.4", "--secs"],
                "a value is required for '--secs <N>'",
            ),
            (
                &["ban", "1.2.3.4", "--secs", "0"],
                "0 is not in 1..=2592000",
            ),
            (
                &["ban", "1.2.3.4", "--secs", "-5"],
                "unexpected argument '-5'",
            ),
            (
                &["ban", "1.2.3.4", "--secs", "2592001"],
                "is not in 1..=2592000",
            ),
            (&["list", "--secs", "5"], "unexpected argument '--secs'"),
            (
                &["list", "--pin-dir"],
                "a value is required for '--pin-dir <DIR>'",
            ),
            (&["list", "--pin-dir", ""], "--pin-dir <DIR>"),
            (&["list", "--verbose"], "unexpected argument '--verbose'"),
        ];
        for (args, want) in cases {
            match parse(args) {
                Err(e) => {
                    let problem = e.to_string();
                    assert!(
                        problem.contains(want),
                        "{args:?}: {problem:?} lacks {want:?}"
                    )
                }
                Ok(other) => panic!("{args:?}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_pin_dir_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-pinned");
        for cmd in ["status", "list"] {
            let args = parse(&[cmd, "--pin-dir", missing.to_str().unwrap()]).unwrap();
            match execute(&args) {
                Err(CliError::Failed(problem)) => assert!(
                    problem.starts_with("no pinned shield in ") && problem.contains("shield.pin"),
                    "{problem}"
                ),
                other => panic!("{cmd}: {other:?}"),
            }
        }
    }

    #[test]
    fn remaining_time_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(200)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
