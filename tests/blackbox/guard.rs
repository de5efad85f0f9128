//! The server's judgement without the XDP shield: bans enforced in userspace, answered with 421
//! at connect, for as long as `shield.ban_secs` says; trusted networks; connection caps.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::auth::{auth_server, plain, users, ALICE, ALICE_PW, MX};
use crate::harness::{wait_until, AuthOpts, Opts, Server, LOCAL_DOMAIN};
use crate::session::SmtpConn;
use crate::tls::TlsConn;

const BAN_SECS: u64 = 2;

/// A loopback address outside `127.0.0.1/32`: another host, as far as the server can tell.
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Connects and returns the first reply, however it comes: a 220, a 421 or a 554.
fn first_reply(server: &Server) -> (u16, String) {
    let mut c = SmtpConn::connect_raw(server.delivery()).expect("connect");
    let r = c.reply();
    (r.code, r.enhanced().unwrap_or_default().to_owned())
}

/// Waits until a new connection is greeted again, and returns how long that took from `since`.
fn greeted_again_after(server: &Server, since: Instant) -> Duration {
    wait_until(Duration::from_secs(BAN_SECS + 10), || {
        (first_reply(server).0 == 220).then(|| since.elapsed())
    })
    .expect("still refused long after the ban should have ended")
}

#[test]
fn pregreet_is_banned_in_userspace_until_the_ban_ends() {
    const DELAY_MS: u64 = 300;
    let server = Server::start(Opts {
        workers: 1,
        greet_delay_ms: DELAY_MS,
        ban_secs: Some(BAN_SECS),
        trusted: Some(vec![]),
        ..Opts::default()
    });
    // A patient client waits for the banner, which comes only after the delay.
    let start = Instant::now();
    let mut patient = SmtpConn::connect_raw(server.delivery()).expect("connect");
    assert_eq!(patient.reply().code, 220);
    assert!(
        start.elapsed() >= Duration::from_millis(DELAY_MS),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(patient.cmd("QUIT").code, 221);

    // A bot talks first: it is refused and cut off at once...
    let mut bot = SmtpConn::connect_raw(server.delivery()).expect("connect");
    bot.send(b"EHLO bot.test\r\n");
    let refused = bot.reply();
    assert_eq!(
        (refused.code, refused.enhanced()),
        (554, Some("5.5.1")),
        "{refused:?}"
    );
    bot.expect_closed(Duration::from_secs(5));
    let banned_at = Instant::now();

    // ...and its next connection gets 421 before any greeting, until the ban ends.
    assert_eq!(first_reply(&server), (421, "4.7.0".to_owned()));
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 1.0);
    assert!(server.metric_sum("smtp_edge_banned_connections_total", "") >= 1.0);
    let back = greeted_again_after(&server, banned_at);
    assert!(
        back >= Duration::from_secs(BAN_SECS) - Duration::from_millis(100),
        "greeted again after {back:?}"
    );
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 0.0);
}

#[test]
fn too_many_bad_commands_ban_the_source() {
    let server = Server::start(Opts {
        workers: 1,
        max_bad_commands: 3,
        ban_secs: Some(BAN_SECS),
        trusted: Some(vec![]),
        ..Opts::default()
    });
    let mut c = SmtpConn::connect(server.delivery());
    assert_eq!(c.cmd("FOO").code, 500);
    assert_eq!(c.cmd("BAR").code, 500);
    let last = c.cmd("BAZ");
    assert_eq!(
        (last.code, last.enhanced()),
        (421, Some("4.7.0")),
        "{last:?}"
    );
    c.expect_closed(Duration::from_secs(5));
    let banned_at = Instant::now();
    assert_eq!(first_reply(&server), (421, "4.7.0".to_owned()));
    greeted_again_after(&server, banned_at);
}

