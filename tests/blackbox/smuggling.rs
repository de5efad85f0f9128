//! SMTP smuggling and dot-stuffing, end to end: only CRLF.CRLF ends a body, a body holding a bare
//! LF or bare CR is refused whole, and nothing hidden in a body ever becomes a second message.

use crate::harness::{
    maildir_files, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::{assert_delivered, header_value, new_dir, read, sample_message};
use crate::session::{dot_stuff, SmtpConn};

/// (name, fake end-of-data) pairs: each would end the body for a lax server, letting the text
/// after it run as commands of a second, smuggled transaction.
const FAKE_ENDS: &[(&str, &[u8])] = &[
    ("smuggling_bare_lf_dot_lf", b"\n.\n"),
    ("smuggling_bare_lf_dot_crlf", b"\n.\r\n"),
    ("smuggling_crlf_dot_lf", b"\r\n.\n"),
    ("smuggling_bare_cr_dot_cr", b"\r.\r"),
    ("smuggling_bare_cr_dot_crlf", b"\r.\r\n"),
];

#[test]
fn smuggled_transaction_is_refused_whole_and_never_delivered() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let mut failures = Vec::new();
    for (name, fake_end) in FAKE_ENDS {
        let (mut c, _) = SmtpConn::connect_ehlo(addr);
        assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        let mut body = b"Subject: carrier\r\n\r\nhello".to_vec();
        body.extend_from_slice(fake_end);
        body.extend_from_slice(
            b"MAIL FROM:<admin@example.test>\r\n\
              RCPT TO:<victim@example.test>\r\n\
              DATA\r\n\
              From: admin@example.test\r\n\
              Subject: smuggled\r\n\
              \r\n\
              smuggled body\r\n",
        );
        c.send(&body);
        c.send(b".\r\n");
        c.send(b"QUIT\r\n");
        let replies = c.replies_until_close(REPLY_DEADLINE);
        // Exactly one reply for the end of data, a refusal, then QUIT's 221 (or a close right
        // after the refusal).
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        let ok =
            matches!(codes.as_slice(), [refusal] | [refusal, 221] if (500..600).contains(refusal));
        if !ok {
            failures.push(format!("{name}: replies after the body: {replies:?}"));
        }
    }
    // A clean message afterwards is the sentinel: once it is delivered, anything the smuggling
    // attempts had queued before it would have been delivered too.
    let msg = sample_message("after-smuggling", "sender@remote.test", "user@example.test");
    let (mut c, _) = SmtpConn::connect_ehlo(addr);
    let r = c.send_mail(
        "sender@remote.test",
        &["user@example.test"],
        &dot_stuff(&msg),
    );
    assert_eq!(r.code, 250, "clean message after the attempts: {r:?}");
    wait_for_maildir(
        &new_dir(&server.maildir, "user@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    let all = maildir_files(&server.maildir);
    let victim = maildir_files(&new_dir(&server.maildir, "victim@example.test"));
    assert!(
        failures.is_empty(),
        "smuggling not refused:\n{}",
        failures.join("\n")
    );
    assert!(victim.is_empty(), "smuggled message delivered: {victim:?}");
    assert_eq!(
        all.len(),
        1,
        "only the clean message may be delivered: {all:?}"
    );
    let d = read(&all[0]);
    assert_eq!(
        header_value(&d.message, "X-Token").as_deref(),
        Some("after-smuggling")
    );
}

#[test]
fn dot_stuffed_lines_arrive_unstuffed() {
    let server = Server::start(Opts::default());
    let rcpt = "user@example.test";
    let msg = b"Subject: dots\r\n\
                \r\n\
                .\r\n\
                ..\r\n\
                .leading\r\n\
                ...three\r\n\
                middle . dot\r\n\
                .\r\n"
        .to_vec();
    let wire = dot_stuff(&msg);
    assert!(wire.starts_with(b"Subject: dots\r\n\r\n..\r\n...\r\n..leading\r\n....three\r\n"));
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail("sender@remote.test", &[rcpt], &wire);
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], "sender@remote.test", rcpt, &msg);
}

#[test]
fn body_with_bare_lf_is_refused_at_end_of_data() {
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: lf\r\n\r\nline one\nline two\r\n.\r\n");
    let r = c.reply();
    assert!((500..600).contains(&r.code), "bare LF body accepted: {r:?}");
    assert!(r.enhanced().is_some_and(|e| e.starts_with("5.")), "{r:?}");
    // The session goes on: the next transaction works.
    let r = c.send_mail(
        "sender@remote.test",
        &["user@example.test"],
        b"Subject: ok\r\n\r\nfine\r\n",
    );
    assert_eq!(r.code, 250, "clean message after a refused one: {r:?}");
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "user@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(
        &files[0],
        "sender@remote.test",
        "user@example.test",
        b"Subject: ok\r\n\r\nfine\r\n",
    );
}

#[test]
fn bare_lf_in_command_is_500_5_5_2() {
    let server = Server::start(Opts::default());
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    c.send(b"NOOP\nRSET\r\n");
    let r = c.reply();
    assert_eq!(
        r.status(),
        "500 5.5.2",
        "command line with a bare LF: {r:?}"
    );
    c.send(b"QUIT\r\n");
    let rest = c.replies_until_close(REPLY_DEADLINE);
    // Either the whole line was one bad command, or RSET after the LF got its own reply.
    let codes: Vec<u16> = rest.iter().map(|r| r.code).collect();
    assert!(
        matches!(codes.as_slice(), [221] | [250, 221] | [500, 221]),
        "{rest:?}"
    );
}

#[test]
fn smuggling_nul_dot_is_refused_and_nothing_is_delivered() {
    // `\r\n\0.\r\n`: a next hop that strips NULs would end the data there and run the rest as
    // commands. Refused whole, like a bare CR or LF.
    let server = Server::start(Opts::default());
    let rcpt = "user@example.test";
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let mut body = dot_stuff(&sample_message("nul", "sender@remote.test", rcpt));
    body.extend_from_slice(b"\0.\r\nMAIL FROM:<evil@remote.test>\r\n");
    let r = c.send_mail("sender@remote.test", &[rcpt], &body);
    assert_eq!(r.status(), "550 5.6.0", "{r:?}");
    assert_eq!(c.cmd("NOOP").code, 250);
    // A clean message after it arrives alone: the refused one never reached the spool.
    let clean = sample_message("after-nul", "sender@remote.test", rcpt);
    assert_eq!(
        c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&clean))
            .code,
        250
    );
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(&files[0], "sender@remote.test", rcpt, &clean);
}

#[test]
fn a_refused_bdat_chunk_is_never_run_as_commands() {
    // RFC 3030 §2: `BDAT 22 LAST` refused with 530 (STARTTLS first) still carries 22 octets.
    // Here they spell a whole transaction; read as commands, they would queue a message.
    let server = Server::start(Opts {
        listener_tls: vec![crate::harness::ListenerTls {
            mode: "starttls",
            require_tls: Some(true),
        }],
        tls: Some(crate::harness::TlsOpts::default()),
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.listener(0));
    let chunk = b"QUIT\r\nRSET\r\nNOOP\r\nxx\r\n";
    assert_eq!(chunk.len(), 22);
    c.send(b"BDAT 22 LAST\r\n");
    c.send(chunk);
    let r = c.reply();
    assert_eq!(r.status(), "530 5.7.0", "{r:?}");
    // The next replies answer these commands, not anything inside the chunk: its QUIT would
    // have closed the session.
    for _ in 0..2 {
        let r = c.cmd("NOOP");
        assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    }
}
