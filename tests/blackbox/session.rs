//! A raw SMTP client over `std::net::TcpStream`, for tests that need exact bytes on the wire.
//!
//! It writes exactly what it is given and parses replies (multiline included) with a read
//! deadline, so a server that goes silent fails the test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::REPLY_DEADLINE;

/// One SMTP reply: the code, and the text of each line (without `NNN-`/`NNN ` and CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The queue id of `250 2.0.0 Ok: queued as <id>`; panics on any other reply.
    pub fn queue_id(&self) -> String {
        assert_eq!(self.code, 250, "end of data: {self:?}");
        let text = self.lines.last().expect("reply text");
        let (_, id) = text
            .rsplit_once("queued as ")
            .unwrap_or_else(|| panic!("no `queued as <id>` in {self:?}"));
        id.trim().to_owned()
    }

    /// The RFC 3463 enhanced status code at the start of the last line, if any (`"5.7.1"`).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.last()?.split(' ').next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }

    /// `"250 2.0.0"`-style summary of code and enhanced code.
    pub fn status(&self) -> String {
        match self.enhanced() {
            Some(e) => format!("{} {e}", self.code),
            None => self.code.to_string(),
        }
    }

    /// Whether any line holds `word` as a whole (case-insensitive) first word, e.g. `PIPELINING`.
    pub fn has_keyword(&self, word: &str) -> bool {
        self.lines.iter().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        })
    }
}

/// How reading a reply ended, when it did not yield one. The fields are shown through `Debug`
/// in failure messages.
#[derive(Debug)]
#[allow(dead_code)]
pub enum ReadError {
    /// The peer closed the connection (EOF or reset); `partial` holds unparsed bytes.
    Closed { partial: Vec<u8> },
    /// No complete reply within the deadline.
    Timeout { partial: Vec<u8> },
    /// A line that is not `NNN[ -]text`.
    Malformed(Vec<u8>),
}

/// A byte stream whose reads can be bounded by a timeout.
pub trait TimedRead: Read {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// One read from `src` into `out` before `end`: `Some(n)` bytes (0 = EOF), `None` at the
/// deadline. Timeouts and interrupts are retried; other errors are returned.
pub fn read_some(
    src: &mut impl TimedRead,
    end: Instant,
    out: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        src.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 8192];
        match src.read(&mut chunk) {
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                return Ok(Some(n));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
}

/// Parses SMTP replies (multiline included) out of a byte stream, with deadlines.
#[derive(Default)]
pub struct ReplyReader {
    /// Received and not yet parsed.
    pub buf: Vec<u8>,
    /// Everything received, for failure messages.
    pub transcript: Vec<u8>,
}

impl ReplyReader {
    /// Reads one reply from `src` within [`REPLY_DEADLINE`], panicking otherwise.
    pub fn reply(&mut self, src: &mut impl TimedRead) -> Reply {
        match self.try_reply(src, REPLY_DEADLINE) {
            Ok(r) => r,
            Err(e) => panic!(
                "no reply: {e:?}; transcript so far: {:?}",
                String::from_utf8_lossy(&self.transcript)
            ),
        }
    }

    /// Reads one reply from `src` within `deadline`.
    pub fn try_reply(
        &mut self,
        src: &mut impl TimedRead,
        deadline: Duration,
    ) -> Result<Reply, ReadError> {
        let end = Instant::now() + deadline;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(src, end)?;
            let ok = line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit);
            let sep = line.get(3).copied();
            if !ok || !matches!(sep, None | Some(b' ') | Some(b'-')) {
                return Err(ReadError::Malformed(line));
            }
            let code: u16 = std::str::from_utf8(&line[..3]).unwrap().parse().unwrap();
            let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[])).into_owned();
            lines.push(text);
            if sep != Some(b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self, src: &mut impl TimedRead, end: Instant) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            let before = self.buf.len();
            match read_some(src, end, &mut self.buf) {
                Ok(Some(0)) | Err(_) => {
                    return Err(ReadError::Closed {
                        partial: self.buf.clone(),
                    })
                }
                Ok(Some(_)) => self.transcript.extend_from_slice(&self.buf[before..]),
                Ok(None) => {
                    return Err(ReadError::Timeout {
                        partial: self.buf.clone(),
                    })
                }
            }
        }
    }
}

/// An SMTP client connection.
pub struct SmtpConn {
    stream: TcpStream,
    rx: ReplyReader,
}

impl SmtpConn {
    /// Connects without reading the greeting.
    pub fn connect_raw(addr: SocketAddr) -> io::Result<SmtpConn> {
        let stream = TcpStream::connect_timeout(&addr, REPLY_DEADLINE)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(REPLY_DEADLINE))?;
        Ok(SmtpConn {
            stream,
            rx: ReplyReader::default(),
        })
    }

    /// Connects from `source` (a loopback address other than 127.0.0.1 is another host) without
    /// reading the greeting.
    pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> io::Result<SmtpConn> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
        socket.connect_timeout(&SockAddr::from(addr), REPLY_DEADLINE)?;
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(REPLY_DEADLINE))?;
        Ok(SmtpConn {
            stream,
            rx: ReplyReader::default(),
        })
    }

    /// Connects and expects a `220` greeting.
    pub fn connect(addr: SocketAddr) -> SmtpConn {
        let mut c = SmtpConn::connect_raw(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        c
    }

    /// Connects, reads the greeting and sends `EHLO client.test`, returning the EHLO reply.
    pub fn connect_ehlo(addr: SocketAddr) -> (SmtpConn, Reply) {
        let mut c = SmtpConn::connect(addr);
        let ehlo = c.cmd("EHLO client.test");
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo:?}");
        (c, ehlo)
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Writes raw bytes, reporting failure instead of panicking (for tests that expect a close).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
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

    /// Reads every reply until the server closes the connection (bounded by `deadline`).
    /// Panics if the connection is still open at the deadline.
    pub fn replies_until_close(&mut self, deadline: Duration) -> Vec<Reply> {
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.try_reply(left) {
                Ok(r) => out.push(r),
                Err(ReadError::Closed { partial }) => {
                    assert!(
                        partial.is_empty(),
                        "connection closed mid-reply: {:?}",
                        String::from_utf8_lossy(&partial)
                    );
                    return out;
                }
                Err(e) => panic!("waiting for close: {e:?}; replies so far: {out:?}"),
            }
        }
    }

    /// Expects the peer to close the connection within `deadline` without sending anything.
    pub fn expect_closed(&mut self, deadline: Duration) {
        let rest = self.replies_until_close(deadline);
        assert!(rest.is_empty(), "expected close, got replies {rest:?}");
    }

    /// A full transaction: MAIL, each RCPT (all must get 250), DATA, the `body` exactly as given
    /// (the caller dot-stuffs), then `.` CRLF. Returns the end-of-data reply.
    pub fn send_mail(&mut self, from: &str, rcpts: &[&str], body_on_wire: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "MAIL FROM:<{from}>: {r:?}");
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(r.code, 250, "RCPT TO:<{rcpt}>: {r:?}");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.send(body_on_wire);
        self.send(b".\r\n");
        self.reply()
    }
}

/// Dot-stuffs a CRLF-terminated message for the wire (RFC 5321 §4.5.2).
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}
