//! Session-level tests of the engine: whole dialogues, each run whole, split at every byte
//! boundary, and byte by byte, which must all give the same replies and events.

// Tests start sessions at the real time: any instant works, since time only moves when passed in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn cfg(role: Role) -> EngineConfig {
    EngineConfig::new("mx.example.test", role, &["example.test", "localhost"])
}

/// What a run of the engine produced, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Reply lines as sent.
    replies: Vec<String>,
    /// Events, summarised; message content is joined per transaction.
    events: Vec<String>,
    /// The content of each message that reached the spool.
    messages: Vec<Vec<u8>>,
    closed: bool,
    /// The engine's next deadline, from the start of the session.
    deadline: Option<Duration>,
}

/// One thing that happens to a session in a test script.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// Bytes from the client, at the current time.
    Input(&'a [u8]),
    /// The clock moves on by this much, and the engine is told (`handle_timeout`).
    Wait(Duration),
    /// The server starts shutting down (`handle_shutdown`).
    Shutdown,
    /// The spool fails the next message (451) instead of queueing it.
    FailNextSpool,
    /// The TLS layer is in place after STARTTLS (`handle_tls_established`); input the engine
    /// left unread before it was dropped, as the driver drops it.
    TlsEstablished,
    /// The client is in the trusted networks (`grant_trusted`).
    GrantTrusted,
    /// The client's address is being looked up in DNS block lists (`require_source_verdict`);
    /// when the engine asks, it is listed in this zone, or clear (`None`).
    SourceLookup(Option<&'a str>),
}

/// What the test driver has seen so far.
#[derive(Default)]
struct Recorder {
    out: Vec<u8>,
    events: Vec<String>,
    messages: Vec<Vec<u8>>,
    current: Option<Vec<u8>>,
    fail_next_spool: bool,
    /// The verdict handed out on `Event::SourceCheck`: listed in this zone, or clear.
    listed_in: Option<String>,
}

impl Recorder {
    /// Acts on every queued event as a driver would; true if the engine got an answer it was
    /// waiting for (a spool verdict or an AUTH outcome), so that it may read on.
    fn drain(&mut self, conn: &mut Connection, now: Instant) -> bool {
        let mut progressed = false;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::MessageStart { txn, envelope } => {
                    self.current = Some(Vec::new());
                    let rcpts: Vec<String> =
                        envelope.rcpt_to.iter().map(|m| m.to_string()).collect();
                    self.events
                        .push(format!("start {} {}", txn.0, rcpts.join(",")));
                }
                Event::MessageData { data, .. } => {
                    self.current.as_mut().unwrap().extend_from_slice(&data);
                    conn.recycle(data);
                }
                Event::MessageEnd { txn } => {
                    self.events.push(format!("end {}", txn.0));
                    let content = self.current.take().unwrap();
                    // The test policy: content marked so fails DMARC under p=reject.
                    if content.windows(12).any(|w| w == b"X-Dmarc: bad") {
                        conn.handle_dmarc_rejected(now, txn, "bad.test");
                    } else if std::mem::take(&mut self.fail_next_spool) {
                        conn.handle_spooled(now, txn, Err(SpoolFault));
                    } else {
                        self.messages.push(content);
                        conn.handle_spooled(now, txn, Ok("QUEUEID"));
                    }
                    progressed = true;
                }
                Event::MessageAbort { txn, reason } => {
                    self.current = None;
                    self.events.push(format!("abort {} {reason:?}", txn.0));
                }
                Event::StartTls => self.events.push("starttls".to_owned()),
                Event::Authenticate(c) => {
                    self.events
                        .push(format!("auth {} {}", c.mechanism, c.username));
                    // The test store: alice/secret is good, anything else is not.
                    let outcome = if c.username == "alice@example.test"
                        && c.password.expose() == b"secret"
                        && c.authorize_as.is_none()
                    {
                        AuthOutcome::Success {
                            login: c.username.clone(),
                            senders: vec!["alice@example.test".into(), "sales@example.test".into()],
                        }
                    } else {
                        AuthOutcome::Invalid
                    };
                    conn.handle_auth(now, outcome);
                    progressed = true;
                }
                Event::SourceCheck => {
                    self.events.push("source check".to_owned());
                    let verdict = match self.listed_in.clone() {
                        Some(zone) => SourceVerdict::Listed { zone },
                        None => SourceVerdict::Clear,
                    };
                    conn.handle_source_verdict(now, verdict);
                    progressed = true;
                }
                Event::CheckSender { helo, mail_from } => {
                    let from = mail_from.map(|m| m.to_string()).unwrap_or_default();
                    self.events.push(format!("check {helo} <{from}>"));
                    // The test policy: spf-fail.test authorises nobody.
                    let verdict = if from.ends_with("@spf-fail.test") {
                        SenderVerdict::SpfFail
                    } else {
                        SenderVerdict::Accept
                    };
                    conn.handle_sender_checked(now, verdict);
                    progressed = true;
                }
                Event::Rejected(r) => self.events.push(format!("rejected {r:?}")),
                Event::RecipientRejected {
                    rejection,
                    recipient,
                } => self
                    .events
                    .push(format!("rejected {rejection:?} {recipient}")),
                Event::Close(reason) => self.events.push(format!("close {reason:?}")),
            }
        }
        progressed
    }
}

/// Plays `steps` on a fresh engine, answering every `MessageEnd` with a successful spool
/// unless told otherwise.
fn run_steps(cfg: &EngineConfig, steps: &[Step]) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut conn = if SECURE.with(|s| s.get()) {
        Connection::new_secure(Arc::new(cfg.clone()), now)
    } else {
        Connection::new(Arc::new(cfg.clone()), now)
    };
    let mut r = Recorder::default();
    for step in steps {
        match *step {
            Step::Input(chunk) => {
                let mut rest = chunk;
                loop {
                    let used = conn.handle_input(now, rest);
                    rest = &rest[used..];
                    if !r.drain(&mut conn, now) || rest.is_empty() {
                        break;
                    }
                }
            }
            Step::Wait(d) => {
                now += d;
                conn.handle_timeout(now);
                r.drain(&mut conn, now);
            }
            Step::Shutdown => {
                conn.handle_shutdown();
                r.drain(&mut conn, now);
            }
            Step::FailNextSpool => r.fail_next_spool = true,
            Step::TlsEstablished => conn.handle_tls_established(now),
            Step::GrantTrusted => conn.grant_trusted(),
            Step::SourceLookup(zone) => {
                conn.require_source_verdict();
                r.listed_in = zone.map(str::to_owned);
            }
        }
        let _ = conn.poll_transmit(&mut r.out);
        // As the driver does before every wait for input: with inputs split at every byte,
        // this proves that trimming never loses a partial line, content or a reply.
        conn.trim();
    }
    let text = String::from_utf8(r.out).unwrap();
    Outcome {
        replies: text.split_terminator("\r\n").map(str::to_owned).collect(),
        events: r.events,
        messages: r.messages,
        closed: conn.is_closed(),
        deadline: conn.poll_timeout().map(|d| d - start),
    }
}

/// Feeds `chunks` into a fresh engine, all at one instant.
fn run_with(cfg: &EngineConfig, chunks: &[&[u8]]) -> Outcome {
    let steps: Vec<Step> = chunks.iter().map(|c| Step::Input(c)).collect();
    run_steps(cfg, &steps)
}

