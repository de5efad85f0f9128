//! A log that cannot be written (stderr on a full disk, here `/dev/full`, where every write fails
//! with ENOSPC) costs the log lines, never the mail: the server starts, answers, spools and
//! delivers as usual. A log write that fails must not take down the thread that logged (the
//! start-up, a session, the queue's scheduler), since the spool and the log often share a disk
//! and a disk that fills up is when the server must keep its promises.

use std::path::PathBuf;

use crate::harness::{wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

#[test]
fn a_log_on_a_full_disk_loses_log_lines_not_mail() {
    // `RUST_LOG` is not set: the default level, `info`, logs every session and delivery.
    let server = Server::start(Opts {
        stderr_to: Some(PathBuf::from("/dev/full")),
        ..Opts::default()
    });
    let rcpt = "user@example.test";
    let mut sent = Vec::new();
    // One session per message: each ends with a log line, and each delivery logs one too.
    for i in 0..3 {
        let msg = sample_message(&format!("log-full-{i}"), "sender@remote.test", rcpt);
        let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
        let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&msg));
        assert_eq!(
            r.code, 250,
            "message {i} with the log on a full disk: {r:?}"
        );
        assert_eq!(c.cmd("QUIT").code, 221, "QUIT after message {i}");
        sent.push(msg);
    }
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 3, DELIVERY_DEADLINE);
    assert_eq!(
        files.len(),
        3,
        "every accepted message is delivered: {files:?}"
    );
    for msg in &sent {
        let tag = crate::maildir::header_value(msg, "X-Token").expect("token");
        let file = files
            .iter()
            .find(|f| {
                std::fs::read(f).is_ok_and(|b| b.windows(tag.len()).any(|w| w == tag.as_bytes()))
            })
            .unwrap_or_else(|| panic!("{tag} not in Maildir: {files:?}"));
        assert_delivered(file, "sender@remote.test", rcpt, msg);
    }
    // And the queue lets go of them: nothing left to deliver.
    let queue = server.dir.path().join("spool/queue");
    let empty = wait_until(DELIVERY_DEADLINE, || {
        (std::fs::read_dir(&queue).ok()?.count() == 0).then_some(())
    });
    assert!(empty.is_some(), "{} still holds messages", queue.display());
}