/// With the default `guard.trusted` (loopback), five failed logins on implicit TLS from this
/// host do not lock it out: port 25 still greets it, and the right password still works.
#[test]
fn failed_logins_from_trusted_loopback_do_not_lock_it_out() {
    let (server, _cert, _certs) = auth_server(
        &[("delivery", "none", None), ("submission", "implicit", None)],
        AuthOpts {
            max_failures: Some(3),
            ..users()
        },
    );
    let submission = server.listener(1);
    let mut failures = 0;
    while failures < 5 {
        let mut c = TlsConn::connect_implicit(submission, Some(MX));
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        // A session is closed after three failures; a new one goes on guessing.
        for _ in 0..3 {
            if failures == 5 {
                break;
            }
            let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, "wrong")));
            assert_eq!(r.status(), "535 5.7.8", "failure {failures}: {r:?}");
            failures += 1;
        }
    }
    let mut mx = SmtpConn::connect(server.listener(0));
    assert_eq!(mx.cmd("EHLO client.test").code, 250);
    let mut c = TlsConn::connect_implicit(submission, Some(MX));
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(ALICE, ALICE_PW)));
    assert_eq!(r.status(), "235 2.7.0", "{r:?}");
    // Still counted and logged.
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        5.0
    );
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 0.0);
    let failed: Vec<String> = server
        .stderr_all()
        .lines()
        .filter(|l| l.contains("auth failed"))
        .map(str::to_owned)
        .collect();
    assert_eq!(failed.len(), 5, "{}", server.stderr_tail());
    for line in &failed {
        assert!(
            line.contains("peer=127.0.0.1:") && line.contains("banned=false"),
            "{line}"
        );
    }
}

/// A trusted client is not tested for pregreeting: it gets the banner at once and may
/// pipeline behind it; an untrusted one that talks first is refused.
#[test]
fn trusted_clients_are_not_pregreet_tested() {
    let server = Server::start(Opts {
        workers: 1,
        // Long enough that a client sending at once is surely early, if it were tested.
        greet_delay_ms: 20_000,
        ban_secs: Some(BAN_SECS),
        trusted: Some(vec!["127.0.0.1/32"]),
        ..Opts::default()
    });
    let mut local = SmtpConn::connect_raw(server.delivery()).expect("connect");
    local.send(b"EHLO local.test\r\n");
    assert_eq!(local.reply().code, 220);
    assert_eq!(local.reply().code, 250);

    let mut bot = SmtpConn::connect_from(OTHER_HOST, server.delivery()).expect("connect");
    bot.send(b"EHLO bot.test\r\n");
    assert_eq!(bot.reply().status(), "554 5.5.1");
    // Loopback is still welcome, banner and all.
    SmtpConn::connect(server.delivery());
}

