//! The PROXY protocol header ahead of a session on a `proxy_protocol` listener: who may send
//! one, how long it may take, and what follows it.
//!
//! Only `proxy.trusted` balancers may: anyone else is closed before a byte is sent, since a
//! header from an arbitrary client could name any address and so escape every ban. The header
//! is parsed by [`crate::proxy::parse`] as it arrives, within `proxy.header_timeout_secs`;
//! whatever the balancer relayed behind it in the same reads is the client's own first
//! input, handed to the session untouched.

use std::net::SocketAddr;

use crate::proxy::{self, Header, ProxyConfig};
use crate::transport::{BufferPool, Stream};

/// A session's addresses once its header is read.
pub(super) struct Proxied {
    /// The client: the address the header names, or the balancer itself for a `LOCAL`
    /// connection (its health check) or an `UNKNOWN` one.
    pub(super) peer: SocketAddr,
    /// The balancer, when the header named someone else.
    pub(super) via: Option<SocketAddr>,
    /// What arrived after the header: the client's first bytes (SMTP, or a TLS ClientHello).
    pub(super) early: Vec<u8>,
}

/// Why no session follows: each is logged here, and the connection is closed unanswered.
pub(super) struct Refused;

/// Whether `balancer` may send a PROXY header; if not, the connection is closed at once,
/// before the greeting or any other byte.
pub(super) fn admit(
    stream: &Stream,
    balancer: SocketAddr,
    cfg: &ProxyConfig,
) -> Result<(), Refused> {
    if cfg.is_trusted(balancer.ip()) {
        return Ok(());
    }
    tracing::warn!(peer = %balancer, "PROXY listener: source not in proxy.trusted; closed");
    stream.abort();
    Err(Refused)
}

/// Reads the PROXY header from a trusted balancer, within the header deadline, with buffers
/// from `pool` taken only while data is there. Never answers: a missing, slow or malformed
/// header closes the connection silently, as there is no client yet to answer.
pub(super) async fn read_header(
    stream: &Stream,
    pool: &BufferPool,
    balancer: SocketAddr,
    cfg: &ProxyConfig,
) -> Result<Proxied, Refused> {
    let mut got = Vec::new();
    let fault = match tokio::time::timeout(cfg.header_timeout, gather(stream, pool, &mut got)).await
    {
        Ok(Ok((header, len))) => {
            let early = got.get(len..).unwrap_or_default().to_vec();
            let (peer, via) = match header {
                Header::Proxied { source, .. } => (source, Some(balancer)),
                Header::Local => (balancer, None),
            };
            return Ok(Proxied { peer, via, early });
        }
        Ok(Err(fault)) => fault,
        Err(_) => ReadFault::Timeout,
    };
    match &fault {
        // The balancer's own probe of the port, without a header: not worth a warning.
        ReadFault::Closed => {
            tracing::debug!(peer = %balancer, "PROXY listener: closed before a header")
        }
        ReadFault::Io(e) => {
            tracing::debug!(peer = %balancer, error = %e, "PROXY listener: receive failed")
        }
        ReadFault::Timeout => tracing::warn!(
            peer = %balancer,
            secs = cfg.header_timeout.as_secs(),
            "PROXY header not received in time; closed"
        ),
        ReadFault::Header(e) => {
            tracing::warn!(peer = %balancer, error = %e, "PROXY header refused; closed")
        }
    }
    // A timed-out read is still in the kernel: shutting both directions completes it now.
    stream.abort();
    Err(Refused)
}

/// Receives until `got` holds a whole header. Headers are small and come whole in the first
/// read, almost always; `got` is bounded by the parser, which refuses anything past
/// [`proxy::MAX_HEADER`].
async fn gather(
    stream: &Stream,
    pool: &BufferPool,
    got: &mut Vec<u8>,
) -> Result<(Header, usize), ReadFault> {
    loop {
        let (res, buf) = stream.recv_when_ready(|| pool.take()).await;
        match res {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err(ReadFault::Closed),
            Err(e) => return Err(ReadFault::Io(e)),
        }
        got.extend_from_slice(buf.filled());
        match proxy::parse(got) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) => return Err(ReadFault::Header(e)),
        }
    }
}

/// Why reading the header failed.
enum ReadFault {
    Closed,
    Io(std::io::Error),
    Header(proxy::HeaderError),
    Timeout,
}
