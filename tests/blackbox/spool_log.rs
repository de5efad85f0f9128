//! The spool log after a crash that damaged it: a torn tail loses no acknowledged message, a
//! record whose checksum fails is skipped with a log line, never delivered corrupted, and a
//! header with one flipped bit is repaired: it costs no message.
//!
//! Each test queues messages that cannot be delivered yet (the domain's Maildir directory is
//! blocked by a file, so every attempt is deferred), kills the server, damages the segment as
//! a crash or a bad disk would, unblocks the Maildir and restarts: what the restarted server
//! delivers shows what its recovery read.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use smtp_edge::spool::log::record::{encode, Kind};
use smtp_edge::spool::QueueId;

use crate::harness::{
    log_records, log_segments, wait_for_maildir, LogRecord, Opts, Server, DELIVERY_DEADLINE,
    LOG_HEADER_LEN,
};
use crate::maildir::{new_dir, sample_message, tokens_in};
use crate::session::{dot_stuff, SmtpConn};

const RCPT: &str = "user@example.test";
const FROM: &str = "sender@remote.test";
const MESSAGES: usize = 6;

/// A server whose deliveries to `example.test` are deferred (its Maildir directory is a file)
/// and retried every second, holding `MESSAGES` acknowledged messages; returns it killed, with
/// the tokens of the messages and the file that blocks delivery.
fn killed_with_queued_mail() -> (Server, Vec<String>, PathBuf) {
    let mut server = Server::start(Opts {
        workers: 1,
        relay: vec!["retry_secs = [1]".into()],
        ..Opts::default()
    });
    let blocker = server.maildir.join("example.test");
    fs::write(&blocker, b"not a directory").unwrap();
    let mut tokens = Vec::new();
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    for i in 0..MESSAGES {
        let token = format!("logged-{i:02}");
        let r = c.send_mail(
            FROM,
            &[RCPT],
            &dot_stuff(&sample_message(&token, FROM, RCPT)),
        );
        assert_eq!(r.code, 250, "{token}: {r:?}");
        tokens.push(token);
    }
    server.wait_for_log("status=deferred", MESSAGES, DELIVERY_DEADLINE);
    server.sigkill();
    (server, tokens, blocker)
}

