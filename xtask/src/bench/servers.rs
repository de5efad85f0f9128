//! The servers under test: smtp-edge, a throwaway Postfix instance, and `smtp-sink`.
//!
//! Each is started on loopback in its own directory under the run's temporary root and stopped
//! by `Drop`, so an error anywhere in the run still stops it. The Postfix instance has its own
//! `config_directory` and `queue_directory` (`postfix -c DIR`), so the system's Postfix, its
//! configuration and its queue are never touched.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs;

/// Where Postfix's programs are.
pub const POSTFIX: &str = "/usr/sbin/postfix";
/// Postfix's protocol-only sink.
pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
/// Postfix's load generator, for the client-cost comparison.
pub const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// smtp-edge, durable spool + Maildir.
    Edge,
    /// Postfix: durable queue + Maildir (virtual(8)).
    Postfix,
    /// smtp-sink: stores nothing.
    Sink,
}

impl Kind {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Edge => "smtp-edge",
            Kind::Postfix => "postfix",
            Kind::Sink => "smtp-sink",
        }
    }
}

/// How to configure smtp-edge for a run.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    /// `(role, tls)` per listener, in order; [`Server::ports`] follows this order.
    pub listeners: Vec<(&'static str, &'static str)>,
    /// The listeners' address (`127.0.0.1:0` on loopback).
    pub addr: String,
    /// `[auth] users = FILE`.
    pub users: Option<PathBuf>,
    /// The `[shield]` section's body, if any.
    pub shield: Option<String>,
    /// Run inside this network namespace (`ip netns exec NS ...`).
    pub netns: Option<String>,
    /// `[relay] local = URL`: local mail goes to this next hop instead of Maildir.
    pub relay_local: Option<String>,
    /// The `[checks]` section's body; without it, the defaults (every check at `tag`).
    pub checks: Option<String>,
    /// `[dns] nameservers` (`IP:PORT`); without them, the system resolver.
    pub nameservers: Vec<String>,
    /// `limits.max_connections`; default: derived by the server from its open-file limit.
    pub max_connections: Option<u64>,
}

