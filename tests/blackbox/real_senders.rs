//! What real senders send that RFC 5321 frowns on but Postfix and Exim take: lines over 1000
//! octets, and envelope addresses without angle brackets.

use crate::harness::{Opts, Server};
use crate::maildir::{assert_one_delivered, sample_message};
use crate::session::{dot_stuff, SmtpConn};

const FROM: &str = "sender@remote.test";
const RCPT: &str = "user@example.test";

/// A message with one line of `len` octets (CRLF included): HTML mail on a single line.
fn message_with_line(len: usize) -> Vec<u8> {
    let mut msg = sample_message("long-line", FROM, RCPT);
    msg.extend_from_slice(b"<html>");
    msg.extend((0..len - 8).map(|i| b"abcdefghij"[i % 10]));
    msg.extend_from_slice(b"\r\n");
    msg.extend_from_slice(b".dot-stuffed after it\r\n");
    msg
}

#[test]
fn a_line_of_64_kib_is_delivered_byte_exact_by_data_and_by_bdat() {
    let server = Server::start(Opts::default());
    let msg = message_with_line(65_536);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail(FROM, &[RCPT], &dot_stuff(&msg));
    assert_eq!(r.status(), "250 2.0.0", "DATA with a 64 KiB line: {r:?}");
    assert_one_delivered(&server.maildir, FROM, RCPT, &msg);

    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{RCPT}>")).code, 250);
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(&msg);
    let r = c.reply();
    assert_eq!(r.status(), "250 2.0.0", "BDAT with a 64 KiB line: {r:?}");
    assert_one_delivered(&server.maildir, FROM, RCPT, &msg);
}

#[test]
fn a_line_over_max_line_length_is_refused_after_the_data_and_the_session_goes_on() {
    let server = Server::start(Opts {
        limits_extra: vec!["max_line_length = 2000".into()],
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail(FROM, &[RCPT], &dot_stuff(&message_with_line(2001)));
    assert_eq!(r.status(), "550 5.6.0", "{r:?}");
    assert!(r.lines[0].contains("2000 octets"), "{r:?}");
    // In step: the next command is read as one.
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
    let msg = message_with_line(2000);
    assert_eq!(c.send_mail(FROM, &[RCPT], &dot_stuff(&msg)).code, 250);
    assert_one_delivered(&server.maildir, FROM, RCPT, &msg);
}

#[test]
fn envelopes_without_angle_brackets_are_accepted_unless_strict() {
    let server = Server::start(Opts::default());
    let msg = sample_message("no-brackets", FROM, RCPT);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd(&format!("MAIL FROM:{FROM} SIZE={}", msg.len()));
    assert_eq!(r.status(), "250 2.1.0", "{r:?}");
    let r = c.cmd(&format!("RCPT TO: {RCPT}"));
    assert_eq!(r.status(), "250 2.1.5", "{r:?}");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&dot_stuff(&msg));
    assert_eq!(c.cmd(".").code, 250);
    assert_one_delivered(&server.maildir, FROM, RCPT, &msg);

    let strict = Server::start(Opts {
        limits_extra: vec!["strict_envelopes = true".into()],
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(strict.delivery());
    let r = c.cmd(&format!("MAIL FROM:{FROM}"));
    assert_eq!(r.status(), "501 5.1.7", "{r:?}");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
    let r = c.cmd(&format!("RCPT TO: {RCPT}"));
    assert_eq!(r.status(), "501 5.1.3", "{r:?}");
}
