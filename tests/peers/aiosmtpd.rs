//! Python's aiosmtpd (`tests/peers/aiosmtpd_server.py`): no PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, STARTTLS when given a certificate; refuses `nobody*` recipients with 550.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use smtp_edge::protocol::client::{ClientConfig, Dialect, SessionEnd, TlsPolicy};

use crate::dotted_content;
use crate::driver::{deliver, outgoing};
use crate::receivers::{test_cert, wait_files, Receiver};

/// Starts the receiver; with `tls`, it offers STARTTLS with a certificate made in its dir.
fn start(tls: bool) -> (Receiver, Option<std::sync::Arc<rustls::ClientConfig>>) {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/peers/aiosmtpd_server.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(dir.path());
    let mut client_tls = None;
    if tls {
        let (cert, key, config) = test_cert(dir.path());
        cmd.arg(cert).arg(key);
        client_tls = Some(config);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (`cargo xtask test` installs it)");
    // The script prints its port once it listens; EOF first means it failed to start.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| {
            panic!("aiosmtpd did not start (is it installed? `cargo xtask test` installs it): {line:?}")
        })
        .parse()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (Receiver { child, addr, dir }, client_tls)
}

fn cfg() -> ClientConfig {
    ClientConfig::new(Dialect::Smtp, "relay.example.test")
}

#[test]
fn one_recipient_refused_one_delivered_byte_exact() {
    let (rx, _) = start(false);
    let content = dotted_content();
    let eight_bit = "Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0} vu\r\n"
        .as_bytes()
        .to_vec();
    let messages = [
        outgoing(
            "sender@example.test",
            &["alice@remote.test", "nobody@remote.test"],
            &content,
        ),
        outgoing("", &["bob@remote.test"], &eight_bit),
    ];
    let s = deliver(rx.addr, cfg(), &messages, None);

    assert_eq!(s.end, SessionEnd::Quit, "{}", s.sent_text());
    let caps = s.capabilities.clone().unwrap();
    assert!(!caps.pipelining && caps.eight_bit_mime && caps.size.is_some());
    assert_eq!(s.codes(0)[0], "sent 250");
    assert!(
        s.codes(0)[1].starts_with("failed 550 5.1.1 No such user here"),
        "{:?}",
        s.codes(0)
    );
    assert_eq!(s.codes(1), ["sent 250"]);

    let env = wait_files(rx.dir.path(), 2, |p| {
        p.extension().is_some_and(|e| e == "env")
    });
    let first = std::fs::read_to_string(&env[0]).unwrap();
    let mut lines = first.lines();
    assert_eq!(lines.next().unwrap(), format!("SIZE={}", content.len()));
    assert_eq!(lines.next().unwrap(), "tls=no");
    assert_eq!(lines.collect::<Vec<_>>(), ["alice@remote.test"]);
    assert_eq!(
        std::fs::read(env[0].with_extension("eml")).unwrap(),
        content
    );
    // The 8-bit message went with BODY=8BITMIME, from the null sender.
    let second = std::fs::read_to_string(&env[1]).unwrap();
    assert_eq!(
        second.lines().next().unwrap(),
        format!("SIZE={} BODY=8BITMIME", eight_bit.len())
    );
    assert_eq!(
        std::fs::read(env[1].with_extension("eml")).unwrap(),
        eight_bit
    );
    assert!(s.sent_text().contains("MAIL FROM:<>"));
}

#[test]
fn starttls_then_delivery_inside_tls() {
    let (rx, tls) = start(true);
    let mut cfg = cfg();
    cfg.tls = TlsPolicy::Required;
    let content = b"Subject: over TLS\r\n\r\nsecret\r\n".to_vec();
    let s = deliver(
        rx.addr,
        cfg,
        &[outgoing("a@example.test", &["b@remote.test"], &content)],
        tls,
    );
    assert!(s.secure);
    assert_eq!(s.codes(0), ["sent 250"]);
    let env = wait_files(rx.dir.path(), 1, |p| {
        p.extension().is_some_and(|e| e == "env")
    });
    assert!(std::fs::read_to_string(&env[0])
        .unwrap()
        .contains("tls=yes"));
    assert_eq!(
        std::fs::read(env[0].with_extension("eml")).unwrap(),
        content
    );
    // EHLO twice: once in the clear, once inside TLS (RFC 3207 §4.2).
    assert_eq!(
        s.sent_text().matches("EHLO relay.example.test\r\n").count(),
        2
    );
}
