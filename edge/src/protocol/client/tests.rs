//! Dialogues of the client engine against scripted server replies. Each is run with the server's
//! bytes whole, split at every byte boundary, and byte by byte: all must send the same commands
//! and give the same events.

// Tests start sessions at the real time: any instant works, since time only moves when passed in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::address::parse_mailbox;
use crate::protocol::Secret;

pub(super) fn mailbox(s: &str) -> Mailbox {
    parse_mailbox(s).unwrap()
}

use crate::protocol::Mailbox;

pub(super) fn message(from: &str, to: &[&str]) -> Message {
    Message {
        from: (!from.is_empty()).then(|| mailbox(from)),
        to: to.iter().map(|t| mailbox(t)).collect(),
        size: None,
        eight_bit: false,
        smtputf8: false,
    }
}

/// One outcome, in a comparable form.
pub(super) fn summary(o: &Outcome) -> String {
    match o {
        Outcome::Delivered(r) => format!("sent {r}"),
        Outcome::Deferred(c) => format!("deferred: {c}"),
        Outcome::Failed(c) => format!("failed: {c}"),
    }
}

/// What the caller does in a scripted run.
#[derive(Clone)]
struct Script {
    cfg: ClientConfig,
    /// Messages handed over before the greeting, with their content.
    messages: Vec<(Message, Vec<u8>)>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transcript {
    /// Everything the client sent, in order.
    sent: String,
    events: Vec<String>,
    closed: bool,
}

fn script(cfg: ClientConfig, messages: Vec<(Message, &[u8])>) -> Script {
    Script {
        cfg,
        messages: messages.into_iter().map(|(m, b)| (m, b.to_vec())).collect(),
    }
}

fn smtp() -> ClientConfig {
    ClientConfig::new(Dialect::Smtp, "relay.example.test")
}

/// Runs the client against `chunks` of server output; the caller side sends each content in
/// 3-octet pieces, answers STARTTLS at once (the handshake is not this test's subject) and
/// quits when the engine is ready.
fn run(s: &Script, chunks: &[&[u8]]) -> Transcript {
    let now = Instant::now();
    let mut c = Client::new(s.cfg.clone(), now);
    for (m, _) in &s.messages {
        c.send_message(now, m.clone());
    }
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let react = |c: &mut Client, sent: &mut Vec<u8>, events: &mut Vec<String>| {
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Ready => {
                    events.push("ready".into());
                    c.quit(now);
                }
                Event::StartTls => {
                    events.push("starttls".into());
                    c.handle_tls_established(now);
                }
                Event::SendBody(id) => {
                    events.push(format!("body {}", id.0));
                    for piece in s.messages[id.0 as usize].1.chunks(3) {
                        c.send_body(now, piece);
                    }
                    c.end_body(now);
                }
                Event::Done(r) => {
                    let o: Vec<String> = r.outcomes.iter().map(summary).collect();
                    events.push(format!("done {}: {}", r.id.0, o.join(" | ")));
                }
                Event::Closed(end) => events.push(format!("closed {end:?}")),
            }
        }
        let _ = c.poll_transmit(sent);
    };
    react(&mut c, &mut sent, &mut events);
    // A server sends a reply only after its command: each line is offered on its own, so the
    // caller's reaction to one reply (QUIT after Ready) comes before the next reply is read.
    for chunk in chunks
        .iter()
        .flat_map(|c| c.split_inclusive(|&b| b == b'\n'))
    {
        let mut rest: &[u8] = chunk;
        while !rest.is_empty() {
            let used = c.handle_input(now, rest);
            rest = &rest[used..];
            react(&mut c, &mut sent, &mut events);
            if used == 0 {
                break;
            }
        }
    }
    Transcript {
        sent: String::from_utf8(sent).unwrap(),
        events,
        closed: c.is_closed(),
    }
}

