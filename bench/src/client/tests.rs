//! The client against scripted replies, and against smtp-edge's engine in memory (a simulated
//! pair: no sockets, no sleeps; time is passed in).

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use smtp_edge::protocol::{Connection, EngineConfig, Event as ServerEvent, Role};

use super::*;

fn script(pipelining: bool, rcpts: usize) -> Script {
    Script {
        helo: "client.test".into(),
        from: "a@client.test".into(),
        rcpts: (0..rcpts).map(|i| format!("u{i}@example.test")).collect(),
        pipelining,
        starttls: false,
        auth: None,
    }
}

const BODY: &[u8] = b"Subject: x\r\n\r\nhello\r\n.\r\n";

fn msg() -> Message<'static> {
    Message {
        wire: BODY,
        size: BODY.len() - 3,
    }
}

/// Drives `client` against a fresh engine until both are quiet (bounded), feeding the server's
/// output to the client in pieces of `split` octets. Returns the client's events.
fn pair(mut client: Client<'static>, messages: usize, split: usize) -> Vec<Event> {
    let now = Instant::now();
    let cfg = Arc::new(EngineConfig::new(
        "mx.example.test",
        Role::Delivery,
        &["example.test"],
    ));
    let mut server = Connection::new(cfg, now);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut events = Vec::new();
    let mut sent = 0;
    for _ in 0..10_000 {
        let _ = server.poll_transmit(&mut to_client);
        for piece in to_client.chunks(split.max(1)) {
            client.handle_input(now, piece);
        }
        to_client.clear();
        while let Some(ev) = client.poll_event() {
            if ev == Event::Ready {
                if sent < messages {
                    sent += 1;
                    client.start_message(msg());
                } else {
                    client.quit();
                }
            }
            events.push(ev);
        }
        let _ = client.poll_transmit(&mut to_server);
        let mut rest: &[u8] = &to_server;
        let mut consumed = 0;
        loop {
            let used = server.handle_input(now, rest);
            consumed += used;
            rest = &rest[used..];
            let mut spooled = false;
            while let Some(ev) = server.poll_event() {
                match ev {
                    ServerEvent::MessageEnd { txn } => {
                        server.handle_spooled(now, txn, Ok("QID"));
                        spooled = true;
                    }
                    ServerEvent::MessageData { data, .. } => server.recycle(data),
                    _ => {}
                }
            }
            if !spooled || rest.is_empty() {
                break;
            }
        }
        to_server.drain(..consumed);
        if client.is_finished() {
            break;
        }
    }
    events
}

fn delivered(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { accepted: true, .. }))
        .count()
}

#[test]
fn pipelined_session_against_the_engine() {
    for split in [1, 2, 7, 4096] {
        let ev = pair(Client::new(&script(true, 2)), 3, split);
        assert_eq!(delivered(&ev), 3, "split {split}: {ev:?}");
        assert_eq!(ev.last(), Some(&Event::Finished { clean: true }));
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Refused { .. })),
            "{ev:?}"
        );
    }
}

#[test]
fn lock_step_session_against_the_engine() {
    let ev = pair(Client::new(&script(false, 3)), 2, 3);
    assert_eq!(delivered(&ev), 2, "{ev:?}");
    assert_eq!(ev.last(), Some(&Event::Finished { clean: true }));
}

