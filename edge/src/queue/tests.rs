use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::delivery::{target, Folder, DEFAULT_FILE_MODE};
use crate::protocol::address::parse_mailbox;
use crate::spool::format::committed_file;
use crate::spool::log::{self, Placed, SegmentName};
use crate::spool::tests::envelope;
use crate::spool::{self, queue_path, QueueIdGen};

const MSG: &[u8] =
    b"Received: from x\r\n\tby y; Thu, 01 Jan 1970 00:00:00 +0000\r\nSubject: t\r\n\r\nbody\r\n";
/// Generous: the machine is shared with parallel builds.
const DEADLINE: Duration = Duration::from_secs(20);

struct Fixture {
    _root: tempfile::TempDir,
    spool: PathBuf,
    maildir: PathBuf,
    ids: QueueIdGen,
    retry: RetryPolicy,
    rewrite: Arc<SharedRewriter>,
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
        retry: RetryPolicy {
            steps: vec![Duration::from_millis(50)],
            max_age: Duration::from_secs(3600),
        },
        rewrite: SharedRewriter::new(crate::rewrite::Rewriter {
            local_domains: ["example.test", "other.test"].map(String::from).into(),
            delimiter: "+".into(),
            ..Default::default()
        }),
    }
}

impl Fixture {
    fn queue_from(&mut self, from: Option<&str>, rcpts: &[&str]) -> QueueId {
        let id = self.ids.next();
        let mut env = envelope(rcpts);
        env.mail_from = from.map(|f| parse_mailbox(f).unwrap());
        fs::write(queue_path(&self.spool, &id), committed_file(&env, &id, MSG)).unwrap();
        id
    }

    fn queue(&mut self, rcpts: &[&str]) -> QueueId {
        self.queue_from(Some("sender@example.test"), rcpts)
    }

    fn start(&self) -> QueueHandle {
        self.start_with(None)
    }

