//! The command line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::client::{Auth, Mechanism};
use crate::message::SizeSpec;
use crate::tls::{Mode, TlsOptions, Verify};

/// Usage text.
pub const USAGE: &str = "\
usage: smtp-bench [OPTIONS] HOST:PORT

load
  -c, --sessions N        concurrent sessions (default 10)
  -n, --messages N        total messages to send (default 1000)
  -d, --duration SECS     stop starting messages after SECS (default 120; always a bound)
  -s, --size SIZE         content octets: 10240, 10k, 1m, or a range 1k..64k (default 10k)
  -r, --rcpts N           recipients per message (default 1)
  -m, --per-session N     messages per session; 1 = a new connection per message; 0 = none:
                          connect, (TLS, AUTH,) EHLO, QUIT, and -n counts sessions (default 100)
      --pipelining on|off pipeline commands when the server offers PIPELINING (default on)
      --threads N         I/O threads (default: one per core)
envelope
      --from ADDR         reverse-path (default bench@smtp-bench.invalid)
      --to ADDR           recipient; repeat for more; with --rcpts above the count given,
                          `local+K@domain` variants are used (default user@example.test)
      --helo NAME         EHLO argument (default smtp-bench.invalid)
idle connections
      --idle N            open N sessions, read the greeting, EHLO, then hold them; prints
                          `established N` once they are all up
      --hold SECS         how long to hold them (default 10)
tls
      --starttls          STARTTLS after EHLO (RFC 3207), then EHLO again
      --tls               implicit TLS from the first byte (RFC 8314, port 465)
      --ca FILE           trust the certificates in this PEM file (default verification)
      --insecure          accept any server certificate (danger: benchmarks only)
      --sni NAME          server name sent and checked (default: the server's IP address)
      --no-resume         full handshakes only (default: resume, one session cache per thread)
auth (inside TLS)
      --auth PLAIN|LOGIN  authenticate before the first message (RFC 4954)
      --user USER         the login; also the default --from
      --password PASS     its password
output
      --json              one JSON object on stdout instead of the table";

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
    /// Content sizes.
    pub size: SizeSpec,
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
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            server: SocketAddr::from(([127, 0, 0, 1], 25)),
            sessions: 10,
            messages: 1000,
            duration: Duration::from_secs(120),
            size: SizeSpec {
                min: 10240,
                max: 10240,
            },
            rcpts: 1,
            per_session: 100,
            pipelining: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            from: "bench@smtp-bench.invalid".into(),
            to: Vec::new(),
            helo: "smtp-bench.invalid".into(),
            idle: None,
            hold: Duration::from_secs(10),
            json: false,
            tls: None,
            auth: None,
        };
        let mut server = None;
        let (mut mode, mut ca, mut insecure, mut sni, mut resume) = (None, None, false, None, true);
        let (mut mech, mut user, mut password, mut from_given) = (None, None, None, false);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name {
                "-c" | "--sessions" => o.sessions = count(name, &value()?)? as usize,
                "-n" | "--messages" => o.messages = count(name, &value()?)?,
                "-d" | "--duration" => o.duration = secs(name, &value()?)?,
                "-s" | "--size" => o.size = SizeSpec::parse(&value()?)?,
                "-r" | "--rcpts" => o.rcpts = count(name, &value()?)?.min(10_000) as usize,
                "-m" | "--per-session" => {
                    let v = value()?;
                    o.per_session = if v == "0" { 0 } else { count(name, &v)? };
                }
                "--pipelining" => {
                    o.pipelining = match value()?.as_str() {
                        "on" | "yes" | "true" => true,
                        "off" | "no" | "false" => false,
                        v => return Err(format!("--pipelining: on or off, got {v:?}")),
                    }
                }
                "--threads" => o.threads = count(name, &value()?)?.min(1024) as usize,
                "--from" => {
                    o.from = value()?;
                    from_given = true;
                }
                "--to" => o.to.push(value()?),
                "--helo" => o.helo = value()?,
                "--idle" => o.idle = Some(count(name, &value()?)? as usize),
                "--hold" => o.hold = secs(name, &value()?)?,
                "--json" => o.json = true,
                "--tls" | "--starttls" => {
                    let m = if name == "--tls" {
                        Mode::Implicit
                    } else {
                        Mode::StartTls
                    };
                    if mode.is_some_and(|old| old != m) {
                        return Err("--tls and --starttls exclude each other".into());
                    }
                    mode = Some(m);
                }
                "--ca" => ca = Some(PathBuf::from(value()?)),
                "--insecure" => insecure = true,
                "--sni" => sni = Some(value()?),
                "--no-resume" => resume = false,
                "--auth" => {
                    mech = Some(match value()?.to_ascii_uppercase().as_str() {
                        "PLAIN" => Mechanism::Plain,
                        "LOGIN" => Mechanism::Login,
                        v => return Err(format!("--auth: PLAIN or LOGIN, got {v:?}")),
                    })
                }
                "--user" => user = Some(value()?),
                "--password" => password = Some(value()?),
                "-h" | "--help" => return Err(String::new()),
                s if !s.starts_with('-') && server.is_none() => server = Some(s.to_owned()),
                s => return Err(format!("unexpected argument {s:?}")),
            }
        }
        let server = server.ok_or("missing HOST:PORT")?;
        o.server = server
            .to_socket_addrs()
            .map_err(|e| format!("{server}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{server}: no IPv4 address"))?;
        if o.to.is_empty() {
            o.to.push("user@example.test".into());
        }
        if let Some(mode) = mode {
            let verify = match (ca, insecure) {
                (Some(_), true) => return Err("--ca and --insecure exclude each other".into()),
                (Some(path), false) => Verify::Ca(path),
                (None, true) => Verify::Insecure,
                (None, false) => {
                    return Err("TLS needs --ca FILE (or --insecure to skip verification)".into())
                }
            };
            let server_name = match sni {
                Some(n) => {
                    ServerName::try_from(n.clone()).map_err(|e| format!("--sni {n:?}: {e}"))?
                }
                None => ServerName::IpAddress(o.server.ip().into()),
            };
            o.tls = Some(TlsOptions {
                mode,
                verify,
                resume,
                server_name,
            });
        } else if ca.is_some() || insecure || sni.is_some() || !resume {
            return Err("--ca, --insecure, --sni and --no-resume need --tls or --starttls".into());
        }
        match (mech, user, password) {
            (None, None, None) => {}
            (Some(mechanism), Some(user), Some(password)) => {
                if o.tls.is_none() {
                    return Err("--auth needs --tls or --starttls (passwords go inside TLS)".into());
                }
                if !from_given {
                    o.from = user.clone();
                }
                o.auth = Some(Auth {
                    mechanism,
                    user,
                    password,
                });
            }
            _ => return Err("--auth, --user and --password go together".into()),
        }
        o.threads = o.threads.min(o.sessions.max(o.idle.unwrap_or(0))).max(1);
        Ok(o)
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

fn count(name: &str, v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("{name}: a count 1..={MAX_COUNT}, got {v:?}")),
    }
}

fn secs(name: &str, v: &str) -> Result<Duration, String> {
    match v.trim_end_matches('s').parse::<f64>() {
        Ok(s) if s > 0.0 && s <= MAX_SECS as f64 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{name}: seconds in (0, {MAX_SECS}], got {v:?}")),
    }
}
