use super::*;
use crate::protocol::address::parse_mailbox;
use crate::spool::format::committed_file;
use crate::spool::tests::envelope;
use crate::spool::{read_queued, QueueIdGen};

#[test]
fn one_result_per_recipient_with_one_entry_per_mailbox() {
    let root = tempfile::tempdir().unwrap();
    let id = QueueIdGen::new(1, 0).next();
    let path = root.path().join(id.as_str());
    std::fs::write(
        &path,
        committed_file(
            &envelope(&["a@example.test"]),
            &id,
            b"Subject: x\r\n\r\nhi\r\n",
        ),
    )
    .unwrap();
    let queued = read_queued(&path).unwrap();
    let mut maildir = Maildir::open(&root.path().join("mail"), DEFAULT_FILE_MODE).unwrap();
    let rcpts = ["a@example.test", "A@example.test", "x@[192.0.2.1]"]
        .map(|a| parse_mailbox(a).unwrap())
        .to_vec();
    let results = maildir.deliver(&[MaildirJob {
        queued: &queued,
        rcpts,
        resumed: false,
    }]);
    let mailbox = root.path().join("mail/example.test/a");
    assert_eq!(
        results,
        [vec![
            RcptResult::Delivered {
                mailbox: mailbox.clone()
            },
            RcptResult::Delivered {
                mailbox: mailbox.clone()
            },
            RcptResult::Failed(TargetError::AddressLiteral("x@[192.0.2.1]".into())),
        ]]
    );
    assert_eq!(std::fs::read_dir(mailbox.join("new")).unwrap().count(), 1);
}

#[test]
fn quarantined_message_goes_to_junk_created_with_the_mailbox_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let id = QueueIdGen::new(1, 0).next();
    let path = root.path().join(id.as_str());
    let message =
        b"Received: from c.test\r\n\tby mx.example.test; Sun, 29 Nov 2026 22:00:00 +0000\r\n\
        Authentication-Results: mx.example.test;\r\n\
        \tdmarc=fail header.from=q.test policy.dmarc=quarantine policy.disposition=quarantine\r\n\
        Subject: x\r\n\r\nhi\r\n";
    std::fs::write(
        &path,
        committed_file(&envelope(&["a@example.test"]), &id, message),
    )
    .unwrap();
    let queued = read_queued(&path).unwrap();
    let mut maildir = Maildir::open(&root.path().join("mail"), 0o640).unwrap();
    let job = MaildirJob {
        queued: &queued,
        rcpts: vec![parse_mailbox("a@example.test").unwrap()],
        resumed: false,
    };
    let mailbox = root.path().join("mail/example.test/a");
    let junk = mailbox.join(".Junk");
    assert_eq!(
        maildir.deliver(std::slice::from_ref(&job)),
        [vec![RcptResult::Delivered {
            mailbox: junk.clone()
        }]]
    );
    let entries: Vec<_> = std::fs::read_dir(junk.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1);
    assert!(std::fs::read(&entries[0]).unwrap().ends_with(message));
    assert_eq!(std::fs::read_dir(mailbox.join("new")).unwrap().count(), 0);
    for dir in [
        "",
        "tmp",
        "new",
        "cur",
        ".Junk",
        ".Junk/tmp",
        ".Junk/new",
        ".Junk/cur",
    ] {
        let mode = std::fs::metadata(mailbox.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750, "{dir}");
    }
    // A second attempt finds it delivered and writes nothing more.
    let again = maildir.deliver(&[job]);
    assert!(matches!(again[0][0], RcptResult::Delivered { .. }));
    assert_eq!(std::fs::read_dir(junk.join("new")).unwrap().count(), 1);
}
