//! [`IpPrefix`]: an address and a prefix length (CIDR, RFC 4632 §3.1), as `shield.allow` and
//! ban listings use them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 prefix with no host bits set, such as `192.0.2.0/24` or `2001:db8::/32`.
///
/// Parsing accepts a bare address as a host prefix (`/32` or `/128`) and refuses host bits
/// (`10.0.0.1/8`), naming the prefix that was probably meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not an [`IpPrefix`]; `Display` is the problem text for `key: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
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
        meant: IpPrefix,
    },
}

impl IpPrefix {
    /// `addr/len`, refused if `len` is past the width or `addr` has host bits set.
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = width(addr);
        if len > max {
            return Err(PrefixError::TooLong {
                len: u32::from(len),
                max,
            });
        }
        let prefix = IpPrefix {
            addr: mask(addr, len),
            len,
        };
        if prefix.addr != addr {
            return Err(PrefixError::HostBits {
                written: format!("{addr}/{len}"),
                meant: prefix,
            });
        }
        Ok(prefix)
    }

    /// The prefix holding exactly `addr`.
    pub fn host(addr: IpAddr) -> IpPrefix {
        IpPrefix {
            addr,
            len: width(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside. IPv4 and IPv6 prefixes never contain each other's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<IpPrefix, PrefixError> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let Some(len) = len else {
            return Ok(IpPrefix::host(addr));
        };
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
            return Err(syntax());
        }
        let len: u32 = len.parse().map_err(|_| syntax())?;
        let max = width(addr);
        let len = u8::try_from(len)
            .ok()
            .filter(|l| *l <= max)
            .ok_or(PrefixError::TooLong { len, max })?;
        IpPrefix::new(addr, len)
    }
}

fn width(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit past `len` cleared (`len` at most the width).
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}
