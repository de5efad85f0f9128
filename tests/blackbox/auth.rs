//! SMTP AUTH on submission (RFC 4954, PLAIN per RFC 4616 and LOGIN) as a client sees it on the
//! wire, with [`TlsConn`]: where AUTH is offered, every reply of the exchange, who may use which
//! `MAIL FROM`, relaying, the brute-force ban and its expiry, trusted networks, the queue of remote
//! recipients and the `Received:` header. Real clients (smtplib, swaks, curl) are in `auth_clients.rs`.
//!
//! Users are created with the real `smtp-edge user add` (see [`AuthOpts`]); the tarpit is off
//! (`tarpit_max_ms = 0`) except in the test that measures it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{
    maildir_files, queued_messages, wait_for_maildir, wait_until, AuthOpts, ListenerTls, Opts,
    Server, DELIVERY_DEADLINE,
};
use crate::maildir::{
    assert_bytes_eq, assert_delivered, assert_one_delivered, new_dir, read, sample_message,
};
use crate::session::{ReadError, Reply, SmtpConn};
use crate::tls::{cert_dir, tls_opts, TestCert, TlsConn};

pub const ALICE: &str = "alice@example.test";
pub const ALICE_PW: &str = "hunter2-Tr0ub4dor&3";
pub const BOB: &str = "bob@example.test";
pub const BOB_PW: &str = "correct horse battery staple";
/// An alias of alice's (`aliases` file).
pub const ALICE_ALIAS: &str = "sales@example.test";
/// The server's name in the test certificate.
pub const MX: &str = "mx.a.test";

/// alice and bob, alice's alias, no tarpit, and a failure limit no test reaches by accident.
pub fn users() -> AuthOpts {
    AuthOpts {
        users: vec![
            (ALICE.to_owned(), ALICE_PW.to_owned()),
            (BOB.to_owned(), BOB_PW.to_owned()),
        ],
        aliases: vec![(ALICE_ALIAS.to_owned(), ALICE.to_owned())],
        max_failures: Some(50),
        tarpit_max_ms: Some(0),
        ..AuthOpts::default()
    }
}

/// A server with `listeners` as `(role, tls mode, require_tls)`, the certificate for [`MX`] and
/// `auth` as its `[auth]` section. Returns the certificate too (clients verify against it).
pub fn auth_server(
    listeners: &[(&'static str, &'static str, Option<bool>)],
    auth: AuthOpts,
) -> (Server, TestCert, tempfile::TempDir) {
    auth_server_with(listeners, auth, |_| {})
}

/// [`auth_server`], with `tweak` applied to the options last.
pub fn auth_server_with(
    listeners: &[(&'static str, &'static str, Option<bool>)],
    auth: AuthOpts,
    tweak: impl FnOnce(&mut Opts),
) -> (Server, TestCert, tempfile::TempDir) {
    let certs = cert_dir();
    let cert = TestCert::generate(certs.path(), "a", MX);
    let pairs: Vec<(&'static str, &'static str)> =
        listeners.iter().map(|&(role, m, _)| (role, m)).collect();
    let mut opts = tls_opts(&pairs, &cert, &[]);
    opts.listener_tls = listeners
        .iter()
        .map(|&(_, mode, require_tls)| ListenerTls { mode, require_tls })
        .collect();
    opts.auth = Some(auth);
    tweak(&mut opts);
    (Server::start(opts), cert, certs)
}

/// Standard base64 (RFC 4648 §4) with padding, as SASL wants it (RFC 4954 §4).
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The PLAIN initial response for `user`/`password` with an empty authorization identity.
pub fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// Asserts `reply` is `code` with the enhanced status `status` (e.g. `"5.7.8"`).
#[track_caller]
fn expect(reply: &Reply, code: u16, status: &str, what: &str) {
    assert_eq!(
        reply.status(),
        format!("{code} {status}"),
        "{what}: got {reply:?}"
    );
}

/// The `AUTH` EHLO keyword's mechanisms, upper-cased, or `None` if AUTH is not advertised.
fn auth_keyword(ehlo: &Reply) -> Option<Vec<String>> {
    ehlo.lines.iter().find_map(|l| {
        let mut words = l.split_whitespace();
        words
            .next()
            .filter(|w| w.eq_ignore_ascii_case("AUTH"))
            .map(|_| words.map(str::to_ascii_uppercase).collect())
    })
}