/// The worker segment and its message records.
fn worker_segment(server: &Server) -> (PathBuf, Vec<LogRecord>) {
    let spool = server.dir.path().join("spool");
    let mut found = Vec::new();
    for segment in log_segments(&spool) {
        let messages: Vec<LogRecord> = log_records(&segment)
            .into_iter()
            .filter(|r| r.kind == 1)
            .collect();
        if !messages.is_empty() {
            found.push((segment, messages));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one worker, one segment: {:?}",
        found.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    found.remove(0)
}

/// Unblocks the Maildir, restarts, waits until `want` messages are in, then sends a sentinel
/// and waits for it (by then recovery has had every chance to deliver more); returns how often
/// each token was delivered.
fn restart_and_count(
    server: &mut Server,
    blocker: &PathBuf,
    want: usize,
) -> BTreeMap<String, usize> {
    fs::remove_file(blocker).unwrap();
    server.restart();
    wait_for_maildir(&new_dir(&server.maildir, RCPT), want, DELIVERY_DEADLINE);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let sentinel = sample_message("sentinel", FROM, "sentinel@example.test");
    let r = c.send_mail(FROM, &["sentinel@example.test"], &dot_stuff(&sentinel));
    assert_eq!(r.code, 250, "sentinel: {r:?}");
    wait_for_maildir(
        &new_dir(&server.maildir, "sentinel@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    let mut counts = BTreeMap::new();
    for t in tokens_in(&server.maildir) {
        *counts.entry(t).or_default() += 1;
    }
    counts
}

#[test]
fn a_torn_record_after_a_kill_loses_no_acknowledged_message() {
    let (mut server, tokens, blocker) = killed_with_queued_mail();
    let (segment, records) = worker_segment(&server);
    let last = records.last().unwrap();
    let end = last.offset + LOG_HEADER_LEN + last.payload.len();
    // A message the crash interrupted: a whole record of a new id (the last message's bytes
    // with another id and token), written after the last one, then cut in its middle.
    let id = QueueId::from_parts(7, 7, 7).to_string();
    let payload = String::from_utf8(last.payload.clone())
        .unwrap()
        .replace(&last.id, &id)
        .replace(tokens.last().unwrap(), "torn-tail");
    let mut record = Vec::new();
    encode(
        &mut record,
        Kind::Message,
        &id.parse().unwrap(),
        payload.as_bytes(),
    );
    let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&record, end as u64).unwrap();
    file.set_len((end + record.len() / 2) as u64).unwrap();
    drop(file);

    let counts = restart_and_count(&mut server, &blocker, MESSAGES);
    for t in &tokens {
        assert_eq!(counts.get(t), Some(&1), "{t}: {counts:?}");
    }
    assert!(
        !counts.contains_key("torn-tail"),
        "the torn message was delivered: {counts:?}"
    );
    assert_eq!(counts.len(), MESSAGES + 1, "{counts:?}");
    let log = server.stderr_all();
    assert!(
        log.contains("spool: segment ends in a torn record"),
        "no log line for the torn tail:\n{}",
        server.stderr_tail()
    );
}

#[test]
fn a_flipped_byte_skips_that_record_with_a_log_line_and_never_delivers_it() {
    let (mut server, tokens, blocker) = killed_with_queued_mail();
    let (segment, records) = worker_segment(&server);
    // Flip one octet inside the third message's token, as a bad sector would.
    let victim = &records[2];
    let text = String::from_utf8_lossy(&victim.payload).into_owned();
    let at = text.find(&tokens[2]).expect("token in the record") + tokens[2].len() - 1;
    let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    let pos = (victim.offset + LOG_HEADER_LEN + at) as u64;
    file.write_all_at(&[victim.payload[at] ^ 0x01], pos)
        .unwrap();
    drop(file);

    let counts = restart_and_count(&mut server, &blocker, MESSAGES - 1);
    for (i, t) in tokens.iter().enumerate() {
        let want = if i == 2 { None } else { Some(&1) };
        assert_eq!(counts.get(t), want, "{t}: {counts:?}");
    }
    // Neither the original nor the damaged token: the record was not delivered at all.
    assert_eq!(counts.len(), MESSAGES, "{counts:?}");
    let log = server.stderr_all();
    let line = log
        .lines()
        .find(|l| l.contains("record checksum mismatch; record skipped"))
        .unwrap_or_else(|| panic!("no log line for the bad record:\n{}", server.stderr_tail()));
    assert!(line.contains(&victim.id), "{line}");
}

#[test]
fn a_flipped_header_bit_mid_segment_is_repaired_and_costs_no_message() {
    let (mut server, tokens, blocker) = killed_with_queued_mail();
    let (segment, records) = worker_segment(&server);
    // Flip one bit of the second message's header length: its checksum fails, and one flipped
    // bit explains it, so the length is repaired and every message is still delivered.
    let victim = &records[1];
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut octet = [0u8];
    file.read_exact_at(&mut octet, (victim.offset + 9) as u64)
        .unwrap();
    file.write_all_at(&[octet[0] ^ 0x01], (victim.offset + 9) as u64)
        .unwrap();
    drop(file);

    let counts = restart_and_count(&mut server, &blocker, MESSAGES);
    for t in &tokens {
        assert_eq!(counts.get(t), Some(&1), "{t}: {counts:?}");
    }
    let log = server.stderr_all();
    assert!(
        log.contains("spool: damaged record header repaired (one flipped bit)"),
        "no log line for the damaged header:\n{}",
        server.stderr_tail()
    );
}
