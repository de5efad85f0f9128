//! What the TLS tests share: test certificates made with the `openssl` command line, server
//! options with TLS listeners, and [`TlsConn`], a raw SMTP client that can switch to TLS
//! (STARTTLS, RFC 3207) or start in it (implicit TLS, RFC 8314) and shows every byte, for tests
//! that need exact control of the wire (injection, sessions kept across a reload).
//!
//! The real clients (openssl s_client, smtplib, swaks, curl) are in `tls_clients.rs`; STARTTLS
//! rules in `tls_starttls.rs`; certificate reload on SIGHUP in `tls_reload.rs`; broken and
//! stalled handshakes in `tls_faults.rs`.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

use crate::harness::{run_client, ListenerTls, Opts, TlsOpts, REPLY_DEADLINE};
use crate::session::{read_some, ReadError, Reply, ReplyReader, TimedRead};

/// How long `openssl req` may take.
const OPENSSL_DEADLINE: Duration = Duration::from_secs(30);

/// A self-signed ECDSA P-256 certificate for one DNS name, as PEM files.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    /// Generates a certificate for `name` (CN and subjectAltName) into `dir` as `<file>.pem`
    /// and `<file>.key`.
    pub fn generate(dir: &Path, file: &str, name: &str) -> TestCert {
        let cert = dir.join(format!("{file}.pem"));
        let key = dir.join(format!("{file}.key"));
        let out = run_client(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName=DNS:{name}"),
                "-keyout",
                &key.display().to_string(),
                "-out",
                &cert.display().to_string(),
            ],
            b"",
            OPENSSL_DEADLINE,
        );
        assert!(
            out.status.success(),
            "openssl req for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCert {
            name: name.to_owned(),
            cert,
            key,
        }
    }

    /// The DER of the certificate, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.cert.display()))
            .as_ref()
            .to_vec()
    }

    /// Copies this certificate's files over `dest`'s (as an operator renewing a certificate
    /// in place would), each by writing a temporary file and renaming it over the old one.
    pub fn install_as(&self, dest: &TestCert) {
        for (from, to) in [(&self.cert, &dest.cert), (&self.key, &dest.key)] {
            let tmp = to.with_extension("tmp");
            fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            fs::rename(&tmp, to).unwrap_or_else(|e| panic!("rename to {}: {e}", to.display()));
        }
    }
}

/// A temporary directory holding the certificates of one test.
pub fn cert_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("smtp-edge-bb-certs-")
        .tempdir()
        .expect("tempdir")
}

/// A listener with `tls = mode` and the default `require_tls`.
pub fn mode(mode: &'static str) -> ListenerTls {
    ListenerTls {
        mode,
        require_tls: None,
    }
}

/// Server options: listeners `(role, tls mode)` in this order, `cert` as the default
/// certificate and `extra` as `[[tls.certificate]]` entries.
pub fn tls_opts(
    listeners: &[(&'static str, &'static str)],
    cert: &TestCert,
    extra: &[&TestCert],
) -> Opts {
    Opts {
        listeners: listeners.iter().map(|&(role, _)| role).collect(),
        listener_tls: listeners.iter().map(|&(_, m)| mode(m)).collect(),
        tls: Some(TlsOpts {
            cert_key: Some((cert.cert.clone(), cert.key.clone())),
            extra: extra
                .iter()
                .map(|c| (c.cert.clone(), c.key.clone()))
                .collect(),
            ..TlsOpts::default()
        }),
        ..Opts::default()
    }
}

/// Any server certificate is accepted ([`smtp_edge::relay::AnyCertificate`]): the tests that
/// use [`TlsConn`] compare the certificate the server presented with the one they expect
/// ([`TlsConn::peer_cert`]), byte for byte, which says more than a chain check against a
/// self-signed root. Signatures are still verified, so the server must hold the key of the
/// certificate it sends.
fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(smtp_edge::relay::AnyCertificate::new(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
    /// Only while switching.
    Switching,
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
            Stream::Switching => unreachable!("stream used while switching to TLS"),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Switching => unreachable!("stream used while switching to TLS"),
        }
    }
}

impl TimedRead for Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }
}

/// An SMTP client connection that may be plaintext or TLS. It writes exactly what it is given
/// and reads replies with deadlines, like [`crate::session::SmtpConn`].
pub struct TlsConn {
    stream: Stream,
    /// Replies received as SMTP (plaintext, and decrypted once in TLS).
    rx: ReplyReader,
}

