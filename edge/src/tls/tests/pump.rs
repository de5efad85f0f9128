//! The pump: handshakes, both directions, splits, failures.

use proptest::prelude::*;
use rustls::NamedGroup;

use super::*;

const GREETING: &[u8] = b"220 mx.example.test ESMTP smtp-edge\r\n";
const EHLO: &[u8] = b"EHLO client.example\r\n";
const EHLO_REPLY: &[u8] = b"250-mx.example.test\r\n250 PIPELINING\r\n";
const QUIT: &[u8] = b"QUIT\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";

/// What one implicit-TLS exchange left behind.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    server_plain: Vec<u8>,
    client_plain: Vec<u8>,
    peer_closed: bool,
    info: Option<(&'static str, Option<&'static str>)>,
}

/// Greeting sealed before the handshake (implicit TLS), EHLO, reply, QUIT and close_notify,
/// with every flight cut by `split`. Returns the transcript and the largest client flight.
fn exchange(ctx: &TlsContext, root: &CertificateDer<'static>, split: Split) -> (Transcript, usize) {
    let config = client_config(&[root]);
    let mut p = Pair::new(
        client(&config, "mx.example.test"),
        ctx.pump().unwrap(),
        split,
    );
    p.seal(GREETING);
    assert!(
        p.client_plain.is_empty(),
        "no plaintext before the handshake"
    );
    p.handshake().unwrap();
    p.send(EHLO);
    p.seal(EHLO_REPLY);
    p.send(QUIT);
    p.client.send_close_notify();
    p.client_to_server().unwrap();
    p.seal(BYE);
    let mut wire = Vec::new();
    p.server.close(&mut wire);
    assert!(!wire.is_empty(), "close_notify is a record");
    p.deliver(&wire);
    let info = p.server.info().map(|i| (i.version, i.kx_group));
    let t = Transcript {
        server_plain: p.server_plain,
        client_plain: p.client_plain,
        peer_closed: p.server.peer_closed(),
        info,
    };
    (t, p.max_flight)
}

#[test]
fn implicit_tls_exchange_both_ways() {
    let (ctx, root, _dir) = test_context();
    let (t, _) = exchange(&ctx, &root, Split::Whole);
    assert_eq!(t.server_plain, [EHLO, QUIT].concat());
    assert_eq!(t.client_plain, [GREETING, EHLO_REPLY, BYE].concat());
    assert!(t.peer_closed);
    assert_eq!(t.info, Some(("TLSv1.3", Some("X25519MLKEM768"))));
}

/// Every flight split at every index, then byte by byte: the same plaintext both ways.
#[test]
fn split_at_every_byte_boundary() {
    let (ctx, root, _dir) = test_context();
    let (whole, max_flight) = exchange(&ctx, &root, Split::Whole);
    assert!(
        max_flight > 1000,
        "the ClientHello (with an ML-KEM share) is split too"
    );
    for i in 0..=max_flight {
        assert_eq!(exchange(&ctx, &root, Split::At(i)).0, whole, "split at {i}");
    }
    assert_eq!(exchange(&ctx, &root, Split::Bytes).0, whole, "byte by byte");
}

#[test]
fn bulk_data_crosses_the_bounded_buffers() {
    let (ctx, root, _dir) = test_context();
    let config = client_config(&[&root]);
    let mut p = Pair::new(
        client(&config, "mx.example.test"),
        ctx.pump().unwrap(),
        Split::Whole,
    );
    p.handshake().unwrap();
    // Several records' worth each way, far beyond MAX_BUFFERED, in one call.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    p.send(&body);
    assert_eq!(p.server_plain, body);
    p.seal(&body);
    assert_eq!(p.client_plain, body);
}

#[test]
fn tls12_and_tls13_both_negotiate() {
    let (ctx, root, _dir) = test_context();
    for (version, name, cipher_prefix) in [
        (&rustls::version::TLS13, "TLSv1.3", "TLS13_"),
        (&rustls::version::TLS12, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_"),
    ] {
        let config = client_config_with(&[&root], aws_lc_rs::default_provider(), &[version]);
        let mut p = Pair::new(
            client(&config, "mx.example.test"),
            ctx.pump().unwrap(),
            Split::Whole,
        );
        p.handshake().unwrap();
        p.send(EHLO);
        assert_eq!(p.server_plain, EHLO);
        let info = p.server.info().unwrap();
        assert_eq!(info.version, name);
        assert!(info.cipher.starts_with(cipher_prefix), "{info:?}");
        assert_eq!(info.sni.as_deref(), Some("mx.example.test"));
        assert!(!info.resumed);
    }
}

#[test]
fn x25519mlkem768_is_preferred() {
    let provider = aws_lc_rs::default_provider();
    assert_eq!(provider.kx_groups[0].name(), NamedGroup::X25519MLKEM768);
    let (ctx, root, _dir) = test_context();
    let config = client_config(&[&root]);
    let mut p = Pair::new(
        client(&config, "mx.example.test"),
        ctx.pump().unwrap(),
        Split::Whole,
    );
    p.handshake().unwrap();
    assert_eq!(p.server.info().unwrap().kx_group, Some("X25519MLKEM768"));
    // A classical-only client still gets in.
    let classical = CryptoProvider {
        kx_groups: vec![aws_lc_rs::kx_group::X25519],
        ..aws_lc_rs::default_provider()
    };
    let config = client_config_with(&[&root], classical, PROTOCOL_VERSIONS);
    let mut p = Pair::new(
        client(&config, "mx.example.test"),
        ctx.pump().unwrap(),
        Split::Whole,
    );
    p.handshake().unwrap();
    assert_eq!(p.server.info().unwrap().kx_group, Some("X25519"));
}

#[test]
fn sessions_resume_with_tickets_and_session_ids() {
    let (ctx, root, _dir) = test_context();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config_with(&[&root], aws_lc_rs::default_provider(), &[version]);
        for resumed in [false, true] {
            let mut p = Pair::new(
                client(&config, "mx.example.test"),
                ctx.pump().unwrap(),
                Split::Whole,
            );
            p.handshake().unwrap();
            // TLS 1.3 tickets arrive after the handshake: one more round delivers them.
            p.send(EHLO);
            assert_eq!(p.server.info().unwrap().resumed, resumed, "{version:?}");
        }
    }
}

