//! The command line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::client::{Auth, Mechanism};
use crate::message::SizeSpec;
use crate::tls::{Mode, TlsOptions, Verify};

/// The command line as written; [`Options::from_cli`] checks how the flags combine.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "smtp-bench",
    version,
    about = "SMTP load generator: a sans-IO client engine driven by one epoll loop per core"
)]
pub struct Cli {
    /// The server.
    #[arg(value_name = "HOST:PORT")]
    server: String,

    /// Concurrent sessions.
    #[arg(short = 'c', long, value_name = "N", default_value = "10", value_parser = count, help_heading = "Load")]
    sessions: u64,
    /// Total messages to send.
    #[arg(short = 'n', long, value_name = "N", default_value = "1000", value_parser = count, help_heading = "Load")]
    messages: u64,
    /// Stop starting messages after SECS (always a bound).
    #[arg(short = 'd', long, value_name = "SECS", default_value = "120", value_parser = secs, help_heading = "Load")]
    duration: Duration,
    /// Content octets: 10240, 10k, 1m, or a range 1k..64k.
    #[arg(short = 's', long, value_name = "SIZE", default_value = "10k", value_parser = SizeSpec::parse, help_heading = "Load")]
    size: SizeSpec,
    /// Send the RFC 5322 message in FILE (header fields, blank line, body) as every message's
    /// content, dot-stuffed, lines ended with CRLF; instead of generated messages of --size.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "size",
        help_heading = "Load"
    )]
    message: Option<PathBuf>,
    /// Recipients per message.
    #[arg(short = 'r', long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u64).range(1..=10_000), help_heading = "Load")]
    rcpts: u64,
    /// Messages per session; 1 = a new connection per message; 0 = none: connect, (TLS,
    /// AUTH,) EHLO, QUIT, and -n counts sessions.
    #[arg(short = 'm', long, value_name = "N", default_value = "100", value_parser = clap::value_parser!(u64).range(0..=MAX_COUNT), help_heading = "Load")]
    per_session: u64,
    /// Pipeline commands when the server offers PIPELINING.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, help_heading = "Load")]
    pipelining: bool,
    /// I/O threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024), help_heading = "Load")]
    threads: Option<u64>,

    /// Reverse-path (default: --user, or bench@smtp-bench.invalid).
    #[arg(long, value_name = "ADDR", help_heading = "Envelope")]
    from: Option<String>,
    /// Recipient; repeat for more. With --rcpts above the count given, `local+K@domain`
    /// variants are used (default user@example.test).
    #[arg(long, value_name = "ADDR", help_heading = "Envelope")]
    to: Vec<String>,
    /// EHLO argument.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "smtp-bench.invalid",
        help_heading = "Envelope"
    )]
    helo: String,

    /// Open N sessions, read the greeting, EHLO, then hold them; prints `established N` once
    /// they are all up.
    #[arg(long, value_name = "N", value_parser = count, help_heading = "Idle connections")]
    idle: Option<u64>,
    /// How long to hold them.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = secs, help_heading = "Idle connections")]
    hold: Duration,
    /// Connect from this local address; repeat to spread connections over several, round
    /// robin: one source address reaches one server port with at most the ephemeral port
    /// range (about 28,000 connections on Linux).
    #[arg(long, value_name = "IPV4", help_heading = "Connections")]
    source: Vec<std::net::Ipv4Addr>,

    /// STARTTLS after EHLO (RFC 3207), then EHLO again.
    #[arg(long, conflicts_with = "tls", help_heading = "TLS")]
    starttls: bool,
    /// Implicit TLS from the first byte (RFC 8314, port 465).
    #[arg(long, help_heading = "TLS")]
    tls: bool,
    /// Trust the certificates in this PEM file.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "insecure",
        help_heading = "TLS"
    )]
    ca: Option<PathBuf>,
    /// Accept any server certificate (danger: benchmarks only).
    #[arg(long, help_heading = "TLS")]
    insecure: bool,
    /// Server name sent and checked (default: the server's IP address).
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    sni: Option<String>,
    /// Full handshakes only (default: resume, one session cache per thread).
    #[arg(long, help_heading = "TLS")]
    no_resume: bool,

    /// Authenticate before the first message (RFC 4954), inside TLS.
    #[arg(long, value_name = "PLAIN|LOGIN", value_parser = mechanism, requires_all = ["user", "password"], help_heading = "AUTH")]
    auth: Option<Mechanism>,
    /// The login; also the default --from.
    #[arg(long, value_name = "USER", requires = "auth", help_heading = "AUTH")]
    user: Option<String>,
    /// Its password.
    #[arg(long, value_name = "PASS", requires = "auth", help_heading = "AUTH")]
    password: Option<String>,

    /// One JSON object on stdout instead of the table.
    #[arg(long, help_heading = "Output")]
    json: bool,
}

