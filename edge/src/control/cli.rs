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

use ipnet::IpNet;

use super::protocol::{Request, Response, MAX_LINE};
use crate::cli::CliError;
use crate::config::Config;
use crate::shield::MAX_BAN_SECS;

const USAGE: &str = "usage: smtp-edge ban COMMAND [--config FILE]
  list                   the bans in force: one `prefix remaining_secs` line each
  add ADDR [--secs N]    refuse ADDR (IPv6: its /64) for N seconds (default shield.ban_secs,
                         at most 2592000); with the shield, its packets are dropped too
  del ADDR               lift the ban on ADDR (IPv6: its /64)
Talks to the running server on control.socket of FILE (default: the embedded configuration).";

/// How long the server may take to answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Send {
        config: Option<PathBuf>,
        request: Request,
    },
}

/// Runs `smtp-edge ban ...`; `args` are the arguments after `ban`.
pub fn run(args: &[String]) -> ExitCode {
    match execute(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => e.report("ban"),
    }
}

fn execute(args: &[String]) -> Result<String, CliError> {
    let (config, request) = match parse_args(args)? {
        Command::Help => return Ok(format!("{USAGE}\n")),
        Command::Send { config, request } => (config, request),
    };
    let socket = socket_of(config.as_deref())?;
    match exchange(&socket, &request)? {
        Response::Bans { bans } => Ok(bans
            .iter()
            .map(|b| format!("{} {}\n", b.source, b.secs))
            .collect()),
        Response::Banned { source, secs } => Ok(format!("banned {source} for {secs}s\n")),
        Response::Unbanned { source } => Ok(format!("unbanned {source}\n")),
        Response::Error { message } => Err(CliError::Failed(message)),
    }
}

/// `control.socket` of the configuration at `path`, or of the embedded default.
fn socket_of(path: Option<&Path>) -> Result<PathBuf, CliError> {
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

pub(crate) fn parse_args(args: &[String]) -> Result<Command, CliError> {
    let args = match args.first() {
        Some(first) if first == "ban" => &args[1..],
        _ => args,
    };
    let mut config = None;
    let mut secs: Option<u64> = None;
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--config" | "-c" => {
                let file = it.next().ok_or_else(|| usage("--config needs a FILE"))?;
                config = Some(PathBuf::from(file));
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
            flag if flag.starts_with('-') => {
                return Err(usage(format!("unknown option {flag}")));
            }
            word => words.push(word),
        }
    }
    let request = match words.as_slice() {
        [] => return Err(usage("a command is needed: list, add or del")),
        ["list"] => Request::BanList {},
        ["add", addr] => Request::BanAdd {
            addr: source_ip(addr)?,
            secs,
        },
        ["del", addr] => Request::BanDel {
            addr: source_ip(addr)?,
        },
        ["add" | "del"] => return Err(usage(format!("{} needs an address", words[0]))),
        ["list" | "add" | "del", ..] => {
            return Err(usage(format!("too many arguments for {}", words[0])))
        }
        [other, ..] => {
            return Err(usage(format!(
                "unknown command {other:?}; expected list, add or del"
            )))
        }
    };
    if secs.is_some() && !matches!(request, Request::BanAdd { .. }) {
        return Err(usage("--secs is only for add"));
    }
    Ok(Command::Send { config, request })
}

/// An address, or the prefix a ban covers as `list` prints it (`192.0.2.7/32`,
/// `2001:db8:1:2::/64`): bans are per IPv4 address and per IPv6 /64.
fn source_ip(text: &str) -> Result<IpAddr, CliError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    let net: IpNet = text.parse().map_err(|_| {
        usage(format!(
            "{text:?} is not an address (such as 192.0.2.7 or 2001:db8::1) or a ban's prefix"
        ))
    })?;
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Ok(IpAddr::V4(n.addr())),
        IpNet::V6(n) if n.prefix_len() >= 64 => Ok(IpAddr::V6(n.addr())),
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

    fn send(config: Option<&str>, request: Request) -> Command {
        Command::Send {
            config: config.map(PathBuf::from),
            request,
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&["list"]).unwrap(), send(None, Request::BanList {}));
        assert_eq!(
            parse(&["ban", "list", "--config", "/etc/se.toml"]).unwrap(),
            send(Some("/etc/se.toml"), Request::BanList {})
        );
        assert_eq!(
            parse(&["add", "192.0.2.7", "--secs", "60"]).unwrap(),
            send(
                None,
                Request::BanAdd {
                    addr: "192.0.2.7".parse().unwrap(),
                    secs: Some(60)
                }
            )
        );
        assert_eq!(
            parse(&["del", "2001:db8:1:2::/64", "-c", "x.toml"]).unwrap(),
            send(
                Some("x.toml"),
                Request::BanDel {
                    addr: "2001:db8:1:2::".parse().unwrap()
                }
            )
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: [(&[&str], &str); 9] = [
            (&[], "a command is needed"),
            (&["lst"], "unknown command"),
            (&["add"], "add needs an address"),
            (&["del", "a", "b"], "too many arguments"),
            (&["add", "nope"], "is not an address"),
            (&["add", "10.0.0.0/8"], "not wider prefixes"),
            (&["add", "192.0.2.1", "--secs", "0"], "--secs must be"),
            (&["list", "--secs", "5"], "--secs is only for add"),
            (&["list", "--pin-dir", "x"], "unknown option"),
        ];
        for (args, problem) in cases {
            match parse(args) {
                Err(CliError::Usage(e)) => assert!(e.contains(problem), "{args:?}: {e}"),
                other => panic!("{args:?}: {other:?}"),
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
