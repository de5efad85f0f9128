//! The relay's TLS client configuration: STARTTLS to other MTAs without certificate checks.
//!
//! Why not verify: for `relay.tls = "opportunistic"` this is [RFC 7435] opportunistic
//! security, and Postfix's `may`: an encrypted channel to an unauthenticated peer still
//! defeats passive collection, and refusing a self-signed certificate would only push the
//! mail back to plaintext. For `"required"` (Postfix's `encrypt`) the same holds: the MX
//! name came from unauthenticated DNS, so checking the certificate against it stops no
//! active attacker; that takes DANE or MTA-STS. The handshake signatures are still checked,
//! so the session is bound to the key the peer presented.
//!
//! [RFC 7435]: https://www.rfc-editor.org/rfc/rfc7435

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::tls::{TlsError, PROTOCOL_VERSIONS};

/// The client configuration every relay session shares: TLS 1.2 and 1.3, the aws-lc-rs
/// provider, any certificate.
pub(super) fn client_config() -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name sent in SNI and passed to rustls: the host name, or its address.
pub(super) fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(addr.into()))
}

/// Accepts any certificate chain; checks the handshake signatures with the provider, so the
/// session is still bound to the key the peer presented. Public for the black-box tests, which
/// compare the presented certificate with the one they expect byte for byte.
#[derive(Debug)]
pub struct AnyCertificate(Arc<CryptoProvider>);

impl AnyCertificate {
    /// A verifier that checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> AnyCertificate {
        AnyCertificate(provider)
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