/// The queue id from `250 2.0.0 Ok: queued as <id>`.
fn queue_id(reply: &Reply) -> String {
    reply.queue_id()
}

/// A full transaction on a TLS connection: MAIL, each RCPT (all must get 250), DATA, the
/// message (dot-stuffed here), `.`. Returns the end-of-data reply.
pub(crate) fn send_mail(c: &mut TlsConn, from: &str, rcpts: &[&str], msg: &[u8]) -> Reply {
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert_eq!(r.code, 250, "MAIL FROM:<{from}>: {r:?}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(r.code, 250, "RCPT TO:<{rcpt}>: {r:?}");
    }
    let r = c.cmd("DATA");
    assert_eq!(r.code, 354, "DATA: {r:?}");
    c.send(&crate::session::dot_stuff(msg));
    c.send(b".\r\n");
    c.reply()
}

/// STARTTLS on a submission listener, then `AUTH PLAIN` as `user`; expects 235 2.7.0.
pub(crate) fn login_starttls(addr: SocketAddr, user: &str, password: &str) -> TlsConn {
    let (mut c, _) = TlsConn::connect_starttls(addr, Some(MX));
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(user, password)));
    expect(&r, 235, "2.7.0", &format!("AUTH PLAIN as {user}"));
    c
}

/// Ids of the messages queued in the spool (not yet delivered to every recipient), sorted.
fn queued_ids(server: &Server) -> Vec<String> {
    queued_messages(&server.dir.path().join("spool"))
        .into_keys()
        .collect()
}

/// A queue file read back: its header fields in order and the message after `end 0:`.
#[derive(Debug)]
struct QueueFile {
    fields: Vec<(String, String)>,
    message: Vec<u8>,
}

impl QueueFile {
    /// Parses the documented format: `SMTP-EDGE-QUEUE 1\n`, then `key N:value\n` fields up to
    /// `end 0:\n`, then exactly `size` message octets.
    fn parse(raw: &[u8], path: &str) -> QueueFile {
        let show = || String::from_utf8_lossy(&raw[..raw.len().min(800)]).into_owned();
        let mut rest = raw
            .strip_prefix(b"SMTP-EDGE-QUEUE 1\n".as_slice())
            .unwrap_or_else(|| panic!("{}: no queue magic: {:?}", path, show()));
        let mut fields = Vec::new();
        loop {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or_else(|| panic!("{}: bad header: {:?}", path, show()));
            let key = String::from_utf8_lossy(&rest[..sp]).into_owned();
            let colon = sp + rest[sp..].iter().position(|&b| b == b':').unwrap();
            let len: usize = std::str::from_utf8(&rest[sp + 1..colon])
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{}: field {key}: {e}: {:?}", path, show()));
            let value = &rest[colon + 1..colon + 1 + len];
            assert_eq!(rest[colon + 1 + len], b'\n', "{}: field {key}", path);
            fields.push((key.clone(), String::from_utf8_lossy(value).into_owned()));
            rest = &rest[colon + 2 + len..];
            if key == "end" {
                break;
            }
        }
        let q = QueueFile {
            fields,
            message: rest.to_vec(),
        };
        let size: usize = q.one("size").parse().expect("size digits");
        assert_eq!(q.message.len(), size, "{}: size field vs message", path);
        q
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> &str {
        match self.all(key).as_slice() {
            [v] => v,
            other => panic!("field {key}: {other:?} in {:?}", self.fields),
        }
    }
}

/// The `Received:` header at the top of `message` (with its folded lines), unfolded.
fn first_received(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    assert!(
        text.starts_with("Received: "),
        "message does not start with Received: {:?}",
        &text[..text.len().min(300)]
    );
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        out.push_str(line);
    }
    out
}

