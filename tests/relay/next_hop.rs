//! Configured next hops: SMTP to aiosmtpd and smtp-sink, a smarthost with AUTH, STARTTLS
//! policy, several messages per connection, the per-destination bound, and LMTP to Dovecot
//! over TCP and a Unix socket.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use smtp_edge::protocol::client::{ClientCredentials, TlsPolicy};
use smtp_edge::protocol::Secret;
use smtp_edge::relay::{Host, NextHop, Route, Verdict, Via};

use crate::dotted_content;
use crate::harness::{aiosmtpd, aiosmtpd_in, config, connections, start, stored, verdicts};
use crate::receivers::{
    free_port, lf, strip_trace, test_cert, wait_files, wait_listening, Receiver,
};

fn smtp(addr: SocketAddr) -> Route {
    Route::Smtp(NextHop {
        host: Host::Ip(addr.ip()),
        port: addr.port(),
    })
}

#[test]
fn several_messages_over_one_connection_byte_exact_per_recipient_outcomes() {
    let rx = aiosmtpd("127.0.0.1", 0, &[]);
    let mut cfg = config();
    cfg.max_connections_per_domain = 1;
    let mut relay = start(cfg);
    let route = smtp(rx.addr);
    let content = dotted_content();
    let first = ["x@remote.test", "nobody@remote.test", "later@remote.test"];
    relay.submit(&route, "a@example.test", &first, &content);
    for i in 0..4 {
        let to = format!("y{i}@remote.test");
        relay.submit(&route, "", &[&to], &content);
    }
    let results = relay.results(5);
    assert_eq!(
        verdicts(&results[0]),
        [Verdict::Delivered, Verdict::Failed, Verdict::Deferred]
    );
    let refused = &results[0].outcomes[1];
    assert_eq!(refused.status, "5.1.1");
    assert_eq!(
        refused.reply.as_deref(),
        Some("550 5.1.1 No such user here")
    );
    assert!(
        refused.detail.ends_with("(in reply to RCPT TO)"),
        "{refused:?}"
    );
    let later = &results[0].outcomes[2];
    assert_eq!(later.status, "4.2.0");
    assert_eq!(later.reply.as_deref(), Some("451 4.2.0 Try again later"));
    for r in &results[1..] {
        assert_eq!(verdicts(r), [Verdict::Delivered]);
        assert_eq!(r.queue_id, format!("Q{}", r.token));
        let peer = r.peer.as_ref().unwrap();
        assert_eq!(peer.addr, Some(rx.addr));
        assert_eq!(peer.tls, None);
    }
    let got = stored(rx.dir.path(), 5);
    for m in &got {
        // Byte-exact: dot-stuffing undone by the receiver, 8-bit octets intact.
        assert_eq!(m.content, content);
        assert!(m.get("mail").contains("BODY=8BITMIME"), "{:?}", m.env);
    }
    assert_eq!(got[0].rcpts(), ["x@remote.test"]);
    // The null sender went as MAIL FROM:<>, and every message over the one connection.
    assert_eq!(connections(rx.dir.path()), (1, 1));
    assert!(results.iter().all(|r| r.via == Via::Smtp));
}

#[test]
fn connections_per_destination_stay_within_the_bound() {
    // Each DATA takes 300 ms, so connections overlap while the relay works through 8 messages.
    let rx = aiosmtpd("127.0.0.1", 0, &["--slow-ms", "300"]);
    let mut cfg = config();
    cfg.max_connections_per_domain = 2;
    let mut relay = start(cfg);
    let route = smtp(rx.addr);
    for i in 0..8 {
        let to = format!("u{i}@remote.test");
        relay.submit(
            &route,
            "s@example.test",
            &[&to],
            b"Subject: x\r\n\r\nbody\r\n",
        );
    }
    for r in relay.results(8) {
        assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    }
    stored(rx.dir.path(), 8);
    let (total, most) = connections(rx.dir.path());
    assert_eq!(most, 2, "at most 2 at once, and both used");
    assert!(
        total < 8,
        "connections carried several messages each: {total}"
    );
}