/// Runs `server` whole, split at every index, and byte by byte; all must agree.
fn run_split(s: &Script, server: &str) -> Transcript {
    let input = server.as_bytes();
    let whole = run(s, &[input]);
    for i in 0..=input.len() {
        assert_eq!(run(s, &[&input[..i], &input[i..]]), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(s, &bytes), whole, "byte by byte");
    whole
}

const GREETING: &str = "220 mx.example.test ESMTP\r\n";
const EHLO_FULL: &str = concat!(
    "250-mx.example.test\r\n",
    "250-PIPELINING\r\n",
    "250-SIZE 1000\r\n",
    "250-8BITMIME\r\n",
    "250-SMTPUTF8\r\n",
    "250-ENHANCEDSTATUSCODES\r\n",
    "250 CHUNKING\r\n"
);
const EHLO_PLAIN: &str = "250-mx.example.test\r\n250 ENHANCEDSTATUSCODES\r\n";

#[test]
fn pipelined_transaction_with_one_refused_recipient() {
    let mut m = message("a@example.test", &["ok@remote.test", "no@remote.test"]);
    m.size = Some(20);
    let s = script(smtp(), vec![(m, b"Subject: x\r\n\r\n.hi\r\n")]);
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 No such user\r\n",
            "354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as X1\r\n",
            "221 2.0.0 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.sent,
        concat!(
            "EHLO relay.example.test\r\n",
            // RFC 2920: the envelope and DATA in one group.
            "MAIL FROM:<a@example.test> SIZE=20\r\n",
            "RCPT TO:<ok@remote.test>\r\n",
            "RCPT TO:<no@remote.test>\r\n",
            "DATA\r\n",
            // RFC 5321 §4.5.2: the leading dot is doubled.
            "Subject: x\r\n\r\n..hi\r\n.\r\n",
            "QUIT\r\n"
        )
    );
    assert_eq!(
        t.events,
        [
            "body 0",
            "done 0: sent 250 2.0.0 Ok: queued as X1 | failed: 550 5.1.1 No such user (in reply to RCPT TO)",
            "ready",
            "closed Quit"
        ]
    );
    assert!(t.closed);
}

#[test]
fn without_pipelining_one_command_per_reply() {
    let s = script(
        smtp(),
        vec![(
            message("a@example.test", &["ok@remote.test", "no@remote.test"]),
            b"x\r\n",
        )],
    );
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 2.1.0 Ok\r\n",
        "250 2.1.5 Ok\r\n",
        "550 5.1.1 No\r\n",
        "354 Go\r\n",
        "250 2.0.0 Ok\r\n",
        "221 Bye\r\n",
    ];
    let t = run_split(&s, &server.concat());
    assert_eq!(
        t.sent,
        "EHLO relay.example.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<ok@remote.test>\r\nRCPT TO:<no@remote.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
    );
    // Nothing is sent before the reply it waits for: after the greeting and EHLO only MAIL.
    let partial = run(&s, &[server[..3].concat().as_bytes()]);
    assert_eq!(
        partial.sent,
        "EHLO relay.example.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<ok@remote.test>\r\n"
    );
}

