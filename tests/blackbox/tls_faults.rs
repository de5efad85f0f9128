//! Broken handshakes end that connection and nothing else: garbage instead of a ClientHello, a
//! client that says nothing (cut at `handshake_timeout_secs`), a client that goes away halfway.
//! Each is counted in `smtp_edge_tls_handshake_failures_total`, and a good client connecting
//! after (or during) them is served as usual.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{wait_until, Opts, Server, REPLY_DEADLINE};
use crate::tls::{cert_dir, read_until_closed, tls_opts, TestCert, TlsConn};

const FAILURES: &str = "smtp_edge_tls_handshake_failures_total";
/// `handshake_timeout_secs` in these tests.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long past the handshake timeout the server may take to close.
const CLOSE_SLACK: Duration = Duration::from_secs(4);

/// The start of a TLS 1.2-compatible ClientHello record: the record header announces 200 bytes
/// and the handshake header a ClientHello, then the client version; the rest never comes.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
];

fn server_with_timeout(certs: &tempfile::TempDir) -> Server {
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let mut opts = tls_opts(
        &[("delivery", "implicit"), ("delivery", "starttls")],
        &a,
        &[],
    );
    if let Some(tls) = opts.tls.as_mut() {
        tls.handshake_timeout_secs = Some(HANDSHAKE_TIMEOUT.as_secs());
    }
    Server::start(opts)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, REPLY_DEADLINE)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_write_timeout(Some(REPLY_DEADLINE)).unwrap();
    s
}

/// A good client on both listeners, start to finish.
fn assert_serves_good_clients(server: &Server) {
    let mut c = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);
    let (mut c, _) = TlsConn::connect_starttls(server.listener(1), Some("mx.a.test"));
    assert_eq!(c.cmd("NOOP").code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);
}

/// On a fresh server, `bad` makes one handshake fail; it must be counted, and good clients must
/// still be served.
fn one_failure_then_good_clients(bad: impl FnOnce(&Server)) {
    let certs = cert_dir();
    let server = server_with_timeout(&certs);
    let before = server.metric(FAILURES);
    bad(&server);
    wait_failures(&server, before + 1.0);
    assert_serves_good_clients(&server);
}

/// Connects to a STARTTLS listener and gets as far as `220` to STARTTLS, without a handshake.
fn up_to_starttls(addr: SocketAddr) -> TlsConn {
    let mut c = TlsConn::connect_plain(addr);
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("STARTTLS").code, 220);
    c
}

/// Waits for the failure counter to reach `want`.
fn wait_failures(server: &Server, want: f64) {
    wait_until(REPLY_DEADLINE, || {
        (server.metric(FAILURES) >= want).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{FAILURES} is {} after {REPLY_DEADLINE:?}, want at least {want}",
            server.metric(FAILURES)
        )
    });
}

