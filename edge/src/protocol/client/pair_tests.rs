//! The client engine against this crate's own server engine, both in memory (quinn-proto's
//! `Pair`): bytes move between them in steps, TLS is real rustls on both ends, and time moves
//! only by jumping to the earlier of the two engines' deadlines, so RFC 5321 timeouts run in
//! microseconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, RootCertStore, ServerConnection};

use super::tests::{message, summary};
use super::*;
use crate::protocol::{
    AuthOutcome, BodyType, Connection, EngineConfig, Envelope, Event as ServerEvent, Role,
};

/// One side's TLS session, once STARTTLS has run.
enum Tls {
    Client(ClientConnection),
    Server(ServerConnection),
}

/// Seals `plain` with `tls` (if any) and appends the wire form to `wire`.
fn seal(tls: &mut Option<Tls>, plain: &[u8], wire: &mut Vec<u8>) {
    match tls {
        None => wire.extend_from_slice(plain),
        Some(Tls::Client(c)) => {
            c.writer().write_all(plain).unwrap();
            while c.wants_write() {
                c.write_tls(wire).unwrap();
            }
        }
        Some(Tls::Server(s)) => {
            s.writer().write_all(plain).unwrap();
            while s.wants_write() {
                s.write_tls(wire).unwrap();
            }
        }
    }
}

/// Opens `wire` with `tls` (if any): plaintext to `plain`, handshake records back to `reply`.
fn open(tls: &mut Option<Tls>, wire: &mut Vec<u8>, plain: &mut Vec<u8>, reply: &mut Vec<u8>) {
    match tls {
        None => plain.append(wire),
        Some(Tls::Client(c)) => pump_in(c, wire, plain, reply),
        Some(Tls::Server(s)) => pump_in(s, wire, plain, reply),
    }
}

fn pump_in<D>(
    c: &mut rustls::ConnectionCommon<D>,
    wire: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) {
    let mut rd: &[u8] = wire;
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
    }
    wire.clear();
    let mut buf = [0u8; 4096];
    loop {
        match c.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => plain.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    while c.wants_write() {
        c.write_tls(reply).unwrap();
    }
}

fn is_handshaking(tls: &Option<Tls>) -> bool {
    match tls {
        None => false,
        Some(Tls::Client(c)) => c.is_handshaking(),
        Some(Tls::Server(s)) => s.is_handshaking(),
    }
}

/// A certificate for `mx.example.test`, a server config with it, and a client config that
/// trusts it.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// What the server engine stored.
#[derive(Debug)]
struct Stored {
    envelope: Envelope,
    content: Vec<u8>,
}

struct Pair {
    now: Instant,
    start: Instant,
    client: Client,
    server: Connection,
    /// Bytes on the wire, each way.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// Plaintext each engine has not consumed yet.
    server_in: Vec<u8>,
    client_in: Vec<u8>,
    client_tls: Option<Tls>,
    server_tls: Option<Tls>,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)>,
    /// The client asked for the handshake and has not been told it is done.
    client_handshaking: bool,
    /// Contents by message id, handed over in `piece`-octet pieces.
    bodies: Vec<Vec<u8>>,
    piece: usize,
    /// Each flight of client plaintext, as the client engine produced it.
    client_flights: Vec<Vec<u8>>,
    stored: Vec<Stored>,
    receiving: Option<Stored>,
    reports: Vec<Report>,
    end: Option<SessionEnd>,
    quit_on_ready: bool,
    /// The server's spool answers; off to leave the client waiting after the final dot.
    spool_answers: bool,
}

