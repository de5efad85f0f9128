//! TLS for SMTP: STARTTLS ([RFC 3207]) and implicit TLS ([RFC 8314 §3.3]), with rustls.
//!
//! Two parts. Neither reads a clock, and only the first touches files: certificates are read
//! when a [`TlsContext`] is built or reloaded, and `certs.rs` writes the self-signed default
//! when no certificate is configured. Sessions do no I/O at all.
//!
//! - [`TlsContext`] builds the one `Arc<rustls::ServerConfig>` every worker shares: TLS 1.2 and
//!   1.3, the aws-lc-rs provider's default suites and groups (X25519MLKEM768 first), session
//!   tickets plus a stateful cache, and certificates chosen by SNI from a set that
//!   [`TlsContext::reload`] can replace while sessions run.
//! - [`TlsPump`] runs one session over the caller's buffers: ciphertext in, plaintext and
//!   records out.
//!
//! ```text
//!  ring recv ──► TlsPump::feed ──plain──► protocol::Connection ──replies──► TlsPump::seal ──► ring send
//!                    └────────────── wire (handshake, alerts, tickets) ──────────────────────► ring send
//! ```
//!
//! [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
//! [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod certs;
mod error;
mod pump;
mod resolver;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache};
use rustls::ServerConfig;

pub use certs::{
    ensure_self_signed, validity, CertEntry, CertSource, TlsConfig, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_SELF_SIGNED_DIR, DEFAULT_SESSION_CACHE, SELF_SIGNED_CERT, SELF_SIGNED_KEY,
    SELF_SIGNED_LIFETIME, SELF_SIGNED_RENEW_BEFORE,
};
pub use error::TlsError;
pub use pump::{TlsInfo, TlsPump, MAX_BUFFERED};

use resolver::{CertStore, SniResolver};

/// The protocol versions offered: TLS 1.3 ([RFC 8446]) and TLS 1.2 ([RFC 5246]), as
/// [RFC 8314 §4.1] and [RFC 8996] require; nothing older.
///
/// [RFC 8446]: https://www.rfc-editor.org/rfc/rfc8446
/// [RFC 5246]: https://www.rfc-editor.org/rfc/rfc5246
/// [RFC 8314 §4.1]: https://www.rfc-editor.org/rfc/rfc8314#section-4.1
/// [RFC 8996]: https://www.rfc-editor.org/rfc/rfc8996
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The server's TLS state shared by every worker: one `ServerConfig`, built once, and the
/// certificates it serves, which [`reload`](Self::reload) can replace.
#[derive(Debug)]
pub struct TlsContext {
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    provider: Arc<CryptoProvider>,
}

impl TlsContext {
    /// Loads every certificate of `cfg` (generating the self-signed one if `cfg` asks for it
    /// and it is missing or, at `now`, near its end: see [`ensure_self_signed`]) and builds the
    /// `ServerConfig`. Errors name the config key of the file at fault.
    pub fn new(cfg: &TlsConfig, now: SystemTime) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let resolver = Arc::new(SniResolver::new(CertStore::load(cfg, &provider, now)?));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.session_storage = if cfg.session_cache == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(cfg.session_cache)
        };
        // Stateless resumption; the ticket key rotates on its own (every 6 hours, the previous
        // key still accepted).
        config.ticketer = aws_lc_rs::Ticketer::new()?;
        // No ALPN (SMTP negotiates none), no 0-RTT (a replayable MAIL is worse than a round
        // trip): both are rustls' defaults, stated here so a change is deliberate.
        config.alpn_protocols.clear();
        config.max_early_data_size = 0;
        Ok(TlsContext {
            config: Arc::new(config),
            resolver,
            provider,
        })
    }

    /// The shared configuration for [`TlsPump::new`]; cheap to clone.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// A new session with this context's configuration.
    pub fn pump(&self) -> Result<TlsPump, TlsError> {
        TlsPump::new(self.server_config())
    }

    /// Loads every certificate of `cfg` anew and, only if all of them load, makes them the
    /// ones new handshakes see. Sessions already established or in progress are unaffected.
    /// On error the previous certificates stay in use and the error names the key at fault.
    ///
    /// Only the certificates are reloaded: `session_cache` is fixed when the context is built.
    /// A self-signed certificate near its end at `now` is renewed here too.
    pub fn reload(&self, cfg: &TlsConfig, now: SystemTime) -> Result<(), TlsError> {
        let loaded = self.load(cfg, now)?;
        self.install(loaded);
        Ok(())
    }

    /// The first half of [`reload`](Self::reload): loads and checks every certificate of
    /// `cfg` without putting any in place, so that a reload can check everything else before
    /// it changes anything.
    pub fn load(&self, cfg: &TlsConfig, now: SystemTime) -> Result<Certificates, TlsError> {
        CertStore::load(cfg, &self.provider, now).map(Certificates)
    }

    /// The second half of [`reload`](Self::reload): `loaded` is what new handshakes see.
    pub fn install(&self, loaded: Certificates) {
        self.resolver.swap(loaded.0);
    }
}

/// Loads every certificate and key `cfg` names in files (not the self-signed one, which the
/// server makes itself), as the server would, and returns every failure: a file that cannot
/// be read, is not PEM, holds no usable certificate or key, or a key that does not match its
/// certificate. Writes nothing.
pub fn check_certificate_files(cfg: &TlsConfig) -> Vec<TlsError> {
    let provider = aws_lc_rs::default_provider();
    let default = match &cfg.default_cert {
        CertSource::Files(entry) => Some(entry),
        CertSource::SelfSigned { .. } => None,
    };
    default
        .into_iter()
        .chain(&cfg.certificates)
        .filter_map(|entry| entry.load(&provider).err())
        .collect()
}

/// Certificates loaded and checked by [`TlsContext::load`], not yet in use.
pub struct Certificates(CertStore);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}