/// Over `limits.max_connections_per_ip`, only the extra connection is refused (421 4.7.0): the
/// source is not banned, and its transfer in DATA completes.
#[test]
fn over_the_per_source_limit_only_the_extra_connection_is_refused() {
    let server = Server::start(Opts {
        workers: 1,
        max_connections_per_ip: Some(2),
        trusted: Some(vec![]),
        ..Opts::default()
    });
    let addr = server.delivery();
    let mut sending = SmtpConn::connect_from(OTHER_HOST, addr).expect("connect");
    assert_eq!(sending.reply().code, 220);
    assert_eq!(sending.cmd("EHLO client.test").code, 250);
    assert_eq!(
        sending.cmd(&format!("MAIL FROM:<a@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(
        sending.cmd(&format!("RCPT TO:<b@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(sending.cmd("DATA").code, 354);
    sending.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = SmtpConn::connect_from(OTHER_HOST, addr).expect("connect");
    assert_eq!(idle.reply().code, 220);

    let mut extra = SmtpConn::connect_from(OTHER_HOST, addr).expect("connect");
    assert_eq!(extra.reply().status(), "421 4.7.0");
    extra.expect_closed(Duration::from_secs(10));

    sending.send(b"second half\r\n.\r\n");
    assert_eq!(sending.reply().code, 250, "the transfer in DATA completes");
    assert_eq!(idle.cmd("NOOP").code, 250, "the other session goes on");
    assert_eq!(
        server.metric_sum("smtp_edge_connections_refused_total", "reason=\"per_ip\""),
        1.0
    );
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 0.0);
    // Once a connection ends, the source may open another.
    assert_eq!(idle.cmd("QUIT").code, 221);
    idle.expect_closed(Duration::from_secs(10));
    let back = wait_until(Duration::from_secs(10), || {
        let mut c = SmtpConn::connect_from(OTHER_HOST, addr).ok()?;
        (c.reply().code == 220).then_some(())
    });
    assert!(back.is_some(), "still refused after a connection ended");
}

/// The first reply on a new connection, or `None` if there is none within the deadline.
fn greeting_of(c: &mut SmtpConn) -> Option<String> {
    c.try_reply(Duration::from_secs(15))
        .ok()
        .map(|r| r.status())
}

/// Past `limits.max_connections`, a new connection gets 421 4.3.2 and is closed, whoever it is
/// from; the connections already open carry on, and a freed place is taken again.
#[test]
fn past_max_connections_new_connections_get_421_4_3_2() {
    let server = Server::start(Opts {
        workers: 1,
        limits_extra: vec!["max_connections = 3".into()],
        ..Opts::default()
    });
    let addr = server.delivery();
    let mut sending = SmtpConn::connect(addr);
    assert_eq!(sending.cmd("EHLO client.test").code, 250);
    assert_eq!(
        sending.cmd(&format!("MAIL FROM:<a@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(
        sending.cmd(&format!("RCPT TO:<b@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(sending.cmd("DATA").code, 354);
    let mut idle: Vec<SmtpConn> = (0..2).map(|_| SmtpConn::connect(addr)).collect();

    let mut over = SmtpConn::connect_raw(addr).expect("connect");
    assert_eq!(greeting_of(&mut over).as_deref(), Some("421 4.3.2"));
    over.expect_closed(Duration::from_secs(10));

    sending.send(b"Subject: at the cap\r\n\r\nbody\r\n.\r\n");
    assert_eq!(sending.reply().code, 250);
    assert_eq!(
        server.metric_sum(
            "smtp_edge_connections_refused_total",
            "reason=\"max_connections\""
        ),
        1.0
    );
    let last = idle.pop().expect("two idle");
    drop(last);
    let back = wait_until(Duration::from_secs(10), || {
        let mut c = SmtpConn::connect_raw(addr).ok()?;
        (greeting_of(&mut c)? == "220").then_some(())
    });
    assert!(back.is_some(), "a freed place was not taken again");
}

/// Without `limits.max_connections`, the cap comes from the open-file limit: with a low one,
/// idle connections are refused with 421 4.3.2 before descriptors run out, and a message in
/// DATA still gets its spool file (250, not 451).
#[test]
fn the_derived_cap_keeps_descriptors_for_messages_in_data() {
    // 256 + 8 per worker are kept back: 24 connections of two descriptors each remain.
    const NOFILE: u64 = 320;
    const BOUND: usize = 200;
    let server = Server::start(Opts {
        workers: 2,
        nofile: Some(NOFILE),
        ..Opts::default()
    });
    let addr = server.delivery();
    let mut sending = SmtpConn::connect(addr);
    assert_eq!(sending.cmd("EHLO client.test").code, 250);
    let mut idle = Vec::new();
    let refused = loop {
        assert!(idle.len() < BOUND, "no 421 after {BOUND} connections");
        let mut c = SmtpConn::connect_raw(addr).expect("connect");
        match greeting_of(&mut c).as_deref() {
            Some("220") => idle.push(c),
            Some("421 4.3.2") => break idle.len(),
            other => panic!(
                "connection {}: {other:?} instead of 220 or 421 4.3.2\n{}",
                idle.len() + 1,
                server.stderr_tail()
            ),
        }
    };
    assert!(
        refused >= 10,
        "refused after only {refused} idle connections"
    );
    // Every admitted connection could be in DATA: this one still gets its spool file.
    assert_eq!(
        sending.cmd(&format!("MAIL FROM:<a@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(
        sending.cmd(&format!("RCPT TO:<b@{LOCAL_DOMAIN}>")).code,
        250
    );
    assert_eq!(sending.cmd("DATA").code, 354);
    sending.send(b"Subject: descriptors\r\n\r\nbody\r\n.\r\n");
    let end = sending.reply();
    assert_eq!(end.code, 250, "{end:?}\n{}", server.stderr_tail());
    assert!(
        !server.stderr_all().contains("accept failed"),
        "accept ran out of descriptors\n{}",
        server.stderr_tail()
    );
    drop(idle);
    let back = wait_until(Duration::from_secs(10), || {
        let mut c = SmtpConn::connect_raw(addr).ok()?;
        (greeting_of(&mut c)? == "220").then_some(())
    });
    assert!(
        back.is_some(),
        "still full after the idle connections closed"
    );
}
