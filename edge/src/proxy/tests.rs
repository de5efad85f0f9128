use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::header::{parse, Header, HeaderError, MAX_HEADER};

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The version 2 header for `cmd` (0 LOCAL, 1 PROXY) and family byte `fam` over `block`.
fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | cmd);
    out.push(fam);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// The address block of a version 2 PROXY header for `source` and `destination`.
fn v2_block(source: SocketAddr, destination: SocketAddr) -> (u8, Vec<u8>) {
    let mut block = Vec::new();
    let fam = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x21
        }
        _ => unreachable!("one family per header"),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    (fam, block)
}

/// Every prefix of `input` shorter than the header is incomplete, and every longer one gives
/// the same header and length as the whole: the driver may receive it in any pieces.
fn assert_split_invariant(input: &[u8], expected: Header, len: usize) {
    assert_eq!(parse(input), Ok(Some((expected, len))), "whole");
    for i in 0..input.len() {
        let got = parse(&input[..i]);
        if i < len {
            assert_eq!(got, Ok(None), "prefix of {i} octets");
        } else {
            assert_eq!(got, Ok(Some((expected, len))), "prefix of {i} octets");
        }
    }
}

#[test]
fn v1_tcp4_names_the_client_and_leaves_smtp_after_it() {
    let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\r\n";
    let mut input = line.to_vec();
    input.extend_from_slice(b"EHLO client.example\r\n");
    let expected = Header::Proxied {
        source: sa("192.0.2.7:40123"),
        destination: sa("198.51.100.1:25"),
    };
    assert_split_invariant(&input, expected, line.len());
}

#[test]
fn v1_tcp6_and_unknown() {
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 587\r\n";
    let expected = Header::Proxied {
        source: sa("[2001:db8::7]:65535"),
        destination: sa("[2001:db8::1]:587"),
    };
    assert_split_invariant(line, expected, line.len());
    // Whatever follows UNKNOWN is ignored (spec §2.1).
    let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_split_invariant(line, Header::Local, line.len());
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Header::Local, 15))));
}

#[test]
fn v1_grammar_violations_are_refused() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\n", // bare LF
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\rX", // CR without LF
        b"PROXY \n\r", // a bare LF before a CR still waiting for its LF
        b"PROXY TCP4  192.0.2.7 198.51.100.1 40123 25\r\n", // double space
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123\r\n", // a port missing
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25 9\r\n", // one field too many
        b"PROXY TCP4 2001:db8::7 2001:db8::1 1 2\r\n", // IPv6 under TCP4
        b"PROXY TCP6 192.0.2.7 198.51.100.1 1 2\r\n", // IPv4 under TCP6
        b"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n", // a leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", // port out of range
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n", // a sign
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n", // not TCP
        b"PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n", // case matters
    ];
    for input in bad {
        assert_eq!(
            parse(input),
            Err(HeaderError::MalformedV1),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn v1_line_without_end_within_107_octets_is_refused() {
    let mut input = b"PROXY UNKNOWN ".to_vec();
    input.resize(106, b'x');
    assert_eq!(parse(&input), Err(HeaderError::V1TooLong));
    // 107 octets with the CRLF is the longest line there is.
    input.truncate(105);
    input.extend_from_slice(b"\r\n");
    assert_eq!(parse(&input), Ok(Some((Header::Local, 107))));
}

#[test]
fn smtp_or_tls_instead_of_a_header_is_refused_at_the_first_octet() {
    assert_eq!(parse(b"E"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"EHLO x\r\n"), Err(HeaderError::NotProxy));
    // A TLS ClientHello starts with 0x16.
    assert_eq!(parse(&[0x16, 0x03, 0x01]), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"PROXX"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b""), Ok(None));
}

#[test]
fn v2_proxy_over_ipv4_and_ipv6_with_tlvs_skipped() {
    let (src, dst) = (sa("203.0.113.9:50000"), sa("198.51.100.1:25"));
    let (fam, mut block) = v2_block(src, dst);
    // A PP2_TYPE_UNIQUE_ID TLV: skipped by the length.
    block.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']);
    let mut input = v2(1, fam, &block);
    let len = input.len();
    input.extend_from_slice(b"QUIT\r\n");
    let expected = Header::Proxied {
        source: src,
        destination: dst,
    };
    assert_split_invariant(&input, expected, len);

    let (src, dst) = (sa("[2001:db8::9]:1"), sa("[2001:db8::1]:465"));
    let (fam, block) = v2_block(src, dst);
    let input = v2(1, fam, &block);
    let expected = Header::Proxied {
        source: src,
        destination: dst,
    };
    assert_split_invariant(&input, expected, input.len());
}

#[test]
fn v2_local_keeps_the_balancers_address_whatever_its_block() {
    // A health check: LOCAL, usually with no addresses.
    let input = v2(0, 0x00, &[]);
    assert_split_invariant(&input, Header::Local, 16);
    // The receiver must ignore the family of a LOCAL header (spec §2.2).
    let input = v2(0, 0x12, &[1, 2, 3]);
    assert_split_invariant(&input, Header::Local, 19);
    // PROXY with UNSPEC or a Unix socket: no client address either.
    assert_eq!(parse(&v2(1, 0x00, &[])), Ok(Some((Header::Local, 16))));
    assert_eq!(
        parse(&v2(1, 0x31, &[0; 216])),
        Ok(Some((Header::Local, 232)))
    );
}

#[test]
fn v2_faults_are_refused_before_the_block_arrives() {
    // Version 1 in the binary form, then an unknown command.
    let mut input = v2(1, 0x11, &[0; 12]);
    input[12] = 0x11;
    assert_eq!(
        parse(&input[..13]),
        Err(HeaderError::V2VersionCommand(0x11))
    );
    input[12] = 0x22;
    assert_eq!(
        parse(&input[..13]),
        Err(HeaderError::V2VersionCommand(0x22))
    );
    // UDP (DGRAM) cannot carry SMTP.
    let input = v2(1, 0x12, &[0; 12]);
    assert_eq!(parse(&input[..16]), Err(HeaderError::V2Family(0x12)));
    // An address block shorter than its family needs.
    assert_eq!(parse(&v2(1, 0x11, &[0; 11])), Err(HeaderError::V2Short));
    assert_eq!(parse(&v2(1, 0x21, &[0; 35])), Err(HeaderError::V2Short));
    // Longer than we buffer: refused from its length alone.
    let input = v2(1, 0x11, &vec![0; MAX_HEADER]);
    assert_eq!(parse(&input[..16]), Err(HeaderError::V2TooLong));
}

fn socket_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(|(s, d, sp, dp)| (
            SocketAddr::new(Ipv4Addr::from(s).into(), sp),
            SocketAddr::new(Ipv4Addr::from(d).into(), dp)
        )),
        (any::<u128>(), any::<u128>(), any::<u16>(), any::<u16>()).prop_map(|(s, d, sp, dp)| (
            SocketAddr::new(Ipv6Addr::from(s).into(), sp),
            SocketAddr::new(Ipv6Addr::from(d).into(), dp)
        )),
    ]
}

