//! TLS tests: both ends in memory (the server is a [`TlsPump`], the client a
//! `rustls::ClientConnection`), in the manner of rustls' own `transfer` helper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod context;
mod pump;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

use super::*;
use crate::clock::wall;

/// A generated certificate: PEM for the files, DER to trust and compare.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn gen_cert(names: &[&str]) -> TestCert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// Writes `cert` as `dir/<stem>.crt` and `dir/<stem>.key`, named `config_key` in errors.
fn write_cert(dir: &Path, stem: &str, config_key: &str, cert: &TestCert) -> CertEntry {
    let entry = CertEntry::new(
        config_key,
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&entry.cert, &cert.cert_pem).unwrap();
    std::fs::write(&entry.key, &cert.key_pem).unwrap();
    entry
}

/// A config serving `default` only.
fn files_config(default: CertEntry) -> TlsConfig {
    TlsConfig {
        default_cert: CertSource::Files(default),
        certificates: Vec::new(),
        session_cache: DEFAULT_SESSION_CACHE,
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
    }
}

/// A context whose default certificate is valid for `mx.example.test`, and the DER to trust.
fn test_context() -> (TlsContext, CertificateDer<'static>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["mx.example.test"]);
    let entry = write_cert(dir.path(), "mx", "tls", &cert);
    let ctx = TlsContext::new(&files_config(entry), wall()).unwrap();
    (ctx, cert.der, dir)
}

fn client_config_with(
    roots: &[&CertificateDer<'static>],
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// A client of rustls' defaults (TLS 1.3 and 1.2, X25519MLKEM768 first) trusting `roots`.
fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    client_config_with(roots, aws_lc_rs::default_provider(), PROTOCOL_VERSIONS)
}

fn client(config: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    ClientConnection::new(
        config.clone(),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap()
}

/// How each flight of records is cut before it is fed.
#[derive(Debug, Clone, Copy)]
enum Split {
    Whole,
    /// Two pieces, the first `n` octets long (or the whole flight if shorter).
    At(usize),
    Bytes,
}

impl Split {
    fn pieces(self, bytes: &[u8]) -> Vec<&[u8]> {
        match self {
            Split::Whole => vec![bytes],
            Split::At(n) => {
                let (a, b) = bytes.split_at(n.min(bytes.len()));
                vec![a, b]
            }
            Split::Bytes => bytes.chunks(1).collect(),
        }
    }
}

/// The server pump and a rustls client, with what each has received.
struct Pair {
    client: ClientConnection,
    server: TlsPump,
    split: Split,
    /// Plaintext the server got from the client.
    server_plain: Vec<u8>,
    /// Plaintext the client got from the server.
    client_plain: Vec<u8>,
    /// Largest client flight seen, to bound split positions.
    max_flight: usize,
}

impl Pair {
    fn new(client: ClientConnection, server: TlsPump, split: Split) -> Pair {
        Pair {
            client,
            server,
            split,
            server_plain: Vec::new(),
            client_plain: Vec::new(),
            max_flight: 0,
        }
    }

    /// Moves the client's pending records to the server, in pieces; returns the octets moved.
    fn client_to_server(&mut self) -> Result<usize, TlsError> {
        let mut flight = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut flight).unwrap();
        }
        self.max_flight = self.max_flight.max(flight.len());
        let mut wire = Vec::new();
        for piece in self.split.pieces(&flight) {
            let n = self.server.feed(piece, &mut self.server_plain, &mut wire)?;
            assert!(
                n == piece.len() || self.server.peer_closed(),
                "short feed without close_notify"
            );
        }
        self.deliver(&wire);
        Ok(flight.len())
    }

    /// Gives the server's `wire` to the client, in pieces.
    fn deliver(&mut self, wire: &[u8]) {
        use std::io::Read;
        for piece in self.split.pieces(wire) {
            let mut piece = piece;
            while !piece.is_empty() {
                self.client.read_tls(&mut piece).unwrap();
                self.client.process_new_packets().unwrap();
                // WouldBlock once drained; Ok at close_notify.
                let _ = self.client.reader().read_to_end(&mut self.client_plain);
            }
        }
    }

    /// Runs flights both ways until neither side has anything to send.
    fn handshake(&mut self) -> Result<(), TlsError> {
        for _ in 0..10 {
            let moved = self.client_to_server()?;
            if moved == 0 && !self.client.is_handshaking() && !self.server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish in 10 rounds");
    }

    fn seal(&mut self, reply: &[u8]) {
        let mut wire = Vec::new();
        self.server.seal(reply, &mut wire).unwrap();
        self.deliver(&wire);
    }

    /// Writes `bytes` through the client, moving records to the server as the client's own
    /// bounded buffer fills.
    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.client.writer().write(rest).unwrap();
            rest = &rest[n..];
            self.client_to_server().unwrap();
        }
    }
}
