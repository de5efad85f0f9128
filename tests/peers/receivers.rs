//! Starting and stopping the receivers: child processes that end when the test does, ports on
//! loopback, and waiting (with deadlines) for them to listen and for their files to appear.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

/// How long a receiver may take to start or to write a message, on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A child process stopped (SIGTERM, then waited for) when dropped.
pub struct Receiver {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // SIGTERM lets a master process (Dovecot) stop its own children.
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now. The receiver binds it a moment later; another
/// process taking it in between makes the start fail loudly, never pass wrongly.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Waits until `addr` accepts connections, or panics with `what` and its log.
pub fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        // Polling a port that is not open yet; there is no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} is not listening on {addr} after {DEADLINE:?}");
}

/// Waits until `count` files matching `pred` exist under `dir` (recursively), and returns them
/// sorted.
pub fn wait_files(dir: &Path, count: usize, pred: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let until = Instant::now() + DEADLINE;
    loop {
        let mut found = Vec::new();
        collect(dir, &pred, &mut found);
        found.sort();
        if found.len() >= count || Instant::now() >= until {
            assert_eq!(
                found.len(),
                count,
                "files under {}: {found:?}",
                dir.display()
            );
            return found;
        }
        // Receivers write files after their reply; poll with a deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collect(dir: &Path, pred: &impl Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, pred, out);
        } else if pred(&p) {
            out.push(p);
        }
    }
}

/// Drops the trace headers a receiver puts before the message (`Return-Path:`, `Received:`,
/// `Delivered-To:` and smtp-sink's `X-*-Args:` lines, with their folded continuations).
pub fn strip_trace(stored: &[u8]) -> &[u8] {
    const TRACE: [&[u8]; 8] = [
        b"Return-Path:",
        b"Received:",
        b"Delivered-To:",
        b"X-Client-Addr:",
        b"X-Client-Proto:",
        b"X-Helo-Args:",
        b"X-Mail-Args:",
        b"X-Rcpt-Args:",
    ];
    let mut rest = stored;
    let mut in_trace = false;
    loop {
        let is_trace = TRACE.iter().any(|t| rest.starts_with(t));
        let folded = in_trace && rest.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !is_trace && !folded {
            return rest;
        }
        in_trace = true;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        rest = &rest[end..];
    }
}

/// `content` with CRLF line ends made LF, as receivers that store Unix files write it.
pub fn lf(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(content[i]);
        i += 1;
    }
    out
}

/// A self-signed certificate for `mx.example.test` written as PEM into `dir`, and a rustls
/// client config that trusts it.
pub fn test_cert(dir: &Path) -> (PathBuf, PathBuf, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.join("mx.crt");
    let key_path = dir.join("mx.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (cert_path, key_path, Arc::new(config))
}
