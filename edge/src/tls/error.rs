//! [`TlsError`]: everything that can go wrong in a TLS session or while loading certificates.

use std::path::PathBuf;

/// A TLS failure. Session errors ([`TlsError::Rustls`], [`TlsError::Io`],
/// [`TlsError::HandshakeBacklog`]) are sticky: the [`TlsPump`](super::TlsPump) that returned one
/// answers every later call with [`TlsError::Poisoned`]. Certificate errors name the
/// configuration key at fault, as `key: path: problem`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the peer's input (a bad record, a failed handshake, an oversized message)
    /// or a configuration value. On a pump, any alert rustls queued for the peer has been
    /// appended to `wire` by the failing call.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// rustls' buffered reader or writer failed, for example because a bounded buffer is full.
    #[error("TLS buffer: {0}")]
    Io(#[from] std::io::Error),
    /// An earlier call on this pump failed; the session is over.
    #[error("TLS session has already failed")]
    Poisoned,
    /// Replies sealed before the handshake finished exceed the buffer that holds them until it
    /// does ([`MAX_BUFFERED`](super::MAX_BUFFERED)).
    #[error("TLS: more than {limit} octets of replies are waiting for the handshake to finish")]
    HandshakeBacklog {
        /// The bound that was reached, in octets.
        limit: usize,
    },
    /// A certificate, key or self-signed directory could not be used.
    #[error("{key}: {}: {problem}", path.display())]
    Cert {
        /// The configuration key that names the file (`tls.cert`, `tls.certificate[1].key`,
        /// `tls.self_signed_dir`).
        key: String,
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl TlsError {
    pub(crate) fn cert(key: &str, path: &std::path::Path, problem: impl Into<String>) -> Self {
        TlsError::Cert {
            key: key.to_owned(),
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}
