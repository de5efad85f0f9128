//! A small blocking driver for the client engine over a `std::net::TcpStream`: the test-only
//! counterpart of the relay's driver. Reads with a timeout that is the engine's next deadline,
//! does STARTTLS with a rustls `ClientConnection`, and hands content over in pieces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use smtp_edge::protocol::address::parse_mailbox;
use smtp_edge::protocol::client::{
    Client, ClientConfig, Event, Message, Outcome, Report, SessionEnd,
};

/// The whole session must finish within this, however loaded the machine.
const SESSION_DEADLINE: Duration = Duration::from_secs(60);

/// A message and its content.
pub struct Outgoing {
    pub message: Message,
    pub content: Vec<u8>,
}

/// `from` (empty for `<>`), `to`, and content; the flags follow the content.
pub fn outgoing(from: &str, to: &[&str], content: &[u8]) -> Outgoing {
    Outgoing {
        message: Message {
            from: (!from.is_empty()).then(|| parse_mailbox(from).unwrap()),
            to: to.iter().map(|t| parse_mailbox(t).unwrap()).collect(),
            size: Some(content.len() as u64),
            eight_bit: content.iter().any(|&b| b > 127),
            smtputf8: false,
        },
        content: content.to_vec(),
    }
}

/// What a session did.
#[derive(Debug)]
pub struct Session {
    pub reports: Vec<Report>,
    pub end: SessionEnd,
    /// Everything the client sent, in the clear (before sealing).
    pub sent: Vec<u8>,
    /// Each write, in order.
    pub flights: Vec<Vec<u8>>,
    pub secure: bool,
    pub capabilities: Option<smtp_edge::protocol::client::Capabilities>,
}

impl Session {
    /// Each recipient's outcome of message `i`, as `sent CODE` / `deferred CODE` / `failed CODE`.
    pub fn codes(&self, i: usize) -> Vec<String> {
        self.reports[i]
            .outcomes
            .iter()
            .map(|o| match o {
                Outcome::Delivered(r) => format!("sent {}", r.code),
                Outcome::Deferred(c) => format!("deferred {c}"),
                Outcome::Failed(c) => format!("failed {c}"),
            })
            .collect()
    }

    pub fn sent_text(&self) -> String {
        String::from_utf8_lossy(&self.sent).into_owned()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Connects to `addr`, sends `messages` (content in `piece`-octet pieces), quits, and returns
/// what happened. `tls` is the rustls config used if the engine asks for STARTTLS.
pub fn deliver(
    addr: SocketAddr,
    cfg: ClientConfig,
    messages: &[Outgoing],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Session {
    let started = Instant::now();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    let mut stream = Stream::Plain(tcp);
    let mut client = Client::new(cfg, Instant::now());
    for m in messages {
        client.send_message(Instant::now(), m.message.clone());
    }
    let mut reports = Vec::new();
    let mut sent = Vec::new();
    let mut flights: Vec<Vec<u8>> = Vec::new();
    let mut unread: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        assert!(
            started.elapsed() < SESSION_DEADLINE,
            "session took too long"
        );
        // Events first, then what they made the engine send.
        let mut out = Vec::new();
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Ready => client.quit(Instant::now()),
                Event::SendBody(id) => {
                    let content = &messages[id.0 as usize].content;
                    for piece in content.chunks(4096) {
                        client.send_body(Instant::now(), piece);
                        let _ = client.poll_transmit(&mut out);
                        stream.write_all(&out).unwrap();
                        flights.push(out.clone());
                        sent.append(&mut out);
                    }
                    client.end_body(Instant::now());
                }
                Event::StartTls => {
                    let Stream::Plain(tcp) = stream else {
                        panic!("STARTTLS twice")
                    };
                    let config = tls.clone().expect("STARTTLS without a TLS config");
                    let name = ServerName::try_from("mx.example.test").unwrap();
                    let mut conn = ClientConnection::new(config, name).unwrap();
                    let mut tcp = tcp;
                    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    while conn.is_handshaking() {
                        conn.complete_io(&mut tcp).unwrap();
                    }
                    stream = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
                    // Plaintext read behind the 220 is not the server's: drop it.
                    unread.clear();
                    client.handle_tls_established(Instant::now());
                }
                Event::Done(r) => reports.push(r),
                Event::Closed(end) => {
                    let _ = client.poll_transmit(&mut out);
                    let _ = stream.write_all(&out);
                    sent.append(&mut out);
                    return Session {
                        reports,
                        end,
                        sent,
                        flights,
                        secure: client.is_secure(),
                        capabilities: client.capabilities().cloned(),
                    };
                }
            }
        }
        if client.poll_transmit(&mut out) {
            stream.write_all(&out).unwrap();
            flights.push(out.clone());
            sent.append(&mut out);
        }
        if !unread.is_empty() {
            let used = client.handle_input(Instant::now(), &unread);
            unread.drain(..used);
            if used > 0 {
                continue;
            }
        }
        // Read until the engine's deadline.
        let wait = client
            .poll_timeout()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(1));
        stream.tcp().set_read_timeout(Some(wait)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => client.handle_close(),
            Ok(n) => unread.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                client.handle_timeout(Instant::now())
            }
            Err(_) => client.handle_close(),
        }
    }
}