#[test]
fn auth_is_offered_only_on_submission_and_only_inside_tls() {
    let (server, _cert, _certs) = auth_server(
        &[
            ("submission", "starttls", Some(false)),
            ("submission", "implicit", None),
            ("delivery", "starttls", None),
            ("delivery", "none", None),
        ],
        users(),
    );
    // Submission with STARTTLS: not in the clear, PLAIN and LOGIN once encrypted.
    let mut c = TlsConn::connect_plain(server.listener(0));
    assert_eq!(c.reply().code, 220);
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(
        auth_keyword(&ehlo),
        None,
        "AUTH offered in plaintext: {ehlo:?}"
    );
    let (_c, ehlo) = TlsConn::connect_starttls(server.listener(0), Some(MX));
    assert_eq!(
        auth_keyword(&ehlo),
        Some(vec!["PLAIN".to_owned(), "LOGIN".to_owned()]),
        "EHLO after STARTTLS: {ehlo:?}"
    );
    // Implicit TLS submission.
    let mut c = TlsConn::connect_implicit(server.listener(1), Some(MX));
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(
        auth_keyword(&ehlo),
        Some(vec!["PLAIN".to_owned(), "LOGIN".to_owned()]),
        "EHLO on implicit TLS: {ehlo:?}"
    );
    // Delivery never offers or accepts AUTH, encrypted or not.
    let (mut c, ehlo) = TlsConn::connect_starttls(server.listener(2), Some(MX));
    assert_eq!(auth_keyword(&ehlo), None, "delivery in TLS: {ehlo:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 502, "5.5.1", "AUTH on delivery inside TLS");
    let (mut c, ehlo) = SmtpConn::connect_ehlo(server.listener(3));
    assert_eq!(auth_keyword(&ehlo), None, "delivery in plaintext: {ehlo:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 502, "5.5.1", "AUTH on plaintext delivery");
}

#[test]
fn auth_in_plaintext_is_refused_before_the_password_is_looked_at() {
    let (server, _cert, _certs) = auth_server(
        &[
            ("submission", "starttls", Some(false)),
            ("submission", "starttls", None),
        ],
        users(),
    );
    // require_tls = false: the session may go on in plaintext, but AUTH may not (RFC 4954 §4).
    let mut c = TlsConn::connect_plain(server.listener(0));
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 538, "5.7.11", "AUTH PLAIN in plaintext");
    let r = c.cmd("AUTH LOGIN");
    expect(&r, 538, "5.7.11", "AUTH LOGIN in plaintext");
    // Not logged in by it: MAIL still needs authentication.
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>"));
    expect(&r, 530, "5.7.0", "MAIL after the refused AUTH");
    // The same session, once encrypted, logs in.
    assert_eq!(c.cmd("STARTTLS").code, 220);
    c.handshake(Some(MX)).expect("handshake");
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 235, "2.7.0", "AUTH PLAIN after STARTTLS");
    // The default listener (require_tls = true) refuses AUTH before STARTTLS as well; either
    // "encryption required" (538) or "STARTTLS first" (530), never a 334 challenge or a 235.
    let mut c = TlsConn::connect_plain(server.listener(1));
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    assert!(
        matches!(r.status().as_str(), "538 5.7.11" | "530 5.7.0"),
        "AUTH before STARTTLS on a require_tls listener: {r:?}"
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        1.0,
        "only the AUTH inside TLS reached the password check"
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        0.0
    );
}