#[test]
fn garbage_instead_of_client_hello_closes_that_connection_only() {
    one_failure_then_good_clients(|server| {
        let mut s = connect(server.listener(0));
        // A client that speaks plaintext SMTP to the implicit-TLS port.
        s.write_all(b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\n")
            .unwrap();
        let got = read_until_closed(&mut s, REPLY_DEADLINE)
            .expect("the server kept a connection that sent garbage for a ClientHello");
        // At most a TLS alert record (content type 21); never an SMTP reply in the clear.
        assert!(
            got.is_empty() || got[0] == 0x15,
            "server answered garbage with {:?}",
            String::from_utf8_lossy(&got)
        );
    });
}

#[test]
fn garbage_after_starttls_closes_that_connection_only() {
    one_failure_then_good_clients(|server| {
        let mut c = up_to_starttls(server.listener(1));
        c.send(b"this is not a ClientHello\r\n");
        c.shutdown_write();
        // The server may send an alert (not an SMTP reply) and must close.
        match c.try_reply(REPLY_DEADLINE) {
            Err(crate::session::ReadError::Closed { .. }) => {}
            Err(crate::session::ReadError::Malformed(bytes)) => {
                assert_eq!(bytes.first(), Some(&0x15), "not a TLS alert: {bytes:?}")
            }
            other => panic!("after garbage for a ClientHello: {other:?}"),
        }
    });
}

fn assert_closed_at_handshake_timeout(s: &mut TcpStream, what: &str) {
    let start = Instant::now();
    let got = read_until_closed(s, HANDSHAKE_TIMEOUT + CLOSE_SLACK).unwrap_or_else(|| {
        panic!(
            "{what}: connection still open {:?} after connect (handshake_timeout_secs = {})",
            HANDSHAKE_TIMEOUT + CLOSE_SLACK,
            HANDSHAKE_TIMEOUT.as_secs()
        )
    });
    let waited = start.elapsed();
    assert!(
        got.is_empty() || got[0] == 0x15,
        "{what}: server sent {:?}",
        String::from_utf8_lossy(&got)
    );
    // Closed by the handshake timer, not at once for some other reason. (Connect happened
    // before `start`, so the timer had at least `waited` to run; allow scheduling jitter.)
    assert!(
        waited + Duration::from_millis(200) >= HANDSHAKE_TIMEOUT,
        "{what}: closed after {waited:?}, before the {HANDSHAKE_TIMEOUT:?} handshake timeout"
    );
}

#[test]
fn silent_client_on_implicit_port_is_cut_at_handshake_timeout() {
    one_failure_then_good_clients(|server| {
        let mut s = connect(server.listener(0));
        assert_closed_at_handshake_timeout(&mut s, "silent client");
    });
}

#[test]
fn half_sent_client_hello_is_cut_at_handshake_timeout() {
    one_failure_then_good_clients(|server| {
        let mut s = connect(server.listener(0));
        s.write_all(PARTIAL_CLIENT_HELLO).unwrap();
        assert_closed_at_handshake_timeout(&mut s, "half a ClientHello");
    });
}

#[test]
fn silent_client_after_starttls_is_cut_at_handshake_timeout() {
    one_failure_then_good_clients(|server| {
        let mut c = up_to_starttls(server.listener(1));
        let start = Instant::now();
        c.expect_closed(HANDSHAKE_TIMEOUT + CLOSE_SLACK);
        let waited = start.elapsed();
        assert!(
            waited + Duration::from_millis(200) >= HANDSHAKE_TIMEOUT,
            "closed after {waited:?}, before the handshake timeout"
        );
    });
}

/// Three clients that send half a ClientHello and close.
fn close_mid_handshake(server: &Server) {
    for _ in 0..3 {
        let mut s = connect(server.listener(0));
        s.write_all(PARTIAL_CLIENT_HELLO).unwrap();
        drop(s);
    }
}

#[test]
fn client_closing_mid_handshake_does_not_disturb_the_server() {
    let certs = cert_dir();
    let server = server_with_timeout(&certs);
    close_mid_handshake(&server);
    assert_serves_good_clients(&server);
}

#[test]
fn client_closing_mid_handshake_counts_as_a_handshake_failure() {
    // The metric's own help text: "TLS handshakes that failed: bad input, timeout, or the peer
    // went away."
    let certs = cert_dir();
    let server = server_with_timeout(&certs);
    let before = server.metric(FAILURES);
    close_mid_handshake(&server);
    wait_failures(&server, before + 3.0);
}

#[test]
fn stalled_handshakes_do_not_block_other_clients() {
    // Twenty clients hold implicit-TLS handshakes open (half silent, half with half a
    // ClientHello) on a one-worker server; others must still be served at once, well before the
    // stalled ones time out (the default 10 s timeout here, so they are all still open).
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(Opts {
        workers: 1,
        ..tls_opts(
            &[("delivery", "implicit"), ("delivery", "starttls")],
            &a,
            &[],
        )
    });
    let stalled: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = connect(server.listener(0));
            if i % 2 == 0 {
                s.write_all(PARTIAL_CLIENT_HELLO).unwrap();
            }
            s
        })
        .collect();
    let start = Instant::now();
    assert_serves_good_clients(&server);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "good clients took {:?} while handshakes were stalled",
        start.elapsed()
    );
    drop(stalled);
}