/// Plays `steps` as they are, then with each input split at every index, then with each input
/// fed byte by byte; all must agree.
fn run_split_steps<'a>(cfg: &EngineConfig, steps: &[Step<'a>]) -> Outcome {
    let whole = run_steps(cfg, steps);
    for (k, step) in steps.iter().enumerate() {
        let Step::Input(input) = *step else { continue };
        let replaced = |pieces: Vec<&'a [u8]>| -> Vec<Step<'a>> {
            let mut v = steps[..k].to_vec();
            v.extend(pieces.into_iter().map(Step::Input));
            v.extend_from_slice(&steps[k + 1..]);
            v
        };
        for i in 0..=input.len() {
            let split = replaced(vec![&input[..i], &input[i..]]);
            assert_eq!(run_steps(cfg, &split), whole, "step {k} split at {i}");
        }
        let bytes = replaced(input.chunks(1).collect());
        assert_eq!(run_steps(cfg, &bytes), whole, "step {k} byte by byte");
    }
    whole
}

/// Runs `input` whole, split at every index, and byte by byte; all must agree.
fn run_split(cfg: &EngineConfig, input: &[u8]) -> Outcome {
    run_split_steps(cfg, &[Step::Input(input)])
}

fn delivery(input: &str) -> Outcome {
    run_split(&cfg(Role::Delivery), input.as_bytes())
}

/// Reply codes (with the enhanced status, when present) of the final line of each reply.
fn codes(o: &Outcome) -> Vec<&str> {
    o.replies
        .iter()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| {
            let rest = &l[4..];
            let status_len = rest
                .split(' ')
                .next()
                .filter(|s| s.split('.').count() == 3 && s.starts_with(['2', '4', '5']))
                .map_or(0, |s| s.len() + 1);
            l[..4 + status_len].trim_end()
        })
        .collect()
}

#[test]
fn greeting_and_ehlo_advertise_extensions() {
    let o = delivery("EHLO client.test\r\n");
    assert_eq!(o.replies[0], "220 mx.example.test ESMTP smtp-edge");
    assert_eq!(
        &o.replies[1..],
        [
            "250-mx.example.test Hello client.test",
            "250-PIPELINING",
            "250-SIZE 26214400",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-ENHANCEDSTATUSCODES",
            "250 CHUNKING",
        ]
    );
}

