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

use crate::cli::CliError;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::config::{ShieldConfig, MAX_BAN_SECS};
use super::maps::MAP_BANS;
use super::prefix::IpPrefix;
use super::{Shield, PIN_DIR};

const USAGE: &str = "usage: smtp-edge shield COMMAND [--pin-dir DIR]
  status                 where the shield is attached, its settings, counters and bans in force
  list                   the bans in force: one `prefix remaining_secs` line each
  ban ADDR [--secs N]    drop ADDR (IPv6: its /64) on the protected ports for N seconds
                         (default 600, at most 2592000)
  unban ADDR             lift the ban on ADDR (IPv6: its /64)
The server must run with shield.pin = true; its maps are under /sys/fs/bpf/smtp-edge unless
--pin-dir names another directory. Needs root (or CAP_BPF).";

/// Runs `smtp-edge shield ...`. `args` are the arguments after `shield` (a leading `"shield"`
/// is skipped too), such as `["ban", "192.0.2.7", "--secs", "60"]`. Prints the result on
/// stdout, or one line on stderr.
pub fn run(args: &[String]) -> ExitCode {
    match execute(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => e.report("shield"),
    }
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Status {
        pin_dir: PathBuf,
    },
    List {
        pin_dir: PathBuf,
    },
    Ban {
        pin_dir: PathBuf,
        ip: IpAddr,
        secs: u64,
    },
    Unban {
        pin_dir: PathBuf,
        ip: IpAddr,
    },
}

/// Parses and runs; the text to print on success (ending in a newline).
fn execute(args: &[String]) -> Result<String, CliError> {
    match parse_args(args)? {
        Command::Help => Ok(format!("{USAGE}\n")),
        Command::Status { pin_dir } => status(&pin_dir),
        Command::List { pin_dir } => {
            let shield = open(&pin_dir)?;
            let bans = shield.list().map_err(failed)?;
            Ok(bans
                .iter()
                .map(|(prefix, left)| format!("{prefix} {}\n", ceil_secs(*left)))
                .collect())
        }
        Command::Ban { pin_dir, ip, secs } => {
            let shield = open(&pin_dir)?;
            shield.ban(ip, Duration::from_secs(secs)).map_err(failed)?;
            Ok(format!(
                "banned {} for {secs}s\n",
                super::maps::Source::from_ip(ip).prefix()
            ))
        }
        Command::Unban { pin_dir, ip } => {
            let shield = open(&pin_dir)?;
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

pub(crate) fn parse_args(args: &[String]) -> Result<Command, CliError> {
    let args = match args.first() {
        Some(first) if first == "shield" => &args[1..],
        _ => args,
    };
    let mut pin_dir = PathBuf::from(PIN_DIR);
    let mut secs: Option<u64> = None;
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--pin-dir" => {
                let dir = it
                    .next()
                    .ok_or_else(|| usage("--pin-dir needs a directory"))?;
                if dir.is_empty() {
                    return Err(usage("--pin-dir must not be empty"));
                }
                pin_dir = PathBuf::from(dir);
            }
            "--secs" => {
                let n = it.next().ok_or_else(|| usage("--secs needs a number"))?;
                secs = Some(match n.parse::<u64>() {
                    Ok(n) if (1..=MAX_BAN_SECS).contains(&n) => n,
                    _ => {
                        return Err(usage(format!(
                            "--secs must be 1..={MAX_BAN_SECS} (30 days), got {n:?}"
                        )))
                    }
                });
            }
            flag if flag.starts_with("--") => {
                return Err(usage(format!("unknown option {flag}")));
            }
            word => words.push(word),
        }
    }
    let command = match words.as_slice() {
        [] => return Err(usage("a command is needed: status, list, ban or unban")),
        ["status"] => Command::Status { pin_dir },
        ["list"] => Command::List { pin_dir },
        ["ban", addr] => Command::Ban {
            pin_dir,
            ip: source_ip(addr)?,
            secs: secs.unwrap_or(ShieldConfig::default().ban_secs),
        },
        ["unban", addr] => Command::Unban {
            pin_dir,
            ip: source_ip(addr)?,
        },
        ["ban" | "unban"] => return Err(usage(format!("{} needs an address", words[0]))),
        ["status" | "list" | "ban" | "unban", ..] => {
            return Err(usage(format!("too many arguments for {}", words[0])))
        }
        [other, ..] => {
            return Err(usage(format!(
                "unknown command {other:?}; expected status, list, ban or unban"
            )))
        }
    };
    if secs.is_some() && !matches!(command, Command::Ban { .. }) {
        return Err(usage("--secs is only for ban"));
    }
    Ok(command)
}