/// A valid header of any kind: v1 or v2, PROXY (IPv4 or IPv6) or v2 LOCAL, with TLV octets.
fn any_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
    (
        socket_pair(),
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|((src, dst), kind, tlvs)| {
            let proxied = Header::Proxied {
                source: src,
                destination: dst,
            };
            match kind {
                0 => {
                    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
                    let line = format!(
                        "PROXY {family} {} {} {} {}\r\n",
                        src.ip(),
                        dst.ip(),
                        src.port(),
                        dst.port()
                    );
                    (line.into_bytes(), proxied)
                }
                1 => {
                    let (fam, mut block) = v2_block(src, dst);
                    block.extend_from_slice(&tlvs);
                    (v2(1, fam, &block), proxied)
                }
                _ => (v2(0, 0x00, &tlvs), Header::Local),
            }
        })
}

proptest! {
    /// Any header followed by any bytes: found whole, with its exact length, at every split.
    #[test]
    fn headers_parse_the_same_at_every_split(
        (header, expected) in any_header(),
        rest in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut input = header.clone();
        input.extend_from_slice(&rest);
        prop_assert_eq!(parse(&input), Ok(Some((expected, header.len()))));
        for i in 0..input.len() {
            let got = parse(&input[..i]);
            if i < header.len() {
                prop_assert_eq!(got, Ok(None), "prefix {}", i);
            } else {
                prop_assert_eq!(got, Ok(Some((expected, header.len()))), "prefix {}", i);
            }
        }
    }

    /// Arbitrary input never panics, and a verdict on a prefix is never contradicted by more
    /// input: what the driver decided on the first read stands.
    #[test]
    fn verdicts_on_prefixes_stand(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
                let mut h = b"PROXY ".to_vec();
                h.append(&mut v);
                h
            }),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
                let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                h.append(&mut v);
                h
            }),
        ],
    ) {
        let whole = parse(&input);
        for i in 0..input.len() {
            match parse(&input[..i]) {
                Ok(None) => {}
                decided => prop_assert_eq!(decided, whole, "prefix {}", i),
            }
        }
    }
}
