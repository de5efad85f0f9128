//! dnsmasq (Debian `dnsmasq-base`) as the DNS server of a test: authoritative for the records
//! the test gives it, nothing upstream, on a loopback port.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};

use crate::receivers::{wait_listening, Receiver};

/// Starts dnsmasq on 127.0.0.1 with `records` (dnsmasq options such as
/// `--mx-host=a.test,mx.a.test,10`); its address goes in `dns.nameservers`.
pub fn start(records: &[String]) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    // A port free for UDP now; dnsmasq binds UDP and TCP on it a moment later.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    wait_listening(addr, &mut child, "dnsmasq", &log);
    Receiver { child, addr, dir }
}