impl Pair {
    fn new(client_cfg: ClientConfig, server_cfg: EngineConfig) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            start: now,
            client: Client::new(client_cfg, now),
            server: Connection::new(Arc::new(server_cfg), now),
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_in: Vec::new(),
            client_in: Vec::new(),
            client_tls: None,
            server_tls: None,
            tls: None,
            client_handshaking: false,
            bodies: Vec::new(),
            piece: 1000,
            client_flights: Vec::new(),
            stored: Vec::new(),
            receiving: None,
            reports: Vec::new(),
            end: None,
            quit_on_ready: true,
            spool_answers: true,
        }
    }

    fn send(&mut self, m: Message, body: &[u8]) -> MessageId {
        self.bodies.push(body.to_vec());
        self.client.send_message(self.now, m)
    }

    /// One round: the client acts and sends, the server reads and answers. Returns whether
    /// anything moved.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        while let Some(ev) = self.client.poll_event() {
            moved = true;
            match ev {
                Event::Ready if self.quit_on_ready => self.client.quit(now),
                Event::Ready => {}
                Event::StartTls => {
                    let (_, cfg) = self.tls.clone().expect("STARTTLS without TLS configs");
                    let name = ServerName::try_from("mx.example.test").unwrap();
                    self.client_tls = Some(Tls::Client(ClientConnection::new(cfg, name).unwrap()));
                    self.client_handshaking = true;
                }
                Event::SendBody(id) => {
                    let body = self.bodies[id.0 as usize].clone();
                    for piece in body.chunks(self.piece) {
                        self.client.send_body(now, piece);
                        self.flush_client();
                    }
                    self.client.end_body(now);
                }
                Event::Done(r) => self.reports.push(r),
                Event::Closed(end) => self.end = Some(end),
            }
        }
        moved |= self.flush_client();
        if self.client_handshaking {
            // The ClientHello (or later flights) of the handshake.
            if let Some(Tls::Client(c)) = self.client_tls.as_mut() {
                while c.wants_write() {
                    c.write_tls(&mut self.to_server).unwrap();
                    moved = true;
                }
            }
        }

        // Server side.
        if !self.to_server.is_empty() {
            moved = true;
            let mut wire = std::mem::take(&mut self.to_server);
            let mut back = Vec::new();
            open(
                &mut self.server_tls,
                &mut wire,
                &mut self.server_in,
                &mut back,
            );
            self.to_client.extend_from_slice(&back);
        }
        loop {
            let used = self.server.handle_input(now, &self.server_in);
            self.server_in.drain(..used);
            let acted = self.server_events();
            if !acted || self.server_in.is_empty() {
                break;
            }
        }
        let mut replies = Vec::new();
        if self.server.poll_transmit(&mut replies) {
            moved = true;
            seal(&mut self.server_tls, &replies, &mut self.to_client);
        }

        // Client reads.
        if !self.to_client.is_empty() {
            moved = true;
            let mut wire = std::mem::take(&mut self.to_client);
            let mut back = Vec::new();
            open(
                &mut self.client_tls,
                &mut wire,
                &mut self.client_in,
                &mut back,
            );
            self.to_server.extend_from_slice(&back);
        }
        if self.client_handshaking && !is_handshaking(&self.client_tls) {
            self.client_handshaking = false;
            self.client.handle_tls_established(now);
            moved = true;
        }
        while !self.client_in.is_empty() {
            let used = self.client.handle_input(now, &self.client_in);
            self.client_in.drain(..used);
            if used == 0 {
                break;
            }
        }
        moved
    }

    fn flush_client(&mut self) -> bool {
        let mut plain = Vec::new();
        if !self.client.poll_transmit(&mut plain) {
            return false;
        }
        self.client_flights.push(plain.clone());
        seal(&mut self.client_tls, &plain, &mut self.to_server);
        true
    }

    /// Acts on the server's events; returns whether one unblocked its input.
    fn server_events(&mut self) -> bool {
        let now = self.now;
        let mut unblocked = false;
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::MessageStart { envelope, .. } => {
                    self.receiving = Some(Stored {
                        envelope,
                        content: Vec::new(),
                    })
                }
                ServerEvent::MessageData { data, .. } => {
                    self.receiving
                        .as_mut()
                        .unwrap()
                        .content
                        .extend_from_slice(&data);
                }
                ServerEvent::MessageEnd { txn } => {
                    self.stored.push(self.receiving.take().unwrap());
                    if self.spool_answers {
                        self.server.handle_spooled(now, txn, Ok("Q1"));
                        unblocked = true;
                    }
                }
                ServerEvent::MessageAbort { .. } => self.receiving = None,
                ServerEvent::CheckSender { .. } => {
                    self.server
                        .handle_sender_checked(now, crate::protocol::SenderVerdict::Accept);
                    unblocked = true;
                }
                ServerEvent::StartTls => {
                    // RFC 3207 §4.2: the 220 goes in the clear, anything pipelined behind
                    // STARTTLS is dropped, then TLS.
                    let mut replies = Vec::new();
                    let _ = self.server.poll_transmit(&mut replies);
                    self.to_client.extend_from_slice(&replies);
                    self.server_in.clear();
                    let (cfg, _) = self.tls.clone().expect("STARTTLS without TLS configs");
                    self.server_tls = Some(Tls::Server(ServerConnection::new(cfg).unwrap()));
                    self.server.handle_tls_established(now);
                    unblocked = true;
                }
                ServerEvent::Authenticate(c) => {
                    let good = c.username == "relay" && c.password.expose() == b"pw";
                    let outcome = if good {
                        AuthOutcome::Success {
                            login: c.username.clone(),
                            senders: vec!["relay@example.test".into()],
                        }
                    } else {
                        AuthOutcome::Invalid
                    };
                    self.server.handle_auth(now, outcome);
                    unblocked = true;
                }
                // The pair's server never asks for a source verdict.
                ServerEvent::SourceCheck => unreachable!("no DNS lists in the pair"),
                ServerEvent::Rejected(_)
                | ServerEvent::RecipientRejected { .. }
                | ServerEvent::Close(_) => {}
            }
        }
        unblocked
    }

    /// Steps until nothing moves, then jumps the clock to the next deadline; stops when the
    /// session is over or no deadline remains. Bounded in steps.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            if self.step() {
                continue;
            }
            if self.client.is_closed() && self.end.is_some() {
                return;
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return };
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            // The server closing the connection reaches the client as the end of the stream.
            if self.server.is_closed() {
                self.step();
                self.client.handle_close();
            }
        }
        panic!("the pair did not settle in 10000 steps");
    }

    fn outcomes(&self, i: usize) -> Vec<String> {
        self.reports[i].outcomes.iter().map(summary).collect()
    }
}

