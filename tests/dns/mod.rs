//! dnsmasq (Debian `dnsmasq-base`) as the DNS server of a test: authoritative for the records
//! the test gives it, nothing upstream, on a loopback port. Shared by the test crates that need
//! DNS (`#[path = "../dns/mod.rs"] mod dns;`): the relay's MX lookups, the MX's SPF, DKIM,
//! DMARC and DNSBL checks.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long dnsmasq may take to listen, and to stop.
const DEADLINE: Duration = Duration::from_secs(30);

/// Ports tried before giving up: between choosing a free port and dnsmasq binding it, another
/// process on this busy machine may take it (dnsmasq then exits with status 2).
const PORT_TRIES: usize = 5;

/// A running dnsmasq; stopped when dropped.
pub struct DnsServer {
    child: Child,
    /// Where it answers, UDP and TCP: the value for `dns.nameservers`.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts dnsmasq on 127.0.0.1 with `records` (dnsmasq options such as
/// `--mx-host=a.test,mx.a.test,10`, or [`txt`]).
pub fn start(records: &[String]) -> DnsServer {
    let mut failures = Vec::new();
    for _ in 0..PORT_TRIES {
        match try_start(records) {
            Ok(server) => return server,
            Err(why) => failures.push(why),
        }
    }
    panic!("dnsmasq did not start: {failures:#?}");
}

/// A TXT record for `name` holding `text` (SPF, DKIM key and DMARC records are TXT). dnsmasq
/// splits text over 255 octets into several character-strings, which readers join (RFC 7208
/// §3.3, RFC 6376 §3.6.2.2). Command-line options are not unquoted by dnsmasq and a comma starts
/// another string, so `text` must hold neither `"` nor `,`.
pub fn txt(name: &str, text: &str) -> String {
    assert!(
        !text.contains(['"', ',']),
        "dnsmasq would keep the quote or split at the comma in {text:?}"
    );
    format!("--txt-record={name},{text}")
}

/// Options that make dnsmasq authoritative for `zones`: names in them that have no record
/// get NXDOMAIN, and names with records but not of the asked type get an empty answer
/// (NOERROR), rather than REFUSED for want of an upstream server.
pub fn authoritative(zones: &[&str]) -> Vec<String> {
    let mut options = vec!["--auth-server=ns.test,127.0.0.1".to_string()];
    options.extend(zones.iter().map(|z| format!("--auth-zone={z}")));
    options
}

fn try_start(records: &[String]) -> Result<DnsServer, String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_and_udp_port();
    let log = dir.path().join("dnsmasq.log");
    let mut child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--log-queries",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("dnsmasq must be installed (Debian dnsmasq-base, see .ci/run)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(DnsServer {
                child,
                addr,
                _dir: dir,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("port {port}: exited ({status}): {log}"));
        }
        // Polling a port that is not open yet; there is no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("port {port}: not listening after {DEADLINE:?}"))
}

/// A loopback port free for both TCP and UDP now.
fn free_tcp_and_udp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
