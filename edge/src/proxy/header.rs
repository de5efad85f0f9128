//! The PROXY header, versions 1 and 2, parsed by hand: it is a few dozen lines, and the driver
//! needs the exact length of the header (never a byte more) so that what follows reaches the
//! SMTP engine or TLS untouched.
//!
//! [`parse`] is given everything received so far. It answers as soon as it can: `Ok(None)`
//! while the input is a prefix of some valid header, an error as soon as it cannot become one
//! (a client speaking SMTP or TLS to a PROXY listener fails at its first byte), and the header
//! with its length once it is complete.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest header accepted, in octets. A version 1 line is at most 107 octets (spec §2.1);
/// version 2 allows 16 + 65535, but a balancer's addresses take at most 52 (spec §2.2) and the
/// TLVs balancers add (unique id, TLS details, a cloud endpoint id) a few hundred more.
/// Anything longer is refused rather than buffered.
pub const MAX_HEADER: usize = 4096;

/// Longest version 1 line, CRLF included (spec §2.1).
const MAX_V1: usize = 107;
/// The version 1 preamble.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The version 2 signature (spec §2.2): chosen so that no text protocol can start with it.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;

/// A complete PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer relays a client: `source` is the client, `destination` the address it
    /// connected to on the balancer.
    Proxied {
        /// The client's address and port.
        source: SocketAddr,
        /// Where the client connected to.
        destination: SocketAddr,
    },
    /// The connection is the balancer's own (version 2 `LOCAL`: a health check), or the
    /// balancer does not know the client's address (version 1 `UNKNOWN`, version 2
    /// `UNSPEC` or a Unix socket). The spec has the receiver keep the connection's own
    /// addresses.
    Local,
}

/// Why input is not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The input starts with neither the version 1 preamble nor the version 2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A version 1 line that breaks the grammar of spec §2.1.
    #[error("malformed PROXY v1 header")]
    MalformedV1,
    /// A version 1 line longer than 107 octets without its CRLF.
    #[error("PROXY v1 header longer than 107 octets")]
    V1TooLong,
    /// A version 2 header with a version other than 2 or a command other than LOCAL or PROXY.
    #[error("PROXY v2 header with unknown version or command {0:#04x}")]
    V2VersionCommand(u8),
    /// A version 2 PROXY command for a family or transport we cannot serve (UDP, or an
    /// unknown code).
    #[error("PROXY v2 header with unsupported address family or protocol {0:#04x}")]
    V2Family(u8),
    /// A version 2 address block shorter than its family needs.
    #[error("PROXY v2 address block too short for its family")]
    V2Short,
    /// A version 2 header longer than [`MAX_HEADER`].
    #[error("PROXY v2 header longer than {MAX_HEADER} octets")]
    V2TooLong,
}

/// Parses the PROXY header at the start of `input`: `Ok(None)` until it is complete, then the
/// header and how many octets it took (`input[len..]` is the connection's own data).
///
/// Fails as soon as `input` can no longer start a valid header, without waiting for more.
pub fn parse(input: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    if starts_like(input, V1_PREFIX) {
        if input.len() < V1_PREFIX.len() {
            return Ok(None);
        }
        return parse_v1(input);
    }
    if starts_like(input, &V2_SIGNATURE) {
        if input.len() < V2_FIXED {
            return check_v2_prefix(input).map(|()| None);
        }
        return parse_v2(input);
    }
    Err(HeaderError::NotProxy)
}

/// Whether `input` and `prefix` agree on their common length.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input.get(..n) == prefix.get(..n)
}

