//! The PROXY protocol: how an L4 balancer (HAProxy, a cloud NLB) in front of a listener tells
//! the server who the client really is.
//!
//! A balancer that terminates TCP opens its own connection to us, so the socket's peer is the
//! balancer. With `proxy_protocol = true` on a listener, the balancer writes one header first
//! ([`header`]: version 1, text, or version 2, binary) naming the client's address, and the
//! server takes that address as the session's peer for everything that judges or records a
//! client: the guard (admission, per-source counts, bans), AUTH's failure counts, the
//! `Received:` header and the logs. The header is believed only from `[proxy] trusted`
//! networks ([`ProxyConfig`]); anyone else could name any address and walk past every ban.
//!
//! The parser is sans-IO, like the SMTP engine: bytes in, a verdict and the header's exact
//! length out, so the driver hands whatever follows the header (SMTP, or a TLS ClientHello) to
//! the session untouched.
//!
//! Specification: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.

pub mod header;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

pub use header::{parse, Header, HeaderError, MAX_HEADER};

/// Default `proxy.header_timeout_secs`: a balancer writes the header with its first packet, so
/// any wait longer than a round trip is a fault, not a slow client.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The validated `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `proxy.trusted`: the balancers whose PROXY headers are believed. A connection to a
    /// `proxy_protocol` listener from anywhere else is closed before any byte is sent. An
    /// IPv4-mapped IPv6 peer is matched as its IPv4 address.
    pub trusted: Vec<IpNet>,
    /// `proxy.header_timeout_secs`: how long a balancer may take to send the whole header.
    pub header_timeout: Duration,
}

impl Default for ProxyConfig {
    /// No balancer trusted; a five-second header deadline.
    fn default() -> Self {
        ProxyConfig {
            trusted: Vec::new(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

impl ProxyConfig {
    /// Whether `ip` is a trusted balancer.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}