#[test]
fn pipelined_group_is_one_write() {
    let now = Instant::now();
    let mut c = Client::new(&script(true, 2));
    c.handle_input(now, b"220 hi\r\n");
    let mut out = Vec::new();
    assert!(c.poll_transmit(&mut out));
    assert_eq!(out, b"EHLO client.test\r\n");
    c.handle_input(now, b"250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
    assert_eq!(c.poll_event(), Some(Event::Ready));
    assert!(c.pipelining());
    c.start_message(msg());
    out.clear();
    let _ = c.poll_transmit(&mut out);
    assert_eq!(
        out,
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<u0@example.test>\r\nRCPT TO:<u1@example.test>\r\nDATA\r\n"
    );
    // One recipient refused: counted, and the message still goes.
    c.handle_input(now, b"250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n");
    assert_eq!(
        c.poll_event(),
        Some(Event::Refused {
            stage: Stage::Rcpt,
            code: 550
        })
    );
    assert_eq!(c.poll_event(), Some(Event::Ready));
    out.clear();
    let _ = c.poll_transmit(&mut out);
    assert_eq!(out, BODY);
    c.quit();
    c.handle_input(now, b"451 4.3.0 spool\r\n221 bye\r\n");
    assert_eq!(
        c.poll_event(),
        Some(Event::Refused {
            stage: Stage::EndOfData,
            code: 451
        })
    );
    assert!(matches!(
        c.poll_event(),
        Some(Event::Delivered {
            accepted: false,
            ..
        })
    ));
    assert_eq!(c.poll_event(), Some(Event::Finished { clean: true }));
}

#[test]
fn refused_data_resets_before_the_next_message() {
    let now = Instant::now();
    let mut c = Client::new(&script(false, 1));
    c.handle_input(now, b"220 hi\r\n250 mx\r\n");
    assert_eq!(c.poll_event(), Some(Event::Ready));
    c.start_message(msg());
    c.handle_input(now, b"250 ok\r\n250 ok\r\n554 no\r\n");
    let evs: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(evs.contains(&Event::Ready), "{evs:?}");
    c.start_message(msg());
    let mut out = Vec::new();
    let _ = c.poll_transmit(&mut out);
    assert!(
        out.ends_with(b"RSET\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn garbage_and_421_end_the_session() {
    let now = Instant::now();
    let mut c = Client::new(&script(true, 1));
    c.handle_input(now, b"hello there\r\n");
    assert!(c.is_finished());
    let mut c = Client::new(&script(true, 1));
    c.handle_input(now, b"421 4.3.2 bye\r\n");
    assert_eq!(
        c.poll_event(),
        Some(Event::Refused {
            stage: Stage::Greeting,
            code: 421
        })
    );
    assert_eq!(c.poll_event(), Some(Event::Finished { clean: false }));
    // An endless line is cut off, not buffered.
    let mut c = Client::new(&script(true, 1));
    c.handle_input(now, &[b'2'; MAX_REPLY_LINE + 1]);
    assert!(c.is_finished());
}

/// Feeds `reply` and returns what the client sent in answer.
fn answer(c: &mut Client<'static>, reply: &[u8]) -> String {
    c.handle_input(Instant::now(), reply);
    let mut out = Vec::new();
    let _ = c.poll_transmit(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
    }
}

#[test]
fn starttls_drops_plaintext_after_220_then_ehlos_again() {
    let mut s = script(true, 1);
    s.starttls = true;
    let mut c = Client::new(&s);
    assert_eq!(answer(&mut c, b"220 mx\r\n"), "EHLO client.test\r\n");
    assert_eq!(
        answer(&mut c, b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
        "STARTTLS\r\n"
    );
    // An injected reply in the same segment as the 220 must be dropped (RFC 3207 §4.2).
    assert_eq!(answer(&mut c, b"220 go ahead\r\n250 injected\r\n"), "");
    assert_eq!(c.poll_event(), Some(Event::StartTls));
    c.tls_started();
    let mut out = Vec::new();
    let _ = c.poll_transmit(&mut out);
    assert_eq!(out, b"EHLO client.test\r\n");
    // PIPELINING must be offered again inside TLS to count.
    assert_eq!(answer(&mut c, b"250 mx\r\n"), "");
    assert_eq!(c.poll_event(), Some(Event::Ready));
    assert!(!c.pipelining());
}

#[test]
fn auth_plain_and_login_dialogues() {
    let mut s = script(true, 1);
    s.auth = Some(Auth {
        mechanism: Mechanism::Plain,
        user: "alice@example.test".into(),
        password: "pw".into(),
    });
    let mut c = Client::new(&s);
    let _ = answer(&mut c, b"220 mx\r\n");
    let cmd = answer(&mut c, b"250-mx\r\n250 PIPELINING\r\n");
    assert_eq!(
        cmd,
        format!("AUTH PLAIN {}\r\n", base64(b"\0alice@example.test\0pw"))
    );
    assert_eq!(answer(&mut c, b"235 2.7.0 ok\r\n"), "");
    assert!(matches!(c.poll_event(), Some(Event::Authenticated { .. })));
    assert_eq!(c.poll_event(), Some(Event::Ready));
    assert!(c.pipelining());

    s.auth.as_mut().unwrap().mechanism = Mechanism::Login;
    let mut c = Client::new(&s);
    let _ = answer(&mut c, b"220 mx\r\n");
    assert_eq!(answer(&mut c, b"250 mx\r\n"), "AUTH LOGIN\r\n");
    assert_eq!(
        answer(&mut c, b"334 VXNlcm5hbWU6\r\n"),
        format!("{}\r\n", base64(b"alice@example.test"))
    );
    assert_eq!(answer(&mut c, b"334 UGFzc3dvcmQ6\r\n"), "cHc=\r\n");
    // A third challenge is cancelled; a 535 ends the session with QUIT.
    assert_eq!(answer(&mut c, b"334 x\r\n"), "*\r\n");
    assert_eq!(answer(&mut c, b"535 5.7.8 no\r\n"), "QUIT\r\n");
    assert_eq!(
        c.poll_event(),
        Some(Event::Refused {
            stage: Stage::Auth,
            code: 535
        })
    );
}
