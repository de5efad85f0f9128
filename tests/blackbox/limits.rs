//! Limits a client runs into: message size and repeated bad commands.

use std::time::Duration;

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE};
use crate::maildir::{new_dir, tokens_in};
use crate::session::{ReadError, SmtpConn};

const LIMIT: u64 = 1_048_576;

#[test]
fn size_over_limit_at_mail_is_552_5_3_4() {
    let server = Server::start(Opts {
        max_message_size: LIMIT,
        ..Opts::default()
    });
    let (mut c, ehlo) = SmtpConn::connect_ehlo(server.delivery());
    // If SIZE is advertised (RFC 1870), it states the configured limit.
    if let Some(line) = ehlo
        .lines
        .iter()
        .find(|l| l.to_ascii_uppercase().starts_with("SIZE"))
    {
        assert_eq!(
            line.trim(),
            format!("SIZE {LIMIT}"),
            "EHLO SIZE keyword: {ehlo:?}"
        );
    }
    let r = c.cmd(&format!(
        "MAIL FROM:<sender@remote.test> SIZE={}",
        LIMIT + 1
    ));
    assert_eq!(
        r.status(),
        "552 5.3.4",
        "MAIL with SIZE over the limit: {r:?}"
    );
    // At the limit is fine, and the session is still usable.
    let r = c.cmd(&format!("MAIL FROM:<sender@remote.test> SIZE={LIMIT}"));
    assert_eq!(r.code, 250, "MAIL with SIZE at the limit: {r:?}");
}

#[test]
fn oversized_body_without_size_is_refused_at_end_of_data() {
    let server = Server::start(Opts {
        max_message_size: LIMIT,
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let line = format!("{}\r\n", "y".repeat(998));
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() as u64 <= LIMIT + 4096 {
        body.extend_from_slice(line.as_bytes());
    }
    c.send(&body);
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.code, 552, "body over max_message_size: {r:?}");
    assert!(
        matches!(r.enhanced(), Some("5.3.4") | Some("5.2.3")),
        "{r:?}"
    );
}

#[test]
fn too_many_bad_commands_get_421_and_close() {
    let max = 20;
    let server = Server::start(Opts {
        max_bad_commands: max,
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let mut replies = Vec::new();
    for i in 0..max + 2 {
        if c.try_send(format!("XYZZY{i}\r\n").as_bytes()).is_err() {
            break;
        }
        match c.try_reply(REPLY_DEADLINE) {
            Ok(r) => {
                let last = r.code == 421;
                replies.push(r);
                if last {
                    break;
                }
            }
            Err(ReadError::Closed { .. }) => break,
            Err(e) => panic!("after {} bad commands: {e:?}", replies.len()),
        }
    }
    let last = replies.last().expect("no replies to bad commands");
    assert_eq!(
        last.code,
        421,
        "no 421 after {} bad commands: {replies:?}",
        replies.len()
    );
    assert!(
        last.enhanced().is_some_and(|e| e.starts_with("4.")),
        "{last:?}"
    );
    assert!(
        replies.len() as u32 <= max + 1,
        "421 only after {} bad commands, limit {max}",
        replies.len()
    );
    for r in &replies[..replies.len() - 1] {
        assert_eq!(r.code, 500, "bad command reply: {r:?}");
        assert!(r.enhanced().is_some_and(|e| e.starts_with("5.5.")), "{r:?}");
    }
    c.expect_closed(REPLY_DEADLINE);
}

#[test]
fn idle_session_times_out_with_421_and_close() {
    let server = Server::start(Opts {
        command_timeout_secs: 2,
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let started = std::time::Instant::now();
    // Say nothing: the server must end the session on its own (RFC 5321 §4.5.3.2.7).
    let r = c
        .try_reply(Duration::from_secs(2) + REPLY_DEADLINE)
        .unwrap_or_else(|e| panic!("idle session not timed out: {e:?}"));
    assert_eq!(r.code, 421, "idle timeout reply: {r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "timed out after {:?}, configured 2 s",
        started.elapsed()
    );
    c.expect_closed(REPLY_DEADLINE);
}

#[test]
fn stalled_data_times_out_and_the_partial_message_is_not_delivered() {
    let server = Server::start(Opts {
        data_timeout_secs: 2,
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: stalled\r\nX-Token: stalled\r\n\r\nhalf a message\r\n");
    match c.try_reply(Duration::from_secs(2) + REPLY_DEADLINE) {
        Ok(r) => assert_eq!(r.code, 421, "stalled DATA: {r:?}"),
        Err(ReadError::Closed { .. }) => {}
        Err(e) => panic!("stalled DATA not timed out: {e:?}"),
    }
    // A clean message afterwards; once it is delivered, the partial one would have been too.
    let (mut c2, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c2.send_mail(
        "sender@remote.test",
        &["user@example.test"],
        b"X-Token: sentinel\r\n\r\nfine\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    wait_for_maildir(
        &new_dir(&server.maildir, "user@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    assert_eq!(
        tokens_in(&server.maildir),
        ["sentinel"],
        "partial message delivered"
    );
}