#[test]
fn ehlo_refused_falls_back_to_helo_without_extensions() {
    let mut m = message("a@example.test", &["b@remote.test"]);
    m.size = Some(3);
    m.eight_bit = true;
    let s = script(smtp(), vec![(m, b"\xc3\xa9\r\n")]);
    let t = run_split(
        &s,
        &[
            GREETING,
            "502 5.5.2 Command not recognized\r\n",
            "250 mx.example.test\r\n",
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    // RFC 5321 §3.2: HELO, then plain commands: no SIZE=, and the 8-bit message goes as it is.
    assert_eq!(
        t.sent,
        "EHLO relay.example.test\r\nHELO relay.example.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n\u{e9}\r\n.\r\nQUIT\r\n"
    );
    assert_eq!(t.events[1], "done 0: sent 250 Ok");
}

#[test]
fn lmtp_gives_one_verdict_per_accepted_recipient() {
    let cfg = ClientConfig::new(Dialect::Lmtp, "relay.example.test");
    let m = message(
        "a@example.test",
        &["one@example.test", "two@example.test", "three@example.test"],
    );
    let s = script(cfg, vec![(m, b"hi\r\n")]);
    let t = run_split(
        &s,
        &[
            "220 store LMTP\r\n",
            "250-store\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 Unknown\r\n",
            "354 Go\r\n",
            // RFC 2033 §4.2: one reply per accepted RCPT, in order.
            "250 2.0.0 one saved\r\n",
            "452 4.2.2 Mailbox full\r\n",
            "221 Bye\r\n",
        ]
        .concat(),
    );
    assert!(
        t.sent.starts_with("LHLO relay.example.test\r\n"),
        "{}",
        t.sent
    );
    assert_eq!(
        t.events[1],
        concat!(
            "done 0: sent 250 2.0.0 one saved",
            " | deferred: 452 4.2.2 Mailbox full (in reply to end of data)",
            " | failed: 550 5.1.1 Unknown (in reply to RCPT TO)"
        )
    );
}

#[test]
fn refused_mail_from_decides_every_recipient_and_next_message_follows() {
    let s = script(
        smtp(),
        vec![
            (
                message("bad@example.test", &["a@remote.test", "b@remote.test"]),
                b"1\r\n",
            ),
            (message("good@example.test", &["c@remote.test"]), b"2\r\n"),
        ],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "553 5.7.1 Sender refused\r\n",
            "503 5.5.1 No MAIL\r\n503 5.5.1 No MAIL\r\n503 5.5.1 No MAIL\r\n",
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n250 2.0.0 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    let refused = "failed: 553 5.7.1 Sender refused (in reply to MAIL FROM)";
    assert_eq!(t.events[0], format!("done 0: {refused} | {refused}"));
    assert_eq!(t.events[2], "done 1: sent 250 2.0.0 Ok");
    // No transaction was open after the refused MAIL: no RSET.
    assert!(
        t.sent.contains("DATA\r\nMAIL FROM:<good@example.test>"),
        "{}",
        t.sent
    );
}

#[test]
fn refused_data_decides_accepted_recipients_and_rset_precedes_the_next_mail() {
    let s = script(
        smtp(),
        vec![
            (
                message("a@example.test", &["x@remote.test", "y@remote.test"]),
                b"1\r\n",
            ),
            (message("a@example.test", &["z@remote.test"]), b"2\r\n"),
        ],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450 4.2.0 Greylisted\r\n",
            "451 4.3.0 Try later\r\n",
            "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n250 2.0.0 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.events[0],
        "done 0: deferred: 451 4.3.0 Try later (in reply to DATA) | deferred: 450 4.2.0 Greylisted (in reply to RCPT TO)"
    );
    assert!(
        t.sent.contains(
            "DATA\r\nRSET\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<z@remote.test>\r\nDATA\r\n"
        ),
        "{}",
        t.sent
    );
    assert_eq!(t.events[2], "done 1: sent 250 2.0.0 Ok");
}

#[test]
fn completed_transaction_is_followed_by_mail_without_rset() {
    let s = script(
        smtp(),
        vec![
            (message("a@example.test", &["x@remote.test"]), b"1\r\n"),
            (message("", &["y@remote.test"]), b"2\r\n"),
        ],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n",
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.sent,
        concat!(
            "EHLO relay.example.test\r\n",
            "MAIL FROM:<a@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n1\r\n.\r\n",
            // The null reverse-path of a bounce (RFC 5321 §4.5.5).
            "MAIL FROM:<>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n2\r\n.\r\n",
            "QUIT\r\n"
        )
    );
}

#[test]
fn no_accepted_recipient_means_no_data_and_rset_before_quit_is_not_needed() {
    let s = script(
        smtp(),
        vec![
            (message("a@example.test", &["x@remote.test"]), b"1\r\n"),
            (message("a@example.test", &["y@remote.test"]), b"2\r\n"),
        ],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n550 5.1.1 No\r\n",
            "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.sent,
        concat!(
            "EHLO relay.example.test\r\n",
            "MAIL FROM:<a@example.test>\r\nRCPT TO:<x@remote.test>\r\n",
            "RSET\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n2\r\n.\r\n",
            "QUIT\r\n"
        )
    );
}

#[test]
fn pipelined_data_accepted_with_nobody_gets_an_empty_message() {
    let s = script(
        smtp(),
        vec![(message("a@example.test", &["x@remote.test"]), b"1\r\n")],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "250 Ok\r\n550 5.1.1 No\r\n354 Go\r\n554 5.5.1 No valid recipients\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert!(t.sent.ends_with("DATA\r\n.\r\nQUIT\r\n"), "{}", t.sent);
    assert_eq!(
        t.events[0],
        "done 0: failed: 550 5.1.1 No (in reply to RCPT TO)"
    );
}

#[test]
fn smtputf8_message_to_a_server_without_it_fails_without_sending() {
    let s = script(
        smtp(),
        vec![(
            message("a@example.test", &["j\u{f6}rg@remote.test"]),
            b"1\r\n",
        )],
    );
    let t = run_split(&s, &[GREETING, EHLO_PLAIN, "221 Bye\r\n"].concat());
    // RFC 6531 §3.4: no MAIL at all.
    assert_eq!(t.sent, "EHLO relay.example.test\r\nQUIT\r\n");
    assert_eq!(
        t.events[0],
        "done 0: failed: the message needs SMTPUTF8 and the server does not offer it"
    );
}

#[test]
fn smtputf8_and_8bitmime_parameters_when_offered() {
    let mut m = message("a@example.test", &["j\u{f6}rg@remote.test"]);
    m.eight_bit = true;
    let s = script(smtp(), vec![(m, b"1\r\n")]);
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert!(
        t.sent
            .contains("MAIL FROM:<a@example.test> BODY=8BITMIME SMTPUTF8\r\n"),
        "{}",
        t.sent
    );
}

#[test]
fn message_over_the_servers_size_limit_fails_without_sending() {
    let mut m = message("a@example.test", &["b@remote.test"]);
    m.size = Some(1001);
    let s = script(smtp(), vec![(m, b"1\r\n")]);
    let t = run_split(&s, &[GREETING, EHLO_FULL, "221 Bye\r\n"].concat());
    assert_eq!(t.sent, "EHLO relay.example.test\r\nQUIT\r\n");
    assert_eq!(
        t.events[0],
        "done 0: failed: message larger than the server limit of 1000 octets"
    );
}

#[test]
fn starttls_drops_plaintext_after_the_220_and_says_ehlo_again() {
    let now = Instant::now();
    let mut c = Client::new(smtp(), now);
    let opening = [GREETING, "250-mx.example.test\r\n250 STARTTLS\r\n"].concat();
    assert_eq!(c.handle_input(now, opening.as_bytes()), opening.len());
    // Injected in the clear behind the 220 (the client-side twin of CVE-2011-0411): consumed
    // with it and never read as the EHLO reply after the handshake.
    let injected = "220 2.0.0 Ready to start TLS\r\n250-evil\r\n250 PIPELINING\r\n";
    assert_eq!(c.handle_input(now, injected.as_bytes()), injected.len());
    assert_eq!(c.poll_event(), Some(Event::StartTls));
    assert_eq!(
        c.poll_timeout(),
        None,
        "the handshake's deadline is the driver's"
    );
    c.handle_tls_established(now);
    assert!(c.is_secure());
    let mut sent = Vec::new();
    let _ = c.poll_transmit(&mut sent);
    assert_eq!(
        sent,
        b"EHLO relay.example.test\r\nSTARTTLS\r\nEHLO relay.example.test\r\n"
    );
    assert_eq!(
        c.capabilities(),
        None,
        "what was said in the clear is forgotten"
    );
    c.handle_input(now, b"250-mx.example.test\r\n250 SIZE 10\r\n");
    assert_eq!(c.poll_event(), Some(Event::Ready));
    let caps = c.capabilities().unwrap();
    assert!(!caps.pipelining && !caps.starttls);
    assert_eq!(caps.size, Some(Some(10)));
}

#[test]
fn starttls_then_auth_plain_then_mail() {
    let mut cfg = smtp();
    cfg.tls = TlsPolicy::Required;
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"pw".to_vec()),
        allow_plaintext: false,
    });
    let s = script(
        cfg,
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
            "220 2.0.0 Go ahead\r\n",
            "250-mx.example.test\r\n250 AUTH LOGIN PLAIN\r\n",
            "235 2.7.0 Authenticated\r\n",
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    // Credentials only inside TLS: AUTH was offered before STARTTLS and not used then.
    assert!(
        t.sent.starts_with(concat!(
            "EHLO relay.example.test\r\nSTARTTLS\r\nEHLO relay.example.test\r\n",
            "AUTH PLAIN AHJlbGF5AHB3\r\nMAIL FROM:<a@example.test>\r\n"
        )),
        "{}",
        t.sent
    );
    assert_eq!(t.events[2], "done 0: sent 250 Ok");
}

#[test]
fn auth_login_when_plain_is_not_offered() {
    let mut cfg = smtp();
    cfg.tls = TlsPolicy::None;
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"pw".to_vec()),
        allow_plaintext: true,
    });
    let s = script(cfg, vec![]);
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx.example.test\r\n250 AUTH=LOGIN\r\n",
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.sent,
        "EHLO relay.example.test\r\nAUTH LOGIN\r\ncmVsYXk=\r\ncHc=\r\nQUIT\r\n"
    );
    assert_eq!(t.events, ["ready", "closed Quit"]);
}

