use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::*;
use crate::spool::format::committed_file;
use crate::spool::tests::envelope;
use crate::spool::QueueIdGen;

const MSG: &[u8] =
    b"Received: from x\r\n\tby y; Thu, 01 Jan 1970 00:00:00 +0000\r\nSubject: t\r\n\r\nbody\r\n";

struct Fixture {
    _root: tempfile::TempDir,
    spool: PathBuf,
    maildir: PathBuf,
    ids: QueueIdGen,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let (spool, maildir) = (root.path().join("spool"), root.path().join("mail"));
    spool::prepare(&spool).unwrap();
    Fixture {
        _root: root,
        spool,
        maildir,
        ids: QueueIdGen::new(1_795_837_985_000_000, 0),
    }
}

impl Fixture {
    fn queue(&mut self, rcpts: &[&str]) -> QueueId {
        let id = self.ids.next();
        fs::write(
            queue_path(&self.spool, &id),
            committed_file(&envelope(rcpts), &id, MSG),
        )
        .unwrap();
        id
    }

    fn start(&self) -> (DeliveryHandle, Receiver<DeliveryOutcome>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let cfg = DeliveryConfig {
            spool_dir: self.spool.clone(),
            maildir: self.maildir.clone(),
            hostname: "mx.test".into(),
            local_domains: ["example.test", "other.test", "blocked.test"]
                .into_iter()
                .map(String::from)
                .collect(),
            first_retry: Duration::from_millis(20),
            file_mode: DEFAULT_FILE_MODE,
        };
        let handle = start(
            cfg,
            Box::new(move |o| {
                let _ = tx.lock().unwrap().send(o);
            }),
        )
        .unwrap();
        (handle, rx)
    }

    /// Every file under `<maildir>/<domain>/<local>/{new,cur}`.
    fn entries(&self, domain: &str, local: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.maildir.join(domain).join(local).join(sub);
            for e in fs::read_dir(dir).into_iter().flatten() {
                let e = e.unwrap();
                out.push((
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                ));
            }
        }
        out
    }
}

fn next(rx: &Receiver<DeliveryOutcome>) -> DeliveryOutcome {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no outcome within 10s")
}

fn expected(rcpt: &str) -> Vec<u8> {
    let mut want =
        format!("Return-Path: <sender@example.test>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    want.extend_from_slice(MSG);
    want
}

#[test]
fn two_recipients_get_exact_copies() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let id = f.queue(&["alice@example.test", "Bob@Other.TEST"]);
    handle.enqueue(id);
    assert_eq!(next(&rx), DeliveryOutcome::Delivered { id, recipients: 2 });
    let alice = f.entries("example.test", "alice");
    let bob = f.entries("other.test", "bob");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].1, expected("alice@example.test"));
    assert_eq!(bob[0].1, expected("Bob@other.test"));
    assert!(alice[0].0.starts_with(id.as_str()) && !alice[0].0.contains(':'));
    assert!(!queue_path(&f.spool, &id).exists());
    assert_eq!(
        fs::read_dir(f.maildir.join("example.test/alice/tmp"))
            .unwrap()
            .count(),
        0
    );
    handle.shutdown();
}

#[test]
fn duplicate_recipients_deliver_once() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let id = f.queue(&["a@example.test", "A@EXAMPLE.test", "\"a\"@example.test"]);
    handle.enqueue(id);
    assert_eq!(next(&rx), DeliveryOutcome::Delivered { id, recipients: 1 });
    assert_eq!(f.entries("example.test", "a").len(), 1);
    handle.shutdown();
}

#[test]
fn crash_resume_delivers_each_mailbox_exactly_once() {
    let mut f = fixture();
    // Two messages queued before a "crash": for the first, one mailbox already has its entry
    // (in new/); for the second, a reader already moved and flagged it (cur/<name>:2,S).
    let first = f.queue(&["done@example.test", "todo@example.test"]);
    let second = f.queue(&["seen@example.test", "todo@example.test"]);
    for (id, local, sub, suffix) in [(first, "done", "new", ""), (second, "seen", "cur", ":2,S")] {
        let t = target(
            &f.maildir,
            &id,
            &crate::protocol::address::parse_mailbox(&format!("{local}@example.test")).unwrap(),
        )
        .unwrap();
        fs::create_dir_all(t.dir.join(sub)).unwrap();
        fs::write(
            t.dir.join(sub).join(format!("{}{suffix}", t.name)),
            b"earlier copy",
        )
        .unwrap();
    }
    // A leftover tmp/ file of the spool is a message that never got its 250.
    fs::write(spool::tmp_path(&f.spool, &f.ids.next()), b"half").unwrap();

    let (handle, rx) = f.start();
    assert_eq!(
        next(&rx),
        DeliveryOutcome::Delivered {
            id: first,
            recipients: 2
        }
    );
    assert_eq!(
        next(&rx),
        DeliveryOutcome::Delivered {
            id: second,
            recipients: 2
        }
    );
    handle.shutdown();
    for local in ["done", "seen"] {
        let got = f.entries("example.test", local);
        assert_eq!(got.len(), 1, "{local}: {got:?}");
        assert_eq!(got[0].1, b"earlier copy");
    }
    assert_eq!(f.entries("example.test", "todo").len(), 2);
    assert_eq!(
        fs::read_dir(f.spool.join(spool::QUEUE_DIR))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(f.spool.join(spool::TMP_DIR)).unwrap().count(),
        0
    );
}

