//! dnsmasq as the bench's DNS server: authoritative for the zone it is given, nothing upstream,
//! on a free loopback port; stopped by `Drop`. Scenario t points smtp-edge's `dns.nameservers`
//! at it, so the checks ask a real server over UDP without leaving the machine.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long dnsmasq may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Ports tried: between choosing a free port and dnsmasq binding it, another process may take
/// it (dnsmasq then exits).
const PORT_TRIES: usize = 5;
/// TTL of every answer (s): as a published zone would have, so smtp-edge's per-worker cache
/// answers after the first lookups, as it would in service. dnsmasq's own default for records
/// it serves from the command line is 0 (never cached).
const TTL: u32 = 300;

/// Where dnsmasq may be: Debian installs it in /usr/sbin, outside a non-root `PATH`.
pub fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers, UDP and TCP: the value for `dns.nameservers`.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts `program` on 127.0.0.1, authoritative for `zone`, serving `txt` (name, text)
    /// records; its log (every query) goes to `dir/dnsmasq.log`.
    pub fn start(program: &Path, dir: &Path, zone: &str, txt: &[(String, String)]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("dnsmasq.log");
        let mut failures = Vec::new();
        for _ in 0..PORT_TRIES {
            let port = free_tcp_and_udp_port()?;
            let args = options(port, &log, zone, txt)?;
            match try_start(program, &args, port, &log) {
                Ok(child) => {
                    return Ok(Dnsmasq {
                        child,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        log,
                    })
                }
                Err(why) => failures.push(format!("{why:#}")),
            }
        }
        bail!("dnsmasq did not start: {}", failures.join("; "))
    }

    /// Queries answered so far: one `auth[TYPE] NAME from ADDR` line each in its log (queries
    /// in the zone; `query[TYPE]` for any outside it).
    pub fn queries(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" auth[") || l.contains(" query["))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq's command line: in the foreground, no `/etc/resolv.conf`, no `/etc/hosts`, no
/// configuration file, no upstream, only on 127.0.0.1:`port`, authoritative for `zone` (a name
/// in it with no record is NXDOMAIN, a name without the asked type an empty answer, never
/// REFUSED for want of an upstream), one `--txt-record` per record, each answered with
/// [`TTL`]. dnsmasq takes option values verbatim (no unquoting) and a comma starts another
/// string of the record, so a text holding `"` or `,` is refused here rather than served
/// changed; texts over 255 octets are split by dnsmasq into character-strings, which readers
/// join (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
pub fn options(port: u16, log: &Path, zone: &str, txt: &[(String, String)]) -> Result<Vec<String>> {
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--log-queries",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--log-facility={}", log.display()));
    args.push(format!("--port={port}"));
    args.push(format!("--local-ttl={TTL}"));
    args.push(format!("--auth-ttl={TTL}"));
    args.push(format!("--auth-server=ns.{zone},127.0.0.1"));
    args.push(format!("--auth-zone={zone}"));
    for (name, text) in txt {
        if text.contains(['"', ',']) {
            bail!("TXT {name}: dnsmasq would keep the quote or split at the comma in {text:?}");
        }
        args.push(format!("--txt-record={name},{text}"));
    }
    Ok(args)
}

fn try_start(program: &Path, args: &[String], port: u16, log: &Path) -> Result<Child> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = now() + START_LIMIT;
    while now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("port {port}: exited ({status}): {}", log.trim());
        }
        // Polling a port that is not open yet; there is no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("port {port}: not listening after {START_LIMIT:?}")
}

/// A loopback port free for both TCP and UDP now.
fn free_tcp_and_udp_port() -> Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both TCP and UDP")
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_zone_alone_on_its_port_with_a_ttl() {
        let txt = [
            (
                "bench.test".to_owned(),
                "v=spf1 ip4:127.0.0.0/8 -all".to_owned(),
            ),
            (
                "_dmarc.bench.test".to_owned(),
                "v=DMARC1; p=none".to_owned(),
            ),
        ];
        let args = options(5353, Path::new("/x/dnsmasq.log"), "bench.test", &txt).unwrap();
        for must in [
            "--port=5353",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--auth-zone=bench.test",
            "--auth-server=ns.bench.test,127.0.0.1",
            "--local-ttl=300",
            "--auth-ttl=300",
            "--log-facility=/x/dnsmasq.log",
            "--txt-record=bench.test,v=spf1 ip4:127.0.0.0/8 -all",
            "--txt-record=_dmarc.bench.test,v=DMARC1; p=none",
        ] {
            assert!(
                args.iter().any(|a| a == must),
                "{must} missing from {args:?}"
            );
        }
        assert!(
            !args.iter().any(|a| a.starts_with("--server")),
            "nothing upstream: {args:?}"
        );
    }

    #[test]
    fn a_text_dnsmasq_would_change_is_refused() {
        for text in ["v=spf1 \"quoted\"", "a,b"] {
            let txt = [("bench.test".to_owned(), text.to_owned())];
            let err = options(53, Path::new("log"), "bench.test", &txt).unwrap_err();
            assert!(err.to_string().contains("TXT bench.test"), "{err}");
        }
    }
}