impl TlsConn {
    /// Connects; reads nothing.
    pub fn connect_plain(addr: SocketAddr) -> TlsConn {
        let stream = TcpStream::connect_timeout(&addr, REPLY_DEADLINE)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(REPLY_DEADLINE)).unwrap();
        TlsConn {
            stream: Stream::Plain(stream),
            rx: ReplyReader::default(),
        }
    }

    /// Connects to an implicit-TLS listener, does the handshake (sending `sni`, if any) and
    /// reads the `220` greeting inside TLS.
    pub fn connect_implicit(addr: SocketAddr, sni: Option<&str>) -> TlsConn {
        let mut c = TlsConn::connect_plain(addr);
        c.handshake(sni)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting inside TLS: {greeting:?}");
        c
    }

    /// Connects to a STARTTLS listener: greeting, `EHLO client.test` (which must advertise
    /// STARTTLS), `STARTTLS` (which must get 220), the handshake, and `EHLO client.test`
    /// again inside TLS. Returns the connection and the EHLO reply inside TLS.
    pub fn connect_starttls(addr: SocketAddr, sni: Option<&str>) -> (TlsConn, Reply) {
        let mut c = TlsConn::connect_plain(addr);
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        let ehlo = c.cmd("EHLO client.test");
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo:?}");
        assert!(
            ehlo.has_keyword("STARTTLS"),
            "EHLO does not offer STARTTLS: {ehlo:?}"
        );
        let r = c.cmd("STARTTLS");
        assert_eq!(r.code, 220, "STARTTLS: {r:?}");
        c.handshake(sni)
            .unwrap_or_else(|e| panic!("TLS handshake after STARTTLS with {addr}: {e}"));
        let ehlo = c.cmd("EHLO client.test");
        assert_eq!(ehlo.code, 250, "EHLO inside TLS: {ehlo:?}");
        (c, ehlo)
    }

    /// Switches to TLS: the TLS handshake as a client, within [`REPLY_DEADLINE`]. Bytes the
    /// server sent in plaintext and the client has not read yet are an error: after `220` to
    /// STARTTLS the server must say nothing more in the clear.
    pub fn handshake(&mut self, sni: Option<&str>) -> io::Result<()> {
        assert!(
            self.rx.buf.is_empty(),
            "plaintext after the last reply, before the TLS handshake: {:?}",
            String::from_utf8_lossy(&self.rx.buf)
        );
        let Stream::Plain(sock) = std::mem::replace(&mut self.stream, Stream::Switching) else {
            panic!("handshake on a connection already in TLS");
        };
        let name = match sni {
            Some(n) => ServerName::try_from(n.to_owned()).expect("valid DNS name"),
            // An IP address as the server name: rustls sends no SNI for it.
            None => ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])),
        };
        let conn = ClientConnection::new(client_config(), name).map_err(io::Error::other)?;
        let mut tls = Box::new(rustls::StreamOwned::new(conn, sock));
        let end = Instant::now() + REPLY_DEADLINE;
        let result = (|| {
            while tls.conn.is_handshaking() {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake"));
                }
                tls.sock.set_read_timeout(Some(left))?;
                let (conn, sock) = (&mut tls.conn, &mut tls.sock);
                let (rd, wr) = conn.complete_io(sock)?;
                if rd == 0 && wr == 0 && conn.is_handshaking() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed during the handshake",
                    ));
                }
            }
            Ok(())
        })();
        self.stream = Stream::Tls(tls);
        result
    }

    /// The certificate the server presented (DER), once in TLS.
    pub fn peer_cert(&self) -> Vec<u8> {
        match &self.stream {
            Stream::Tls(s) => s
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .expect("server sent no certificate")
                .as_ref()
                .to_vec(),
            _ => panic!("peer_cert on a plaintext connection"),
        }
    }

    /// The negotiated `(version, cipher suite)` in rustls's names, e.g.
    /// `("TLSv1_3", "TLS13_AES_256_GCM_SHA384")`.
    pub fn negotiated(&self) -> (String, String) {
        match &self.stream {
            Stream::Tls(s) => (
                format!("{:?}", s.conn.protocol_version().expect("version")),
                format!(
                    "{:?}",
                    s.conn.negotiated_cipher_suite().expect("suite").suite()
                ),
            ),
            _ => panic!("negotiated on a plaintext connection"),
        }
    }

    /// Writes raw bytes (encrypted once in TLS).
    pub fn send(&mut self, bytes: &[u8]) {
        let res = match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Switching => unreachable!(),
        };
        res.unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Sends `line` + CRLF and reads one reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads one reply within [`REPLY_DEADLINE`], panicking otherwise.
    pub fn reply(&mut self) -> Reply {
        self.rx.reply(&mut self.stream)
    }

    /// Reads one reply within `deadline`.
    pub fn try_reply(&mut self, deadline: Duration) -> Result<Reply, ReadError> {
        self.rx.try_reply(&mut self.stream, deadline)
    }

    /// Expects the server to send nothing more and close within `deadline`: EOF (with or
    /// without a TLS close_notify) or a reset. Panics on a reply or at the deadline.
    pub fn expect_closed(&mut self, deadline: Duration) {
        match self.try_reply(deadline) {
            Err(ReadError::Closed { partial }) => assert!(
                partial.is_empty(),
                "closed mid-reply: {:?}",
                String::from_utf8_lossy(&partial)
            ),
            other => panic!(
                "expected the server to close the connection within {deadline:?}, got {other:?}; \
                 transcript: {:?}",
                String::from_utf8_lossy(&self.rx.transcript)
            ),
        }
    }

    /// Half-closes the client's side (FIN) without closing the socket.
    pub fn shutdown_write(&self) {
        let _ = self.stream.tcp().shutdown(Shutdown::Write);
    }
}

/// Reads raw bytes from `sock` until EOF or reset, within `deadline`; returns what arrived, or
/// `None` if the connection was still open at the deadline.
pub fn read_until_closed(sock: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    loop {
        match read_some(sock, end, &mut got) {
            Ok(Some(0)) | Err(_) => return Some(got),
            Ok(Some(_)) => {}
            Ok(None) => return None,
        }
    }
}

#[test]
fn test_tls_configs_pass_check_config() {
    // The configs these tests start the server with are valid as written, so a failing TLS
    // test is about TLS, not about a config key the harness got wrong.
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let b = TestCert::generate(certs.path(), "b", "mx.b.test");
    let mut opts = tls_opts(
        &[
            ("delivery", "starttls"),
            ("delivery", "implicit"),
            ("submission", "starttls"),
            ("submission", "implicit"),
        ],
        &a,
        &[&b],
    );
    if let Some(tls) = opts.tls.as_mut() {
        tls.handshake_timeout_secs = Some(1);
    }
    let config = certs.path().join("smtp-edge.toml");
    fs::write(&config, crate::harness::render_config(&opts, certs.path())).unwrap();
    let config = config.display().to_string();
    let out = crate::harness::run_bin(&["check-config", "--config", &config], REPLY_DEADLINE);
    assert!(
        out.status.success(),
        "check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