#[test]
fn plain_and_login_exchanges_authenticate() {
    let (server, _cert, _certs) = auth_server(&[("submission", "implicit", None)], users());
    let addr = server.listener(0);
    let ehlo = |c: &mut TlsConn| assert_eq!(c.cmd("EHLO client.test").code, 250);

    // PLAIN with an initial response.
    let mut c = TlsConn::connect_implicit(addr, Some(MX));
    ehlo(&mut c);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 235, "2.7.0", "AUTH PLAIN <ir>");
    // Once is enough: a second AUTH is out of sequence.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(BOB, BOB_PW)));
    expect(&r, 503, "5.5.1", "second AUTH after success");
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>"));
    assert_eq!(
        r.code, 250,
        "still alice after the refused second AUTH: {r:?}"
    );

    // PLAIN without one: an empty 334 challenge, then the response.
    let mut c = TlsConn::connect_implicit(addr, Some(MX));
    ehlo(&mut c);
    let r = c.cmd("AUTH PLAIN");
    assert_eq!(r.code, 334, "AUTH PLAIN without initial response: {r:?}");
    let r = c.cmd(&plain(BOB, BOB_PW));
    expect(&r, 235, "2.7.0", "AUTH PLAIN response");
    let r = c.cmd(&format!("MAIL FROM:<{BOB}>"));
    assert_eq!(r.code, 250, "bob's own address: {r:?}");

    // LOGIN: "Username:" and "Password:" challenges (base64), as RFC 4954 clients expect.
    let mut c = TlsConn::connect_implicit(addr, Some(MX));
    ehlo(&mut c);
    let r = c.cmd("AUTH LOGIN");
    assert_eq!(
        (r.code, r.lines.join("")),
        (334, b64(b"Username:")),
        "AUTH LOGIN: {r:?}"
    );
    let r = c.cmd(&b64(ALICE.as_bytes()));
    assert_eq!(
        (r.code, r.lines.join("")),
        (334, b64(b"Password:")),
        "LOGIN user: {r:?}"
    );
    let r = c.cmd(&b64(ALICE_PW.as_bytes()));
    expect(&r, 235, "2.7.0", "AUTH LOGIN");

    // LOGIN with the username as initial response (RFC 4954 §4 allows one for any mechanism).
    let mut c = TlsConn::connect_implicit(addr, Some(MX));
    ehlo(&mut c);
    let r = c.cmd(&format!("AUTH LOGIN {}", b64(BOB.as_bytes())));
    assert_eq!(r.code, 334, "AUTH LOGIN <user>: {r:?}");
    let r = c.cmd(&b64(BOB_PW.as_bytes()));
    expect(&r, 235, "2.7.0", "AUTH LOGIN with initial response");

    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        4.0
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        0.0
    );
}

#[test]
fn cancelled_malformed_and_unknown_auth_get_their_replies() {
    let (server, _cert, _certs) = auth_server(&[("submission", "implicit", None)], users());
    let mut c = TlsConn::connect_implicit(server.listener(0), Some(MX));
    assert_eq!(c.cmd("EHLO client.test").code, 250);

    assert_eq!(c.cmd("AUTH PLAIN").code, 334);
    expect(&c.cmd("*"), 501, "5.7.0", "PLAIN cancelled with *");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&b64(ALICE.as_bytes())).code, 334);
    expect(&c.cmd("*"), 501, "5.7.0", "LOGIN cancelled at the password");
    expect(
        &c.cmd("AUTH PLAIN !!!not-base64!!!"),
        501,
        "5.5.2",
        "PLAIN with bad base64",
    );
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    expect(&c.cmd("%%%"), 501, "5.5.2", "LOGIN with bad base64");
    expect(&c.cmd("AUTH CRAM-MD5"), 504, "5.5.4", "unknown mechanism");
    expect(
        &c.cmd("AUTH XOAUTH2 abc"),
        504,
        "5.5.4",
        "unknown mechanism",
    );
    // None of that was a login, and none of it used up the session: a good AUTH works.
    expect(
        &c.cmd(&format!("MAIL FROM:<{ALICE}>")),
        530,
        "5.7.0",
        "MAIL after the failed exchanges",
    );
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 235, "2.7.0", "AUTH after the failed exchanges");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).code, 250);
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        0.0,
        "cancelled and malformed exchanges never reached the password check"
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_535() {
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], users());
    let (mut c, _) = TlsConn::connect_starttls(server.listener(0), Some(MX));
    let wrong = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, "hunter3")));
    expect(&wrong, 535, "5.7.8", "wrong password");
    let unknown = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("mallory@example.test", "hunter3")
    ));
    assert_eq!(
        unknown, wrong,
        "an unknown user must look exactly like a wrong password"
    );
    // LOGIN fails the same way.
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&b64(b"mallory@example.test")).code, 334);
    assert_eq!(c.cmd(&b64(b"hunter3")), wrong, "LOGIN, unknown user");
    // Three failures end the session: guessing goes on only at the price of new connections.
    c.expect_closed(Duration::from_secs(5));
    let (mut c, _) = TlsConn::connect_starttls(server.listener(0), Some(MX));
    // An authorization identity other than the login is acting as someone else: refused, even
    // with bob's right password.
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("{ALICE}\0{BOB}\0{BOB_PW}").as_bytes())
    ));
    expect(&r, 535, "5.7.8", "PLAIN with authzid alice, authcid bob");
    // Nothing was granted.
    expect(
        &c.cmd(&format!("MAIL FROM:<{ALICE}>")),
        530,
        "5.7.0",
        "MAIL after failed logins",
    );
    // The password is case-sensitive, the login is an address (its case does not matter).
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain(ALICE, &ALICE_PW.to_uppercase())
    ));
    expect(&r, 535, "5.7.8", "password in the wrong case");
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("Alice@Example.TEST", ALICE_PW)
    ));
    expect(&r, 235, "2.7.0", "login in another case");

    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        5.0
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        1.0
    );
    let log = server.stderr_all();
    for secret in [ALICE_PW, "hunter3", BOB_PW] {
        assert!(!log.contains(secret), "the log holds a password: {log}");
    }
}