#[test]
fn garbage_instead_of_client_hello_is_an_error_and_poisons() {
    let (ctx, _root, _dir) = test_context();
    let mut pump = ctx.pump().unwrap();
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    let err = pump.feed(b"EHLO client.example\r\n", &mut plain, &mut wire);
    assert!(matches!(err, Err(TlsError::Rustls(_))), "{err:?}");
    assert!(plain.is_empty());
    assert!(pump.is_poisoned());
    // Sticky: every call fails, and close sends nothing more.
    let wire_len = wire.len();
    assert!(matches!(
        pump.feed(b"\x16\x03\x01", &mut plain, &mut wire),
        Err(TlsError::Poisoned)
    ));
    assert!(matches!(
        pump.seal(b"220 hi\r\n", &mut wire),
        Err(TlsError::Poisoned)
    ));
    pump.close(&mut wire);
    assert_eq!(wire.len(), wire_len);
    assert!(pump.info().is_none());
}

#[test]
fn a_failed_handshake_sends_its_alert() {
    let (ctx, _root, _dir) = test_context();
    // A valid record header carrying a handshake message that is not a ClientHello.
    let mut pump = ctx.pump().unwrap();
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    let record = [0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
    assert!(pump.feed(&record, &mut plain, &mut wire).is_err());
    // An alert record: content type 21.
    assert_eq!(wire.first(), Some(&0x15), "{wire:?}");
}

#[test]
fn truncated_handshake_waits_then_fails_on_corruption() {
    let (ctx, root, _dir) = test_context();
    let config = client_config(&[&root]);
    let mut c = client(&config, "mx.example.test");
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let half = hello.len() / 2;
    let mut pump = ctx.pump().unwrap();
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    // Half a ClientHello: consumed, nothing to say yet.
    assert_eq!(
        pump.feed(&hello[..half], &mut plain, &mut wire).unwrap(),
        half
    );
    assert!(pump.is_handshaking() && wire.is_empty() && plain.is_empty());
    assert!(pump.info().is_none());
    // The rest, corrupted: a decode error, not a panic.
    let mut rest = hello[half..].to_vec();
    rest.iter_mut().for_each(|b| *b ^= 0x5a);
    assert!(matches!(
        pump.feed(&rest, &mut plain, &mut wire),
        Err(TlsError::Rustls(_))
    ));
    assert!(pump.is_poisoned());
}

#[test]
fn oversized_record_is_refused() {
    let (ctx, _root, _dir) = test_context();
    let mut pump = ctx.pump().unwrap();
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    // A handshake record claiming 65535 octets, above the 2^14 + 2048 of RFC 8446 §5.2.
    let mut record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    record.resize(70_000, 0);
    assert!(pump.feed(&record, &mut plain, &mut wire).is_err());
    assert!(pump.is_poisoned());
}

#[test]
fn replies_beyond_the_handshake_buffer_are_refused() {
    let (ctx, _root, _dir) = test_context();
    let mut pump = ctx.pump().unwrap();
    let mut wire = Vec::new();
    pump.seal(&[b'x'; MAX_BUFFERED], &mut wire).unwrap();
    assert!(wire.is_empty(), "held until the handshake completes");
    assert!(matches!(
        pump.seal(b"y", &mut wire),
        Err(TlsError::HandshakeBacklog {
            limit: MAX_BUFFERED
        })
    ));
    assert!(pump.is_poisoned());
}

#[test]
fn debug_shows_state_only() {
    let (ctx, _root, _dir) = test_context();
    let shown = format!("{:?}", ctx.pump().unwrap());
    assert!(shown.starts_with("TlsPump { handshaking: true"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes, fed in arbitrary pieces, give an error or a wait: never a panic, never
    /// plaintext.
    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..3000),
                                    cut in 0usize..3000) {
        let (ctx, _root, _dir) = test_context();
        let mut pump = ctx.pump().unwrap();
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        let (a, b) = input.split_at(cut.min(input.len()));
        for piece in [a, b] {
            if pump.feed(piece, &mut plain, &mut wire).is_err() {
                break;
            }
        }
        prop_assert!(plain.is_empty());
    }
}