/// An address, or the prefix a ban covers as `list` prints it (`192.0.2.7/32`,
/// `2001:db8:1:2::/64`): bans are per IPv4 address and per IPv6 /64.
fn source_ip(text: &str) -> Result<IpAddr, CliError> {
    let prefix: IpPrefix = text.parse().map_err(|e| usage(format!("{e}")))?;
    match (prefix.addr(), prefix.len()) {
        (IpAddr::V4(_), 32) | (IpAddr::V6(_), 64..=128) => Ok(prefix.addr()),
        _ => Err(usage(format!(
            "{text}: bans are per IPv4 address or IPv6 /64, not wider prefixes"
        ))),
    }
}

fn usage(problem: impl Into<String>) -> CliError {
    CliError::Usage(problem.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn commands_parse() {
        let pin = PathBuf::from(PIN_DIR);
        assert_eq!(
            parse(&["status"]).unwrap(),
            Command::Status {
                pin_dir: pin.clone()
            }
        );
        assert_eq!(
            parse(&["shield", "list", "--pin-dir", "/tmp/x"]).unwrap(),
            Command::List {
                pin_dir: "/tmp/x".into()
            }
        );
        assert_eq!(
            parse(&["ban", "192.0.2.7"]).unwrap(),
            Command::Ban {
                pin_dir: pin.clone(),
                ip: ip("192.0.2.7"),
                secs: 600
            }
        );
        assert_eq!(
            parse(&["ban", "--secs", "60", "2001:db8:1:2::/64"]).unwrap(),
            Command::Ban {
                pin_dir: pin.clone(),
                ip: ip("2001:db8:1:2::"),
                secs: 60
            }
        );
        assert_eq!(
            parse(&["unban", "192.0.2.7/32", "--pin-dir", "/p"]).unwrap(),
            Command::Unban {
                pin_dir: "/p".into(),
                ip: ip("192.0.2.7")
            }
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["ban", "-h"]).unwrap(), Command::Help);
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "a command is needed"),
            (&["stats"], "unknown command \"stats\""),
            (&["ban"], "ban needs an address"),
            (&["unban"], "unban needs an address"),
            (&["status", "extra"], "too many arguments for status"),
            (&["ban", "1.2.3.4", "5.6.7.8"], "too many arguments for ban"),
            (&["ban", "mx.example.test"], "is not an IP address"),
            (&["ban", "10.0.0.0/8"], "not wider prefixes"),
            (&["unban", "2001:db8::/48"], "not wider prefixes"),
            (&["ban", "10.0.0.1/8"], "host bits"),
            (&["ban", "1.2.3.4", "--secs"], "--secs needs a number"),
            (&["ban", "1.2.3.4", "--secs", "0"], "--secs must be 1..="),
            (&["ban", "1.2.3.4", "--secs", "-5"], "--secs must be 1..="),
            (
                &["ban", "1.2.3.4", "--secs", "2592001"],
                "--secs must be 1..=",
            ),
            (&["list", "--secs", "5"], "--secs is only for ban"),
            (&["list", "--pin-dir"], "--pin-dir needs a directory"),
            (&["list", "--verbose"], "unknown option --verbose"),
        ];
        for (args, want) in cases {
            match parse(args) {
                Err(CliError::Usage(problem)) => {
                    assert!(
                        problem.contains(want),
                        "{args:?}: {problem:?} lacks {want:?}"
                    )
                }
                other => panic!("{args:?}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_pin_dir_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-pinned");
        for cmd in ["status", "list"] {
            let args = [
                cmd.to_string(),
                "--pin-dir".into(),
                missing.display().to_string(),
            ];
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