impl Default for EdgeSetup {
    fn default() -> Self {
        EdgeSetup {
            listeners: vec![("delivery", "none")],
            addr: "127.0.0.1:0".into(),
            users: None,
            shield: None,
            netns: None,
            relay_local: None,
            checks: None,
            nameservers: Vec::new(),
            max_connections: None,
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Which.
    pub kind: Kind,
    /// The SMTP port on 127.0.0.1 (smtp-edge: of its first listener).
    pub port: u16,
    /// smtp-edge: every listener's port, in [`EdgeSetup::listeners`] order.
    pub ports: Vec<u16>,
    /// smtp-edge: the metrics address (inside its namespace, if any).
    pub metrics: Option<String>,
    /// smtp-edge: its self-signed certificate (`[tls] self_signed_dir`), once started.
    pub cert: PathBuf,
    /// The process to measure (Postfix: `master`, whose tree is measured).
    pub pid: u32,
    /// smtp-sink: messages it has answered `.` for (its `-c` counter).
    received: Arc<AtomicU64>,
    dir: PathBuf,
    child: Option<Child>,
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

impl Server {
    /// Starts smtp-edge as `setup` says: listeners on `setup.addr`, durable spool and Maildir,
    /// a self-signed certificate and the session cache under `dir`, no per-IP connection cap
    /// (every client is one address), and waits for `ready` on its stdout.
    pub fn edge_with(bin: &Path, dir: &Path, setup: &EdgeSetup) -> Result<Server> {
        use std::fmt::Write as _;
        std::fs::create_dir_all(dir)?;
        let config = dir.join("smtp-edge.toml");
        let mut text = String::from(
            "hostname = \"bench.example.test\"\nlocal_domains = [\"example.test\"]\nworkers = 0\n",
        );
        for (role, tls) in &setup.listeners {
            let _ = write!(
                text,
                "\n[[listener]]\naddr = \"{}\"\nrole = \"{role}\"\ntls = \"{tls}\"\n",
                setup.addr
            );
        }
        let _ = write!(
            text,
            "\n[spool]\ndir = \"{}\"\n\n[delivery]\nmaildir = \"{}\"\n\n\
             [limits]\nmax_connections_per_ip = 0\n{}\n[metrics]\naddr = \"127.0.0.1:0\"\n\n\
             [tls]\nself_signed_dir = \"{}\"\n",
            dir.join("spool").display(),
            dir.join("mail").display(),
            setup
                .max_connections
                .map(|n| format!("max_connections = {n}\n"))
                .unwrap_or_default(),
            dir.join("tls").display(),
        );
        if let Some(users) = &setup.users {
            let _ = write!(text, "\n[auth]\nusers = \"{}\"\n", users.display());
        }
        if let Some(shield) = &setup.shield {
            let _ = write!(text, "\n[shield]\n{shield}\n");
        }
        if let Some(local) = &setup.relay_local {
            let _ = write!(text, "\n[relay]\nlocal = \"{local}\"\n");
        }
        if let Some(checks) = &setup.checks {
            let _ = write!(text, "\n[checks]\n{checks}\n");
        }
        if !setup.nameservers.is_empty() {
            let list: Vec<String> = setup.nameservers.iter().map(|n| format!("{n:?}")).collect();
            let _ = write!(text, "\n[dns]\nnameservers = [{}]\n", list.join(", "));
        }
        std::fs::write(&config, text)?;
        let mut cmd = match &setup.netns {
            Some(ns) => {
                // `ip netns exec` execs the program: the child's pid is smtp-edge's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("smtp-edge stdout")?;
        let mut server = Server {
            kind: Kind::Edge,
            port: 0,
            ports: Vec::new(),
            metrics: None,
            cert: dir.join("tls/cert.pem"),
            pid,
            received: Arc::default(),
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        // `listening ROLE ADDR` per listener, `metrics ADDR`, then `ready` (bounded, and the
        // child's exit ends the stream).
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().take(32) {
            let line = line?;
            if let Some(rest) = line.strip_prefix("listening ") {
                let addr = rest.rsplit(' ').next().unwrap_or("");
                server
                    .ports
                    .push(addr.rsplit(':').next().unwrap_or("").parse()?);
            } else if let Some(addr) = line.strip_prefix("metrics ") {
                server.metrics = Some(addr.trim().to_owned());
            } else if line == "ready" {
                break;
            }
        }
        server.port = server.ports.first().copied().unwrap_or(0);
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        if server.port == 0 {
            bail!(
                "smtp-edge did not report its port; see {}",
                dir.join("stderr.log").display()
            );
        }
        Ok(server)
    }

    /// Messages accepted but not yet delivered to Maildir (smtp-edge: its
    /// `smtp_edge_queue_messages` gauge, active and deferred, since its spool is a log of
    /// segments rather than a file per message; 0 when the page cannot be read from here, as
    /// inside a network namespace, where the count delivered is what [`Server::drain`] waits
    /// for).
    pub fn backlog(&self) -> usize {
        match self.kind {
            Kind::Edge => self
                .metrics_page()
                .ok()
                .and_then(|page| queued(&page))
                .unwrap_or(0),
            Kind::Postfix => ["incoming", "active", "deferred", "maildrop", "hold"]
                .iter()
                .map(|q| procfs::count_files(&self.dir.join("queue").join(q)))
                .sum(),
            Kind::Sink => 0,
        }
    }

    /// Waits (at most `limit`) until the `accepted` messages are delivered and the queue is
    /// empty; returns the wait.
    pub fn drain(&self, limit: Duration, accepted: usize) -> Duration {
        self.drain_until(limit, || self.delivered() >= accepted)
    }

    /// smtp-edge's metrics page (`GET /metrics`), the whole response.
    pub fn metrics_page(&self) -> Result<String> {
        use std::io::{Read as _, Write as _};
        let addr = self.metrics.as_deref().context("no metrics address")?;
        let limit = Duration::from_secs(5);
        let mut s =
            std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        let mut page = String::new();
        s.read_to_string(&mut page)
            .with_context(|| format!("reading metrics from {addr}"))?;
        Ok(page)
    }

    /// Waits (at most `limit`) until the queue is empty and `arrived()` (the next hop has every
    /// message); returns the wait.
    pub fn drain_until(&self, limit: Duration, arrived: impl Fn() -> bool) -> Duration {
        let start = now();
        while !(arrived() && self.backlog() == 0) && now() - start < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        now() - start
    }

    /// CPU seconds so far (Postfix: the whole instance, reaped children included).
    pub fn cpu(&self) -> f64 {
        match self.kind {
            Kind::Postfix => procfs::tree_cpu(self.pid),
            _ => procfs::cpu(self.pid),
        }
    }

    /// Resident KiB now (Postfix: PSS summed over the instance's processes).
    pub fn rss_kib(&self) -> u64 {
        match self.kind {
            Kind::Postfix => procfs::tree_pss_kib(self.pid),
            _ => procfs::status_kib(self.pid, "VmRSS"),
        }
    }

    /// Messages delivered: files in Maildir's `new/` and `cur/` (smtp-edge, Postfix), or the
    /// messages smtp-sink answered `.` for (it stores nothing, but counts).
    pub fn delivered(&self) -> usize {
        match self.kind {
            Kind::Sink => self.received.load(Ordering::Relaxed) as usize,
            _ => procfs::count_maildir(&self.dir.join("mail")),
        }
    }

    /// Starts `smtp-sink` on a free loopback port; it answers everything and stores nothing,
    /// and counts what it received (`-c`: `sess=N quit=N mesg=N` on stdout at every `.`, QUIT
    /// and session end), which [`Server::delivered`] reads.
    pub fn sink(dir: &Path) -> Result<Server> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut child = Command::new(SMTP_SINK)
            .args(["-u", "nobody", "-c", "-m", "4096"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?))
            .spawn()
            .context("starting smtp-sink")?;
        let received = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().context("smtp-sink stdout")?;
        let counter = Arc::clone(&received);
        std::thread::spawn(move || count_sink_messages(stdout, &counter));
        let server = Server {
            kind: Kind::Sink,
            port,
            ports: vec![port],
            metrics: None,
            cert: PathBuf::new(),
            pid: child.id(),
            received,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        wait_port(port)?;
        Ok(server)
    }

    /// Starts a throwaway Postfix instance: its own config and queue directories under `dir`, an
    /// SMTP listener on a free loopback port, durable queueing (cleanup fsyncs before the 250),
    /// delivery by virtual(8) into `dir/mail/example.test/user/` (Maildir, fsynced per file).
    pub fn postfix(dir: &Path) -> Result<Server> {
        Server::postfix_with(dir, None)
    }

    /// As [`Server::postfix`], but `example.test` is a relay domain whose mail goes by smtp(8)
    /// to `127.0.0.1:next_hop` (`relay_transport = relay:[127.0.0.1]:PORT`, no MX lookup),
    /// with Postfix's defaults for the rest (connection cache on demand, 20 connections per
    /// destination, no TLS since the sink offers none).
    pub fn postfix_relay(dir: &Path, next_hop: u16) -> Result<Server> {
        Server::postfix_with(dir, Some(next_hop))
    }

    fn postfix_with(dir: &Path, next_hop: Option<u16>) -> Result<Server> {
        let conf = dir.join("etc");
        let queue = dir.join("queue");
        let data = dir.join("data");
        let mail = dir.join("mail");
        for d in [&conf, &queue, &data, &mail] {
            std::fs::create_dir_all(d)?;
        }
        // virtual(8) writes as nobody; the queue and data directories belong to postfix.
        run(
            "chown",
            &["-R", "nobody:nogroup", &mail.display().to_string()],
        )?;
        run("chown", &["postfix", &data.display().to_string()])?;
        let port = free_port()?;
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 myhostname = bench.example.test\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 biff = no\n\
                 maillog_file_prefixes = {dir}\n\
                 maillog_file = {dir}/maillog\n\
                 {destination}\
                 smtpd_client_connection_count_limit = 0\n\
                 default_process_limit = 200\n\
                 smtputf8_enable = no\n",
                queue = queue.display(),
                data = data.display(),
                dir = dir.display(),
                destination = match next_hop {
                    None => format!(
                        "virtual_mailbox_domains = example.test\n\
                         virtual_mailbox_base = {mail}\n\
                         virtual_mailbox_maps = static:example.test/user/\n\
                         virtual_uid_maps = static:65534\n\
                         virtual_gid_maps = static:65534\n\
                         virtual_minimum_uid = 100\n",
                        mail = mail.display()
                    ),
                    Some(port) => format!(
                        "relay_domains = example.test\n\
                         relay_transport = relay:[127.0.0.1]:{port}\n"
                    ),
                },
            ),
        )?;
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup    unix  n - n 60 1 pickup\n\
                 cleanup   unix  n - n - 0 cleanup\n\
                 qmgr      unix  n - n 300 1 qmgr\n\
                 rewrite   unix  - - n - - trivial-rewrite\n\
                 bounce    unix  - - n - 0 bounce\n\
                 defer     unix  - - n - 0 bounce\n\
                 trace     unix  - - n - 0 bounce\n\
                 verify    unix  - - n - 1 verify\n\
                 flush     unix  n - n 1000? 0 flush\n\
                 proxymap  unix  - - n - - proxymap\n\
                 showq     unix  n - n - - showq\n\
                 error     unix  - - n - - error\n\
                 retry     unix  - - n - - error\n\
                 discard   unix  - - n - - discard\n\
                 virtual   unix  - n n - - virtual\n\
                 smtp      unix  - - n - - smtp\n\
                 relay     unix  - - n - - smtp\n\
                 anvil     unix  - - n - 1 anvil\n\
                 scache    unix  - - n - 1 scache\n\
                 postlog   unix-dgram n - n - 1 postlogd\n"
            ),
        )?;
        let mut server = Server {
            kind: Kind::Postfix,
            port,
            ports: vec![port],
            metrics: None,
            cert: PathBuf::new(),
            pid: 0,
            received: Arc::default(),
            dir: dir.to_path_buf(),
            child: None,
        };
        let conf_s = conf.display().to_string();
        run(POSTFIX, &["-c", &conf_s, "start"])
            .with_context(|| format!("postfix -c {conf_s} start; see {}/maillog", dir.display()))?;
        let pidfile = queue.join("pid/master.pid");
        let deadline = now() + Duration::from_secs(10);
        while server.pid == 0 && now() < deadline {
            if let Ok(s) = std::fs::read_to_string(&pidfile) {
                server.pid = s.trim().parse().unwrap_or(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if server.pid == 0 {
            bail!(
                "postfix master did not start; see {}/maillog",
                dir.display()
            );
        }
        wait_port(port)?;
        Ok(server)
    }

    /// Stops the server and waits for it (bounded), then kills what is left.
    pub fn stop(&mut self) {
        match self.kind {
            Kind::Postfix => {
                if self.pid == 0 {
                    return;
                }
                let conf = self.dir.join("etc").display().to_string();
                let _ = run(POSTFIX, &["-c", &conf, "stop"]);
                let deadline = now() + Duration::from_secs(10);
                while std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
                    && now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
                    let _ = run(POSTFIX, &["-c", &conf, "abort"]);
                    let _ = run("kill", &["-KILL", &self.pid.to_string()]);
                }
                self.pid = 0;
            }
            _ => {
                let Some(mut child) = self.child.take() else {
                    return;
                };
                let _ = run("kill", &["-TERM", &child.id().to_string()]);
                let deadline = now() + Duration::from_secs(10);
                while now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sum of `smtp_edge_queue_messages{state=...}` on a metrics page; `None` without it.
fn queued(page: &str) -> Option<usize> {
    let values: Vec<f64> = page
        .lines()
        .filter_map(|l| l.strip_prefix("smtp_edge_queue_messages{"))
        .filter_map(|l| l.split_once("} ")?.1.trim().parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as usize)
}

/// Keeps `counter` at smtp-sink's latest `mesg=N` (its `-c` lines end in `\r`).
fn count_sink_messages(stdout: impl std::io::Read, counter: &AtomicU64) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    while reader.read_until(b'\r', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line);
        if let Some(n) = text
            .split_whitespace()
            .find_map(|f| f.strip_prefix("mesg=")?.parse::<u64>().ok())
        {
            counter.store(n, Ordering::Relaxed);
        }
        line.clear();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = now() + Duration::from_secs(10);
    while now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

/// Runs `cmd ARGS` to completion; fails unless it exits 0.
pub fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_gauge_adds_active_and_deferred() {
        let page = "HTTP/1.1 200 OK\r\n\r\n\
            # TYPE smtp_edge_queue_messages gauge\n\
            smtp_edge_queue_messages{state=\"active\"} 12\n\
            smtp_edge_queue_messages{state=\"deferred\"} 3\n\
            smtp_edge_messages_accepted_total 500\n";
        assert_eq!(queued(page), Some(15));
        assert_eq!(queued("smtp_edge_messages_accepted_total 500\n"), None);
    }
}