#[test]
fn failed_auth_is_answered_after_the_tarpit_delay() {
    const TARPIT_MS: u64 = 400;
    let (server, _cert, _certs) = auth_server(
        &[("submission", "implicit", None)],
        AuthOpts {
            tarpit_max_ms: Some(TARPIT_MS),
            ..users()
        },
    );
    let mut c = TlsConn::connect_implicit(server.listener(0), Some(MX));
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let start = Instant::now();
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, "wrong")));
    let took = start.elapsed();
    expect(&r, 535, "5.7.8", "wrong password");
    // The first delay is min(1 s, tarpit_max_ms): the reply cannot come sooner.
    assert!(
        took >= Duration::from_millis(TARPIT_MS),
        "535 after {took:?}, before the {TARPIT_MS} ms tarpit"
    );
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    expect(&r, 235, "2.7.0", "right password after the tarpit");
}

#[test]
fn submission_mail_requires_auth_and_relays_nothing_without_it() {
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], users());
    let addr = server.listener(0);
    // In the clear, require_tls refuses everything first.
    let (mut c, _) = SmtpConn::connect_ehlo(addr);
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>"));
    assert_eq!(
        r.code, 530,
        "MAIL in plaintext on require_tls submission: {r:?}"
    );
    // Encrypted but not logged in: 530 5.7.0 Authentication required, for local and remote
    // recipients alike, and no recipient can be given without MAIL.
    let (mut c, _) = TlsConn::connect_starttls(addr, Some(MX));
    for from in [ALICE, "someone@remote.test"] {
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        expect(
            &r,
            530,
            "5.7.0",
            &format!("MAIL FROM:<{from}> without AUTH"),
        );
        assert!(
            r.lines.join(" ").contains("Authentication required"),
            "{r:?}"
        );
    }
    let r = c.cmd("RCPT TO:<victim@remote.test>");
    expect(&r, 503, "5.5.1", "RCPT to a remote domain without MAIL");
    let r = c.cmd("DATA");
    assert!(r.code == 503 || r.code == 554, "DATA without MAIL: {r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(maildir_files(&server.maildir).is_empty());
    assert!(queued_ids(&server).is_empty(), "{:?}", queued_ids(&server));
}

#[test]
fn mail_from_must_be_the_login_or_one_of_its_aliases() {
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], users());
    let mut c = login_starttls(server.listener(0), ALICE, ALICE_PW);
    for (from, what) in [
        (BOB, "another user's address"),
        (
            "alice@remote.test",
            "the login's local part at another domain",
        ),
        ("ceo@example.test", "an address nobody owns"),
    ] {
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        expect(&r, 553, "5.7.1", what);
    }
    let r = c.cmd("MAIL FROM:<>");
    expect(&r, 553, "5.7.1", "null sender on submission");

    // The alias is alice's: accepted and delivered with it as the envelope sender.
    let msg = sample_message("auth-alias", ALICE_ALIAS, BOB);
    let r = send_mail(&mut c, ALICE_ALIAS, &[BOB], &msg);
    assert_eq!(r.code, 250, "message from alice's alias: {r:?}");
    // Her own address, in another transaction of the same session.
    let msg2 = sample_message("auth-own", ALICE, BOB);
    let r = send_mail(&mut c, ALICE, &[BOB], &msg2);
    assert_eq!(r.code, 250, "message from alice's own address: {r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, BOB), 2, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 2, "{files:?}");
    let mut by_token: Vec<_> = files.iter().map(|f| (read(f).return_path, f)).collect();
    by_token.sort();
    // `<alice@…>` sorts before `<sales@…>`.
    assert_delivered(by_token[0].1, ALICE, BOB, &msg2);
    assert_delivered(by_token[1].1, ALICE_ALIAS, BOB, &msg);

    // bob may not use alice's alias.
    let mut c = login_starttls(server.listener(0), BOB, BOB_PW);
    let r = c.cmd(&format!("MAIL FROM:<{ALICE_ALIAS}>"));
    expect(&r, 553, "5.7.1", "bob using alice's alias");
}