#[test]
fn a_whole_transaction() {
    let o = delivery(concat!(
        "EHLO c.test\r\n",
        "MAIL FROM:<a@remote.test>\r\n",
        "RCPT TO:<b@example.test>\r\n",
        "DATA\r\n",
        "Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n",
        "QUIT\r\n"
    ));
    assert_eq!(
        codes(&o),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(o
        .replies
        .contains(&"250 2.0.0 Ok: queued as QUEUEID".to_owned()));
    assert_eq!(
        o.messages,
        [b"Subject: hi\r\n\r\n.dot\r\nbody\r\n".to_vec()]
    );
    assert_eq!(o.events, ["start 0 b@example.test", "end 0", "close Quit"]);
    assert!(o.closed);
}

#[test]
fn every_command_has_its_reply() {
    // (command, expected final reply code and status); RFC 5321 §4.3.2 and RFC 3463.
    let rows = [
        ("NOOP\r\n", "250 2.0.0"),
        ("RSET\r\n", "250 2.0.0"),
        ("VRFY someone\r\n", "252 2.5.0"),
        ("EXPN list\r\n", "502 5.5.1"),
        ("HELP\r\n", "214 2.0.0"),
        ("FOO\r\n", "500 5.5.2"),
        ("MAIL FROM:<a@b.test>\r\n", "503 5.5.1"),
        ("AUTH PLAIN\r\n", "502 5.5.1"),
        ("EHLO\r\n", "501 5.5.4"),
        ("HELO x\r\n", "250"),
        ("QUIT\r\n", "221 2.0.0"),
    ];
    for (cmd, want) in rows {
        let o = delivery(cmd);
        assert_eq!(codes(&o)[1..], [want], "{cmd:?}");
    }
}

#[test]
fn sequence_errors() {
    let o = delivery(concat!(
        "EHLO c\r\n",
        "RCPT TO:<b@example.test>\r\n",
        "DATA\r\n",
        "MAIL FROM:<>\r\n",
        "MAIL FROM:<>\r\n",
        "DATA\r\n",
    ));
    assert_eq!(
        codes(&o)[2..],
        [
            "503 5.5.1",
            "503 5.5.1",
            "250 2.1.0",
            "503 5.5.1",
            "554 5.5.1"
        ]
    );
}

#[test]
fn relay_is_denied_on_delivery() {
    for rcpt in [
        "<b@remote.test>",
        "<b%remote.test@example.test>",
        "<remote.test!b@example.test>",
        "<\"b@remote.test\"@example.test>",
        "<@example.test:b@remote.test>",
        "<@remote.test:b@example.test>",
        "<b@[192.0.2.1]>",
    ] {
        let o = delivery(&format!(
            "EHLO c\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:{rcpt}\r\n"
        ));
        assert_eq!(codes(&o)[3], "550 5.7.1", "{rcpt}");
        // The driver is told which recipient, as the client wrote it, for its log line.
        let path = rcpt.trim_start_matches('<').trim_end_matches('>');
        assert_eq!(o.events, [format!("rejected RelayDenied {path}")], "{rcpt}");
    }
}

#[test]
fn local_domains_match_case_insensitively_and_postmaster_is_accepted() {
    let o =
        delivery("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<B@Example.TEST>\r\nRCPT TO:<Postmaster>\r\n");
    assert_eq!(codes(&o)[3..], ["250 2.1.5", "250 2.1.5"]);
}

#[test]
fn empty_local_parts_are_refused_at_rcpt() {
    // `""@example.test` parses but could never be delivered: refuse it before the 250.
    let o = delivery("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<\"\"@example.test>\r\n");
    assert_eq!(codes(&o)[3], "550 5.1.3");
}

#[test]
fn postmaster_goes_to_a_local_domain() {
    let o = delivery("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n");
    // The hostname (mx.example.test) is not local; the first local domain is.
    assert_eq!(o.events[0], "start 0 postmaster@example.test");
}

#[test]
fn pipelined_refusals_are_not_counted_as_bad_commands() {
    // RFC 2920/3030: after a refused transaction a pipelining client still sends its DATA or
    // its remaining BDAT chunks; those refusals must not add up to a 421 (and a ban).
    let mut c = cfg(Role::Delivery);
    c.max_bad_commands = 2;
    c.max_message_size = 4;
    let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(b"MAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 5\r\n12345");
    for _ in 0..4 {
        input.extend_from_slice(b"BDAT 1\r\nx");
    }
    input.extend_from_slice(b"NOOP\r\n");
    let o = run_split(&c, &input);
    assert!(!o.closed, "{:?}", o.replies);
    assert_eq!(codes(&o).last(), Some(&"250 2.0.0"));
}

#[test]
fn delivered_mail_forgives_earlier_bad_commands() {
    let mut c = cfg(Role::Delivery);
    c.max_bad_commands = 2;
    let o = run_split(
        &c,
        b"FOO\r\nEHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nFOO\r\nNOOP\r\n",
    );
    assert!(!o.closed);
    assert_eq!(codes(&o).last(), Some(&"250 2.0.0"));
}

#[test]
fn unknown_recipients_with_a_recipient_list() {
    let mut c = cfg(Role::Delivery);
    c.recipients = Some(Arc::new(HashSet::from(["known@example.test".to_owned()])));
    let o = run_split(
        &c,
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<Known@example.test>\r\nRCPT TO:<other@example.test>\r\n",
    );
    assert_eq!(codes(&o)[3..], ["250 2.1.5", "550 5.1.1"]);
    assert_eq!(o.events, ["rejected UnknownRecipient other@example.test"]);
}

#[test]
fn submission_refuses_mail_until_authentication() {
    let o = run_split(
        &cfg(Role::Submission),
        b"EHLO c\r\nMAIL FROM:<a@example.test>\r\n",
    );
    assert_eq!(codes(&o)[2], "530 5.7.0");
}

#[test]
fn size_declared_over_the_limit_is_refused_at_mail() {
    let mut c = cfg(Role::Delivery);
    c.max_message_size = 1000;
    let o = run_split(
        &c,
        b"EHLO c\r\nMAIL FROM:<a@r.test> SIZE=1001\r\nMAIL FROM:<a@r.test> SIZE=1000\r\n",
    );
    assert_eq!(codes(&o)[2..], ["552 5.3.4", "250 2.1.0"]);
}

#[test]
fn actual_size_over_the_limit_is_refused_at_end_of_data() {
    let mut c = cfg(Role::Delivery);
    c.max_message_size = 10;
    let o = run_split(
        &c,
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n0123456789\r\n.\r\nNOOP\r\n",
    );
    assert_eq!(codes(&o)[4..], ["354", "552 5.3.4", "250 2.0.0"]);
    assert_eq!(
        o.events,
        ["start 0 b@example.test", "abort 0 Some(MessageTooLarge)"]
    );
}

#[test]
fn mail_parameters() {
    let o = delivery(concat!(
        "EHLO c\r\n",
        "MAIL FROM:<a@r.test> BODY=8BITMIME SMTPUTF8\r\nRSET\r\n",
        "MAIL FROM:<a@r.test> BODY=BINARYMIME\r\n",
        "MAIL FROM:<a@r.test> RET=HDRS\r\n",
        "MAIL FROM:<a@r.test> SIZE=x\r\n",
        "MAIL FROM:<ü@r.test>\r\n",
        "MAIL FROM:<ü@r.test> SMTPUTF8\r\n",
    ));
    assert_eq!(
        codes(&o)[2..],
        [
            "250 2.1.0",
            "250 2.0.0",
            "501 5.5.4",
            "555 5.5.4",
            "501 5.5.4",
            "553 5.6.7",
            "250 2.1.0"
        ]
    );
}

#[test]
fn helo_sessions_take_no_parameters() {
    let o = delivery("HELO c\r\nMAIL FROM:<a@r.test> SIZE=10\r\n");
    assert_eq!(codes(&o)[2], "555 5.5.4");
}

#[test]
fn too_many_recipients() {
    let mut c = cfg(Role::Delivery);
    c.max_recipients = 2;
    let o = run_split(
        &c,
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n",
    );
    assert_eq!(codes(&o)[5], "452 4.5.3");
}

#[test]
fn pipelined_replies_keep_their_order() {
    // RFC 2920 §3.1: a whole transaction in one write; replies in command order.
    let o = delivery(concat!(
        "EHLO c\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
        "hi\r\n.\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n"
    ));
    assert_eq!(
        codes(&o)[2..],
        [
            "250 2.1.0",
            "550 5.7.1",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert_eq!(o.messages, [b"hi\r\n".to_vec(), b"second\r\n".to_vec()]);
}

#[test]
fn smuggling_bare_lf_dot_yields_no_second_message() {
    // CVE-2023-51764: `\n.\n` followed by a smuggled transaction inside one DATA.
    let o = delivery(concat!(
        "EHLO c\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
        "legit\r\n\n.\nMAIL FROM:<evil@r.test>\nRCPT TO:<b@example.test>\nDATA\nsmuggled\n.\n",
        "\r\n.\r\nQUIT\r\n"
    ));
    assert_eq!(codes(&o)[4..], ["354", "550 5.6.0", "221 2.0.0"]);
    assert!(o.messages.is_empty());
    assert_eq!(
        o.events,
        [
            "start 0 b@example.test",
            "abort 0 Some(BareNewline)",
            "close Quit"
        ]
    );
}

#[test]
fn smuggling_variants_each_refused_whole() {
    for fake in ["\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "a\rb", "a\nb"] {
        let o = delivery(&format!(
            "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx{fake}MAIL FROM:<e@r.test>\r\n.\r\nNOOP\r\n"
        ));
        assert_eq!(
            codes(&o)[4..],
            ["354", "550 5.6.0", "250 2.0.0"],
            "{fake:?}"
        );
        assert!(o.messages.is_empty(), "{fake:?}");
    }
}

#[test]
fn bare_newlines_in_commands_are_refused() {
    let o = delivery("EHLO c\nNOOP\rX\r\nNOOP\r\n");
    assert_eq!(codes(&o)[1..], ["500 5.5.2", "500 5.5.2", "250 2.0.0"]);
}

#[test]
fn long_command_lines_are_refused_and_skipped() {
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(MAX_COMMAND_LINE));
    let o = delivery(&long);
    assert_eq!(codes(&o)[1..], ["500 5.5.2", "250 2.0.0"]);
    // Exactly 512 octets with CRLF is allowed.
    let fits = format!("NOOP {}\r\n", "x".repeat(MAX_COMMAND_LINE - 7));
    assert_eq!(codes(&delivery(&fits))[1..], ["250 2.0.0"]);
}

#[test]
fn too_many_bad_commands_close_with_421() {
    let mut c = cfg(Role::Delivery);
    c.max_bad_commands = 3;
    let o = run_split(&c, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(codes(&o)[1..], ["500 5.5.2", "500 5.5.2", "421 4.7.0"]);
    assert!(o.closed);
    assert_eq!(o.events, ["close TooManyErrors"]);
}

#[test]
fn bdat_chunks() {
    let o = delivery(concat!(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n",
        "BDAT 6\r\nhello\r",
        "BDAT 9 LAST\r\n\n world\r\n",
        "NOOP\r\n"
    ));
    assert_eq!(codes(&o)[4..], ["250 2.0.0", "250 2.0.0", "250 2.0.0"]);
    assert!(o
        .replies
        .contains(&"250 2.0.0 6 octets received".to_owned()));
    assert_eq!(o.messages, [b"hello\r\n world\r\n".to_vec()]);
}

#[test]
fn bdat_content_follows_the_text_rules_of_data() {
    // No BINARYMIME is offered, so BDAT content is text: a bare LF (or CR) is refused as in
    // DATA, and nothing is spooled.
    let o = delivery(concat!(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n",
        "BDAT 4\r\na\nb\n",
        "BDAT 3 LAST\r\n.\r\n",
        "NOOP\r\n"
    ));
    assert_eq!(codes(&o)[4..], ["250 2.0.0", "550 5.6.0", "250 2.0.0"]);
    assert!(o.messages.is_empty());
}

#[test]
fn bdat_without_transaction_drains_its_octets() {
    // RFC 3030 §2: a refused BDAT's octets are still read, never run as commands.
    let o = delivery("EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&o)[2..], ["503 5.5.1", "250 2.0.0"]);
    assert!(!o.closed);
}

#[test]
fn bdat_zero_last_and_size_limit() {
    let mut c = cfg(Role::Delivery);
    c.max_message_size = 4;
    let o = run_split(
        &c,
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 5\r\n12345BDAT 0 LAST\r\n",
    );
    assert_eq!(codes(&o)[4..], ["552 5.3.4", "503 5.5.1"]);
    let o = delivery("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 0 LAST\r\n");
    assert_eq!(codes(&o)[4..], ["250 2.0.0"]);
    assert_eq!(o.messages, [Vec::<u8>::new()]);
}

#[test]
fn rset_abandons_a_bdat_message() {
    let o = delivery("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 2\r\nhiRSET\r\n");
    assert_eq!(o.events, ["start 0 b@example.test", "abort 0 None"]);
}

#[test]
fn spool_failure_gives_451_and_the_session_goes_on() {
    let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n";
    let o = run_split_steps(
        &cfg(Role::Delivery),
        &[Step::FailNextSpool, Step::Input(input)],
    );
    assert_eq!(
        o.replies[o.replies.len() - 3..],
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "451 4.3.0 Temporary failure storing the message; try again later",
            "250 2.0.0 Ok",
        ]
    );
    assert_eq!(o.events, ["start 0 b@example.test", "end 0"]);
    assert!(o.messages.is_empty() && !o.closed);
}

/// The driver contract, call by call (so not split): nothing after the end of data is read
/// before the spool's verdict, and a verdict for another transaction is ignored.
#[test]
fn input_waits_for_the_spool_and_stale_verdicts_are_ignored() {
    let now = Instant::now();
    let mut conn = Connection::new(Arc::new(cfg(Role::Delivery)), now);
    let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n";
    let used = conn.handle_input(now, input);
    let mut txn = None;
    while let Some(ev) = conn.poll_event() {
        if let Event::MessageEnd { txn: t } = ev {
            txn = Some(t);
        }
    }
    // Nothing after the end of data is read before the spool answers.
    assert_eq!(&input[used..], b"NOOP\r\n");
    let txn = txn.unwrap();
    conn.handle_spooled(now, TxnId(txn.0 + 1), Ok("ignored"));
    conn.handle_spooled(now, txn, Err(SpoolFault));
    assert_eq!(conn.handle_input(now, &input[used..]), 6);
    let mut out = Vec::new();
    assert!(conn.poll_transmit(&mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n451 4.3.0 Temporary failure storing the message; try again later\r\n250 2.0.0 Ok\r\n"), "{text}");
}

#[test]
fn timeouts_follow_rfc5321_and_spurious_calls_do_nothing() {
    let c = cfg(Role::Delivery);
    let secs = Duration::from_secs;
    // §4.5.3.2.7: five minutes for a command; an early call changes nothing.
    let idle = run_split_steps(&c, &[Step::Wait(secs(299))]);
    assert!(!idle.closed);
    assert_eq!(idle.deadline, Some(secs(300)));
    // §4.5.3.2.5: three minutes for each block of data.
    let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n";
    let data = run_split_steps(&c, &[Step::Input(input), Step::Wait(secs(179))]);
    assert_eq!((data.closed, data.deadline), (false, Some(secs(180))));
    let o = run_split_steps(&c, &[Step::Input(input), Step::Wait(secs(180))]);
    assert!(o.closed);
    assert_eq!(
        o.replies.last().unwrap(),
        "421 4.4.2 mx.example.test Timeout waiting for client input"
    );
    assert_eq!(
        o.events,
        ["start 0 b@example.test", "abort 0 None", "close Timeout"]
    );
}

fn delayed(ms: u64) -> EngineConfig {
    let mut c = cfg(Role::Delivery);
    c.greet_delay = Duration::from_millis(ms);
    c
}

#[test]
fn the_greeting_delay_is_an_engine_deadline() {
    let c = delayed(300);
    // Nothing goes out until the delay has passed; then the 220, and the command timeout runs
    // from it.
    let held = run_split_steps(&c, &[Step::Wait(Duration::from_millis(299))]);
    assert!(held.replies.is_empty() && !held.closed, "{held:?}");
    assert_eq!(held.deadline, Some(Duration::from_millis(300)));
    let greeted = run_split_steps(&c, &[Step::Wait(Duration::from_millis(300))]);
    assert_eq!(greeted.replies, ["220 mx.example.test ESMTP smtp-edge"]);
    assert_eq!(
        greeted.deadline,
        Some(Duration::from_millis(300) + Duration::from_secs(300))
    );
    // A client that waited gets the same dialogue as one that was never made to.
    let input =
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    let patient = run_split_steps(
        &c,
        &[Step::Wait(Duration::from_millis(300)), Step::Input(input)],
    );
    let prompt = run_split(&cfg(Role::Delivery), input);
    assert_eq!(
        (patient.replies, patient.events, patient.messages),
        (prompt.replies, prompt.events, prompt.messages)
    );
}

#[test]
fn pregreet_talking_before_the_banner_gets_554_and_closes() {
    let c = delayed(300);
    let steps = [
        Step::Wait(Duration::from_millis(100)),
        Step::Input(b"EHLO bot.test\r\nMAIL FROM:<a@b.test>\r\n"),
        Step::Wait(Duration::from_millis(300)),
    ];
    let o = run_split_steps(&c, &steps);
    // In place of the 220, never after it; nothing the bot said is answered.
    assert_eq!(
        o.replies,
        ["554 5.5.1 mx.example.test Protocol error: talked before the greeting"]
    );
    assert_eq!(o.events, ["close Pregreet"]);
    assert!(o.closed && o.deadline.is_none());
}

#[test]
fn no_greeting_delay_on_implicit_tls_or_when_unset() {
    SECURE.with(|s| s.set(true));
    let secure = run_split_steps(&delayed(300), &[Step::Input(b"NOOP\r\n")]);
    SECURE.with(|s| s.set(false));
    assert_eq!(secure.replies[0], "220 mx.example.test ESMTP smtp-edge");
    assert_eq!(secure.replies[1], "250 2.0.0 Ok");
    let unset = delivery("NOOP\r\n");
    assert_eq!(unset.replies, secure.replies);
}

#[test]
fn shutdown_while_the_greeting_is_held_sends_421_instead() {
    let o = run_split_steps(&delayed(300), &[Step::Shutdown]);
    assert_eq!(
        o.replies,
        ["421 4.3.2 mx.example.test Service shutting down"]
    );
    assert_eq!(o.events, ["close Shutdown"]);
}

#[test]
fn a_command_trickled_byte_by_byte_does_not_extend_the_deadline() {
    let c = cfg(Role::Delivery);
    let minute = Duration::from_secs(60);
    // One byte a minute: each arrives before the 5-minute timeout, but the line never ends.
    let mut steps = Vec::new();
    for b in [&b"N"[..], b"O", b"O", b"P"] {
        steps.extend([Step::Wait(minute), Step::Input(b)]);
    }
    let trickled = run_split_steps(&c, &steps);
    assert_eq!(trickled.deadline, Some(minute * 5));
    steps.push(Step::Wait(minute));
    assert!(run_split_steps(&c, &steps).closed);
    // A complete command does restart the clock.
    let o = run_split_steps(&c, &[Step::Wait(minute), Step::Input(b"NOOP\r\n")]);
    assert_eq!(o.deadline, Some(minute * 6));
}

#[test]
fn refused_content_restarts_the_command_timeout_however_it_was_split() {
    // A body refused at its end (bare CR) gets no spool verdict; the command timeout must still
    // run from the end of the content, not from the last command line before it.
    let c = cfg(Role::Delivery);
    let minute = Duration::from_secs(60);
    for (head, tail) in [
        (
            &b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nbare\r"[..],
            &b"here\r\n.\r\n"[..],
        ),
        (
            &b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 9 LAST\r\nbare\r"[..],
            &b"here"[..],
        ),
    ] {
        let o = run_split_steps(
            &c,
            &[Step::Input(head), Step::Wait(minute), Step::Input(tail)],
        );
        assert!(o.replies.last().unwrap().starts_with("550 5.6.0"), "{o:?}");
        assert_eq!(o.deadline, Some(minute * 6), "{o:?}");
    }
}

#[test]
fn shutdown_lets_a_message_in_flight_finish() {
    let c = cfg(Role::Delivery);
    let start = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\npart";
    let in_flight = run_split_steps(&c, &[Step::Input(start), Step::Shutdown]);
    assert!(!in_flight.closed);
    let steps = [
        Step::Input(start),
        Step::Shutdown,
        Step::Input(b"\r\n.\r\n"),
    ];
    let o = run_split_steps(&c, &steps);
    assert!(o.closed);
    assert_eq!(
        o.replies[o.replies.len() - 2..],
        [
            "250 2.0.0 Ok: queued as QUEUEID",
            "421 4.3.2 mx.example.test Service shutting down"
        ]
    );
    assert_eq!(o.messages, [b"part\r\n".to_vec()]);

    let idle = run_split_steps(&c, &[Step::Shutdown]);
    assert!(idle.closed);
    assert_eq!(idle.events, ["close Shutdown"]);
}

#[test]
fn nothing_is_read_after_quit() {
    let o = delivery("QUIT\r\nNOOP\r\n");
    assert_eq!(
        o.replies,
        [
            "220 mx.example.test ESMTP smtp-edge",
            "221 2.0.0 mx.example.test Bye"
        ]
    );
    assert_eq!(o.events, ["close Quit"]);
}

fn tls_cfg(role: Role, required: bool) -> EngineConfig {
    let mut c = cfg(role);
    c.tls_offered = true;
    c.tls_required = required;
    c
}

#[test]
fn starttls_is_advertised_and_answered() {
    let o = run_split(&tls_cfg(Role::Delivery, false), b"EHLO c\r\nSTARTTLS\r\n");
    assert_eq!(o.replies[8], "250 STARTTLS");
    assert_eq!(o.replies.last().unwrap(), "220 2.0.0 Ready to start TLS");
    assert_eq!(o.events, ["starttls"]);
}

#[test]
fn starttls_pipelined_plaintext_dropped() {
    // CVE-2011-0411: commands sent in the clear behind STARTTLS must never run inside TLS.
    let input = b"EHLO c\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<a@r.test>\r\n";
    let o = run_split_steps(
        &tls_cfg(Role::Delivery, false),
        &[Step::Input(input), Step::TlsEstablished],
    );
    assert_eq!(o.replies.last().unwrap(), "220 2.0.0 Ready to start TLS");
    assert!(!o.replies.iter().any(|r| r.starts_with("250 2.")), "{o:?}");
    assert_eq!(o.events, ["starttls"]);
}

#[test]
fn after_starttls_the_session_starts_over() {
    let steps = [
        Step::Input(b"EHLO c\r\nMAIL FROM:<a@r.test>\r\nSTARTTLS\r\n"),
        Step::TlsEstablished,
        // The transaction and the EHLO are forgotten: MAIL needs a new EHLO.
        Step::Input(b"MAIL FROM:<a@r.test>\r\nEHLO c\r\nSTARTTLS\r\nSTARTTLS x\r\n"),
    ];
    let o = run_split_steps(&tls_cfg(Role::Delivery, false), &steps);
    let after = o
        .replies
        .iter()
        .position(|r| r == "220 2.0.0 Ready to start TLS")
        .unwrap();
    let inside = &o.replies[after + 1..];
    assert_eq!(inside[0], "503 5.5.1 Send HELO/EHLO first");
    assert!(
        !inside.iter().any(|r| r[4..] == *"STARTTLS"),
        "offered again: {inside:?}"
    );
    assert_eq!(
        inside[inside.len() - 2..],
        ["503 5.5.1 TLS already active", "501 5.5.4 Syntax: STARTTLS"]
    );
}

#[test]
fn required_tls_refuses_mail_in_the_clear() {
    let o = run_split(
        &tls_cfg(Role::Delivery, true),
        b"EHLO c\r\nNOOP\r\nMAIL FROM:<a@r.test>\r\nVRFY x\r\nRSET\r\n",
    );
    assert_eq!(
        codes(&o)[2..],
        ["250 2.0.0", "530 5.7.0", "530 5.7.0", "250 2.0.0"]
    );
    let now = Instant::now();
    let mut secure = Connection::new_secure(Arc::new(tls_cfg(Role::Delivery, true)), now);
    let _ = secure.handle_input(now, b"EHLO c\r\nMAIL FROM:<a@r.test>\r\n");
    let mut out = Vec::new();
    let _ = secure.poll_transmit(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.ends_with("250 2.1.0 Sender ok\r\n"), "{text}");
}

#[test]
fn starttls_where_not_offered() {
    assert_eq!(codes(&delivery("STARTTLS\r\n"))[1..], ["502 5.5.1"]);
}

/// A submission session already inside TLS (as on port 465), with AUTH offered.
fn submission_secure(input: &[u8]) -> Outcome {
    let mut c = cfg(Role::Submission);
    c.auth_offered = true;
    c.tls_required = true;
    let whole = run_secure(&c, &[input]);
    for i in 0..=input.len() {
        assert_eq!(
            run_secure(&c, &[&input[..i], &input[i..]]),
            whole,
            "split at {i}"
        );
    }
    whole
}

fn run_secure(c: &EngineConfig, chunks: &[&[u8]]) -> Outcome {
    // Same driver as `run_with`, on a connection that starts secure: STARTTLS into TLS is the
    // same engine state as implicit TLS, see `after_starttls_the_session_starts_over`.
    let mut c = c.clone();
    c.tls_offered = false;
    SECURE.with(|s| s.set(true));
    let o = run_with(&c, chunks);
    SECURE.with(|s| s.set(false));
    o
}

thread_local! {
    static SECURE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// base64("\0alice@example.test\0secret") and with a wrong password.
const PLAIN_GOOD: &str = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=";
const PLAIN_BAD: &str = "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==";

#[test]
fn auth_is_offered_only_inside_tls() {
    let mut c = cfg(Role::Submission);
    c.auth_offered = true;
    c.tls_offered = true;
    let o = run_split(
        &c,
        format!("EHLO c\r\nAUTH PLAIN {PLAIN_GOOD}\r\n").as_bytes(),
    );
    assert!(
        !o.replies.iter().any(|l| l.contains("AUTH")),
        "{:?}",
        o.replies
    );
    assert_eq!(codes(&o).last().unwrap(), &"538 5.7.11");
    let o = submission_secure(b"EHLO c\r\n");
    assert!(
        o.replies.contains(&"250 AUTH PLAIN LOGIN".to_owned()),
        "{:?}",
        o.replies
    );
}

#[test]
fn auth_in_plaintext_only_when_allowed() {
    let mut c = cfg(Role::Submission);
    c.auth_offered = true;
    c.auth_plaintext = true;
    let o = run_split(
        &c,
        format!("EHLO c\r\nAUTH PLAIN {PLAIN_GOOD}\r\nMAIL FROM:<alice@example.test>\r\n")
            .as_bytes(),
    );
    assert!(
        o.replies.contains(&"250 AUTH PLAIN LOGIN".to_owned()),
        "{:?}",
        o.replies
    );
    assert_eq!(
        codes(&o)[2..],
        ["235 2.7.0", "250 2.1.0"],
        "{:?}",
        o.replies
    );
}

#[test]
fn auth_plain_then_send_as_self_or_alias() {
    let o = submission_secure(
        format!(
            "EHLO c\r\nAUTH PLAIN {PLAIN_GOOD}\r\nMAIL FROM:<Alice@Example.test>\r\nRSET\r\nMAIL FROM:<sales@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nhi\r\n.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        codes(&o)[2..],
        [
            "235 2.7.0",
            "250 2.1.0",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0"
        ]
    );
    assert_eq!(
        o.events,
        [
            "auth PLAIN alice@example.test",
            "start 1 x@remote.test",
            "end 1"
        ]
    );
}

#[test]
fn auth_failures_and_sequence() {
    let o = submission_secure(
        format!(
            "EHLO c\r\nMAIL FROM:<alice@example.test>\r\nAUTH PLAIN {PLAIN_BAD}\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!\r\nAUTH CRAM-MD5\r\nAUTH PLAIN {PLAIN_GOOD}\r\nAUTH PLAIN {PLAIN_GOOD}\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        codes(&o)[2..],
        [
            "530 5.7.0",
            "535 5.7.8",
            "334",
            "501 5.7.0",
            "334",
            "501 5.5.2",
            "504 5.5.4",
            "235 2.7.0",
            "503 5.5.1"
        ]
    );
}

#[test]
fn long_auth_lines_pass_however_they_are_split() {
    // RFC 4954 §4: AUTH lines may exceed 512 octets. `submission_secure` runs every split, so
    // a packet boundary inside "AUTH" cannot turn the limit back into 512.
    let ir = "QUFB".repeat(200); // 800 octets of valid base64, no NULs: a syntax error, not 500
    let o = submission_secure(format!("EHLO c\r\nAUTH PLAIN {ir}\r\n").as_bytes());
    assert_eq!(codes(&o)[2..], ["501 5.5.4"]);
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    let o = submission_secure(format!("EHLO c\r\n{long}").as_bytes());
    assert_eq!(codes(&o)[2..], ["500 5.5.2"]);
}

#[test]
fn auth_login_exchange() {
    // "alice@example.test", "secret"
    let o = submission_secure(
        b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS50ZXN0\r\nc2VjcmV0\r\nAUTH LOGIN YWxpY2VAZXhhbXBsZS50ZXN0\r\n",
    );
    assert_eq!(codes(&o)[2..], ["334", "334", "235 2.7.0", "503 5.5.1"]);
    let challenges: Vec<_> = o.replies.iter().filter(|l| l.starts_with("334")).collect();
    assert_eq!(challenges, ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"]);
}

#[test]
fn submission_sender_policy() {
    let o = submission_secure(
        format!(
            "EHLO c\r\nAUTH PLAIN {PLAIN_GOOD}\r\nMAIL FROM:<bob@example.test>\r\nMAIL FROM:<>\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(codes(&o)[3..], ["553 5.7.1", "553 5.7.1"]);
    assert_eq!(
        o.events[1..],
        ["rejected SenderNotOwned", "rejected SenderNotOwned"]
    );
}

#[test]
fn auth_is_not_offered_on_delivery() {
    let o = delivery("EHLO c\r\nAUTH PLAIN\r\n");
    assert_eq!(codes(&o)[2..], ["502 5.5.1"]);
}

#[test]
fn trusted_networks_submit_without_auth_but_not_bounces() {
    let input =
        b"EHLO c\r\nMAIL FROM:<>\r\nMAIL FROM:<anyone@example.test>\r\nRCPT TO:<x@remote.test>\r\n";
    let o = run_split_steps(
        &cfg(Role::Submission),
        &[Step::GrantTrusted, Step::Input(input)],
    );
    assert_eq!(
        o.replies[o.replies.len() - 3..],
        [
            "553 5.7.1 Null sender not allowed on submission",
            "250 2.1.0 Sender ok",
            "250 2.1.5 Recipient ok"
        ]
    );
}

mod fuzz {
    //! No input panics, and one DATA body never yields two messages.
    use super::*;
    use proptest::prelude::*;

    fn alphabet() -> impl Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"EHLO c\r\n",
            b"HELO c\r\n",
            b"MAIL FROM:<a@r.test>\r\n",
            b"MAIL FROM:<>",
            b"RCPT TO:<b@example.test>\r\n",
            b"RCPT TO:<b@remote.test>",
            b"DATA\r\n",
            b"BDAT 3",
            b" LAST",
            b"RSET\r\n",
            b"\r\n",
            b"\r",
            b"\n",
            b".",
            b"x",
            b"\xff",
            b" SIZE=99999999999999999999",
            b"QUIT\r\n",
        ];
        prop::collection::vec(prop::sample::select(tokens), 0..60).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn no_panic_and_split_invariant(input in alphabet(), at in any::<prop::sample::Index>()) {
            let c = cfg(Role::Delivery);
            let whole = run_with(&c, &[&input]);
            let i = at.index(input.len() + 1);
            prop_assert_eq!(run_with(&c, &[&input[..i], &input[i..]]), whole);
        }

        #[test]
        fn one_data_body_is_at_most_one_message(body in alphabet(), at in any::<prop::sample::Index>()) {
            // Whatever the body holds, only its first CRLF.CRLF ends it (the naive oracle says
            // where), and nothing before that is ever executed as a command.
            let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n".to_vec();
            input.extend_from_slice(&body);
            let o = run_with(&cfg(Role::Delivery), &[&input]);
            let i = at.index(input.len() + 1);
            prop_assert_eq!(&run_with(&cfg(Role::Delivery), &[&input[..i], &input[i..]]), &o);
            match super::super::data::naive::unstuff(&body, u64::MAX, DEFAULT_MAX_LINE_LENGTH) {
                None => {
                    prop_assert!(o.messages.is_empty());
                    prop_assert_eq!(o.events.len(), 1, "{:?}", o.events);
                }
                Some((content, _, None)) => {
                    prop_assert_eq!(o.messages.first(), Some(&content));
                    prop_assert_eq!(&o.events[1], "end 0");
                }
                Some((_, _, Some(_))) => {
                    prop_assert!(o.events[1].starts_with("abort 0 Some"), "{:?}", o.events);
                }
            }
        }
    }
}

#[test]
fn refused_bdat_chunks_are_read_as_data_never_as_commands() {
    // RFC 3030 §2: whatever refuses a BDAT whose size can be read, its octets follow and are
    // data. Each chunk here holds `QUIT\r\n`: run as a command it would end the session.
    let submission = || {
        let mut c = cfg(Role::Submission);
        c.auth_offered = true;
        c
    };
    let small = || {
        let mut c = cfg(Role::Delivery);
        c.max_message_size = 4;
        c
    };
    const TXN: &str = "MAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n";
    let rows: Vec<(&str, EngineConfig, String, Vec<&str>)> = vec![
        (
            "STARTTLS required first",
            tls_cfg(Role::Submission, true),
            "BDAT 6 LAST\r\nQUIT\r\n".into(),
            vec!["530 5.7.0"],
        ),
        (
            "no MAIL",
            cfg(Role::Delivery),
            "BDAT 6 LAST\r\nQUIT\r\n".into(),
            vec!["503 5.5.1"],
        ),
        (
            "no accepted RCPT",
            cfg(Role::Delivery),
            "MAIL FROM:<>\r\nRCPT TO:<b@remote.test>\r\nBDAT 6 LAST\r\nQUIT\r\n".into(),
            vec!["250 2.1.0", "550 5.7.1", "554 5.5.1"],
        ),
        (
            "not authenticated",
            submission(),
            "MAIL FROM:<a@example.test>\r\nBDAT 6 LAST\r\nQUIT\r\n".into(),
            vec!["530 5.7.0", "503 5.5.1"],
        ),
        (
            "over the size limit",
            small(),
            format!("{TXN}BDAT 6 LAST\r\nQUIT\r\n"),
            vec!["250 2.1.0", "250 2.1.5", "552 5.3.4"],
        ),
        (
            "unknown end marker",
            cfg(Role::Delivery),
            format!("{TXN}BDAT 6 FIRST\r\nQUIT\r\n"),
            vec!["250 2.1.0", "250 2.1.5", "501 5.5.4"],
        ),
        (
            "words after LAST",
            cfg(Role::Delivery),
            "BDAT 6 LAST now\r\nQUIT\r\n".into(),
            vec!["501 5.5.4"],
        ),
        (
            "bare LF after the command",
            cfg(Role::Delivery),
            format!("{TXN}BDAT 6 LAST\nQUIT\r\n"),
            vec!["250 2.1.0", "250 2.1.5", "500 5.5.2"],
        ),
        (
            "invalid UTF-8 after the size",
            cfg(Role::Delivery),
            "BDAT 6 \u{7f}\u{80}\r\nQUIT\r\n".into(),
            vec!["501 5.5.4"],
        ),
    ];
    for (what, c, dialogue, want) in rows {
        let input = format!("EHLO c\r\n{dialogue}NOOP\r\n");
        let o = run_split(&c, input.as_bytes());
        let mut want = want;
        want.push("250 2.0.0");
        assert_eq!(codes(&o)[2..], want[..], "{what}: {:?}", o.replies);
        assert!(!o.closed, "{what}: the chunk was run as commands");
        assert!(o.messages.is_empty(), "{what}");
    }
    // Invalid UTF-8 proper (not expressible in a &str row): the size is still read.
    let o = run_split(
        &cfg(Role::Delivery),
        b"EHLO c\r\nBDAT 6 \xff\r\nQUIT\r\nNOOP\r\n",
    );
    assert_eq!(codes(&o)[2..], ["500 5.5.2", "250 2.0.0"]);
    assert!(!o.closed);
    // A size that cannot be read leaves nothing to skip: the next line is a command.
    let o = delivery("EHLO c\r\nBDAT 99999999999999999999999 LAST\r\nNOOP\r\n");
    assert_eq!(codes(&o)[2..], ["501 5.5.4", "250 2.0.0"]);
}

#[test]
fn a_refused_bdat_at_the_error_limit_closes_without_reading_on() {
    let mut c = cfg(Role::Delivery);
    c.max_bad_commands = 2;
    let o = run_split(&c, b"EHLO c\r\nFOO\r\nBDAT 6 FIRST\r\nQUIT\r\n");
    assert_eq!(codes(&o)[2..], ["500 5.5.2", "421 4.7.0"]);
    assert_eq!(o.events, ["close TooManyErrors"]);
}

/// A message whose content holds one line of `len` octets, CRLF included.
fn with_line(len: usize) -> Vec<u8> {
    let mut content = b"Subject: long\r\n\r\n".to_vec();
    content.extend((0..len - 2).map(|i| b'a' + (i % 26) as u8));
    content.extend_from_slice(b"\r\nend\r\n");
    content
}

#[test]
fn long_lines_are_stored_byte_exact_up_to_the_limit() {
    // Lines far over RFC 5321's 1000 octets are real mail (Postfix and Exim take them).
    let mut c = cfg(Role::Delivery);
    c.max_line_length = 1500;
    let fits = with_line(1500);
    for (verb, wire) in [
        (
            "DATA",
            [b"DATA\r\n".to_vec(), fits.clone(), b".\r\n".to_vec()].concat(),
        ),
        (
            "BDAT",
            [
                format!("BDAT {} LAST\r\n", fits.len()).into_bytes(),
                fits.clone(),
            ]
            .concat(),
        ),
    ] {
        let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n".to_vec();
        input.extend_from_slice(&wire);
        input.extend_from_slice(b"NOOP\r\n");
        let o = run_split(&c, &input);
        assert_eq!(o.messages, std::slice::from_ref(&fits), "{verb}");
        assert_eq!(codes(&o).last(), Some(&"250 2.0.0"), "{verb}");
    }
    assert_eq!(
        EngineConfig::new("h", Role::Delivery, &[]).max_line_length,
        65_536
    );
}

#[test]
fn a_line_over_the_limit_refuses_the_message_after_its_data() {
    // The reply comes once the data has ended, so the dialogue never loses its place.
    let mut c = cfg(Role::Delivery);
    c.max_line_length = 1000;
    let over = with_line(1001);
    for wire in [
        [b"DATA\r\n".to_vec(), over.clone(), b".\r\n".to_vec()].concat(),
        [
            format!("BDAT {} LAST\r\n", over.len()).into_bytes(),
            over.clone(),
        ]
        .concat(),
    ] {
        let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n".to_vec();
        input.extend_from_slice(&wire);
        input.extend_from_slice(b"NOOP\r\n");
        let o = run_split(&c, &input);
        assert!(o.messages.is_empty());
        let codes = codes(&o);
        assert_eq!(codes[codes.len() - 2..], ["550 5.6.0", "250 2.0.0"]);
        assert!(o
            .replies
            .contains(&"550 5.6.0 Message refused: a line is longer than 1000 octets".to_owned()));
        assert!(o
            .events
            .last()
            .unwrap()
            .starts_with("abort 0 Some(LineTooLong)"));
    }
}

#[test]
fn smuggling_nul_dot_is_refused_whole() {
    // `\r\n\0.\r\n` ends no body here, but a next hop that strips NULs would end one there.
    for (what, input) in [
        (
            "DATA",
            &b"DATA\r\nfirst\r\n\0.\r\nMAIL FROM:<x@y.test>\r\n.\r\n"[..],
        ),
        ("BDAT", b"BDAT 11 LAST\r\nfirst\r\n\0.\r\n"),
    ] {
        let mut all = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n".to_vec();
        all.extend_from_slice(input);
        all.extend_from_slice(b"NOOP\r\n");
        let o = run_split(&cfg(Role::Delivery), &all);
        assert!(o.messages.is_empty(), "{what}");
        let codes = codes(&o);
        assert_eq!(
            codes[codes.len() - 2..],
            ["550 5.6.0", "250 2.0.0"],
            "{what}"
        );
        assert!(
            o.events
                .last()
                .unwrap()
                .starts_with("abort 0 Some(NulOctet)"),
            "{what}: {:?}",
            o.events
        );
    }
}

#[test]
fn envelopes_without_angle_brackets_are_taken_unless_strict() {
    // Postfix's strict_rfc821_envelopes = no: the address runs to the first space.
    let rows = [
        (
            "MAIL FROM:a@remote.test",
            "RCPT TO:b@example.test",
            "b@example.test",
        ),
        (
            "MAIL FROM: a@remote.test SIZE=10",
            "RCPT TO: b@example.test",
            "b@example.test",
        ),
        (
            "MAIL FROM:a@remote.test BODY=8BITMIME",
            "RCPT TO:<b@example.test>",
            "b@example.test",
        ),
        (
            "MAIL FROM:<>",
            "RCPT TO:postmaster",
            "postmaster@example.test",
        ),
    ];
    for (mail, rcpt, delivered) in rows {
        let input = format!("EHLO c\r\n{mail}\r\n{rcpt}\r\nDATA\r\nx\r\n.\r\n");
        let o = delivery(&input);
        assert_eq!(
            codes(&o)[2..],
            ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"],
            "{mail} / {rcpt}"
        );
        assert_eq!(o.events[0], format!("start 0 {delivered}"));
        let mut strict = cfg(Role::Delivery);
        strict.strict_envelopes = true;
        let o = run_split(
            &strict,
            format!("EHLO c\r\n{mail}\r\n{rcpt}\r\n").as_bytes(),
        );
        assert!(
            codes(&o)[2..].iter().any(|c| c.starts_with("501")),
            "strict: {mail} / {rcpt}: {:?}",
            o.replies
        );
    }
    // Without brackets the address is checked as strictly as within them, and the relay rule
    // still holds.
    for (line, want) in [
        ("RCPT TO:b@remote.test", "550 5.7.1"),
        ("RCPT TO:b%remote.test@example.test", "550 5.7.1"),
        ("RCPT TO:b@", "501 5.1.3"),
        ("RCPT TO:b\u{1b}[31m@example.test", "501 5.1.3"),
        ("RCPT TO:@remote.test:b@example.test", "501 5.1.3"),
    ] {
        let o = delivery(&format!("EHLO c\r\nMAIL FROM:a@remote.test\r\n{line}\r\n"));
        assert_eq!(codes(&o)[3], want, "{line}");
    }
}

#[test]
fn ehlo_arguments_are_hosts_and_nothing_else_reaches_the_reply() {
    // RFC 5321 §4.1.1.1: a domain or an address literal; read liberally, as real clients need.
    for host in [
        "mail.example.test",
        "my_pc.local",
        "LAPTOP-X1",
        "localhost",
        "192.0.2.7",
        "[192.0.2.7]",
        "[IPv6:2001:db8::7]",
        "bücher.example",
        "host.example.",
    ] {
        for verb in ["EHLO", "HELO"] {
            let o = delivery(&format!("{verb} {host}\r\nMAIL FROM:<>\r\n"));
            assert_eq!(
                o.replies[1],
                format!(
                    "250{}mx.example.test Hello {host}",
                    if verb == "EHLO" { "-" } else { " " }
                ),
                "{verb} {host}"
            );
            assert_eq!(codes(&o).last(), Some(&"250 2.1.0"), "{verb} {host}");
        }
    }
    for bad in [
        "a\u{1b}[31mred\u{7}",
        "a\0b",
        "a\u{7f}",
        "a\u{9b}31m",
        "evil\u{202e}moc.example",
        "a\u{200b}b",
        "a\tb",
        "a<b>",
        "a;b",
        "[]",
        "[a b]",
        "[192.0.2.1",
    ] {
        for verb in ["EHLO", "HELO"] {
            let o = delivery(&format!("{verb} {bad}\r\nMAIL FROM:<>\r\n"));
            // Refused, not echoed, and the session is as before: still no greeting.
            assert_eq!(codes(&o)[1..], ["501 5.5.4", "503 5.5.1"], "{verb} {bad:?}");
            assert!(
                o.replies
                    .iter()
                    .all(|r| r.bytes().all(|b| (32..127).contains(&b))),
                "{verb} {bad:?}: {:?}",
                o.replies
            );
        }
    }
}

#[test]
fn a_listed_source_is_refused_at_mail_and_the_session_ends() {
    let c = cfg(Role::Delivery);
    let input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n";
    let o = run_split_steps(
        &c,
        &[Step::SourceLookup(Some("bl.test")), Step::Input(input)],
    );
    assert_eq!(
        o.replies.last().unwrap(),
        "554 5.7.1 Service unavailable; client blocked using bl.test"
    );
    assert!(o.closed);
    assert_eq!(o.events, ["source check", "close Listed"]);
    // EHLO is answered while the lookups run: the client waits only at MAIL.
    assert!(
        o.replies
            .iter()
            .any(|r| r.starts_with("250-mx.example.test")),
        "{o:?}"
    );
}

#[test]
fn a_clear_source_sends_mail_as_if_never_checked() {
    let c = cfg(Role::Delivery);
    let input =
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    let checked = run_split_steps(&c, &[Step::SourceLookup(None), Step::Input(input)]);
    let unchecked = run_split_steps(&c, &[Step::Input(input)]);
    assert_eq!(checked.replies, unchecked.replies);
    assert_eq!(checked.messages, unchecked.messages);
    assert_eq!(checked.events[0], "source check");
    assert_eq!(checked.events[1..], unchecked.events[..]);
    // Asked once per session: the second MAIL does not wait again.
    let two = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n";
    let o = run_split_steps(&c, &[Step::SourceLookup(None), Step::Input(two)]);
    assert_eq!(o.events, ["source check", "close Quit"]);
}

#[test]
fn mail_waits_for_the_source_verdict_and_stale_verdicts_are_ignored() {
    let now = Instant::now();
    let mut conn = Connection::new(Arc::new(cfg(Role::Delivery)), now);
    // A verdict nobody asked for changes nothing.
    conn.handle_source_verdict(
        now,
        SourceVerdict::Listed {
            zone: "x.test".into(),
        },
    );
    conn.require_source_verdict();
    let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n";
    let used = conn.handle_input(now, input);
    // Nothing after MAIL is read before the verdict; no deadline runs meanwhile.
    assert_eq!(&input[used..], b"RCPT TO:<b@example.test>\r\n");
    assert!(matches!(conn.poll_event(), Some(Event::SourceCheck)));
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_source_verdict(now, SourceVerdict::Clear);
    // A second verdict for the same session is ignored.
    conn.handle_source_verdict(
        now,
        SourceVerdict::Listed {
            zone: "x.test".into(),
        },
    );
    assert_eq!(conn.handle_input(now, &input[used..]), input.len() - used);
    let mut out = Vec::new();
    assert!(conn.poll_transmit(&mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"),
        "{text}"
    );

    // A verdict that comes before MAIL is kept for it.
    let mut conn = Connection::new(Arc::new(cfg(Role::Delivery)), now);
    conn.require_source_verdict();
    conn.handle_source_verdict(
        now,
        SourceVerdict::Listed {
            zone: "bl.test".into(),
        },
    );
    conn.handle_input(now, b"EHLO c\r\nMAIL FROM:<>\r\n");
    assert!(conn.is_closed());
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Close(CloseReason::Listed))
    ));
}

#[test]
fn shutdown_while_mail_waits_for_the_verdict_answers_then_closes() {
    let now = Instant::now();
    let mut conn = Connection::new(Arc::new(cfg(Role::Delivery)), now);
    conn.require_source_verdict();
    conn.handle_input(now, b"EHLO c\r\nMAIL FROM:<>\r\n");
    conn.handle_shutdown();
    assert!(!conn.is_closed(), "MAIL is still owed its reply");
    conn.handle_source_verdict(now, SourceVerdict::Clear);
    let mut out = Vec::new();
    assert!(conn.poll_transmit(&mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with(
            "250 2.1.0 Sender ok\r\n421 4.3.2 mx.example.test Service shutting down\r\n"
        ),
        "{text}"
    );
    assert!(conn.is_closed());
}

#[test]
fn sender_check_holds_mail_and_pipelined_commands_until_its_verdict() {
    let mut c = cfg(Role::Delivery);
    c.check_sender = true;
    // Pipelined (RFC 2920): RCPT and DATA wait behind the check, then run in order.
    let input = b"EHLO c.test\r\nMAIL FROM:<a@spf-pass.test>\r\nRCPT TO:<b@example.test>\r\n\
        DATA\r\nhi\r\n.\r\nMAIL FROM:<x@spf-fail.test>\r\nRCPT TO:<b@example.test>\r\nMAIL FROM:<>\r\n";
    let o = run_split(&c, input);
    assert_eq!(
        codes(&o)[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "550 5.7.23",
            "503 5.5.1",
            "250 2.1.0"
        ]
    );
    assert_eq!(
        o.events,
        [
            "check c.test <a@spf-pass.test>",
            "start 0 b@example.test",
            "end 0",
            "check c.test <x@spf-fail.test>",
            "rejected SpfFail",
            "check c.test <>",
        ]
    );
    // While the check is out, no client timeout runs: the wait is the server's.
    let mut conn = Connection::new(Arc::new(c), Instant::now());
    let now = Instant::now();
    let _ = conn.handle_input(now, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(conn.poll_timeout(), None);
    // A verdict nobody asked for is ignored.
    conn.handle_sender_checked(now, SenderVerdict::Accept);
    conn.handle_sender_checked(now, SenderVerdict::SpfFail);
    let mut out = Vec::new();
    let _ = conn.poll_transmit(&mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("250 2.1.0 Sender ok\r\n"));
}

#[test]
fn submission_and_unchecked_delivery_never_ask_about_the_sender() {
    let o = delivery("EHLO c\r\nMAIL FROM:<x@spf-fail.test>\r\n");
    assert_eq!(codes(&o)[2..], ["250 2.1.0"]);
    assert!(o.events.is_empty(), "{:?}", o.events);
}

#[test]
fn dmarc_rejection_replaces_the_250_and_the_session_goes_on() {
    let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n\
        X-Dmarc: bad\r\n\r\nx\r\n.\r\nNOOP\r\n";
    let o = run_split(&cfg(Role::Delivery), input);
    assert_eq!(codes(&o)[5..], ["550 5.7.1", "250 2.0.0"]);
    assert!(o
        .replies
        .iter()
        .any(|r| r.contains("DMARC policy of bad.test")));
    assert_eq!(o.events[2], "rejected DmarcReject");
    assert!(o.messages.is_empty());
}