/// Version 1 (spec §2.1): `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
/// `PROXY UNKNOWN ...\r\n`, single spaces, at most 107 octets.
fn parse_v1(input: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    // The CR must leave room for its LF within the 107 octets.
    let window = input.get(..input.len().min(MAX_V1 - 1)).unwrap_or_default();
    let cr = memchr::memchr(b'\r', window);
    // A bare LF is not a line end here: the spec ends the line with CRLF only. Looked for
    // before the CR, whether or not one has arrived, so that the verdict on a prefix is the
    // verdict on the whole (`PROXY \n` is malformed, and so is `PROXY \n\r`).
    let before_cr = window.get(..cr.unwrap_or(window.len())).unwrap_or_default();
    if memchr::memchr(b'\n', before_cr).is_some() {
        return Err(HeaderError::MalformedV1);
    }
    let Some(cr) = cr else {
        return if window.len() >= MAX_V1 - 1 {
            Err(HeaderError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    match input.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(HeaderError::MalformedV1),
    }
    let len = cr + 2;
    let line = window.get(V1_PREFIX.len()..cr).unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::MalformedV1)?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored (spec §2.1).
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let v6 = family == "TCP6";
            let src = v1_ip(fields.next(), v6)?;
            let dst = v1_ip(fields.next(), v6)?;
            let sport = v1_port(fields.next())?;
            let dport = v1_port(fields.next())?;
            if fields.next().is_some() {
                return Err(HeaderError::MalformedV1);
            }
            Header::Proxied {
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
            }
        }
        _ => return Err(HeaderError::MalformedV1),
    };
    Ok(Some((header, len)))
}

/// An address of the family the line names (std's parsers refuse leading zeros and spaces).
fn v1_ip(field: Option<&str>, v6: bool) -> Result<IpAddr, HeaderError> {
    let field = field.ok_or(HeaderError::MalformedV1)?;
    let ip = if v6 {
        field.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        field.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| HeaderError::MalformedV1)
}

/// A port: 1 to 5 decimal digits, at most 65535.
fn v1_port(field: Option<&str>) -> Result<u16, HeaderError> {
    let field = field.ok_or(HeaderError::MalformedV1)?;
    if field.is_empty() || field.len() > 5 || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::MalformedV1);
    }
    field.parse().map_err(|_| HeaderError::MalformedV1)
}

/// Refuses an incomplete version 2 header as soon as its version and command, or its family,
/// are known to be wrong.
fn check_v2_prefix(input: &[u8]) -> Result<(), HeaderError> {
    if let Some(&vc) = input.get(12) {
        if vc >> 4 != 2 || vc & 0x0f > 1 {
            return Err(HeaderError::V2VersionCommand(vc));
        }
    }
    Ok(())
}

/// Version 2 (spec §2.2): the signature, version and command, family and protocol, a
/// big-endian length, then that many octets of addresses and TLVs.
fn parse_v2(input: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    check_v2_prefix(input)?;
    let (Some(&vc), Some(&fam), Some(&hi), Some(&lo)) =
        (input.get(12), input.get(13), input.get(14), input.get(15))
    else {
        return Ok(None);
    };
    let len = V2_FIXED + usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_HEADER {
        return Err(HeaderError::V2TooLong);
    }
    let local = vc & 0x0f == 0;
    // The family is checked before the block arrives: a PROXY command for UDP is refused at
    // once. LOCAL ignores the family entirely (spec §2.2: "the receiver must ... ignore").
    if !local && !matches!(fam, 0x00 | 0x11 | 0x21 | 0x31) {
        return Err(HeaderError::V2Family(fam));
    }
    let Some(block) = input.get(V2_FIXED..len) else {
        return Ok(None);
    };
    if local {
        return Ok(Some((Header::Local, len)));
    }
    let header = match fam {
        0x11 => {
            let a = block.get(..12).ok_or(HeaderError::V2Short)?;
            let ip = |at: usize| -> IpAddr {
                let mut o = [0u8; 4];
                o.copy_from_slice(a.get(at..at + 4).unwrap_or(&[0; 4]));
                IpAddr::V4(Ipv4Addr::from(o))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(a, 8)),
                destination: SocketAddr::new(ip(4), port(a, 10)),
            }
        }
        0x21 => {
            let a = block.get(..36).ok_or(HeaderError::V2Short)?;
            let ip = |at: usize| -> IpAddr {
                let mut o = [0u8; 16];
                o.copy_from_slice(a.get(at..at + 16).unwrap_or(&[0; 16]));
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(a, 32)),
                destination: SocketAddr::new(ip(16), port(a, 34)),
            }
        }
        // UNSPEC, or a Unix socket on the balancer's host: no client address to take.
        _ => Header::Local,
    };
    Ok(Some((header, len)))
}

/// The big-endian port at `at` of an address block already checked to be long enough.
fn port(block: &[u8], at: usize) -> u16 {
    match (block.get(at), block.get(at + 1)) {
        (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}