#[test]
fn delivery_port_never_relays_with_or_without_auth_attempts() {
    let (server, _cert, _certs) = auth_server(
        &[
            ("delivery", "none", None),
            ("delivery", "starttls", None),
            ("submission", "starttls", None),
        ],
        users(),
    );
    // Plaintext port 25: remote recipients 550 5.7.1 before and after an AUTH attempt.
    let (mut c, _) = SmtpConn::connect_ehlo(server.listener(0));
    assert_eq!(c.cmd("MAIL FROM:<someone@remote.test>").code, 250);
    expect(
        &c.cmd("RCPT TO:<victim@remote.test>"),
        550,
        "5.7.1",
        "relay on delivery",
    );
    expect(
        &c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW))),
        502,
        "5.5.1",
        "AUTH on delivery",
    );
    expect(
        &c.cmd("RCPT TO:<victim@remote.test>"),
        550,
        "5.7.1",
        "relay on delivery after AUTH",
    );
    // Local recipients are still fine.
    assert_eq!(c.cmd(&format!("RCPT TO:<{BOB}>")).code, 250);

    // Port 25 with STARTTLS: the same, also with a MAIL FROM naming a real user.
    let (mut c, _) = TlsConn::connect_starttls(server.listener(1), Some(MX));
    expect(
        &c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW))),
        502,
        "5.5.1",
        "AUTH on delivery in TLS",
    );
    assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).code, 250);
    for victim in ["victim@remote.test", "victim@[192.0.2.1]"] {
        expect(
            &c.cmd(&format!("RCPT TO:<{victim}>")),
            550,
            "5.7.1",
            &format!("relay to {victim} on delivery in TLS"),
        );
    }
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(queued_ids(&server).is_empty(), "{:?}", queued_ids(&server));
    assert!(maildir_files(&server.maildir).is_empty());
}

