//! Shutdown on SIGTERM/SIGINT: idle sessions get 421, a session in DATA may finish, exit 0, and
//! no acknowledged message is lost.

use std::time::Duration;

use crate::harness::{
    maildir_files, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::{assert_delivered, new_dir, sample_message, tokens_in};
use crate::session::{dot_stuff, ReadError, SmtpConn};

const GRACE: u64 = 5;
/// The process must be gone within the grace period plus this much.
const EXIT_SLACK: Duration = Duration::from_secs(10);

fn shutdown_with_idle_session(sig: libc::c_int) {
    let mut server = Server::start(Opts {
        grace_secs: GRACE,
        ..Opts::default()
    });
    let (mut idle, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(idle.cmd("NOOP").code, 250);
    server.signal(sig);
    let r = idle
        .try_reply(Duration::from_secs(GRACE) + REPLY_DEADLINE)
        .unwrap_or_else(|e| panic!("idle session got no 421 after signal {sig}: {e:?}"));
    assert_eq!(r.code, 421, "idle session on signal {sig}: {r:?}");
    assert!(r.enhanced().is_some_and(|e| e.starts_with("4.")), "{r:?}");
    idle.expect_closed(REPLY_DEADLINE);
    let status = server.wait(Duration::from_secs(GRACE) + EXIT_SLACK);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after signal {sig}: {status:?}"
    );
}

#[test]
fn sigterm_sends_421_to_idle_session_and_exits_0() {
    shutdown_with_idle_session(libc::SIGTERM);
}

#[test]
fn sigint_sends_421_to_idle_session_and_exits_0() {
    shutdown_with_idle_session(libc::SIGINT);
}

#[test]
fn sigterm_lets_a_session_in_data_finish_and_keeps_its_message() {
    let mut server = Server::start(Opts {
        grace_secs: GRACE,
        ..Opts::default()
    });
    let rcpt = "user@example.test";
    let msg = sample_message("finish-during-shutdown", "sender@remote.test", rcpt);
    let wire = dot_stuff(&msg);
    let (mut idle, _) = SmtpConn::connect_ehlo(server.delivery());
    let (mut busy, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(busy.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(busy.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(busy.cmd("DATA").code, 354);
    let (head, tail) = wire.split_at(wire.len() / 2);
    busy.send(head);

    server.signal(libc::SIGTERM);
    // The idle session's 421 proves the server is shutting down before the body is finished.
    let r = idle.reply();
    assert_eq!(r.code, 421, "idle session during shutdown: {r:?}");

    busy.send(tail);
    busy.send(b".\r\n");
    let end = busy.reply();
    assert!(
        end.code == 250 || end.code == 421,
        "end of data during shutdown: want 250 (finished) or 421, got {end:?}"
    );
    // After the transaction the session is closed, with or without a 421.
    match busy.try_reply(Duration::from_secs(GRACE) + REPLY_DEADLINE) {
        Ok(r) => assert_eq!(r.code, 421, "after end of data during shutdown: {r:?}"),
        Err(ReadError::Closed { .. }) => {}
        Err(e) => panic!("session not closed during shutdown: {e:?}"),
    }
    let status = server.wait(Duration::from_secs(GRACE) + EXIT_SLACK);
    assert_eq!(status.code(), Some(0), "exit status: {status:?}");

    eprintln!("shutdown during DATA: end-of-data reply {end:?}");
    let mailbox = new_dir(&server.maildir, rcpt);
    if end.code == 250 {
        // Acknowledged, so it must be delivered: now, or from the spool after a restart.
        if maildir_files(&mailbox).is_empty() {
            server.restart();
        }
        let files = wait_for_maildir(&mailbox, 1, DELIVERY_DEADLINE);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_delivered(&files[0], "sender@remote.test", rcpt, &msg);
    } else {
        server.restart();
        let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
        let r = c.send_mail(
            "sender@remote.test",
            &[rcpt],
            b"X-Token: sentinel\r\n\r\nx\r\n",
        );
        assert_eq!(r.code, 250);
        wait_for_maildir(&mailbox, 1, DELIVERY_DEADLINE);
        let tokens = tokens_in(&server.maildir);
        assert_eq!(
            tokens,
            ["sentinel"],
            "a message refused with 421 was delivered"
        );
    }
}