#[test]
fn credentials_are_not_sent_in_the_clear_unless_allowed() {
    let mut cfg = smtp();
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"pw".to_vec()),
        allow_plaintext: false,
    });
    let s = script(
        cfg,
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx.example.test\r\n250 AUTH PLAIN\r\n",
            "221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(t.sent, "EHLO relay.example.test\r\nQUIT\r\n");
    assert_eq!(
        t.events[0],
        "done 0: deferred: no usable AUTH mechanism for the credentials"
    );
    assert_eq!(t.events[1], "closed Failed(AuthUnavailable)");
}

#[test]
fn auth_refused_defers_the_mail() {
    let mut cfg = smtp();
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"bad".to_vec()),
        allow_plaintext: true,
    });
    let s = script(
        cfg,
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx.example.test\r\n250 AUTH PLAIN\r\n",
            "535 5.7.8 Bad credentials\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.events[0],
        "done 0: deferred: 535 5.7.8 Bad credentials (in reply to AUTH)"
    );
}

#[test]
fn required_tls_not_offered_defers_every_recipient() {
    let mut cfg = smtp();
    cfg.tls = TlsPolicy::Required;
    let s = script(
        cfg,
        vec![
            (
                message("a@example.test", &["x@remote.test", "y@remote.test"]),
                b"1\r\n",
            ),
            (message("a@example.test", &["z@remote.test"]), b"2\r\n"),
        ],
    );
    let t = run_split(&s, &[GREETING, EHLO_FULL, "221 Bye\r\n"].concat());
    assert_eq!(t.sent, "EHLO relay.example.test\r\nQUIT\r\n");
    let d = "deferred: TLS is required but STARTTLS is not available";
    assert_eq!(
        t.events,
        [
            format!("done 0: {d} | {d}"),
            format!("done 1: {d}"),
            "closed Failed(TlsUnavailable)".into()
        ]
    );
}

