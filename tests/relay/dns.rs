//! dnsmasq (Debian `dnsmasq-base`) as the DNS server of a test: authoritative for the records
//! the test gives it, nothing upstream, on a loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::receivers::{Receiver, DEADLINE};

/// Ports tried before giving up: between choosing a free port and dnsmasq binding it, another
/// process on this busy machine may take it (dnsmasq then exits with status 2).
const PORT_TRIES: usize = 5;

/// Starts dnsmasq on 127.0.0.1 with `records` (dnsmasq options such as
/// `--mx-host=a.test,mx.a.test,10`); its address goes in `dns.nameservers`.
pub fn start(records: &[String]) -> Receiver {
    let mut failures = Vec::new();
    for _ in 0..PORT_TRIES {
        match try_start(records) {
            Ok(rx) => return rx,
            Err(why) => failures.push(why),
        }
    }
    panic!("dnsmasq did not start: {failures:#?}");
}

fn try_start(records: &[String]) -> Result<Receiver, String> {
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
            return Ok(Receiver { child, addr, dir });
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
