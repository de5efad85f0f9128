//! With a recipients file, unknown local users are refused at RCPT.

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

#[test]
fn unknown_local_user_gets_550_5_1_1_known_user_gets_mail() {
    let server = Server::start(Opts {
        recipients: Some(vec!["alice@example.test".into(), "bob@example.test".into()]),
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    let r = c.cmd("RCPT TO:<mallory@example.test>");
    assert_eq!(r.status(), "550 5.1.1", "unknown local user: {r:?}");
    let r = c.cmd("RCPT TO:<someone@other.test>");
    assert_eq!(r.status(), "550 5.7.1", "non-local recipient: {r:?}");
    let r = c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(r.code, 250, "listed user: {r:?}");
    assert_eq!(c.cmd("DATA").code, 354);
    let msg = sample_message(
        "recipients-file",
        "sender@remote.test",
        "alice@example.test",
    );
    c.send(&dot_stuff(&msg));
    let r = c.cmd(".");
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "alice@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    assert_delivered(&files[0], "sender@remote.test", "alice@example.test", &msg);
    assert!(
        !new_dir(&server.maildir, "mallory@example.test").exists(),
        "a mailbox was created for the refused user"
    );
}