#[test]
fn opportunistic_tls_refused_goes_on_in_the_clear() {
    let s = script(
        smtp(),
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx.example.test\r\n250 STARTTLS\r\n",
            "454 4.7.0 TLS not available\r\n",
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert!(
        t.sent
            .starts_with("EHLO relay.example.test\r\nSTARTTLS\r\nMAIL FROM:"),
        "{}",
        t.sent
    );
    assert_eq!(t.events[1], "done 0: sent 250 Ok");
}

#[test]
fn greeting_refusal_defers_and_quits() {
    let s = script(
        smtp(),
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(&s, "554 5.7.1 Go away\r\n221 Bye\r\n");
    assert_eq!(t.sent, "QUIT\r\n");
    assert_eq!(
        t.events[0],
        "done 0: deferred: 554 5.7.1 Go away (in reply to greeting)"
    );
    assert!(t.closed);
}

#[test]
fn a_421_mid_transaction_defers_the_unanswered_and_closes() {
    let s = script(
        smtp(),
        vec![(
            message("a@example.test", &["x@remote.test", "y@remote.test"]),
            b"1\r\n",
        )],
    );
    let t = run_split(
        &s,
        &[
            GREETING,
            EHLO_FULL,
            "250 Ok\r\n550 5.1.1 No\r\n421 4.3.2 Shutting down\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        t.events,
        [
            "done 0: failed: 550 5.1.1 No (in reply to RCPT TO) | deferred: 421 4.3.2 Shutting down (in reply to RCPT TO)",
            "closed Failed(Reply { stage: Rcpt, reply: ServerReply { code: 421, status: Some(EnhancedStatus { class: 4, subject: 3, detail: 2 }), lines: [\"Shutting down\"] } })"
        ]
    );
    assert!(t.closed);
    // Nothing after the 421: no QUIT into a closing connection.
    assert!(!t.sent.contains("QUIT"));
}

/// Server output that breaks the protocol: each ends the session, deferring the mail.
#[test]
fn garbage_from_the_server_is_a_protocol_error_never_a_panic() {
    let long = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE));
    let many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 x\r\n";
    for (server, error) in [
        ("hello there\r\n", "malformed reply line"),
        ("22 short\r\n", "malformed reply line"),
        ("220+mx\r\n", "malformed reply line"),
        ("120 too low\r\n", "malformed reply line"),
        ("620 too high\r\n", "malformed reply line"),
        ("\r\n", "malformed reply line"),
        (
            "220-mx\r\n250 mx\r\n",
            "reply code changed within a multi-line reply",
        ),
        (long.as_str(), "reply line longer than 2048 octets"),
        (many.as_str(), "reply of more than 100 lines"),
        ("220 mx\r\n354 what\r\n", "unexpected reply 354"),
    ] {
        let s = script(
            smtp(),
            vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
        );
        let t = if server.len() > 600 {
            run(&s, &[server.as_bytes()])
        } else {
            run_split(&s, server)
        };
        assert_eq!(
            t.events[0],
            format!("done 0: deferred: protocol error: {error}"),
            "{server:?}"
        );
        assert!(t.closed, "{server:?}");
    }
}

#[test]
fn a_reply_nobody_asked_for_ends_the_session() {
    let s = script(smtp(), vec![]);
    let t = run_split(&s, &[GREETING, EHLO_PLAIN, "250 surprise\r\n"].concat());
    assert_eq!(t.events, ["ready", "closed Quit"]);
    // The client had already sent QUIT on Ready: the 250 is taken as its reply, and the
    // session ends. A stray reply while idle:
    let now = Instant::now();
    let mut c = Client::new(smtp(), now);
    c.handle_input(
        now,
        [GREETING, EHLO_PLAIN, "250 surprise\r\n"]
            .concat()
            .as_bytes(),
    );
    let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(events[0], Event::Ready);
    assert_eq!(
        events[1],
        Event::Closed(SessionEnd::Failed(Cause::Protocol(
            ProtocolError::Unexpected { code: 250 }
        )))
    );
}

#[test]
fn replies_tolerate_bare_lf_and_missing_text() {
    let s = script(
        smtp(),
        vec![(message("a@example.test", &["b@remote.test"]), b"1\r\n")],
    );
    let t = run_split(&s, "220\n250-mx\n250 SIZE\n250\n250\n354\n250\n221\n");
    assert_eq!(t.events[1], "done 0: sent 250");
}

/// Runs a session to the point where the engine waits on `stage` and returns the client and
/// the instant it started waiting.
fn waiting_at(server: &str, body: bool) -> (Client, Instant) {
    let start = Instant::now();
    let mut c = Client::new(smtp(), start);
    c.send_message(start, message("a@example.test", &["b@remote.test"]));
    let t = start + Duration::from_secs(1);
    c.handle_input(t, server.as_bytes());
    while let Some(ev) = c.poll_event() {
        if let (Event::SendBody(_), true) = (ev, body) {
            c.send_body(t, b"x\r\n");
            c.end_body(t);
        }
    }
    (c, t)
}

#[test]
fn each_reply_has_its_rfc_5321_timeout() {
    let min = |m: u64| Duration::from_secs(60 * m);
    let start = Instant::now();
    let c = Client::new(smtp(), start);
    // §4.5.3.2.1: 5 minutes for the greeting.
    assert_eq!(c.poll_timeout(), Some(start + min(5)));
    for (server, body, wait) in [
        // §4.5.3.2.2 MAIL: 5 minutes.
        ([GREETING, EHLO_PLAIN].concat(), false, min(5)),
        // §4.5.3.2.4 DATA initiation: 2 minutes.
        (
            [GREETING, EHLO_PLAIN, "250 Ok\r\n250 Ok\r\n"].concat(),
            false,
            min(2),
        ),
        // §4.5.3.2.5 data block: 3 minutes from the last piece handed over.
        (
            [GREETING, EHLO_PLAIN, "250 Ok\r\n250 Ok\r\n354 Go\r\n"].concat(),
            false,
            min(3),
        ),
        // §4.5.3.2.6 DATA termination: 10 minutes.
        (
            [GREETING, EHLO_PLAIN, "250 Ok\r\n250 Ok\r\n354 Go\r\n"].concat(),
            true,
            min(10),
        ),
    ] {
        let (c, t) = waiting_at(&server, body);
        assert_eq!(c.poll_timeout(), Some(t + wait), "{server:?} body={body}");
    }
}

#[test]
fn timeout_defers_and_closes_and_early_calls_do_nothing() {
    let (mut c, t) = waiting_at(
        &[GREETING, EHLO_PLAIN, "250 Ok\r\n250 Ok\r\n354 Go\r\n"].concat(),
        true,
    );
    let deadline = c.poll_timeout().unwrap();
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(c.poll_event().is_none());
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert_eq!(
        c.poll_event().map(|e| match e {
            Event::Done(r) => summary(&r.outcomes[0]),
            other => format!("{other:?}"),
        }),
        Some("deferred: timeout waiting for the reply to end of data".into())
    );
    assert_eq!(
        c.poll_event(),
        Some(Event::Closed(SessionEnd::Failed(Cause::Timeout(
            Stage::EndOfData
        ))))
    );
    assert!(c.is_closed());
    assert_eq!(c.poll_timeout(), None);
    assert!(t < deadline);
}

#[test]
fn connection_lost_while_sending_content_defers() {
    let now = Instant::now();
    let mut c = Client::new(smtp(), now);
    c.send_message(now, message("a@example.test", &["b@remote.test"]));
    c.handle_input(
        now,
        [GREETING, EHLO_PLAIN, "250 Ok\r\n250 Ok\r\n354 Go\r\n"]
            .concat()
            .as_bytes(),
    );
    assert_eq!(c.poll_event(), Some(Event::SendBody(MessageId(0))));
    c.send_body(now, b"partial");
    c.handle_close();
    match c.poll_event() {
        Some(Event::Done(r)) => assert_eq!(
            summary(&r.outcomes[0]),
            "deferred: connection lost during message content"
        ),
        other => panic!("{other:?}"),
    }
    // Content handed over after the end is ignored, and a message handed over now is
    // reported at once.
    c.send_body(now, b"more");
    c.end_body(now);
    assert!(matches!(c.poll_event(), Some(Event::Closed(_))));
    let id = c.send_message(now, message("a@example.test", &["c@remote.test"]));
    assert!(
        matches!(c.poll_event(), Some(Event::Done(r)) if r.id == id && matches!(r.outcomes[0], Outcome::Deferred(_)))
    );
}

#[test]
fn reply_text_and_enhanced_status_are_parsed() {
    let mut r = ReplyReader::default();
    let input =
        b"550-5.1.1 The email account\r\n550-5.1.1 does not exist.\r\n550 5.1.1 https://x.test\r\n";
    let (used, reply) = r.read(input);
    assert_eq!(used, input.len());
    let reply = reply.unwrap().unwrap();
    assert_eq!(reply.code, 550);
    assert_eq!(
        reply.status,
        Some(EnhancedStatus {
            class: 5,
            subject: 1,
            detail: 1
        })
    );
    assert_eq!(
        reply.lines,
        ["The email account", "does not exist.", "https://x.test"]
    );
    assert_eq!(
        reply.to_string(),
        "550 5.1.1 The email account does not exist. https://x.test"
    );
    // A status whose class disagrees with the code is text (RFC 2034 §4).
    let (_, reply) = r.read(b"250 5.1.1 odd\r\n");
    let reply = reply.unwrap().unwrap();
    assert_eq!((reply.status, reply.lines[0].as_str()), (None, "5.1.1 odd"));
    // Replies are returned one at a time: the rest is offered again.
    let (used, reply) = r.read(b"250 a\r\n250 b\r\n");
    assert_eq!((used, reply.unwrap().unwrap().lines[0].as_str()), (7, "a"));
}

#[test]
fn capabilities_are_read_from_the_ehlo_reply() {
    let reply = |lines: &[&str]| ServerReply {
        code: 250,
        status: None,
        lines: lines.iter().map(|s| s.to_string()).collect(),
    };
    let caps = Capabilities::from_reply(&reply(&[
        "mx.example.test Hello",
        "pipelining",
        "SIZE 35882577",
        "8BITMIME",
        "SMTPUTF8",
        "STARTTLS",
        "AUTH PLAIN login",
        "AUTH=LOGIN",
        "CHUNKING",
        "ENHANCEDSTATUSCODES",
        "X-UNKNOWN foo",
    ]));
    assert_eq!(
        caps,
        Capabilities {
            pipelining: true,
            size: Some(Some(35882577)),
            eight_bit_mime: true,
            smtputf8: true,
            starttls: true,
            auth: vec!["PLAIN".into(), "LOGIN".into()],
            chunking: true,
            enhanced_status_codes: true,
        }
    );
    // RFC 1870 §4: SIZE 0, or no number, means no fixed limit. The first line is the name,
    // never a keyword.
    assert_eq!(
        Capabilities::from_reply(&reply(&["SIZE", "SIZE 0"])).size,
        Some(None)
    );
    assert!(!Capabilities::from_reply(&reply(&["PIPELINING"])).pipelining);
}

#[test]
fn any_2xx_to_auth_is_success() {
    // smtp-sink answers AUTH with 250; Postfix's client accepts any 2xx too.
    let mut cfg = smtp();
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"pw".to_vec()),
        allow_plaintext: true,
    });
    let s = script(cfg, vec![]);
    let t = run_split(
        &s,
        &[
            GREETING,
            "250-mx\r\n250 AUTH PLAIN\r\n",
            "250 2.0.0 Ok\r\n221 Bye\r\n",
        ]
        .concat(),
    );
    assert_eq!(t.events, ["ready", "closed Quit"]);
}

