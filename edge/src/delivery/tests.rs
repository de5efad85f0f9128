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
