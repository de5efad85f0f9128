//! CIDR prefixes ([RFC 4632 §3.1]) as the configuration and the command line write them,
//! parsed strictly into [`ipnet::IpNet`].
//!
//! `ipnet` parses `address/length` but accepts host bits (`10.0.0.1/8`) and needs the length;
//! here a bare address is a host prefix (`/32`, `/128`) and host bits are refused, naming the
//! prefix that was probably meant: in an allowlist a typo must not silently widen or move it.
//!
//! [RFC 4632 §3.1]: https://www.rfc-editor.org/rfc/rfc4632#section-3.1

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a string is not a prefix; `Display` is the problem text for `key: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `ADDRESS` or `ADDRESS/LENGTH`.
    #[error("{0:?} is not an IP address or CIDR prefix (like 192.0.2.0/24 or 2001:db8::/32)")]
    Syntax(String),
    /// The length is past the address width.
    #[error("prefix length {len} is longer than {max} bits")]
    TooLong {
        /// As written.
        len: u32,
        /// 32 or 128.
        max: u8,
    },
    /// Bits set past the prefix length.
    #[error("{written:?} has host bits set; did you mean {meant}?")]
    HostBits {
        /// As written.
        written: String,
        /// The same prefix with the host bits cleared.
        meant: IpNet,
    },
}

/// Parses `ADDRESS` (a host prefix) or `ADDRESS/LENGTH` with no host bits set; surrounding
/// whitespace is ignored.
pub fn parse(text: &str) -> Result<IpNet, CidrError> {
    let text = text.trim();
    let syntax = || CidrError::Syntax(text.to_owned());
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
    let Some(len) = len else {
        return Ok(IpNet::from(addr));
    };
    // Digits only: `u32::from_str` would take `+8`.
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let len: u32 = len.parse().map_err(|_| syntax())?;
    let max = IpNet::from(addr).max_prefix_len();
    let net = u8::try_from(len)
        .ok()
        .and_then(|l| IpNet::new(addr, l).ok())
        .ok_or(CidrError::TooLong { len, max })?;
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            written: text.to_owned(),
            meant: net.trunc(),
        });
    }
    Ok(net)
}

/// The source a ban is keyed on, from an address or the prefix a ban listing prints
/// (`192.0.2.7/32`, `2001:db8:1:2::/64`): bans are per IPv4 address and per IPv6 /64, so wider
/// prefixes are refused. As `smtp-edge ban` and `smtp-edge shield` take their ADDR.
pub fn ban_source(text: &str) -> Result<IpAddr, String> {
    let prefix = parse(text).map_err(|e| e.to_string())?;
    match (prefix.network(), prefix.prefix_len()) {
        (IpAddr::V4(_), 32) | (IpAddr::V6(_), 64..=128) => Ok(prefix.network()),
        _ => Err(format!(
            "{text}: bans are per IPv4 address or IPv6 /64, not wider prefixes"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_name_typos() {
        let ok = [
            ("192.0.2.0/24", "192.0.2.0/24"),
            ("192.0.2.9", "192.0.2.9/32"),
            (" 192.0.2.9 ", "192.0.2.9/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
        ];
        for (text, shown) in ok {
            assert_eq!(parse(text).unwrap().to_string(), shown, "{text}");
        }
        let bad = [
            ("10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"),
            ("10.0.0.0/33", "prefix length 33 is longer than 32 bits"),
            ("fd00::/129", "prefix length 129 is longer than 128 bits"),
            ("10.0.0/8", "is not an IP address or CIDR"),
            ("10.0.0.0/", "is not an IP address or CIDR"),
            ("10.0.0.0/+8", "is not an IP address or CIDR"),
            ("example.test", "is not an IP address or CIDR"),
        ];
        for (text, problem) in bad {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(problem), "{text}: {e}");
        }
        let p = parse("10.1.0.0/16").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.contains(&ip("10.1.200.3")));
        assert!(!p.contains(&ip("10.2.0.1")));
        assert!(!p.contains(&ip("::ffff:10.1.0.1")), "families never mix");
    }
}
