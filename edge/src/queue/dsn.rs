//! Delivery status notifications ([RFC 3464]): the report that tells a sender which recipients
//! of their message failed, and why.
//!
//! One report covers every recipient of one message that failed in one attempt. It goes from
//! the null reverse-path `<>` ([RFC 5321 §4.5.5]), so a report that cannot be delivered is
//! never reported in turn: no bounce loops. A message from `<>` gets no report at all.
//!
//! ```text
//! multipart/report; report-type=delivery-status
//!  ├─ text/plain                 what happened, for people
//!  ├─ message/delivery-status    Reporting-MTA, then per recipient: Final-Recipient, Action,
//!  │                             Status, Diagnostic-Code (RFC 3464 §2.2, §2.3)
//!  └─ text/rfc822-headers        the original message's header ([RFC 6522])
//! ```
//!
//! [RFC 3464]: https://www.rfc-editor.org/rfc/rfc3464
//! [RFC 5321 §4.5.5]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.5
//! [RFC 6522]: https://www.rfc-editor.org/rfc/rfc6522

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::Recipient;
use crate::protocol::{Envelope, Greeting, Mailbox};
use crate::spool::{push_date_time, Queued};

/// The report for the `failed` recipients of `queued`, to its sender: the envelope and the
/// content to queue. `None` for a message from the null sender.
pub fn build(
    hostname: &str,
    queued: &Queued,
    arrival_ms: u64,
    failed: &[&Recipient],
    now: SystemTime,
) -> Option<(Envelope, Vec<u8>)> {
    let sender: &Mailbox = queued.envelope.mail_from.as_ref()?;
    let envelope = Envelope {
        helo: hostname.to_owned(),
        greeting: Greeting::Ehlo,
        mail_from: None,
        rcpt_to: vec![sender.clone()],
        // The original header may hold 8-bit or UTF-8 text, and the sender's address may need
        // SMTPUTF8: the report needs what the original needed.
        body: queued.envelope.body,
        smtputf8: queued.envelope.smtputf8,
        login: None,
    };
    let boundary = format!("{}.dsn/{hostname}", queued.id);
    let mut date = String::new();
    push_date_time(&mut date, now);
    let mut arrival = String::new();
    push_date_time(&mut arrival, UNIX_EPOCH + Duration::from_millis(arrival_ms));

    let mut m = String::new();
    let _ = write!(
        m,
        // A trace line like every message we queue has (RFC 5321 §4.4), for a report made
        // here rather than received.
        "Received: by {hostname} (smtp-edge);\r\n\t{date}\r\n\
         From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.dsn@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {hostname}.\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         \r\n",
        id = queued.id,
    );
    for r in failed {
        let _ = write!(m, "<{}>: {}\r\n", r.address, reply_of(r));
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-Queue-ID: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        id = queued.id,
    );
    for r in failed {
        let _ = write!(m, "\r\nFinal-Recipient: rfc822; {}\r\n", r.address);
        if let Some(original) = &r.original {
            let _ = write!(m, "Original-Recipient: rfc822; {original}\r\n");
        }
        let _ = write!(
            m,
            "Action: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            status_of(r),
            reply_of(r)
        );
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(header_of(queued.message()));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some((envelope, out))
}

fn reply_of(r: &Recipient) -> &str {
    r.last_reply
        .as_deref()
        .unwrap_or("550 5.0.0 delivery failed")
}

/// The recipient's status code ([RFC 3463]): the one its route gave, else the enhanced code of
/// its last reply if it has one, else one from the reply's class.
///
/// [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463
pub fn status_of(r: &Recipient) -> String {
    if let Some(status) = r.status.as_ref().filter(|s| is_enhanced(s)) {
        return status.clone();
    }
    let reply = reply_of(r);
    let mut words = reply.split([' ', '-']);
    let code = words.next().unwrap_or("");
    if let Some(enhanced) = words.next().filter(|w| is_enhanced(w)) {
        return enhanced.to_owned();
    }
    match code.as_bytes().first() {
        Some(b'4') => "4.0.0".to_owned(),
        _ => "5.0.0".to_owned(),
    }
}

/// `class.subject.detail` with class 2, 4 or 5 (RFC 3463 §2).
fn is_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts.first(), Some(&("2" | "4" | "5")))
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Most octets of the original header section a report returns. A message need not have a
/// body, so its "header" can be the whole message (up to `limits.max_message_size`): returning
/// it all would make the report as large as what failed, and a report larger than a spool log
/// segment could never be queued at all.
pub const MAX_RETURNED_HEADER: usize = 64 * 1024;

