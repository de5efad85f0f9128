//! Bodies that stress the data path: large 8-bit messages split across many reads, and
//! back-to-back transactions pipelined into one write.

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE};
use crate::maildir::{assert_delivered, assert_one_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

/// A deterministic 8-bit message of about `size` bytes: UTF-8 text, lines starting with dots,
/// line lengths varying so CRLFs fall on every offset of the server's read buffers.
fn big_message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: <sender@remote.test>\r\nSubject: big \xc3\xa9t\xc3\xa9\r\nX-Token: big\r\n\r\n"
            .to_vec();
    let mut i = 0usize;
    while m.len() < size {
        let len = (i * 7919) % 990;
        let mut line: Vec<u8> = match i % 5 {
            0 => b".".to_vec(),
            1 => "..dotted é ".as_bytes().to_vec(),
            _ => Vec::new(),
        };
        while line.len() < len {
            line.push(b'a' + ((i + line.len()) % 26) as u8);
        }
        if i.is_multiple_of(11) {
            line.extend_from_slice("ünïcødé ✓".as_bytes());
        }
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m
}

#[test]
fn large_8bit_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let rcpt = "big@example.test";
    let msg = big_message(3 * 1024 * 1024);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.cmd("MAIL FROM:<sender@remote.test> BODY=8BITMIME");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let wire = dot_stuff(&msg);
    // Odd-sized writes, so the body reaches the server in pieces that do not align with lines.
    for chunk in wire.chunks(65_521) {
        c.send(chunk);
    }
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "3 MiB 8-bit message: {r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], "sender@remote.test", rcpt, &msg);
}

#[test]
fn back_to_back_transactions_in_one_write_are_both_delivered() {
    let server = Server::start(Opts::default());
    let (mut c, ehlo) = SmtpConn::connect_ehlo(server.delivery());
    assert!(ehlo.has_keyword("PIPELINING"), "{ehlo:?}");
    let first = sample_message("pipelined-1", "sender@remote.test", "one@example.test");
    let second = sample_message("pipelined-2", "sender@remote.test", "two@example.test");
    // RFC 2920: DATA is the last command of a group, so the first body follows its 354...
    c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<one@example.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..3).map(|_| c.reply().code).collect();
    assert_eq!(codes, [250, 250, 354]);
    // ...and the end of data may be followed at once by the next group, in the same write.
    let mut batch = dot_stuff(&first);
    batch.extend_from_slice(
        b".\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<two@example.test>\r\nDATA\r\n",
    );
    c.send(&batch);
    let replies: Vec<_> = (0..4).map(|_| c.reply()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 250, 250, 354], "{replies:?}");
    assert!(
        replies[0].lines[0].starts_with("2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    let mut tail = dot_stuff(&second);
    tail.extend_from_slice(b".\r\nQUIT\r\n");
    c.send(&tail);
    let rest = c.replies_until_close(REPLY_DEADLINE);
    let codes: Vec<u16> = rest.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 221], "{rest:?}");
    assert_ne!(
        replies[0].lines[0], rest[0].lines[0],
        "two messages with one queue id"
    );
    for (rcpt, msg) in [("one@example.test", &first), ("two@example.test", &second)] {
        assert_one_delivered(&server.maildir, "sender@remote.test", rcpt, msg);
    }
}
