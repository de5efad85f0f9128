//! `smtp-edge ban list|add|del`: the bans of a running server, through its control socket,
//! with or without the XDP shield.
//!
//! ```text
//! smtp-edge ban list [--config FILE]              one `prefix remaining_secs` line per ban
//! smtp-edge ban add ADDR [--secs N] [--config FILE]  ban ADDR (IPv6: its /64); default
//!                                                  shield.ban_secs
//! smtp-edge ban del ADDR [--config FILE]          lift the ban on ADDR's source
//! ```
//!
//! The socket is `control.socket` of FILE (without `--config`, of the embedded default). Exit
//! status: 0 on success, 2 on a usage error or a bad FILE, 1 when the operation fails (no
//! server answers, `del` of a source that is not banned, a trusted source for `add`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::protocol::{Request, Response, MAX_LINE};
use crate::cli::{self, CliError};
use crate::config::Config;
use crate::shield::MAX_BAN_SECS;

/// `smtp-edge ban list|add|del`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(
    after_help = "Talks to the running server on control.socket of FILE (default: the \
                        embedded configuration)."
)]
pub struct BanArgs {
    #[command(subcommand)]
    command: Command,
    /// The running server's configuration (TOML), which names its control socket.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// How long the server may take to answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
enum Command {
    /// The bans in force: one `prefix remaining_secs` line each.
    List,
    /// Refuse ADDR (IPv6: its /64) for N seconds; with the shield, its packets are dropped too.
    Add {
        /// An address, or the prefix `list` prints (a /32, or an IPv6 /64).
        #[arg(value_name = "ADDR", value_parser = crate::cidr::ban_source)]
        addr: IpAddr,
        /// How long, in seconds (default shield.ban_secs, at most 30 days).
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=MAX_BAN_SECS))]
        secs: Option<u64>,
    },
    /// Lift the ban on ADDR (IPv6: its /64).
    Del {
        /// An address, or the prefix `list` prints.
        #[arg(value_name = "ADDR", value_parser = crate::cidr::ban_source)]
        addr: IpAddr,
    },
}

impl Command {
    fn request(&self) -> Request {
        match *self {
            Command::List => Request::BanList {},
            Command::Add { addr, secs } => Request::BanAdd { addr, secs },
            Command::Del { addr } => Request::BanDel { addr },
        }
    }
}

/// Runs `smtp-edge ban ...`.
pub fn run(args: &BanArgs) -> ExitCode {
    cli::finish(execute(args), "ban")
}

fn execute(args: &BanArgs) -> Result<String, CliError> {
    let socket = socket_of(args.config.as_deref())?;
    match exchange(&socket, &args.command.request())? {
        Response::Bans { bans } => Ok(bans
            .iter()
            .map(|b| format!("{} {}\n", b.source, b.secs))
            .collect()),
        Response::Banned { source, secs } => Ok(format!("banned {source} for {secs}s\n")),
        Response::Unbanned { source } => Ok(format!("unbanned {source}\n")),
        Response::Error { message } => Err(CliError::Failed(message)),
        other => Err(CliError::Failed(format!("unexpected answer: {other:?}"))),
    }
}

/// `control.socket` of the configuration at `path`, or of the embedded default.
pub(crate) fn socket_of(path: Option<&Path>) -> Result<PathBuf, CliError> {
    let config = match path {
        Some(path) => Config::load(path).map_err(|errors| {
            let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            CliError::Usage(format!("{}: {}", path.display(), all.join("; ")))
        })?,
        None => Config::embedded_default(),
    };
    Ok(config.control.socket)
}

/// Sends `request` on `socket` and reads the response.
pub(crate) fn exchange(socket: &Path, request: &Request) -> Result<Response, CliError> {
    let conn = UnixStream::connect(socket).map_err(|e| {
        use std::io::ErrorKind::{ConnectionRefused, NotFound, PermissionDenied};
        CliError::Failed(match e.kind() {
            NotFound | ConnectionRefused => format!(
                "no server is running: nothing answers on {}",
                socket.display()
            ),
            PermissionDenied => format!(
                "{}: permission denied (the socket is mode 0600: run as the server's user)",
                socket.display()
            ),
            _ => format!("{}: {e}", socket.display()),
        })
    })?;
    let failed = |e: std::io::Error| CliError::Failed(format!("{}: {e}", socket.display()));
    conn.set_read_timeout(Some(ANSWER_DEADLINE))
        .map_err(failed)?;
    conn.set_write_timeout(Some(ANSWER_DEADLINE))
        .map_err(failed)?;
    let mut line = serde_json::to_vec(request).map_err(|e| CliError::Failed(e.to_string()))?;
    line.push(b'\n');
    (&conn).write_all(&line).map_err(failed)?;
    let mut answer = Vec::new();
    BufReader::new(&conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut answer)
        .map_err(failed)?;
    serde_json::from_slice(&answer).map_err(|e| {
        CliError::Failed(format!(
            "{}: unreadable answer from the server: {e}",
            socket.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        ban: BanArgs,
    }

    fn parse(args: &[&str]) -> Result<BanArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("ban").chain(args.iter().copied())).map(|c| c.ban)
    }

    fn request(args: &[&str]) -> (Option<PathBuf>, Request) {
        let a = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (a.config.clone(), a.command.request())
    }

    #[test]
    fn commands_parse() {
        assert_eq!(request(&["list"]), (None, Request::BanList {}));
        assert_eq!(
            request(&["list", "--config", "/etc/se.toml"]),
            (Some("/etc/se.toml".into()), Request::BanList {})
        );
        assert_eq!(
            request(&["add", "192.0.2.7", "--secs", "60"]),
            (
                None,
                Request::BanAdd {
                    addr: "192.0.2.7".parse().unwrap(),
                    secs: Some(60)
                }
            )
        );
        assert_eq!(
            request(&["del", "2001:db8:1:2::/64", "-c", "x.toml"]),
            (
                Some("x.toml".into()),
                Request::BanDel {
                    addr: "2001:db8:1:2::".parse().unwrap()
                }
            )
        );
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: [(&[&str], &str); 9] = [
            (&[], "Usage"),
            (&["lst"], "unrecognized subcommand 'lst'"),
            (&["add"], "<ADDR>"),
            (&["del", "192.0.2.1", "b"], "unexpected argument 'b'"),
            (&["add", "nope"], "is not an IP address"),
            (&["add", "10.0.0.0/8"], "not wider prefixes"),
            (
                &["add", "192.0.2.1", "--secs", "0"],
                "0 is not in 1..=2592000",
            ),
            (&["list", "--secs", "5"], "unexpected argument '--secs'"),
            (
                &["list", "--pin-dir", "x"],
                "unexpected argument '--pin-dir'",
            ),
        ];
        for (args, problem) in cases {
            match parse(args) {
                Err(e) => assert!(e.to_string().contains(problem), "{args:?}: {e}"),
                Ok(other) => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_server_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let e = exchange(&dir.path().join("control.sock"), &Request::BanList {}).unwrap_err();
        assert!(
            matches!(&e, CliError::Failed(m) if m.starts_with("no server is running")),
            "{e:?}"
        );
    }
}