#[test]
fn starttls_opportunistic_reports_the_cipher_and_required_defers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = test_cert(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls_rx = aiosmtpd_in(dir, "127.0.0.1", 0, &["--tls", &cert, &key]);
    let plain_rx = aiosmtpd("127.0.0.1", 0, &[]);

    let mut relay = start(config());
    let content = dotted_content();
    relay.submit(
        &smtp(tls_rx.addr),
        "s@example.test",
        &["u@remote.test"],
        &content,
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    let tls = r.peer.unwrap().tls.expect("STARTTLS was offered");
    assert!(tls.version.starts_with("TLSv1."), "{tls:?}");
    assert!(tls.cipher.starts_with("TLS"), "{tls:?}");
    let got = stored(tls_rx.dir.path(), 1);
    assert_eq!(got[0].get("tls"), "yes");
    assert_eq!(got[0].content, content);

    let mut cfg = config();
    cfg.tls = TlsPolicy::Required;
    let mut relay = start(cfg);
    relay.submit(
        &smtp(plain_rx.addr),
        "s@example.test",
        &["u@remote.test"],
        &content,
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Deferred], "{r:#?}");
    assert_eq!(r.outcomes[0].status, "4.7.4");
    // Nothing went in the clear.
    assert!(!plain_rx.dir.path().join("1.env").exists());
}

#[test]
fn opportunistic_tls_that_fails_its_handshake_falls_back_to_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = test_cert(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    // STARTTLS is offered, but only TLS 1.1, which the relay (TLS 1.2 and 1.3) refuses.
    let rx = aiosmtpd_in(
        dir,
        "127.0.0.1",
        0,
        &["--tls", &cert, &key, "--tls-1.1-only"],
    );
    let mut relay = start(config());
    let content = dotted_content();
    relay.submit(
        &smtp(rx.addr),
        "s@example.test",
        &["u@remote.test"],
        &content,
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    assert_eq!(r.peer.unwrap().tls, None);
    let got = stored(rx.dir.path(), 1);
    assert_eq!(got[0].get("tls"), "no");
    assert_eq!(got[0].content, content);
    // The broken handshake, then the plaintext session.
    assert_eq!(connections(rx.dir.path()).0, 2);

    // With TLS required, the same host gets nothing.
    let mut cfg = config();
    cfg.tls = TlsPolicy::Required;
    let mut relay = start(cfg);
    relay.submit(
        &smtp(rx.addr),
        "s@example.test",
        &["u@remote.test"],
        &content,
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Deferred], "{r:#?}");
    assert_eq!(stored(rx.dir.path(), 1).len(), 1);
}

#[test]
fn smarthost_with_auth_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = test_cert(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let args = ["--tls", &cert, &key, "--auth", "relay-user", "s3cret pass"];
    let rx = aiosmtpd_in(dir, "127.0.0.1", 0, &args);
    let mut cfg = config();
    cfg.remote = smtp(rx.addr);
    cfg.smarthost_credentials = Some(ClientCredentials {
        username: "relay-user".into(),
        password: Secret::new(b"s3cret pass".to_vec()),
        allow_plaintext: false,
    });
    let remote = cfg.remote.clone();
    let mut relay = start(cfg);
    relay.submit(
        &remote,
        "s@example.test",
        &["far@remote.test"],
        b"Subject: a\r\n\r\nb\r\n",
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    let got = stored(rx.dir.path(), 1);
    assert_eq!(got[0].get("auth"), "relay-user");
    assert_eq!(got[0].get("tls"), "yes");
}

#[test]
fn refused_connection_defers_with_the_address() {
    // A port nobody listens on.
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut relay = start(config());
    relay.submit(
        &smtp(addr),
        "s@example.test",
        &["u@remote.test", "v@remote.test"],
        b"x\r\n",
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Deferred, Verdict::Deferred]);
    assert_eq!(r.outcomes[0].status, "4.4.1");
    assert!(
        r.outcomes[0].detail.contains(&addr.port().to_string()),
        "{r:#?}"
    );
    assert_eq!(r.peer, None, "no session, so no peer");
}

