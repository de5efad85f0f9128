//! Envelope rules a sending MTA relies on: null reverse-path (bounces), command order, the
//! recipient limit and the command line limit.

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{new_dir, read};
use crate::session::SmtpConn;

#[test]
fn bounce_with_null_reverse_path_is_accepted_and_delivered() {
    // RFC 5321 §4.5.5: an MX must accept `MAIL FROM:<>`, or bounces are lost.
    let server = Server::start(Opts::default());
    let rcpt = "user@example.test";
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd("MAIL FROM:<>");
    assert_eq!(r.code, 250, "null reverse-path: {r:?}");
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let msg = b"Subject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n";
    c.send(msg);
    assert_eq!(c.cmd(".").code, 250);
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    let d = read(&files[0]);
    assert_eq!(d.return_path, "<>", "Return-Path of a bounce");
    assert_eq!(d.message, msg);
}

#[test]
fn commands_out_of_order_get_503_and_the_session_goes_on() {
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    for (cmd, why) in [
        ("RCPT TO:<user@example.test>", "RCPT before MAIL"),
        ("DATA", "DATA before MAIL"),
    ] {
        let r = c.cmd(cmd);
        assert_eq!(r.code, 503, "{why}: {r:?}");
        assert!(
            r.enhanced().is_some_and(|e| e.starts_with("5.5.")),
            "{why}: {r:?}"
        );
    }
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    let r = c.cmd("MAIL FROM:<sender@remote.test>");
    assert_eq!(r.code, 503, "nested MAIL: {r:?}");
    let r = c.cmd("DATA");
    assert!(
        r.code == 503 || r.code == 554,
        "DATA without an accepted recipient: {r:?}"
    );
    assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
}

#[test]
fn recipient_over_the_limit_is_refused_and_the_rest_delivered() {
    let max = 100;
    let server = Server::start(Opts {
        max_recipients: max,
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    for i in 0..max {
        let r = c.cmd(&format!("RCPT TO:<r{i:03}@example.test>"));
        assert_eq!(r.code, 250, "recipient {i} of {max}: {r:?}");
    }
    // RFC 5321 §4.5.3.1.10: 452 (552 is the older practice), and the transaction goes on.
    let r = c.cmd("RCPT TO:<one-too-many@example.test>");
    assert!(
        r.code == 452 || r.code == 552,
        "recipient {} over a limit of {max}: {r:?}",
        max + 1
    );
    assert!(
        matches!(r.enhanced(), Some("4.5.3") | Some("5.5.3")),
        "{r:?}"
    );
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: many\r\n\r\nhi\r\n");
    assert_eq!(c.cmd(".").code, 250);
    let files = wait_for_maildir(&server.maildir, max as usize, DELIVERY_DEADLINE);
    assert_eq!(files.len(), max as usize, "one file per accepted recipient");
    assert!(!new_dir(&server.maildir, "one-too-many@example.test").exists());
}

#[test]
fn overlong_command_line_is_refused_and_the_session_goes_on() {
    // RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with CRLF.
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd(&format!("NOOP {}", "x".repeat(2000)));
    assert_eq!(r.code, 500, "2000-octet command line: {r:?}");
    assert!(r.enhanced().is_some_and(|e| e.starts_with("5.5.")), "{r:?}");
    assert_eq!(c.cmd("NOOP").code, 250, "session after an overlong line");
}