fn server_cfg() -> EngineConfig {
    EngineConfig::new("mx.example.test", Role::Delivery, &["example.test"])
}

fn client_cfg() -> ClientConfig {
    ClientConfig::new(Dialect::Smtp, "relay.example.test")
}

/// Content built to trip a careless stuffer: dot lines, double dots, a dot after CRLF at a
/// piece boundary, a lone dot line, and enough of it to cross the server's content chunking.
fn tricky_body() -> Vec<u8> {
    let mut body = b"Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nmiddle.\r\n. \r\n".to_vec();
    let mut i = 0;
    while body.len() < 600_000 {
        body.extend_from_slice(format!(".line {i} ........\r\n").as_bytes());
        body.extend_from_slice(b"plain text line that is not dotted\r\n");
        i += 1;
    }
    body.extend_from_slice(b"last\r\n");
    body
}

#[test]
fn pipelined_delivery_is_byte_exact_and_refusals_are_per_recipient() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    let body = tricky_body();
    let mut m = message(
        "sender@remote.test",
        &[
            "alice@example.test",
            "bob@elsewhere.test",
            "carol@example.test",
        ],
    );
    m.size = Some(body.len() as u64);
    // Pieces of 7 octets put a CRLF and the dot after it in different calls.
    p.piece = 7;
    p.send(m, &body);
    p.drive();

    assert_eq!(p.stored.len(), 1);
    assert_eq!(
        p.stored[0].content, body,
        "content differs after the server's unstuffing"
    );
    let rcpts: Vec<String> = p.stored[0]
        .envelope
        .rcpt_to
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(rcpts, ["alice@example.test", "carol@example.test"]);
    let outcomes = p.outcomes(0);
    assert_eq!(outcomes[0], "sent 250 2.0.0 Ok: queued as Q1");
    assert!(
        outcomes[1].starts_with("failed: 550 5.7.1 "),
        "{outcomes:?}"
    );
    assert!(
        outcomes[1].ends_with("(in reply to RCPT TO)"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], "sent 250 2.0.0 Ok: queued as Q1");
    // RFC 2920: MAIL, the RCPTs and DATA left in one flight.
    let batch = p
        .client_flights
        .iter()
        .find(|f| f.starts_with(b"MAIL FROM:"))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(batch),
        format!(
            "MAIL FROM:<sender@remote.test> SIZE={}\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@elsewhere.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n",
            body.len()
        )
    );
    assert_eq!(p.end, Some(SessionEnd::Quit));
    assert!(p.server.is_closed());
}

#[test]
fn without_pipelining_each_flight_is_one_command() {
    let mut cfg = client_cfg();
    cfg.pipelining = false;
    let mut p = Pair::new(cfg, server_cfg());
    p.send(
        message("s@remote.test", &["alice@example.test", "bob@example.test"]),
        b"hi\r\n",
    );
    p.drive();
    assert_eq!(p.stored.len(), 1);
    let commands: Vec<String> = p
        .client_flights
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .filter(|f| !f.starts_with("hi"))
        .collect();
    assert_eq!(
        commands,
        [
            "EHLO relay.example.test\r\n",
            "MAIL FROM:<s@remote.test>\r\n",
            "RCPT TO:<alice@example.test>\r\n",
            "RCPT TO:<bob@example.test>\r\n",
            "DATA\r\n",
            // The terminator follows the content's last piece.
            ".\r\n",
            "QUIT\r\n"
        ]
    );
}

