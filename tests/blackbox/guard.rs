//! The server's judgement without the XDP shield: bans enforced in userspace, answered with 421
//! at connect, for as long as `shield.ban_secs` says.

use std::time::{Duration, Instant};

use crate::harness::{wait_until, Opts, Server};
use crate::session::SmtpConn;

const BAN_SECS: u64 = 2;

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
    assert!(server.metric("smtp_edge_banned_connections_total") >= 1.0);
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
