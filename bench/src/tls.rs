//! The TLS side of a session: rustls's [`ClientConnection`] pumped by hand between the socket
//! and the SMTP engine, with no I/O of its own.
//!
//! ```text
//!   socket ──recv──► Tls::feed ─ read_tls / process_new_packets / reader ─► plaintext ─► Client
//!   socket ◄─send─── out (ciphertext) ◄─ write_tls ◄─ writer ◄──────────── plaintext ◄─ Client
//! ```
//!
//! Configs are built once per I/O thread ([`client_config`]), so the client session cache
//! (TLS 1.3 tickets, TLS 1.2 session ids) is shared by that thread's connections and nothing TLS
//! crosses threads. Certificates are checked against `--ca` unless `--insecure` picks
//! [`danger::AcceptAnyCertificate`].

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};

/// When TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// After `STARTTLS` and its 220 ([RFC 3207](https://www.rfc-editor.org/rfc/rfc3207)).
    StartTls,
    /// At connect, before the greeting ([RFC 8314 §3.3](https://www.rfc-editor.org/rfc/rfc8314#section-3.3)).
    Implicit,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the certificates in this PEM file (the trust anchors).
    Ca(PathBuf),
    /// Not at all (`--insecure`): see [`danger`].
    Insecure,
}

/// The TLS part of the command line.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// When TLS starts.
    pub mode: Mode,
    /// Certificate checking.
    pub verify: Verify,
    /// Resume sessions (tickets / session ids); off with `--no-resume`.
    pub resume: bool,
    /// The name sent as SNI and checked against the certificate; default: the server's IP.
    pub server_name: ServerName<'static>,
}

/// Client sessions remembered per thread (rustls keeps up to 8 TLS 1.3 tickets per server).
const SESSION_CACHE: usize = 256;

/// A client config for one I/O thread: the aws-lc-rs provider with its default key exchange
/// order (X25519MLKEM768 first), TLS 1.3 and 1.2, and its own session cache.
pub fn client_config(o: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = match &o.verify {
        Verify::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("--ca {}: no usable certificate", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.resumption = if o.resume {
        Resumption::in_memory_sessions(SESSION_CACHE)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// A finished handshake, for the report.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Resumed (ticket or session id) rather than full.
    pub resumed: bool,
    /// The key exchange group, as rustls names it (`X25519MLKEM768`); `-` if none.
    pub group: String,
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: String,
    /// From the ClientHello leaving (TCP connected, or the 220 to STARTTLS) to the handshake's end.
    pub took: Duration,
}

/// One connection's TLS state.
pub struct Tls {
    conn: ClientConnection,
    /// When the ClientHello was queued; `None` until the TCP connection is up (implicit TLS).
    started: Option<Instant>,
    done: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("done", &self.done).finish()
    }
}

impl Tls {
    /// A client connection; its ClientHello is queued for [`Tls::write_tls`].
    pub fn new(config: &Arc<ClientConfig>, name: &ServerName<'static>) -> Result<Tls, String> {
        let mut conn =
            ClientConnection::new(config.clone(), name.clone()).map_err(|e| format!("TLS: {e}"))?;
        // The engine's output is bounded by the session (one pipelined group at a time), and the
        // driver drains ciphertext after every write: no second limit here.
        conn.set_buffer_limit(None);
        Ok(Tls {
            conn,
            started: None,
            done: false,
        })
    }

    /// Starts the handshake clock (the ClientHello is about to leave).
    pub fn start_clock(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// Consumes ciphertext, appends the plaintext it carried to `plain`; returns the handshake
    /// once, when it completes. Errors are the peer's (bad certificate, alert, bad record).
    pub fn feed(
        &mut self,
        now: Instant,
        mut ciphertext: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Option<Handshake>, String> {
        while !ciphertext.is_empty() {
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("tls: {e}")),
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| format!("tls: {e}"))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[at..])
                    .map_err(|e| format!("tls: {e}"))?;
            }
        }
        if self.done || self.conn.is_handshaking() {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(Handshake {
            resumed: self.conn.handshake_kind() == Some(HandshakeKind::Resumed),
            group: self
                .conn
                .negotiated_key_exchange_group()
                .map_or_else(|| "-".to_owned(), |g| format!("{:?}", g.name())),
            version: self
                .conn
                .protocol_version()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:?}")),
            took: self
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
        }))
    }

    /// Encrypts `plain` (buffered by rustls until the handshake is done).
    pub fn write_plain(&mut self, plain: &[u8]) {
        // No buffer limit (see `new`): the write takes everything.
        let _ = self.conn.writer().write_all(plain);
    }

    /// Appends every pending record (handshake, alerts, application data) to `out`.
    pub fn write_tls(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }
}

/// Certificate checking switched off, for `--insecure` only.
pub mod danger {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate for any name, from any issuer, expired or not. The handshake
    /// signature is still verified against the certificate's key, so the peer holds that key;
    /// nothing says the key is the server's. For benchmarks against self-signed servers.
    #[derive(Debug)]
    pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
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
}
