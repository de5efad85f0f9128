//! What a client sees first: the greeting and the EHLO extensions it relies on.

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir};
use crate::session::SmtpConn;

#[test]
fn greeting_and_ehlo_advertise_what_clients_rely_on() {
    let server = Server::start(Opts::default());
    let mut c = SmtpConn::connect_raw(server.delivery()).unwrap();
    let greeting = c.reply();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert!(
        greeting.lines[0].starts_with("mx.example.test"),
        "greeting does not start with the configured hostname: {greeting:?}"
    );
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines[0].starts_with("mx.example.test"), "{ehlo:?}");
    for ext in ["PIPELINING", "ENHANCEDSTATUSCODES", "SIZE", "8BITMIME"] {
        assert!(
            ehlo.has_keyword(ext),
            "EHLO does not advertise {ext}: {ehlo:?}"
        );
    }
    // HELO works too (RFC 5321 §4.1.1.1), and QUIT ends the session.
    let helo = c.cmd("HELO client.test");
    assert_eq!(helo.code, 250, "{helo:?}");
    let quit = c.cmd("QUIT");
    assert_eq!(quit.code, 221, "{quit:?}");
    c.expect_closed(REPLY_DEADLINE);
}

#[test]
fn embedded_default_serves_documented_ports_and_delivers_to_localhost() {
    // The only test that binds fixed ports: those of the embedded default.
    for port in [2525, 2587, 9125] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            let why = format!("127.0.0.1:{port} is taken ({e}); cannot check the embedded default");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("skipping: {why}");
            return;
        }
    }
    let server = Server::start_embedded();
    assert_eq!(server.delivery().to_string(), "127.0.0.1:2525");
    assert_eq!(server.submission().to_string(), "127.0.0.1:2587");
    assert_eq!(
        server.metrics_addr.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9125")
    );
    let rcpt = "user@localhost";
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let msg = b"Subject: default\r\n\r\nhello localhost\r\n";
    let r = c.send_mail("sender@remote.test", &[rcpt], msg);
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], "sender@remote.test", rcpt, msg);
}