#[test]
fn smtp_sink_with_pipelining_gets_every_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = dir.path().join("sink.log");
    let mut child = Command::new("smtp-sink")
        .args(["-u", "nobody", "-d"])
        .arg(dir.path().join("msg."))
        .arg(addr.to_string())
        .arg("10")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("smtp-sink must be installed (Debian postfix, see .ci/run)");
    wait_listening(addr, &mut child, "smtp-sink", &log);
    let rx = Receiver { child, addr, dir };
    let mut relay = start(config());
    let content = dotted_content();
    for i in 0..3 {
        let to = format!("u{i}@remote.test");
        relay.submit(
            &smtp(addr),
            "s@example.test",
            &[&to, "w@remote.test"],
            &content,
        );
    }
    for r in relay.results(3) {
        assert_eq!(
            verdicts(&r),
            [Verdict::Delivered, Verdict::Delivered],
            "{r:#?}"
        );
    }
    let dumps = wait_files(rx.dir.path(), 3, |p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("msg."))
    });
    for dump in dumps {
        let stored = std::fs::read(dump).unwrap();
        // smtp-sink stores LF line ends and a blank line after the message.
        let mut want = lf(&content);
        want.push(b'\n');
        assert_eq!(strip_trace(&stored), want.as_slice());
    }
}

/// The uid and gid Dovecot stores mail with (it refuses uid 0).
const MAIL_ID: u32 = 65534;

/// A throwaway Dovecot with LMTP on a loopback port and on `<dir>/run/lmtp`; users `alice`
/// and `bob`, anyone else refused at RCPT.
fn dovecot() -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "home"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::os::unix::fs::chown(d.join("home"), Some(MAIL_ID), Some(MAIL_ID)).unwrap();
    let users: String = ["alice", "bob"]
        .iter()
        .map(|u| format!("{u}::{MAIL_ID}:{MAIL_ID}::{}/home/{u}::\n", d.display()))
        .collect();
    std::fs::write(d.join("users"), users).unwrap();
    let port = free_port();
    let dd = d.display();
    let mut conf = String::new();
    for line in [
        format!("base_dir = {dd}/run"),
        format!("state_dir = {dd}/state"),
        format!("log_path = {dd}/dovecot.log"),
        "protocols = lmtp".into(),
        "listen = 127.0.0.1".into(),
        "ssl = no".into(),
        "mail_location = maildir:~/Maildir".into(),
        "auth_username_format = %Ln".into(),
        format!("userdb {{\n  driver = passwd-file\n  args = {dd}/users\n}}"),
        format!("passdb {{\n  driver = passwd-file\n  args = {dd}/users\n}}"),
        format!(
            "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  unix_listener lmtp {{\n    mode = 0600\n  }}\n}}"
        ),
    ] {
        writeln!(conf, "{line}").unwrap();
    }
    std::fs::write(d.join("dovecot.conf"), conf).unwrap();
    let log = d.join("dovecot.log");
    let mut child = Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(d.join("dovecot.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("master.err")).unwrap())
        .spawn()
        .expect("dovecot must be installed (Debian dovecot-lmtpd, see .ci/run)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "dovecot", &log);
    Receiver { child, addr, dir }
}

fn maildir_new(rx: &Receiver, user: &str) -> std::path::PathBuf {
    rx.dir.path().join(format!("home/{user}/Maildir/new"))
}

#[test]
fn lmtp_to_dovecot_over_tcp_and_a_unix_socket() {
    let rx = dovecot();
    let mut relay = start(config());
    let content = dotted_content();
    let tcp = Route::Lmtp(NextHop {
        host: Host::Ip(rx.addr.ip()),
        port: rx.addr.port(),
    });
    let unix = Route::LmtpUnix(rx.dir.path().join("run/lmtp"));
    assert!(Path::new(&rx.dir.path().join("run/lmtp")).exists());
    relay.submit(
        &tcp,
        "s@remote.test",
        &["alice@example.test", "nobody@example.test"],
        &content,
    );
    relay.submit(&unix, "s@remote.test", &["bob@example.test"], &content);
    let r = relay.results(2);
    assert_eq!(
        verdicts(&r[0]),
        [Verdict::Delivered, Verdict::Failed],
        "{:#?}",
        r[0]
    );
    assert_eq!(r[0].outcomes[1].status, "5.1.1");
    assert_eq!(verdicts(&r[1]), [Verdict::Delivered], "{:#?}", r[1]);
    assert_eq!(r[1].peer.as_ref().unwrap().addr, None);
    assert!(r.iter().all(|r| r.via == Via::Lmtp));
    for user in ["alice", "bob"] {
        let files = wait_files(&maildir_new(&rx, user), 1, |_| true);
        let stored = std::fs::read(&files[0]).unwrap();
        assert_eq!(strip_trace(&stored), lf(&content).as_slice(), "{user}");
        assert!(stored.starts_with(b"Return-Path: <s@remote.test>\n"));
    }
}
