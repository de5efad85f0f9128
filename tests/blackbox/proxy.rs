//! The PROXY protocol behind a real HAProxy: the client address the header names is the one the
//! server judges, records and bans; the balancer itself is never banned; nobody else may send a
//! header.
//!
//! HAProxy (`send-proxy` for version 1, `send-proxy-v2` for version 2) listens on sockets this
//! test binds on loopback and hands to it as inherited descriptors, so there is no port to race
//! for and no wait for it to start: the kernel queues connections until it accepts them.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::harness::{
    run_client, wait_for_maildir, wait_until, Opts, Server, BIN, DELIVERY_DEADLINE, LOCAL_DOMAIN,
    READY_DEADLINE, REPLY_DEADLINE,
};
use crate::session::SmtpConn;

/// The balancer's address: HAProxy connects to the server from here.
const BALANCER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A client host behind the balancer (any loopback address is a distinct host).
fn client(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A server whose listener takes PROXY headers from 127.0.0.1 only, with no source trusted by
/// the guard, so that clients behind the balancer are judged like anyone on the Internet.
fn server() -> Server {
    Server::start(Opts {
        workers: 1,
        trusted: Some(vec![]),
        proxy_trusted: Some(vec!["127.0.0.1/32"]),
        proxy_header_timeout_secs: Some(2),
        max_bad_commands: 2,
        ban_secs: Some(600),
        ..Opts::default()
    })
}

/// HAProxy in front of the server: `v1` relays with `send-proxy`, `v2` with `send-proxy-v2`.
/// Killed on drop.
struct Haproxy {
    child: Child,
    v1: SocketAddr,
    v2: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backend: SocketAddr) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("smtp-edge-haproxy-")
            .tempdir()
            .expect("tempdir");
        let v1 = TcpListener::bind("127.0.0.1:0").expect("bind v1");
        let v2 = TcpListener::bind("127.0.0.1:0").expect("bind v2");
        let config = format!(
            "global\n    maxconn 200\n\
             defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 60s\n    timeout server 60s\n\
             frontend v1\n    bind fd@3\n    default_backend edge_v1\n\
             frontend v2\n    bind fd@4\n    default_backend edge_v2\n\
             backend edge_v1\n    server edge {backend} send-proxy\n\
             backend edge_v2\n    server edge {backend} send-proxy-v2\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let fds = [v1.as_raw_fd(), v2.as_raw_fd()];
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) are made.
        unsafe {
            cmd.pre_exec(move || {
                // Copies above any descriptor in use first, so that placing one at 3 or 4
                // cannot overwrite the other; dup2 leaves the copies open across exec.
                let mut high = [0; 2];
                for (h, fd) in high.iter_mut().zip(fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD, 100);
                    if *h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (target, h) in [3, 4].into_iter().zip(high) {
                    if libc::dup2(h, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start haproxy (Debian package haproxy)");
        Haproxy {
            child,
            v1: v1.local_addr().unwrap(),
            v2: v2.local_addr().unwrap(),
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one message from `source` through `front` and returns the delivered file's text.
fn deliver_through(server: &Server, front: SocketAddr, source: IpAddr, count: usize) -> String {
    let mut c = SmtpConn::connect_from(source, front).expect("connect through haproxy");
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let rcpt = format!("user@{LOCAL_DOMAIN}");
    let r = c.send_mail(
        "sender@client.test",
        &[&rcpt],
        b"Subject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
    let files = wait_for_maildir(&server.maildir, count, DELIVERY_DEADLINE);
    let newest = files
        .iter()
        .max_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .expect("a delivered message");
    std::fs::read_to_string(newest).expect("read message")
}

/// Waits for a line of the server's log holding every one of `parts`.
fn wait_for_log(server: &Server, parts: &[&str]) -> String {
    wait_until(READY_DEADLINE, || {
        server
            .stderr_all()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no log line with {parts:?}\n{}", server.stderr_tail()))
}

/// Reads until the server closes; returns what it sent (nothing, for a refused balancer).
fn read_to_close(mut stream: TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("no close after {:?}: {e}", start.elapsed()),
        }
    }
}

fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .unwrap();
    socket
        .connect_timeout(&SockAddr::from(addr), REPLY_DEADLINE)
        .unwrap();
    socket.into()
}

#[test]
fn haproxy_v1_and_v2_headers_name_the_real_client_in_received_and_the_log() {
    let server = server();
    let haproxy = Haproxy::start(server.delivery());

    let text = deliver_through(&server, haproxy.v1, client(23), 1);
    assert!(
        text.contains("from client.test ([127.0.0.23])"),
        "Received: should name the client behind the balancer:\n{text}"
    );
    let line = wait_for_log(&server, &["session", "peer=127.0.0.23:", "via=127.0.0.1:"]);
    assert!(line.contains("outcome=\"quit\""), "{line}");

    let text = deliver_through(&server, haproxy.v2, client(24), 2);
    assert!(
        text.contains("from client.test ([127.0.0.24])"),
        "Received: should name the client behind the balancer:\n{text}"
    );
    wait_for_log(&server, &["session", "peer=127.0.0.24:", "via=127.0.0.1:"]);
}

#[test]
fn a_client_banned_behind_the_balancer_is_refused_and_the_balancer_is_not_banned() {
    let server = server();
    let haproxy = Haproxy::start(server.delivery());
    for front in [haproxy.v1, haproxy.v2] {
        let bad = client(if front == haproxy.v1 { 31 } else { 32 });
        let mut c = SmtpConn::connect_from(bad, front).expect("connect");
        assert_eq!(c.reply().code, 220);
        assert_eq!(c.cmd("FOO").code, 500);
        assert_eq!(c.cmd("BAR").code, 421);
        c.expect_closed(REPLY_DEADLINE);
        // Its next connection through the balancer: refused after the header, in userspace
        // (the shield sees only the balancer's address).
        let mut again = SmtpConn::connect_from(bad, front).expect("connect");
        assert_eq!(again.reply().status(), "421 4.7.0");
        // Another client behind the same balancer is served.
        let mut good = SmtpConn::connect_from(client(40), front).expect("connect");
        assert_eq!(good.reply().code, 220);
    }
    let config = server.config.as_ref().unwrap().display().to_string();
    let list = run_client(
        BIN,
        &["ban", "list", "--config", &config],
        b"",
        READY_DEADLINE,
    );
    assert!(list.status.success());
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    let sources: Vec<&str> = listed.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(sources.len(), 2, "{listed}");
    assert!(sources.contains(&"127.0.0.31/32"), "{listed}");
    assert!(sources.contains(&"127.0.0.32/32"), "{listed}");
    // The operator cannot ban the balancer either.
    let add = run_client(
        BIN,
        &["ban", "add", "127.0.0.1", "--config", &config],
        b"",
        READY_DEADLINE,
    );
    assert!(!add.status.success());
    assert!(
        String::from_utf8_lossy(&add.stderr).contains("proxy.trusted"),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
}

#[test]
fn a_proxy_header_from_an_untrusted_source_is_closed_before_any_byte() {
    let server = server();
    let mut s = connect_from(client(66), server.delivery());
    std::io::Write::write_all(
        &mut s,
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\nEHLO x\r\n",
    )
    .unwrap();
    assert_eq!(
        read_to_close(s),
        b"",
        "no greeting for an untrusted balancer"
    );
    wait_for_log(&server, &["peer=127.0.0.66:", "not in proxy.trusted"]);
}

#[test]
fn a_trusted_balancer_without_a_valid_header_in_time_is_closed_unanswered() {
    let server = server();
    // SMTP where the header should be.
    let mut s = connect_from(BALANCER, server.delivery());
    std::io::Write::write_all(&mut s, b"EHLO x\r\n").unwrap();
    assert_eq!(read_to_close(s), b"");
    wait_for_log(
        &server,
        &["PROXY header refused", "not a PROXY protocol header"],
    );
    // Nothing at all: closed at the two-second header deadline.
    let s = connect_from(BALANCER, server.delivery());
    assert_eq!(read_to_close(s), b"");
    wait_for_log(&server, &["PROXY header not received in time"]);
}

#[test]
fn a_v2_local_header_keeps_the_balancers_address_and_smtp_after_it_is_served() {
    let server = server();
    let mut s = connect_from(BALANCER, server.delivery());
    // LOCAL (a health check) and, in the same write, the first command.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    header.extend_from_slice(b"QUIT\r\n");
    std::io::Write::write_all(&mut s, &header).unwrap();
    let got = String::from_utf8(read_to_close(s)).unwrap();
    assert!(got.starts_with("220 "), "{got}");
    assert!(got.contains("\r\n221 "), "{got}");
    let line = wait_for_log(&server, &["session", "peer=127.0.0.1:", "outcome=\"quit\""]);
    assert!(!line.contains("via="), "{line}");
}