#[test]
fn several_messages_share_one_connection() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.send(
        message("a@remote.test", &["alice@example.test"]),
        b"one\r\n",
    );
    // Nobody deliverable: no DATA, and the next transaction starts with RSET.
    p.send(message("b@remote.test", &["x@elsewhere.test"]), b"two\r\n");
    let mut third = message("", &["bob@example.test"]);
    third.eight_bit = true;
    third.smtputf8 = true;
    p.send(third, "Subject: caf\u{e9}\r\n\r\n\u{e9}\r\n".as_bytes());
    p.drive();
    assert_eq!(p.reports.len(), 3);
    assert_eq!(p.outcomes(0), ["sent 250 2.0.0 Ok: queued as Q1"]);
    assert!(
        p.outcomes(1)[0].starts_with("failed: 550 5.7.1"),
        "{:?}",
        p.outcomes(1)
    );
    assert_eq!(p.outcomes(2), ["sent 250 2.0.0 Ok: queued as Q1"]);
    let contents: Vec<&[u8]> = p.stored.iter().map(|s| s.content.as_slice()).collect();
    assert_eq!(
        contents,
        [
            &b"one\r\n"[..],
            "Subject: caf\u{e9}\r\n\r\n\u{e9}\r\n".as_bytes()
        ]
    );
    let third = &p.stored[1].envelope;
    assert_eq!(
        (third.mail_from.as_ref(), third.body, third.smtputf8),
        (None, BodyType::EightBitMime, true)
    );
    let wire: String = p
        .client_flights
        .iter()
        .map(|f| String::from_utf8_lossy(f))
        .collect();
    assert_eq!(wire.matches("RSET").count(), 1, "{wire}");
    assert!(
        wire.contains("RSET\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\n"),
        "{wire}"
    );
    assert_eq!(p.end, Some(SessionEnd::Quit));
}

#[test]
fn starttls_with_rustls_then_auth_plain() {
    let mut server = EngineConfig::new("mx.example.test", Role::Submission, &["example.test"]);
    server.tls_offered = true;
    server.tls_required = true;
    server.auth_offered = true;
    let mut cfg = client_cfg();
    cfg.tls = TlsPolicy::Required;
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: crate::protocol::Secret::new(b"pw".to_vec()),
        allow_plaintext: false,
    });
    let mut p = Pair::new(cfg, server);
    p.tls = Some(tls_configs());
    p.send(
        message("relay@example.test", &["someone@remote.test"]),
        b"secret content\r\n",
    );
    p.drive();
    assert!(p.client.is_secure() && p.server.is_secure());
    assert!(p.client.is_authenticated());
    assert_eq!(p.server.login(), Some("relay"));
    assert_eq!(p.outcomes(0), ["sent 250 2.0.0 Ok: queued as Q1"]);
    assert_eq!(p.stored[0].content, b"secret content\r\n");
    // In the clear: only the first EHLO and STARTTLS.
    let clear: Vec<String> = p.client_flights[..2]
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(clear, ["EHLO relay.example.test\r\n", "STARTTLS\r\n"]);
}

#[test]
fn an_idle_connection_ends_when_the_server_times_out() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.quit_on_ready = false;
    p.drive();
    // The server's command timeout (RFC 5321 §4.5.3.2.7: 5 minutes) passed in virtual time.
    assert_eq!(p.now - p.start, Duration::from_secs(300));
    match &p.end {
        Some(SessionEnd::Failed(Cause::Reply { reply, .. })) => assert_eq!(reply.code, 421),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_never_answers_the_final_dot_defers_after_ten_minutes() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.spool_answers = false;
    p.send(message("s@remote.test", &["alice@example.test"]), b"x\r\n");
    p.drive();
    // RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the final dot.
    assert_eq!(p.now - p.start, Duration::from_secs(600));
    assert_eq!(
        p.outcomes(0),
        ["deferred: timeout waiting for the reply to end of data"]
    );
    assert_eq!(
        p.end,
        Some(SessionEnd::Failed(Cause::Timeout(Stage::EndOfData)))
    );
}