    fn start_with(&self, relay: Option<(Inbox, RelayLink)>) -> QueueHandle {
        let (inbox, relay) = match relay {
            Some((inbox, link)) => (inbox, Some(link)),
            None => (Inbox::new(), None),
        };
        start(
            QueueConfig {
                spool_dir: self.spool.clone(),
                generation: 1_795_837_985_000_001,
                hostname: "mx.example.test".into(),
                local_domains: ["example.test", "other.test"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                maildir: self.maildir.clone(),
                maildir_mode: DEFAULT_FILE_MODE,
                retry: self.retry.clone(),
                rewrite: self.rewrite.clone(),
                routes: (crate::relay::Route::Maildir, crate::relay::Route::Mx),
            },
            Metrics::new(1, Vec::new()),
            inbox,
            relay,
        )
        .unwrap()
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

    fn queued_files(&self) -> usize {
        fs::read_dir(self.spool.join(spool::QUEUE_DIR))
            .unwrap()
            .count()
    }
}

fn list(q: &QueueHandle) -> Vec<MessageInfo> {
    match q.request(Request::List) {
        Answer::List(l) => l,
        other => panic!("{other:?}"),
    }
}

/// Polls `cond` until it holds; panics after [`DEADLINE`] with `what`.
fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = clock::now() + DEADLINE;
    while !cond() {
        assert!(clock::now() < end, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn expected(rcpt: &str) -> Vec<u8> {
    let mut want =
        format!("Return-Path: <sender@example.test>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    want.extend_from_slice(MSG);
    want
}

#[test]
fn two_recipients_get_exact_copies_and_the_message_leaves_the_queue() {
    let mut f = fixture();
    let q = f.start();
    let id = f.queue(&["alice@example.test", "Bob@Other.TEST"]);
    q.enqueue(id);
    wait("message delivered and removed", || {
        !queue_path(&f.spool, &id).exists()
    });
    q.shutdown();
    let alice = f.entries("example.test", "alice");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].1, expected("alice@example.test"));
    assert_eq!(
        f.entries("other.test", "bob")[0].1,
        expected("Bob@other.test")
    );
    assert!(alice[0].0.starts_with(id.as_str()) && !alice[0].0.contains(':'));
    assert_eq!(fs::read_dir(f.spool.join("state")).unwrap().count(), 0);
}

#[test]
fn duplicate_recipients_deliver_once() {
    let mut f = fixture();
    let q = f.start();
    let id = f.queue(&["a@example.test", "A@EXAMPLE.test", "\"a\"@example.test"]);
    q.enqueue(id);
    wait("delivered", || !queue_path(&f.spool, &id).exists());
    q.shutdown();
    assert_eq!(f.entries("example.test", "a").len(), 1);
}

#[test]
fn crash_resume_delivers_each_mailbox_exactly_once() {
    let mut f = fixture();
    // Queued before a "crash": for the first, one mailbox already has its entry (in new/);
    // for the second, a reader already moved and flagged it (cur/<name>:2,S).
    let first = f.queue(&["done@example.test", "todo@example.test"]);
    let second = f.queue(&["seen@example.test", "todo@example.test"]);
    for (id, local, sub, suffix) in [(first, "done", "new", ""), (second, "seen", "cur", ":2,S")] {
        let t = target(
            &f.maildir,
            &id,
            &parse_mailbox(&format!("{local}@example.test")).unwrap(),
            Folder::Inbox,
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

    let q = f.start(); // resumes without being told
    wait("backlog delivered", || f.queued_files() == 0);
    q.shutdown();
    for local in ["done", "seen"] {
        let got = f.entries("example.test", local);
        assert_eq!(got.len(), 1, "{local}: {got:?}");
        assert_eq!(got[0].1, b"earlier copy");
    }
    assert_eq!(f.entries("example.test", "todo").len(), 2);
    assert_eq!(
        fs::read_dir(f.spool.join(spool::TMP_DIR)).unwrap().count(),
        0
    );
}

#[test]
fn traversal_local_parts_stay_inside_the_maildir() {
    let mut f = fixture();
    let q = f.start();
    let id = f.queue(&[
        "\"../../etc\"@example.test",
        "a/b@example.test",
        "\"..\"@example.test",
    ]);
    q.enqueue(id);
    wait("delivered", || !queue_path(&f.spool, &id).exists());
    q.shutdown();
    let mut names: Vec<_> = fs::read_dir(f.maildir.join("example.test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["%2E.", "%2E.%2F..%2Fetc", "a%2Fb"]);
    assert_eq!(fs::read_dir(&f.maildir).unwrap().count(), 1);
}

#[test]
fn a_corrupt_message_stays_queued_and_others_go_on() {
    let mut f = fixture();
    let q = f.start();
    let corrupt = f.ids.next();
    let mut bytes = committed_file(&envelope(&["a@example.test"]), &corrupt, MSG);
    bytes.truncate(bytes.len() - 3);
    fs::write(queue_path(&f.spool, &corrupt), bytes).unwrap();
    let good = f.queue(&["ok@example.test"]);
    q.enqueue(corrupt);
    q.enqueue(good);
    wait("good one delivered", || {
        !queue_path(&f.spool, &good).exists()
    });
    q.shutdown();
    assert!(queue_path(&f.spool, &corrupt).exists());
    assert_eq!(f.entries("example.test", "ok").len(), 1);
}

#[test]
fn a_maildir_failure_defers_and_the_timer_retries_without_new_traffic() {
    let mut f = fixture();
    // A file where the domain's directory should be: every mailbox under it fails.
    fs::create_dir_all(&f.maildir).unwrap();
    fs::write(f.maildir.join("other.test"), b"in the way").unwrap();
    let q = f.start();
    let id = f.queue(&["a@other.test", "b@example.test"]);
    q.enqueue(id);
    wait("deferred, with its reason", || {
        list(&q).iter().any(|m| {
            m.state == "deferred"
                && m.recipients.iter().any(|r| {
                    r.address == "a@other.test"
                        && r.state == State::Deferred
                        && r.last_reply
                            .as_deref()
                            .is_some_and(|l| l.starts_with("451 4.3.0") && l.contains("other.test"))
                })
                && m.recipients
                    .iter()
                    .any(|r| r.address == "b@example.test" && r.state == State::Delivered)
        })
    });
    // The record is durable: a restart would know b is delivered.
    let record = Store::open(&f.spool, 7)
        .unwrap()
        .0
        .record(&id)
        .unwrap()
        .unwrap();
    assert_eq!(record.recipients[1].state, State::Delivered);
    // The operator fixes it; the retry delivers with nobody sending anything.
    fs::remove_file(f.maildir.join("other.test")).unwrap();
    wait("delivered on retry", || !queue_path(&f.spool, &id).exists());
    q.shutdown();
    assert_eq!(f.entries("other.test", "a").len(), 1);
    assert_eq!(f.entries("example.test", "b").len(), 1, "b delivered once");
}

#[test]
fn a_recipient_that_can_never_be_delivered_fails_with_one_notice_to_the_sender() {
    let mut f = fixture();
    let q = f.start();
    let id = f.queue_from(
        Some("alice@example.test"),
        &["\"\"@example.test", "bob@example.test"],
    );
    q.enqueue(id);
    wait("notice delivered", || {
        f.entries("example.test", "alice").len() == 1 && f.queued_files() == 0
    });
    q.shutdown();
    let notice = String::from_utf8(f.entries("example.test", "alice")[0].1.clone()).unwrap();
    for want in [
        "Return-Path: <>\r\n",
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>",
        "report-type=delivery-status",
        "Final-Recipient: rfc822; \"\"@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
        "Subject: t\r\n",
    ] {
        assert!(notice.contains(want), "missing {want:?}:\n{notice}");
    }
    assert!(!notice.contains("bob@example.test"), "bob was delivered");
    assert_eq!(f.entries("example.test", "bob").len(), 1);
}

#[test]
fn the_null_sender_gets_no_notice_and_too_old_recipients_fail() {
    let mut f = fixture();
    f.retry = RetryPolicy {
        steps: vec![Duration::from_millis(20)],
        max_age: Duration::from_millis(200),
    };
    let q = f.start();
    // Remote recipients wait (no route) until they are too old, then fail.
    let from_null = f.queue_from(None, &["far@remote.test"]);
    let from_alice = f.queue_from(Some("alice@example.test"), &["far@remote.test"]);
    q.enqueue(from_null);
    q.enqueue(from_alice);
    wait("both gone, alice notified", || {
        f.queued_files() == 0 && f.entries("example.test", "alice").len() == 1
    });
    q.shutdown();
    let notice = String::from_utf8(f.entries("example.test", "alice")[0].1.clone()).unwrap();
    assert!(notice.contains("Status: 4.4.0"), "{notice}");
    assert!(notice.contains("relay.max_age_secs"), "{notice}");
    // One notice in the whole Maildir: none for the null sender, none for the notice itself.
    let all: usize = fs::read_dir(f.maildir.join("example.test"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(all, 1);
}

#[test]
fn remote_recipients_left_in_outbound_are_taken_into_the_queue() {
    let mut f = fixture();
    let id = f.ids.next();
    let outbound = f.spool.join("outbound");
    fs::create_dir_all(&outbound).unwrap();
    fs::write(
        outbound.join(id.as_str()),
        committed_file(&envelope(&["far@remote.test"]), &id, MSG),
    )
    .unwrap();
    let q = f.start();
    wait("attempted and deferred", || {
        list(&q)
            .iter()
            .any(|m| m.id == id.as_str() && m.state == "deferred")
    });
    q.shutdown();
    assert!(!outbound.exists());
    assert!(queue_path(&f.spool, &id).exists());
}

#[test]
fn operator_requests_show_flush_delete_and_bounce() {
    let mut f = fixture();
    f.retry.steps = vec![Duration::from_secs(3600)];
    let q = f.start();
    let ids: Vec<QueueId> = (0..3)
        .map(|_| f.queue_from(Some("alice@example.test"), &["far@remote.test"]))
        .collect();
    ids.iter().for_each(|id| q.enqueue(*id));
    wait("all deferred", || {
        let l = list(&q);
        l.len() == 3 && l.iter().all(|m| m.state == "deferred")
    });
    let Answer::Show(info) = q.request(Request::Show(ids[0])) else {
        panic!("show")
    };
    assert_eq!(
        (info.from.as_str(), info.recipients[0].attempts),
        ("alice@example.test", 1)
    );
    // flush: attempted again at once although the next attempt is an hour away.
    assert_eq!(q.request(Request::Flush(Some(ids[0]))), Answer::Done(1));
    wait(
        "second attempt",
        || matches!(q.request(Request::Show(ids[0])), Answer::Show(i) if i.recipients[0].attempts == 2),
    );
    assert_eq!(q.request(Request::Delete(ids[1])), Answer::Done(1));
    assert!(!queue_path(&f.spool, &ids[1]).exists());
    assert!(matches!(
        q.request(Request::Delete(ids[1])),
        Answer::Error(_)
    ));
    assert_eq!(q.request(Request::Bounce(ids[2])), Answer::Done(1));
    wait("bounce notice delivered", || {
        f.entries("example.test", "alice").len() == 1
    });
    let left: Vec<String> = list(&q).into_iter().map(|m| m.id).collect();
    assert_eq!(left, [ids[0].to_string()]);
    q.shutdown();
    let notice = String::from_utf8(f.entries("example.test", "alice")[0].1.clone()).unwrap();
    assert!(notice.contains("returned by the operator"), "{notice}");
}

/// Writes messages for `rcpts` into a new log segment `seq` of worker 0, as a worker's flusher
/// would (one write, one sync); returns where each is.
fn log_messages(f: &mut Fixture, seq: u32, count: usize) -> (SegmentName, Vec<(QueueId, Placed)>) {
    let name = SegmentName {
        generation: 1,
        owner: 0,
        seq,
    };
    let mut segment = log::Segment::create(&f.spool, name).unwrap();
    let mut batch = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..count {
        let id = f.ids.next();
        starts.push((id, batch.len() as u64));
        let file = committed_file(&envelope(&["alice@example.test"]), &id, MSG);
        log::record::encode(&mut batch, log::Kind::Message, &id, &file);
    }
    let at = segment.append(&batch).unwrap();
    segment.sync().unwrap();
    let placed = starts
        .into_iter()
        .map(|(id, start)| {
            let p = Placed {
                segment: name,
                offset: at + start,
            };
            (id, p)
        })
        .collect();
    (name, placed)
}

#[test]
fn logged_messages_are_delivered_and_their_segment_goes_once_sealed_and_done() {
    let mut f = fixture();
    // The queue starts first (it recovers the log), then a worker writes.
    let q = f.start();
    let (name, placed) = log_messages(&mut f, 0, 3);
    let path = log::segment_path(&f.spool, &name);
    for (id, p) in &placed {
        q.enqueue_logged(*id, *p);
    }
    wait("three delivered", || {
        f.entries("example.test", "alice").len() == 3
    });
    for (i, (name, body)) in f.entries("example.test", "alice").iter().enumerate() {
        assert!(
            placed.iter().any(|(id, _)| name.starts_with(id.as_str())),
            "{i}: {name}"
        );
        assert_eq!(body, &expected("alice@example.test"));
    }
    // Done, but the worker may still write to it: it stays until sealed.
    assert!(path.exists());
    q.sealed(name, 3);
    wait("segment reclaimed", || !path.exists());
    q.shutdown();
    // A restart finds nothing to do: the done marks were synced.
    let (_, backlog) = Store::open(&f.spool, 8).unwrap();
    assert_eq!(backlog, vec![]);
}

#[test]
fn a_restart_copies_forward_what_is_not_done_and_drops_the_old_segments() {
    let mut f = fixture();
    let (_, placed) = log_messages(&mut f, 0, 2);
    let (done, live) = (placed[0].0, placed[1].0);
    // A done mark for the first, in the queue's own segment of that run.
    let mut own = log::Segment::create(
        &f.spool,
        SegmentName {
            generation: 1,
            owner: u16::MAX,
            seq: 0,
        },
    )
    .unwrap();
    let mut mark = Vec::new();
    log::record::encode(&mut mark, log::Kind::Done, &done, &[]);
    own.append(&mark).unwrap();
    own.sync().unwrap();
    drop(own);

    let (mut store, backlog) = Store::open(&f.spool, 2).unwrap();
    assert_eq!(backlog, vec![live]);
    assert!(!store.contains(&done));
    assert_eq!(store.message(&live).unwrap().message(), MSG);
    let left = log::list(&f.spool).unwrap();
    assert_eq!(left.len(), 1, "only the copy: {left:?}");
    assert_eq!((left[0].generation, left[0].owner), (2, u16::MAX));
    drop(store);
    // And again: the copy is recovered like any segment.
    let (mut store, backlog) = Store::open(&f.spool, 3).unwrap();
    assert_eq!(backlog, vec![live]);
    let queued = store.message(&live).unwrap();
    let content = store.content(&queued);
    let bytes = fs::read(&content.path).unwrap();
    let at = content.offset as usize;
    assert_eq!(
        &bytes[at..at + content.len as usize],
        MSG,
        "the relay reads the message from the log"
    );
}

#[test]
fn done_marks_written_in_a_pass_survive_the_process_before_their_sync() {
    let mut f = fixture();
    let (_, placed) = log_messages(&mut f, 0, 2);
    let (mut store, backlog) = Store::open(&f.spool, 2).unwrap();
    assert_eq!(backlog.len(), 2);
    // The mark is written at once; its sync is not due yet.
    store.remove(&placed[0].0).unwrap();
    assert!(store.unsynced_for(clock::now()).is_some());
    // The process dies here: what was written is in the file, synced or not.
    drop(store);
    let (mut store, backlog) = Store::open(&f.spool, 3).unwrap();
    assert_eq!(backlog, vec![placed[1].0], "the done message came back");
    store.flush().unwrap();
    assert_eq!(store.unsynced_for(clock::now()), None);
}

#[test]
fn a_restart_knows_which_messages_have_a_record_and_removes_it_with_the_message() {
    let mut f = fixture();
    let (_, placed) = log_messages(&mut f, 0, 2);
    let (with, without) = (placed[0].0, placed[1].0);
    let (mut store, _) = Store::open(&f.spool, 2).unwrap();
    let mut record = Record {
        arrival_ms: 1,
        recipients: vec![Recipient::pending("alice@example.test".into(), None)],
    };
    record.recipients[0].attempts = 1;
    store.save(&[(with, &record)]).unwrap();
    drop(store);
    let (mut store, _) = Store::open(&f.spool, 3).unwrap();
    assert_eq!(store.record(&with).unwrap(), Some(record));
    assert_eq!(store.record(&without).unwrap(), None);
    let state = f.spool.join("state").join(with.as_str());
    assert!(state.exists());
    store.remove(&with).unwrap();
    assert!(!state.exists(), "the record goes with its message");
}

#[test]
fn attempts_for_a_relay_that_has_stopped_are_deferred_and_kept() {
    let mut f = fixture();
    let inbox = Inbox::new();
    let relay = crate::relay::Relay::start(
        Arc::new(crate::relay::RelayConfig::new("mx.example.test")),
        inbox.reports(),
    )
    .unwrap();
    relay.shutdown(Duration::ZERO);
    let link = RelayLink {
        handle: relay,
        grace: Duration::ZERO,
    };
    let id = f.queue(&["bob@remote.test"]);
    let q = f.start_with(Some((inbox, link)));
    q.enqueue(id);
    wait("deferred", || {
        list(&q).iter().any(|m| {
            m.id == id.as_str()
                && m.recipients.iter().any(|r| {
                    r.state == State::Deferred
                        && r.last_reply.as_deref() == Some("451 4.3.0 the relay has stopped")
                })
        })
    });
    q.shutdown();
    assert_eq!(f.queued_files(), 1, "still queued");
}

/// Writes one message from `from` to `rcpts` into log segment `seq` of worker 0, as a worker
/// would; returns its id, where it is, and the shape the worker would describe it by.
fn log_one(f: &mut Fixture, seq: u32, from: &str, rcpts: &[&str]) -> (QueueId, Placed, Shape) {
    let name = SegmentName {
        generation: 1,
        owner: 0,
        seq,
    };
    let mut segment = log::Segment::create(&f.spool, name).unwrap();
    let id = f.ids.next();
    let mut env = envelope(rcpts);
    env.mail_from = Some(parse_mailbox(from).unwrap());
    let file = committed_file(&env, &id, MSG);
    let mut record = Vec::new();
    log::record::encode(&mut record, log::Kind::Message, &id, &file);
    let at = segment.append(&record).unwrap();
    segment.sync().unwrap();
    let shape = Shape {
        message_offset: (file.len() - MSG.len()) as u64,
        len: MSG.len() as u64,
        eight_bit: false,
    };
    let placed = Placed {
        segment: name,
        offset: at,
    };
    (id, placed, shape)
}

#[test]
fn a_message_described_by_its_worker_is_read_for_maildir_and_for_its_notice() {
    let mut f = fixture();
    let q = f.start();
    let from = "alice@example.test";
    let rcpts = ["\"\"@example.test", "bob@example.test"];
    let (id, placed, shape) = log_one(&mut f, 0, from, &rcpts);
    let mut env = envelope(&rcpts);
    env.mail_from = Some(parse_mailbox(from).unwrap());
    q.enqueue_described(id, placed, env, shape);
    wait("bob's copy and the notice", || {
        f.entries("example.test", "bob").len() == 1 && f.entries("example.test", "alice").len() == 1
    });
    q.shutdown();
    // Maildir got the message itself, read from the log, not an empty one.
    let mut want =
        format!("Return-Path: <{from}>\r\nDelivered-To: bob@example.test\r\n").into_bytes();
    want.extend_from_slice(MSG);
    assert_eq!(f.entries("example.test", "bob")[0].1, want);
    // The notice quotes the message's header.
    let notice = String::from_utf8(f.entries("example.test", "alice")[0].1.clone()).unwrap();
    assert!(notice.contains("Subject: t\r\n"), "{notice}");
}

#[test]
fn a_message_marked_done_stays_done_if_the_process_dies_before_the_pass_ends() {
    let mut f = fixture();
    let (_, placed) = log_messages(&mut f, 0, 2);
    let (mut store, _) = Store::open(&f.spool, 2).unwrap();
    // Its last recipient is delivered (a next hop said 250): the scheduler removes it, then
    // goes on with the rest of its pass (other results, a round of Maildir deliveries and
    // records, each with its syncs) before the pass ends. The process dies in between.
    store.remove(&placed[0].0).unwrap();
    drop(store);
    let (_, backlog) = Store::open(&f.spool, 3).unwrap();
    assert_eq!(
        backlog,
        vec![placed[1].0],
        "the delivered message came back, to be sent a second time"
    );
}