/// The header section of `message`, up to and including its last header line's CRLF; when that
/// is longer than [`MAX_RETURNED_HEADER`], its whole lines that fit.
fn header_of(message: &[u8]) -> &[u8] {
    let header = match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(end) => message.get(..end + 2).unwrap_or(message),
        None => message,
    };
    if header.len() <= MAX_RETURNED_HEADER {
        return header;
    }
    let head = header.get(..MAX_RETURNED_HEADER).unwrap_or(header);
    match memchr::memmem::rfind(head, b"\r\n") {
        Some(end) => head.get(..end + 2).unwrap_or(head),
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::State;
    use crate::spool::format::committed_file;
    use crate::spool::{read_queued, tests::envelope, QueueIdGen};

    fn failed(addr: &str, reply: &str) -> Recipient {
        Recipient {
            state: State::Failed,
            last_reply: Some(reply.into()),
            ..Recipient::pending(addr.into(), None)
        }
    }

    #[test]
    fn status_comes_from_the_enhanced_code_or_the_class() {
        for (reply, want) in [
            ("550 5.1.1 no such user", "5.1.1"),
            ("552-5.2.2 mailbox full", "5.2.2"),
            ("554 transaction failed", "5.0.0"),
            ("451 4.4.1 no answer", "4.4.1"),
            ("421 closing", "4.0.0"),
        ] {
            assert_eq!(status_of(&failed("a@b.test", reply)), want, "{reply}");
        }
    }

    #[test]
    fn report_is_multipart_report_from_the_null_sender_with_the_original_header() {
        let dir = tempfile::tempdir().unwrap();
        let id = QueueIdGen::new(1, 0).next();
        let path = dir.path().join(id.as_str());
        let msg = b"Received: x\r\nSubject: hello\r\n\r\nsecret body\r\n";
        std::fs::write(
            &path,
            committed_file(&envelope(&["a@example.test"]), &id, msg),
        )
        .unwrap();
        let q = read_queued(&path).unwrap();
        let r = failed("bob@remote.test", "550 5.1.1 <bob@remote.test>: unknown");
        let (env, content) = build("mx.example.test", &q, 0, &[&r], UNIX_EPOCH).unwrap();
        assert_eq!(env.mail_from, None);
        assert_eq!(env.rcpt_to[0].to_string(), "sender@example.test");
        let text = String::from_utf8(content).unwrap();
        for want in [
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n",
            "multipart/report; report-type=delivery-status",
            "Final-Recipient: rfc822; bob@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.test>: unknown\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nReceived: x\r\nSubject: hello\r\n\r\n--",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("secret body"), "the body is not returned");

        let mut null = q.clone();
        null.envelope.mail_from = None;
        assert!(build("mx.example.test", &null, 0, &[&r], UNIX_EPOCH).is_none());
    }

    #[test]
    fn a_huge_header_is_returned_cut_at_a_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let id = QueueIdGen::new(1, 0).next();
        let path = dir.path().join(id.as_str());
        // A message with no body: every line is header, 2 MiB of it.
        let mut msg = b"Subject: big\r\n".to_vec();
        for i in 0..30_000 {
            msg.extend_from_slice(format!("X-Line-{i:05}: {}\r\n", "h".repeat(50)).as_bytes());
        }
        std::fs::write(
            &path,
            committed_file(&envelope(&["a@example.test"]), &id, &msg),
        )
        .unwrap();
        let q = read_queued(&path).unwrap();
        let r = failed("bob@remote.test", "550 5.1.1 unknown");
        let (_, content) = build("mx.example.test", &q, 0, &[&r], UNIX_EPOCH).unwrap();
        assert!(
            content.len() < MAX_RETURNED_HEADER + 4096,
            "a report of {} octets for a failed message of {}",
            content.len(),
            msg.len()
        );
        let text = String::from_utf8(content).unwrap();
        let part = text
            .split("Content-Type: text/rfc822-headers\r\n\r\n")
            .nth(1)
            .unwrap();
        let returned = &part[..part.find("\r\n--").unwrap()];
        assert!(returned.starts_with("Subject: big\r\nX-Line-00000: "));
        // Whole lines only, and as many as fit.
        assert!(msg.starts_with(returned.as_bytes()));
        assert!(returned.len() > MAX_RETURNED_HEADER - 100);
    }
}
