//! The delivery listener is no open relay, and submission refuses mail before AUTH.

use crate::harness::{wait_until, Opts, Server, REPLY_DEADLINE};
use crate::session::SmtpConn;

/// Recipients that would make us relay to someone else, each with the trick it uses.
const RELAY_TRICKS: &[(&str, &str)] = &[
    ("user@other.test", "non-local domain"),
    (
        "user@sub.example.test",
        "subdomain of a local domain is not local",
    ),
    ("user%other.test@example.test", "percent hack"),
    (
        "@a.test:user@example.test",
        "source route (RFC 5321 §4.1.2 / appendix C)",
    ),
    (
        "@a.test,@b.test:user@example.test",
        "multi-hop source route",
    ),
    ("other.test!user@example.test", "bang path"),
    (
        "\"user@other.test\"@example.test",
        "quoted local part holding @",
    ),
    (
        "\"user%other.test\"@example.test",
        "quoted local part holding %",
    ),
    (
        "\"other.test!user\"@example.test",
        "quoted local part holding !",
    ),
];

#[test]
fn delivery_refuses_every_relay_trick_with_550_5_7_1() {
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd("MAIL FROM:<sender@remote.test>");
    assert_eq!(r.code, 250, "MAIL: {r:?}");
    let mut wrong = Vec::new();
    for (rcpt, why) in RELAY_TRICKS {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if r.status() != "550 5.7.1" {
            wrong.push(format!("RCPT TO:<{rcpt}> ({why}): got {r:?}"));
        }
    }
    // The transaction is still usable: a local recipient is accepted after the refusals.
    let r = c.cmd("RCPT TO:<user@example.test>");
    assert_eq!(r.code, 250, "local RCPT after refusals: {r:?}");
    assert!(
        wrong.is_empty(),
        "relay not refused with 550 5.7.1:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn delivery_accepts_local_recipients_in_any_case() {
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd("MAIL FROM:<sender@remote.test>");
    assert_eq!(r.code, 250, "MAIL: {r:?}");
    for rcpt in [
        "user@example.test",
        "User@EXAMPLE.TEST",
        "first.last@Example.Test",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(r.code, 250, "RCPT TO:<{rcpt}>: {r:?}");
        assert!(r.enhanced().is_some_and(|e| e.starts_with("2.")), "{r:?}");
    }
    assert_eq!(c.cmd("RSET").code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn pipelined_relay_refusal_keeps_one_reply_per_command_in_order() {
    let server = Server::start(Opts::default());
    let (mut c, ehlo) = SmtpConn::connect_ehlo(server.delivery());
    assert!(
        ehlo.has_keyword("PIPELINING"),
        "EHLO lacks PIPELINING: {ehlo:?}"
    );
    c.send(
        b"MAIL FROM:<sender@remote.test>\r\n\
          RCPT TO:<user@example.test>\r\n\
          RCPT TO:<victim@other.test>\r\n\
          RCPT TO:<user2@example.test>\r\n\
          RSET\r\n\
          QUIT\r\n",
    );
    let replies = c.replies_until_close(REPLY_DEADLINE);
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [250, 250, 550, 250, 250, 221],
        "replies to a pipelined batch: {replies:?}"
    );
    assert_eq!(replies[2].status(), "550 5.7.1", "{replies:?}");
    for r in &replies {
        assert!(
            r.enhanced().is_some(),
            "reply without an enhanced status code: {r:?}"
        );
    }
}

#[test]
fn submission_refuses_mail_without_auth_530_5_7_0() {
    let server = Server::start(Opts::with_submission());
    let (mut c, _) = SmtpConn::connect_ehlo(server.submission());
    let r = c.cmd("MAIL FROM:<user@example.test>");
    assert_eq!(
        r.status(),
        "530 5.7.0",
        "MAIL before AUTH on submission: {r:?}"
    );
    // Nothing was started, so RCPT is out of sequence rather than accepted.
    let r = c.cmd("RCPT TO:<someone@other.test>");
    assert!(
        r.code >= 500,
        "RCPT after refused MAIL on submission: {r:?}"
    );
    // The delivery listener of the same server is unaffected.
    let (mut d, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(d.cmd("MAIL FROM:<x@remote.test>").code, 250);
}

#[test]
fn relay_denied_is_counted_in_metrics() {
    let server = Server::start(Opts::default());
    let series = "smtp_edge_recipients_rejected_total{reason=\"relay_denied\"}";
    let before = server.metric(series);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    let r = c.cmd("RCPT TO:<victim@other.test>");
    assert_eq!(r.status(), "550 5.7.1", "{r:?}");
    // The counter is bumped with the reply; give the scrape a deadline, not a sleep.
    let after = wait_until(REPLY_DEADLINE, || {
        let v = server.metric(series);
        (v > before).then_some(v)
    });
    let text = server.metrics();
    assert_eq!(
        after,
        Some(before + 1.0),
        "{series} did not move by exactly 1 after one relay refusal; metrics:\n{text}"
    );
}
