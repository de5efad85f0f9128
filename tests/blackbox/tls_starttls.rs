//! STARTTLS as RFC 3207 says, seen from a raw client: plaintext pipelined behind STARTTLS is
//! dropped, never executed inside TLS (CVE-2011-0411); the session starts over after the
//! handshake; submission refuses mail until STARTTLS; the metrics count handshakes.

use std::time::Duration;

use crate::harness::{wait_for_maildir, ListenerTls, Opts, Server, TlsOpts, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, assert_one_delivered, new_dir, read, sample_message};
use crate::session::{dot_stuff, ReadError, SmtpConn};
use crate::tls::{cert_dir, tls_opts, TestCert, TlsConn};

/// How long a test waits to be sure the server sends nothing: the injected commands, had they
/// been executed, would be answered at once.
const QUIET: Duration = Duration::from_millis(500);

/// Sends `EHLO x`, `STARTTLS` and `injected` in one write, then does the TLS handshake.
/// Returns the connection in TLS, before any command inside TLS.
fn starttls_with_injection(addr: std::net::SocketAddr, injected: &str) -> TlsConn {
    let mut c = TlsConn::connect_plain(addr);
    let greeting = c.reply();
    assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
    c.send(format!("EHLO x\r\nSTARTTLS\r\n{injected}").as_bytes());
    let ehlo = c.reply();
    assert_eq!(ehlo.code, 250, "EHLO: {ehlo:?}");
    let r = c.reply();
    assert_eq!(r.code, 220, "STARTTLS: {r:?}");
    assert_eq!(r.enhanced(), Some("2.0.0"), "STARTTLS: {r:?}");
    // `handshake` fails the test if anything else came in plaintext after the 220.
    c.handshake(Some("mx.a.test"))
        .unwrap_or_else(|e| panic!("handshake after injected STARTTLS: {e}"));
    c
}

#[test]
fn starttls_pipelined_plaintext_rset_is_never_answered_inside_tls() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    let mut c = starttls_with_injection(server.listener(0), "RSET\r\n");
    // Inside TLS the server speaks only when spoken to.
    match c.try_reply(QUIET) {
        Err(ReadError::Timeout { partial }) if partial.is_empty() => {}
        other => panic!("server sent something inside TLS before any command: {other:?}"),
    }
    // The first reply inside TLS answers our EHLO, not the injected RSET.
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "EHLO inside TLS: {ehlo:?}");
    assert!(
        ehlo.lines[0].starts_with("mx.example.test"),
        "first reply inside TLS is not the EHLO reply (the injected RSET answered?): {ehlo:?}"
    );
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    match c.try_reply(QUIET) {
        Err(ReadError::Timeout { partial }) if partial.is_empty() => {}
        other => panic!("extra reply inside TLS: {other:?}"),
    }
}

#[test]
fn starttls_pipelined_plaintext_mail_is_not_executed_inside_tls() {
    // A plaintext MAIL FROM injected behind STARTTLS would, if executed, open a transaction
    // inside TLS under an attacker's sender. After the handshake there must be no transaction:
    // RCPT is out of order, and our own MAIL is accepted (not "nested MAIL").
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    let mut c = starttls_with_injection(
        server.listener(0),
        "MAIL FROM:<attacker@evil.test>\r\nRCPT TO:<victim@example.test>\r\n",
    );
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "EHLO inside TLS: {ehlo:?}");
    assert!(ehlo.lines[0].starts_with("mx.example.test"), "{ehlo:?}");
    let r = c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(r.code, 503, "RCPT with no MAIL inside TLS: {r:?}");
    let rcpt = "alice@example.test";
    let msg = sample_message("after-injection", "sender@remote.test", rcpt);
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&dot_stuff(&msg));
    c.send(b".\r\n");
    let end = c.reply();
    assert_eq!(end.code, 250, "end of data: {end:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    assert_one_delivered(&server.maildir, "sender@remote.test", rcpt, &msg);
    assert!(
        new_dir(&server.maildir, "victim@example.test")
            .read_dir()
            .is_err(),
        "the injected recipient got mail"
    );
}

#[test]
fn session_starts_over_after_starttls() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    let mut c = TlsConn::connect_plain(server.listener(0));
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.cmd("STARTTLS x");
    assert_eq!(r.status(), "501 5.5.4", "STARTTLS with a parameter: {r:?}");
    assert_eq!(c.cmd("STARTTLS").code, 220);
    c.handshake(Some("mx.a.test")).expect("handshake");
    // RFC 3207 §4.2: the client must EHLO again; the server forgets the first one.
    let r = c.cmd("MAIL FROM:<sender@remote.test>");
    assert_eq!(r.code, 503, "MAIL before EHLO inside TLS: {r:?}");
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS advertised inside TLS: {ehlo:?}"
    );
    let r = c.cmd("STARTTLS");
    assert_eq!(r.status(), "503 5.5.1", "second STARTTLS: {r:?}");
    // The session is still usable after the refused STARTTLS.
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
}