#[test]
fn traversal_local_parts_stay_inside_the_maildir() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let id = f.queue(&[
        "\"../../etc\"@example.test",
        "a/b@example.test",
        "\"..\"@example.test",
    ]);
    handle.enqueue(id);
    assert_eq!(next(&rx), DeliveryOutcome::Delivered { id, recipients: 3 });
    handle.shutdown();
    let mut names: Vec<_> = fs::read_dir(f.maildir.join("example.test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["%2E.", "%2E.%2F..%2Fetc", "a%2Fb"]);
    // Nothing escaped: the maildir root holds only the domain, its parent only spool and mail.
    assert_eq!(fs::read_dir(&f.maildir).unwrap().count(), 1);
    assert_eq!(
        fs::read_dir(f.maildir.parent().unwrap()).unwrap().count(),
        2
    );
}

#[test]
fn corrupt_messages_fail_and_stay_queued() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let corrupt = f.ids.next();
    let mut bytes = committed_file(&envelope(&["a@example.test"]), &corrupt, MSG);
    bytes.truncate(bytes.len() - 3);
    fs::write(queue_path(&f.spool, &corrupt), bytes).unwrap();
    let good = f.queue(&["ok@example.test"]);
    for id in [corrupt, good] {
        handle.enqueue(id);
    }
    let mut outcomes: Vec<_> = (0..2).map(|_| next(&rx)).collect();
    outcomes.sort_by_key(|o| match o {
        DeliveryOutcome::Delivered { id, .. } | DeliveryOutcome::Failed { id, .. } => *id,
    });
    match &outcomes[..] {
        [DeliveryOutcome::Failed { id: a, error: ea }, DeliveryOutcome::Delivered {
            id: c,
            recipients: 1,
        }] => {
            assert_eq!((*a, *c), (corrupt, good));
            assert!(
                ea.contains("decode") && ea.contains(corrupt.as_str()),
                "{ea}"
            );
        }
        other => panic!("{other:?}"),
    }
    handle.shutdown();
    assert!(queue_path(&f.spool, &corrupt).exists());
    assert_eq!(f.entries("example.test", "ok").len(), 1);
}

#[test]
fn remote_recipients_go_to_the_outbound_queue_with_their_envelope() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let id = f.queue(&["ok@example.test", "far@remote.test", "lit@[192.0.2.1]"]);
    handle.enqueue(id);
    match next(&rx) {
        DeliveryOutcome::Delivered { id: d, recipients } => {
            assert_eq!((d, recipients), (id, 3));
        }
        other => panic!("{other:?}"),
    }
    handle.shutdown();
    // The local recipient has its Maildir entry; the spool copy is gone.
    assert_eq!(f.entries("example.test", "ok").len(), 1);
    assert!(!queue_path(&f.spool, &id).exists());
    // The outbound copy holds the remote recipients only, and the message byte for byte.
    let out = spool::read_queued(&f.spool.join(spool::OUTBOUND_DIR).join(id.as_str())).unwrap();
    let rcpts: Vec<String> = out.envelope.rcpt_to.iter().map(|m| m.to_string()).collect();
    assert_eq!(rcpts, ["far@remote.test", "lit@[192.0.2.1]"]);
    assert_eq!(
        out.envelope
            .mail_from
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some("sender@example.test")
    );
    assert_eq!(out.message(), MSG);
}

#[test]
fn failed_delivery_is_not_retried_until_the_next_start() {
    let mut f = fixture();
    let id = f.queue(&["a@blocked.test"]);
    // A file where the domain directory belongs: mkdir fails with ENOTDIR, even for root.
    fs::create_dir_all(&f.maildir).unwrap();
    fs::write(f.maildir.join("blocked.test"), b"in the way").unwrap();
    let (handle, rx) = f.start();
    match next(&rx) {
        DeliveryOutcome::Failed { id: got, error } => {
            assert_eq!(got, id);
            assert!(error.contains("blocked.test"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    handle.shutdown(); // joins: every outcome of this run has been sent
    assert_eq!(rx.try_iter().count(), 0, "retried in the same run");
    assert!(queue_path(&f.spool, &id).exists());
    fs::remove_file(f.maildir.join("blocked.test")).unwrap();
    let (handle, rx) = f.start();
    assert_eq!(next(&rx), DeliveryOutcome::Delivered { id, recipients: 1 });
    handle.shutdown();
    assert_eq!(f.entries("blocked.test", "a").len(), 1);
}

#[test]
fn dropping_the_last_handle_finishes_queued_work() {
    let mut f = fixture();
    let (handle, rx) = f.start();
    let ids: Vec<_> = (0..20).map(|_| f.queue(&["a@example.test"])).collect();
    let clone = handle.clone();
    for id in &ids {
        clone.enqueue(*id);
    }
    drop(clone);
    drop(handle); // joins
    let delivered: Vec<_> = rx.try_iter().collect();
    assert_eq!(delivered.len(), ids.len());
    assert_eq!(f.entries("example.test", "a").len(), ids.len());
}

#[test]
fn a_failed_delivery_is_retried_without_a_restart() {
    let mut f = fixture();
    // A file where the domain's directory should be: every mailbox under it fails.
    fs::create_dir_all(&f.maildir).unwrap();
    fs::write(f.maildir.join("example.test"), b"in the way").unwrap();
    let (handle, rx) = f.start();
    let id = f.queue(&["a@example.test"]);
    handle.enqueue(id);
    assert!(matches!(next(&rx), DeliveryOutcome::Failed { id: i, .. } if i == id));
    // The operator fixes it; the retry (20 ms, doubling) delivers without anyone restarting.
    fs::remove_file(f.maildir.join("example.test")).unwrap();
    loop {
        match next(&rx) {
            DeliveryOutcome::Delivered { id: i, .. } if i == id => break,
            DeliveryOutcome::Failed { id: i, .. } if i == id => continue,
            other => panic!("{other:?}"),
        }
    }
    handle.shutdown();
    assert_eq!(f.entries("example.test", "a").len(), 1);
    assert!(!queue_path(&f.spool, &id).exists());
}