/// Everything the command line sets.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server.
    pub server: SocketAddr,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Total messages (a bound even with `duration`).
    pub messages: u64,
    /// Time after which no message is started (a bound even with `messages`).
    pub duration: Duration,
    /// Content sizes (with `message`, its size).
    pub size: SizeSpec,
    /// `--message FILE`: the content of every message, as read.
    pub message: Option<Vec<u8>>,
    /// Recipients per message.
    pub rcpts: usize,
    /// Messages per session.
    pub per_session: u64,
    /// Pipeline when offered.
    pub pipelining: bool,
    /// I/O threads.
    pub threads: usize,
    /// Reverse-path.
    pub from: String,
    /// Recipients given.
    pub to: Vec<String>,
    /// EHLO argument.
    pub helo: String,
    /// Idle mode: sessions to open and hold.
    pub idle: Option<usize>,
    /// How long idle sessions are held.
    pub hold: Duration,
    /// Local addresses to connect from, in turn; empty: the kernel's choice.
    pub sources: Vec<std::net::Ipv4Addr>,
    /// JSON output.
    pub json: bool,
    /// TLS, if any.
    pub tls: Option<TlsOptions>,
    /// SMTP AUTH, if any.
    pub auth: Option<Auth>,
}

/// Largest `--messages`, `--sessions` and `--idle`, so every loop has a bound.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest `--duration` and `--hold`.
pub const MAX_SECS: u64 = 24 * 3600;

impl Options {
    /// Parses the arguments after the program name (tests); see [`Options::from_cli`].
    pub fn parse(args: &[&str]) -> Result<Options, String> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("smtp-bench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Options::from_cli(cli)
    }

    /// Checks how the flags combine and resolves the server address.
    pub fn from_cli(c: Cli) -> Result<Options, String> {
        let server = c
            .server
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", c.server))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{}: no IPv4 address", c.server))?;
        let mode = match (c.tls, c.starttls) {
            (true, _) => Some(Mode::Implicit),
            (false, true) => Some(Mode::StartTls),
            (false, false) => None,
        };
        let tls = match mode {
            Some(mode) => {
                let verify = match (c.ca, c.insecure) {
                    (Some(path), _) => Verify::Ca(path),
                    (None, true) => Verify::Insecure,
                    (None, false) => {
                        return Err(
                            "TLS needs --ca FILE (or --insecure to skip verification)".into()
                        )
                    }
                };
                let server_name = match c.sni {
                    Some(n) => {
                        ServerName::try_from(n.clone()).map_err(|e| format!("--sni {n:?}: {e}"))?
                    }
                    None => ServerName::IpAddress(server.ip().into()),
                };
                Some(TlsOptions {
                    mode,
                    verify,
                    resume: !c.no_resume,
                    server_name,
                })
            }
            None if c.ca.is_some() || c.insecure || c.sni.is_some() || c.no_resume => {
                return Err(
                    "--ca, --insecure, --sni and --no-resume need --tls or --starttls".into(),
                )
            }
            None => None,
        };
        let auth = match (c.auth, c.user, c.password) {
            (Some(mechanism), Some(user), Some(password)) => {
                if tls.is_none() {
                    return Err("--auth needs --tls or --starttls (passwords go inside TLS)".into());
                }
                Some(Auth {
                    mechanism,
                    user,
                    password,
                })
            }
            // clap's `requires` makes the three go together.
            _ => None,
        };
        let from = c
            .from
            .or_else(|| auth.as_ref().map(|a| a.user.clone()))
            .unwrap_or_else(|| "bench@smtp-bench.invalid".into());
        let to = if c.to.is_empty() {
            vec!["user@example.test".into()]
        } else {
            c.to
        };
        let message = match &c.message {
            Some(path) => Some(read_message(path)?),
            None => None,
        };
        let size = match &message {
            Some(content) => {
                let n = crate::message::wire_form(content).1;
                SizeSpec { min: n, max: n }
            }
            None => c.size,
        };
        let sessions = c.sessions as usize;
        let idle = c.idle.map(|n| n as usize);
        let threads = c.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        );
        Ok(Options {
            server,
            sessions,
            messages: c.messages,
            duration: c.duration,
            size,
            message,
            rcpts: c.rcpts as usize,
            per_session: c.per_session,
            pipelining: c.pipelining,
            threads: threads.min(sessions.max(idle.unwrap_or(0))).max(1),
            from,
            to,
            helo: c.helo,
            idle,
            hold: c.hold,
            sources: c.source,
            json: c.json,
            tls,
            auth,
        })
    }

    /// The recipients of every message: `--to` in turn, then `local+K@domain` variants.
    pub fn recipients(&self) -> Vec<String> {
        (0..self.rcpts)
            .map(|i| {
                let base = &self.to[i % self.to.len()];
                let round = i / self.to.len();
                match (round, base.rsplit_once('@')) {
                    (0, _) | (_, None) => base.clone(),
                    (k, Some((local, domain))) => format!("{local}+{k}@{domain}"),
                }
            })
            .collect()
    }
}