#[test]
fn submission_requires_starttls_then_lists_post_tls_extensions() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("submission", "starttls")], &a, &[]));
    let mut c = TlsConn::connect_plain(server.listener(0));
    assert_eq!(c.reply().code, 220);
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.has_keyword("STARTTLS"), "{ehlo:?}");
    for cmd in [
        "MAIL FROM:<alice@example.test>",
        "RCPT TO:<bob@remote.test>",
        "DATA",
        "VRFY alice",
    ] {
        let r = c.cmd(cmd);
        assert_eq!(r.status(), "530 5.7.0", "{cmd} before STARTTLS: {r:?}");
        assert!(
            r.lines
                .last()
                .is_some_and(|l| l.contains("Must issue a STARTTLS command first")),
            "{cmd} before STARTTLS: {r:?}"
        );
    }
    // Allowed before TLS.
    assert_eq!(c.cmd("NOOP").code, 250);
    assert_eq!(c.cmd("RSET").code, 250);
    assert_eq!(c.cmd("STARTTLS").code, 220);
    c.handshake(Some("mx.a.test")).expect("handshake");
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS advertised inside TLS: {ehlo:?}"
    );
    for ext in ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"] {
        assert!(
            ehlo.has_keyword(ext),
            "{ext} missing after STARTTLS: {ehlo:?}"
        );
    }
    assert_eq!(c.cmd("STARTTLS").status(), "503 5.5.1");
    // Still no mail without authentication, now for that reason.
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(
        r.status(),
        "530 5.7.0",
        "MAIL inside TLS on submission: {r:?}"
    );
    assert!(
        r.lines
            .last()
            .is_some_and(|l| l.contains("Authentication required")),
        "MAIL inside TLS on submission: {r:?}"
    );
}

#[test]
fn delivery_with_starttls_still_accepts_mail_in_the_clear() {
    // RFC 3207 §4: a publicly referenced MX must not require TLS; require_tls defaults to
    // false on delivery. The Received header must not claim TLS.
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    let (mut c, ehlo) = SmtpConn::connect_ehlo(server.listener(0));
    assert!(ehlo.has_keyword("STARTTLS"), "{ehlo:?}");
    let rcpt = "alice@example.test";
    let msg = sample_message("clear-on-starttls-mx", "sender@remote.test", rcpt);
    let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], "sender@remote.test", rcpt, &msg);
    let received = read(&files[0]).received;
    assert!(
        !received.contains("ESMTPS"),
        "plaintext session recorded as TLS: {received:?}"
    );
}

#[test]
fn delivery_with_require_tls_refuses_mail_before_starttls() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(Opts {
        listener_tls: vec![ListenerTls {
            mode: "starttls",
            require_tls: Some(true),
        }],
        tls: Some(TlsOpts {
            cert_key: Some((a.cert.clone(), a.key.clone())),
            ..TlsOpts::default()
        }),
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.listener(0));
    let r = c.cmd("MAIL FROM:<sender@remote.test>");
    assert_eq!(r.status(), "530 5.7.0", "MAIL before STARTTLS: {r:?}");
    let (mut t, _) = TlsConn::connect_starttls(server.listener(0), Some("mx.a.test"));
    assert_eq!(t.cmd("MAIL FROM:<sender@remote.test>").code, 250);
}

#[test]
fn implicit_tls_session_negotiates_tls13_and_counts_the_handshake() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "implicit")], &a, &[]));
    let series = "smtp_edge_tls_handshakes_total{version=\"TLSv1.3\"}";
    let before = server.metric(series);
    let mut c = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));
    assert_eq!(c.peer_cert(), a.der(), "certificate presented");
    let (version, _) = c.negotiated();
    assert_eq!(version, "TLSv1_3");
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250);
    assert!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS advertised on implicit TLS: {ehlo:?}"
    );
    assert_eq!(c.cmd("QUIT").code, 221);
    assert_eq!(
        server.metric(series),
        before + 1.0,
        "{series} after one handshake"
    );
}

#[test]
fn self_signed_certificate_is_generated_for_the_hostname() {
    // No cert/key: the server makes its own for `hostname` under self_signed_dir.
    let server = Server::start(Opts {
        listener_tls: vec![crate::tls::mode("implicit")],
        tls: Some(TlsOpts::default()),
        ..Opts::default()
    });
    let mut c = TlsConn::connect_implicit(server.listener(0), Some("mx.example.test"));
    assert_eq!(c.cmd("NOOP").code, 250);
    let der = rustls::pki_types::CertificateDer::from(c.peer_cert());
    let cert = webpki::EndEntityCert::try_from(&der).expect("parse the server's certificate");
    let name = rustls::pki_types::ServerName::try_from("mx.example.test").unwrap();
    cert.verify_is_valid_for_subject_name(&name)
        .expect("self-signed certificate not valid for the hostname");
    let dir = server.dir.path().join("tls");
    let files: Vec<_> = dir
        .read_dir()
        .unwrap_or_else(|e| panic!("self_signed_dir {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(!files.is_empty(), "nothing written to {}", dir.display());
}

/// `notBefore` and `notAfter` of a DER certificate, in seconds since the Unix epoch.
fn validity(der: &[u8]) -> (i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse the certificate");
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp())
}

#[test]
fn self_signed_certificate_lasts_90_days_and_is_renewed_at_start_near_its_end() {
    const DAY: i64 = 24 * 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A certificate left in self_signed_dir by an earlier run, with ten days to go.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 80 * DAY).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 10 * DAY).unwrap();
    let old = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), old.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();

    let server = Server::start(Opts {
        listener_tls: vec![crate::tls::mode("implicit")],
        tls: Some(TlsOpts {
            self_signed_dir: Some(dir.clone()),
            ..TlsOpts::default()
        }),
        ..Opts::default()
    });
    let mut c = TlsConn::connect_implicit(server.listener(0), Some("mx.example.test"));
    assert_eq!(c.cmd("NOOP").code, 250);
    let der = c.peer_cert();
    assert_ne!(
        der,
        old.der().to_vec(),
        "the expiring certificate is still served"
    );
    let (from, to) = validity(&der);
    assert_eq!(to - from, 90 * DAY, "lifespan of the served certificate");
    assert!(
        (now - 2 * 3600..=now + 60).contains(&from),
        "notBefore {from}, now {now}"
    );
    // The renewed one is what the next start finds.
    let kept: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_file(dir.join("cert.pem")).unwrap();
    assert_eq!(kept.to_vec(), der);
}