#[test]
fn remote_recipients_stay_queued_and_local_ones_go_to_maildir() {
    // Remote mail goes to a smarthost that refuses connections (a port just closed): the
    // remote recipients are deferred, whatever DNS this machine has.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, _cert, _certs) =
        auth_server_with(&[("submission", "starttls", None)], users(), |o| {
            o.relay = vec![format!("remote = \"smtp://127.0.0.1:{closed}\"")];
        });
    let mut c = login_starttls(server.listener(0), ALICE, ALICE_PW);
    let msg = sample_message("auth-remote", ALICE, "carol@remote.test");
    let rcpts = ["carol@remote.test", BOB, "dave@far.test", "eve@[192.0.2.7]"];
    let qid = queue_id(&send_mail(&mut c, ALICE, &rcpts, &msg));
    assert_eq!(c.cmd("QUIT").code, 221);

    // bob's copy in Maildir, traced as authenticated, without naming the login.
    let received = assert_one_delivered(&server.maildir, ALICE, BOB, &msg);
    assert!(
        received.contains("with ESMTPSA"),
        "Received does not say ESMTPSA: {received:?}"
    );
    assert!(
        !received.to_ascii_lowercase().contains("alice"),
        "Received names the login (trace_login is off): {received:?}"
    );
    assert_eq!(
        maildir_files(&server.maildir).len(),
        1,
        "only bob is local: {:?}",
        maildir_files(&server.maildir)
    );

    // One log line per recipient of the attempt: bob sent, the remote ones deferred (the
    // smarthost refuses), each naming the queue id and the sender.
    let logged = wait_until(DELIVERY_DEADLINE, || {
        let log = server.stderr_all();
        rcpts
            .iter()
            .all(|r| log.contains(&format!("{qid}: from=<{ALICE}>, to=<{r}>")))
            .then_some(log)
    })
    .unwrap_or_else(|| {
        panic!(
            "no attempt logged for every recipient:\n{}",
            server.stderr_tail()
        )
    });
    for line in logged
        .lines()
        .filter(|l| l.contains(&format!("{qid}: from=")))
    {
        let want = if line.contains(&format!("to=<{BOB}>")) {
            "status=sent"
        } else {
            "status=deferred"
        };
        assert!(line.contains(want), "{want} expected: {line}");
    }
    // The message stays queued, whole, under its id: the remote recipients are still owed it.
    let mut queued = queued_messages(&server.dir.path().join("spool"));
    assert_eq!(queued.keys().collect::<Vec<_>>(), vec![&qid]);
    let q = QueueFile::parse(&queued.remove(&qid).unwrap(), &qid);
    assert_eq!(q.one("id"), qid);
    assert_eq!(q.one("from"), ALICE);
    assert_eq!(q.all("rcpt"), rcpts, "queued envelope: {:?}", q.fields);
    let body_at = q.message.len() - msg.len();
    assert_bytes_eq(&q.message[body_at..], &msg, "queued message");
    let received = first_received(&q.message);
    assert!(received.contains("with ESMTPSA"), "{received:?}");
}

#[test]
fn repeated_failures_ban_the_address_until_ban_secs_pass() {
    const BAN_SECS: u64 = 3;
    let (server, _cert, _certs) = auth_server_with(
        &[("submission", "starttls", None)],
        AuthOpts {
            max_failures: Some(3),
            ban_secs: Some(BAN_SECS),
            ..users()
        },
        // Loopback is trusted by default, and trusted sources are never banned.
        |opts| opts.trusted = Some(vec![]),
    );
    let addr = server.listener(0);
    // Two failures on one connection, the third on another: they count per address.
    let (mut c, _) = TlsConn::connect_starttls(addr, Some(MX));
    for i in 1..=2 {
        let r = c.cmd(&format!(
            "AUTH PLAIN {}",
            plain(ALICE, &format!("guess{i}"))
        ));
        expect(&r, 535, "5.7.8", &format!("guess {i}"));
    }
    assert_eq!(c.cmd("QUIT").code, 221);
    let (mut c, _) = TlsConn::connect_starttls(addr, Some(MX));
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(BOB, "guess3")));
    assert!(
        matches!(r.status().as_str(), "535 5.7.8" | "421 4.7.0"),
        "the banning failure: {r:?}"
    );
    c.expect_closed(Duration::from_secs(10));
    let banned_at = Instant::now();

    // Banned: a new connection gets 421 4.7.0 at connect and is closed, even with the right
    // password in hand.
    let mut s = SmtpConn::connect_raw(addr).expect("connect while banned");
    let r = s
        .try_reply(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no reply at connect while banned: {e:?}"));
    expect(&r, 421, "4.7.0", "connect while banned");
    s.expect_closed(Duration::from_secs(10));

    // After ban_secs, the address is welcome again (polled: the ban gives no other signal).
    let deadline = Duration::from_secs(BAN_SECS + 15);
    let lifted = wait_until(deadline, || {
        let mut s = SmtpConn::connect_raw(addr).ok()?;
        match s.try_reply(Duration::from_secs(5)) {
            Ok(r) if r.code == 220 => Some(banned_at.elapsed()),
            Ok(r) => {
                assert_eq!(r.status(), "421 4.7.0", "while banned: {r:?}");
                None
            }
            Err(ReadError::Closed { .. }) => None,
            Err(e) => panic!("connect while waiting for the ban to end: {e:?}"),
        }
    });
    let lifted = lifted.unwrap_or_else(|| {
        panic!(
            "auth.ban_secs = {BAN_SECS}, but connections were still refused with 421 4.7.0 {:?} \
             after the ban; the server logged: {:?}",
            banned_at.elapsed(),
            server
                .stderr_all()
                .lines()
                .filter(|l| l.contains("banned") && !l.contains("outcome="))
                .collect::<Vec<_>>()
        )
    });
    // The ban began a few milliseconds before `banned_at`: it must not end much sooner than
    // ban_secs after it.
    assert!(
        lifted + Duration::from_millis(500) >= Duration::from_secs(BAN_SECS),
        "auth.ban_secs = {BAN_SECS}, but the ban was lifted after {lifted:?}"
    );
    let mut c = login_starttls(addr, ALICE, ALICE_PW);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).code, 250);
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        3.0
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        1.0
    );
}

