//! Certificate choice by SNI, with certificates that can be swapped while sessions run.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{TlsConfig, TlsError};

/// One complete, loaded set of certificates. Immutable: a reload builds a new one.
#[derive(Debug)]
pub(crate) struct CertStore {
    default: Arc<CertifiedKey>,
    /// `[[tls.certificate]]`, in file order.
    entries: Vec<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads every certificate of `cfg`; the first failure is returned, naming its key.
    pub(crate) fn load(
        cfg: &TlsConfig,
        provider: &CryptoProvider,
        now: std::time::SystemTime,
    ) -> Result<CertStore, TlsError> {
        let default = cfg.default_cert.load(provider, now)?;
        let entries = cfg
            .certificates
            .iter()
            .map(|entry| entry.load(provider))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertStore { default, entries })
    }

    /// The certificate for a ClientHello naming `sni` and accepting `schemes`: the first entry
    /// valid for the name ([RFC 6125 §6.4], wildcards included) whose key can sign one of
    /// `schemes`; failing that the first entry valid for the name; failing that the default.
    ///
    /// Cost: one certificate parse per entry (no signature checks), small beside the
    /// handshake's own public-key operations.
    ///
    /// [RFC 6125 §6.4]: https://www.rfc-editor.org/rfc/rfc6125#section-6.4
    fn select(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        let Some(name) = sni.and_then(|s| ServerName::try_from(s).ok()) else {
            return self.default.clone();
        };
        let mut fallback = None;
        for entry in &self.entries {
            if !valid_for(entry, &name) {
                continue;
            }
            if entry.key.choose_scheme(schemes).is_some() {
                return entry.clone();
            }
            fallback.get_or_insert(entry);
        }
        fallback.unwrap_or(&self.default).clone()
    }
}

fn valid_for(entry: &CertifiedKey, name: &ServerName<'_>) -> bool {
    entry
        .cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
}

/// The server's [`ResolvesServerCert`]: reads the current [`CertStore`] without locking, and
/// [`swap`](Self::swap) replaces it for later handshakes only.
#[derive(Debug)]
pub(crate) struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl SniResolver {
    pub(crate) fn new(store: CertStore) -> Self {
        SniResolver {
            store: ArcSwap::from_pointee(store),
        }
    }

    pub(crate) fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        Some(store.select(hello.server_name(), hello.signature_schemes()))
    }
}