proptest::proptest! {
    /// Whatever a server sends, in whatever pieces: no panic, every message handed over gets
    /// exactly one report with one outcome per recipient, and the session ends exactly once.
    #[test]
    fn any_server_output_reports_every_message_once(
        replies in proptest::collection::vec(proptest::sample::select(vec![
            "220 mx\r\n", "250-mx\r\n", "250-PIPELINING\r\n", "250 STARTTLS\r\n", "250 Ok\r\n",
            "354 Go\r\n", "550 5.1.1 No\r\n", "452 4.2.2 Full\r\n", "421 4.3.2 Bye\r\n",
            "334 VXNlcm5hbWU6\r\n", "221 Bye\r\n", "garbage\r\n", "250-x\n", "\r\n", "5",
        ]), 0..40),
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
        split in 1usize..16,
        lmtp in proptest::prelude::any::<bool>(),
    ) {
        let now = Instant::now();
        let dialect = if lmtp { Dialect::Lmtp } else { Dialect::Smtp };
        let mut c = Client::new(ClientConfig::new(dialect, "relay.example.test"), now);
        c.send_message(now, message("a@example.test", &["x@remote.test", "y@remote.test"]));
        c.send_message(now, message("", &["z@remote.test"]));
        let mut input: Vec<u8> = replies.concat().into_bytes();
        input.extend_from_slice(&noise);
        let mut done = Vec::new();
        let mut closed = 0;
        let drain = |c: &mut Client, done: &mut Vec<Report>, closed: &mut usize| {
            while let Some(ev) = c.poll_event() {
                match ev {
                    Event::Ready => c.quit(now),
                    Event::StartTls => c.handle_tls_established(now),
                    Event::SendBody(_) => {
                        c.send_body(now, b".x\r\n");
                        c.end_body(now);
                    }
                    Event::Done(r) => done.push(r),
                    Event::Closed(_) => *closed += 1,
                }
            }
            let _ = c.poll_transmit(&mut Vec::new());
        };
        for piece in input.chunks(split) {
            let mut rest = piece;
            loop {
                let used = c.handle_input(now, rest);
                rest = &rest[used..];
                drain(&mut c, &mut done, &mut closed);
                if rest.is_empty() || used == 0 {
                    break;
                }
            }
        }
        c.handle_close();
        drain(&mut c, &mut done, &mut closed);
        let ids: Vec<(u64, usize)> = done.iter().map(|r| (r.id.0, r.outcomes.len())).collect();
        proptest::prop_assert_eq!(ids, vec![(0, 2), (1, 1)]);
        proptest::prop_assert_eq!(closed, 1);
        proptest::prop_assert!(c.is_closed());
    }
}