/// Largest `--message` file: a message bigger than this is not a load test of SMTP.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// Reads `--message FILE`: a message must have a header section, so an empty file is refused.
fn read_message(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let what = |e: String| format!("--message {}: {e}", path.display());
    let len = std::fs::metadata(path)
        .map_err(|e| what(e.to_string()))?
        .len();
    if len > MAX_MESSAGE {
        return Err(what(format!("{len} octets, at most {MAX_MESSAGE}")));
    }
    let content = std::fs::read(path).map_err(|e| what(e.to_string()))?;
    if content.iter().all(u8::is_ascii_whitespace) {
        return Err(what("empty: a message needs header fields".into()));
    }
    Ok(content)
}

fn count(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("a count 1..={MAX_COUNT}")),
    }
}

fn secs(v: &str) -> Result<Duration, String> {
    match v.trim_end_matches('s').parse::<f64>() {
        Ok(s) if s > 0.0 && s <= MAX_SECS as f64 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("seconds in (0, {MAX_SECS}]")),
    }
}

fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err("on or off".into()),
    }
}

fn mechanism(v: &str) -> Result<Mechanism, String> {
    match v.to_ascii_uppercase().as_str() {
        "PLAIN" => Ok(Mechanism::Plain),
        "LOGIN" => Ok(Mechanism::Login),
        _ => Err("PLAIN or LOGIN".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_flag_combinations() {
        let o = Options::parse(&["127.0.0.1:2525"]).unwrap();
        assert_eq!(
            (o.sessions, o.messages, o.per_session, o.pipelining),
            (10, 1000, 100, true)
        );
        assert_eq!(
            o.size,
            SizeSpec {
                min: 10240,
                max: 10240
            }
        );
        assert_eq!(o.from, "bench@smtp-bench.invalid");
        assert_eq!(o.to, ["user@example.test"]);
        assert!(o.tls.is_none() && o.auth.is_none());

        let o = Options::parse(&[
            "-c",
            "4",
            "-m",
            "0",
            "--pipelining=off",
            "--tls",
            "--insecure",
            "--auth",
            "plain",
            "--user",
            "a@example.test",
            "--password",
            "pw",
            "127.0.0.1:465",
        ])
        .unwrap();
        assert_eq!((o.sessions, o.per_session, o.pipelining), (4, 0, false));
        assert_eq!(o.from, "a@example.test", "--user is the default --from");
        assert!(matches!(
            o.tls,
            Some(TlsOptions {
                mode: Mode::Implicit,
                ..
            })
        ));

        for bad in [
            &[][..],
            &["--message", "/nonexistent/message.eml", "127.0.0.1:25"],
            &["-c", "0", "127.0.0.1:25"],
            &["--tls", "--starttls", "--insecure", "127.0.0.1:25"],
            &["--tls", "127.0.0.1:25"],
            &["--ca", "x.pem", "127.0.0.1:25"],
            &["--auth", "PLAIN", "--user", "u", "127.0.0.1:25"],
            &[
                "--auth",
                "PLAIN",
                "--user",
                "u",
                "--password",
                "p",
                "127.0.0.1:25",
            ],
            &[
                "--auth",
                "CRAM-MD5",
                "--user",
                "u",
                "--password",
                "p",
                "127.0.0.1:25",
            ],
            &["--pipelining", "maybe", "127.0.0.1:25"],
            &["-s", "64k..1k", "127.0.0.1:25"],
        ] {
            assert!(Options::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_message_file_replaces_the_generated_messages() {
        let dir = std::env::temp_dir().join(format!("smtp-bench-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("signed.eml");
        std::fs::write(&file, "From: <a@bench.test>\nSubject: x\n\n.dot\n").unwrap();
        let path = file.to_str().unwrap();
        let o = Options::parse(&["--message", path, "127.0.0.1:25"]).unwrap();
        let content = o.message.as_deref().unwrap();
        assert_eq!(content, b"From: <a@bench.test>\nSubject: x\n\n.dot\n");
        // The size reported is what the server stores: CRLF line ends, unstuffed.
        let stored = "From: <a@bench.test>\r\nSubject: x\r\n\r\n.dot\r\n".len();
        assert_eq!(
            o.size,
            SizeSpec {
                min: stored,
                max: stored
            }
        );
        let err = Options::parse(&["--message", path, "-s", "1k", "127.0.0.1:25"]).unwrap_err();
        assert!(err.contains("--size"), "{err}");
        let empty = dir.join("empty.eml");
        std::fs::write(&empty, "\n").unwrap();
        let err =
            Options::parse(&["--message", empty.to_str().unwrap(), "127.0.0.1:25"]).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