#[test]
fn trusted_networks_submit_without_auth() {
    let trusted = AuthOpts {
        submission_networks: vec!["127.0.0.1/32".to_owned()],
        ..users()
    };
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], trusted);
    let (mut c, _) = TlsConn::connect_starttls(server.listener(0), Some(MX));
    let r = c.cmd("MAIL FROM:<>");
    expect(&r, 553, "5.7.1", "null sender from a trusted network");
    let from = "app@remote.test";
    let msg = sample_message("auth-trusted", from, BOB);
    let r = send_mail(&mut c, from, &[BOB], &msg);
    assert_eq!(r.code, 250, "trusted submission without AUTH: {r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, BOB), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], from, BOB, &msg);
    let received = read(&files[0]).received.replace("\r\n", "");
    assert!(
        received.contains("with ESMTPS ") && !received.contains("ESMTPSA"),
        "not authenticated, so ESMTPS, not ESMTPSA: {received:?}"
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        0.0
    );

    // The same server setup trusting another network: 127.0.0.1 must log in.
    let untrusted = AuthOpts {
        submission_networks: vec!["10.0.0.0/8".to_owned()],
        ..users()
    };
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], untrusted);
    let (mut c, _) = TlsConn::connect_starttls(server.listener(0), Some(MX));
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    expect(&r, 530, "5.7.0", "MAIL from outside submission_networks");
}

/// How long `n` simultaneous logins may take in all: argon2id checks are slow by design, and
/// slower still in a debug build on a busy machine.
const LOGINS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

/// Logs in on `n` connections to `addr` at once (all AUTH commands released together) and
/// returns each reply's `code status`.
fn simultaneous_logins(addr: SocketAddr, n: usize) -> Vec<String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let (mut c, _) = TlsConn::connect_starttls(addr, Some(MX));
                barrier.wait();
                c.send(format!("AUTH PLAIN {}\r\n", plain(ALICE, ALICE_PW)).as_bytes());
                // The checks run a few at a time on a small pool, so the last answer may come
                // several password checks after the first: a deadline for all of them, not one.
                c.try_reply(LOGINS_DEADLINE)
                    .expect("an answer to AUTH")
                    .status()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

/// A mail client opening several connections logs in on all of them at once: every one
/// succeeds (six are within the default `auth.max_checks_per_source` of 8).
#[test]
fn six_simultaneous_logins_from_one_address_all_succeed() {
    let (server, _cert, _certs) = auth_server(&[("submission", "starttls", None)], users());
    let replies = simultaneous_logins(server.listener(0), 6);
    assert!(replies.iter().all(|r| r == "235 2.7.0"), "{replies:?}");
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        6.0
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"unavailable\"}"),
        0.0
    );
}

/// Over `auth.max_checks_per_source`, a login waits for the source's checks in flight to end
/// rather than getting 454; waiting is neither a failure nor a reason to ban.
#[test]
fn logins_over_the_per_source_share_wait_their_turn() {
    let (server, _cert, _certs) = auth_server_with(
        &[("submission", "starttls", None)],
        AuthOpts {
            max_checks_per_source: Some(1),
            max_failures: Some(1),
            ..users()
        },
        // Not trusted, so that one failure would ban the address.
        |opts| opts.trusted = Some(vec![]),
    );
    let replies = simultaneous_logins(server.listener(0), 4);
    assert!(replies.iter().all(|r| r == "235 2.7.0"), "{replies:?}");
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        0.0
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"unavailable\"}"),
        0.0
    );
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 0.0);
}
