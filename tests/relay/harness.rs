//! Driving the relay through its API, and the aiosmtpd receiver of `receiver.py`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver as Results};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_edge::protocol::address::parse_mailbox;
use smtp_edge::relay::{
    Attempt, AttemptResult, Content, Relay, RelayConfig, RelayHandle, Route, Verdict,
};

use crate::receivers::{wait_files, Receiver, DEADLINE};

/// A relay under test and where its results arrive.
pub struct Running {
    pub handle: RelayHandle,
    pub results: Results<AttemptResult>,
    /// The spool files the attempts point at.
    pub spool: tempfile::TempDir,
    next_token: u64,
}

/// The defaults, with short timeouts so that a dead peer shows within the test's deadline.
pub fn config() -> RelayConfig {
    let mut cfg = RelayConfig::new("relay.example.test");
    cfg.timeouts.greeting = Duration::from_secs(20);
    cfg.timeouts.command = Duration::from_secs(20);
    cfg
}

pub fn start(cfg: RelayConfig) -> Running {
    let (tx, results) = channel();
    let handle = Relay::start(Arc::new(cfg), tx).expect("relay starts");
    Running {
        handle,
        results,
        spool: tempfile::tempdir().unwrap(),
        next_token: 1,
    }
}

impl Running {
    /// Spools `content` behind a header of the queue's own (which the relay must skip) and
    /// submits it to `to` over `route`; returns the token.
    pub fn submit(&mut self, route: &Route, from: &str, to: &[&str], content: &[u8]) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let path = self.spool.path().join(format!("q{token}"));
        let header = format!("QUEUE HEADER {token}\n");
        std::fs::write(&path, [header.as_bytes(), content].concat()).unwrap();
        let domain = to[0].rsplit('@').next().unwrap().to_ascii_lowercase();
        let attempt = Attempt {
            token,
            queue_id: format!("Q{token}"),
            route: route.clone(),
            domain,
            from: (!from.is_empty()).then(|| parse_mailbox(from).unwrap()),
            to: to.iter().map(|t| parse_mailbox(t).unwrap()).collect(),
            content: Content {
                path,
                offset: header.len() as u64,
                len: content.len() as u64,
            },
            eight_bit: content.iter().any(|&b| b > 127),
            smtputf8: false,
        };
        self.handle.submit(attempt).expect("relay is running");
        token
    }

    /// The next `n` results, sorted by token.
    pub fn results(&self, n: usize) -> Vec<AttemptResult> {
        let until = Instant::now() + DEADLINE * 2;
        let mut got = Vec::new();
        while got.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok(r) => got.push(r),
                Err(e) => panic!(
                    "{} of {n} results after {:?}: {e}; got {got:#?}",
                    got.len(),
                    DEADLINE * 2
                ),
            }
        }
        got.sort_by_key(|r| r.token);
        got
    }

    /// The one result of a single submission.
    pub fn result(&self) -> AttemptResult {
        self.results(1).remove(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::from_secs(5));
    }
}

/// The verdicts of a result, one per recipient.
pub fn verdicts(r: &AttemptResult) -> Vec<Verdict> {
    r.outcomes.iter().map(|o| o.verdict).collect()
}

/// An aiosmtpd receiver from `receiver.py` on `host:port` (port 0: any), with extra
/// arguments (`--tls CERT KEY`, `--auth USER PASS`, `--slow-ms N`).
pub fn aiosmtpd(host: &str, port: u16, extra: &[&str]) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    aiosmtpd_in(dir, host, port, extra)
}

/// As [`aiosmtpd`], storing into `dir` (so that a certificate can be made there first).
pub fn aiosmtpd_in(dir: tempfile::TempDir, host: &str, port: u16, extra: &[&str]) -> Receiver {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/relay/receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .arg(host)
        .arg(port.to_string())
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (see .ci/run)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("receiver.py did not start on {host}:{port}: {line:?}"))
        .parse()
        .unwrap();
    let addr = SocketAddr::new(host.parse().unwrap(), port);
    Receiver { child, addr, dir }
}

/// One stored message: its content and its `.env` lines.
pub struct Stored {
    pub content: Vec<u8>,
    pub env: Vec<String>,
}

impl Stored {
    /// The value of the `.env` line `key` (the first one).
    pub fn get(&self, key: &str) -> &str {
        self.env
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.env))
    }

    pub fn rcpts(&self) -> Vec<&str> {
        self.env
            .iter()
            .filter_map(|l| l.strip_prefix("rcpt "))
            .collect()
    }
}

/// Waits for `count` messages stored by an aiosmtpd receiver in `dir`, in arrival order.
pub fn stored(dir: &Path, count: usize) -> Vec<Stored> {
    let envs = wait_files(dir, count, |p| p.extension().is_some_and(|e| e == "env"));
    let mut envs: Vec<PathBuf> = envs;
    envs.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    });
    envs.iter()
        .map(|env| Stored {
            content: std::fs::read(env.with_extension("eml")).unwrap(),
            env: std::fs::read_to_string(env)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

/// `(connections in all, most open at once)` as the receiver counted them.
pub fn connections(dir: &Path) -> (u32, u32) {
    let [total, most, _] = connection_counts(dir);
    (total, most)
}

/// Connections the receiver has open now.
pub fn open_connections(dir: &Path) -> u32 {
    connection_counts(dir)[2]
}

fn connection_counts(dir: &Path) -> [u32; 3] {
    let text = std::fs::read_to_string(dir.join("connections")).unwrap_or_default();
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    [(); 3].map(|()| it.next().unwrap_or(0))
}
