//! A minimal HTTP/1.1 server for `GET /metrics` ([RFC 9112]), on blocking std threads, off the
//! io_uring workers.
//!
//! This is the control plane: a scraper or two every few seconds. One thread accepts; each
//! connection is served on a thread of its own, under a hard [`REQUEST_DEADLINE`] and a
//! [`MAX_REQUEST_HEAD`] cap, so a slow or idle client holds only its own thread, for at most the
//! deadline, and never makes it buffer more than the cap: a scrape is answered at once however
//! many idle connections sit on the port. At most [`MAX_CONNECTIONS`] are served at a time; one
//! over that gets 503 at once rather than a wait. Every response closes the connection; there is
//! no keep-alive to manage.
//!
//! A thread per connection rather than an HTTP crate's pool: the requests are rare and tiny, a
//! thread costs far less than the scrape's rendering, and the code that reads a request is the
//! same bounded, deadline-checked loop either way.
//!
//! [RFC 9112]: https://www.rfc-editor.org/rfc/rfc9112

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Metrics;
use crate::clock::{now, wall};

/// Longest request head (request line and headers) read; longer gets 431 and close. A scrape
/// request is a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long one connection may take, from accept to the end of the response. A client that has
/// not sent its request head by then is dropped.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Connections served at once; one over this gets 503 at once. Scrapers are a handful; this is
/// room for them beside as many stuck or idle clients, and bounds the threads a flood of
/// connections can start.
pub const MAX_CONNECTIONS: usize = 32;

/// Pause after a failed accept, so a persistent error (EMFILE) does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of the text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves `GET /metrics` from `metrics` on a new thread named `metrics-http`.
///
/// Returns once the socket is listening, with the address actually bound (port 0 resolved), so
/// a client may connect at once. The accept thread runs for the life of the process; the handle
/// is for joining it should its listener fail, which it only does if the thread panics.
///
/// Responses: `GET`/`HEAD /metrics` → 200 with `Content-Type: text/plain; version=0.0.4`; other
/// methods on `/metrics` → 405; other paths → 404; a malformed request → 400; an oversized head
/// → 431; over [`MAX_CONNECTIONS`] → 503 with `Retry-After: 1`.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("metrics-http".to_owned())
        .spawn(move || accept_loop(&listener, &metrics))?;
    Ok((bound, handle))
}

fn accept_loop(listener: &TcpListener, metrics: &Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((stream, peer)) => dispatch(stream, peer, metrics, &active),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Serves `stream` on a thread of its own, or answers 503 when [`MAX_CONNECTIONS`] are already
/// being served.
fn dispatch(
    stream: TcpStream,
    peer: SocketAddr,
    metrics: &Arc<Metrics>,
    active: &Arc<AtomicUsize>,
) {
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::AcqRel);
        return busy(stream);
    }
    let slot = Slot(active.clone());
    let metrics = metrics.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-conn".to_owned())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_one(stream, &metrics) {
                tracing::debug!(%peer, error = %e, "metrics: connection ended early");
            }
        });
    // Without a thread the closure, and the stream with it, is dropped: the client sees the
    // connection close, at once.
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics: cannot start a connection thread");
    }
}

/// One connection being served; frees its place when the thread ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// 503 without reading the request: one non-blocking write (the response is far smaller than a
/// socket's send buffer), then close. The accept thread never waits on this client; one whose
/// request is already in is answered by a reset instead (unread input), which fails its scrape
/// just as fast.
fn busy(mut stream: TcpStream) {
    let mut response = status(503, "Service Unavailable");
    // The status line and headers end with the blank line; Retry-After goes before it.
    if let Some(end) = memchr::memmem::find(&response, b"\r\n\r\n") {
        response.splice(end + 2..end + 2, b"Retry-After: 1\r\n".iter().copied());
    }
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write_all(&response);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Reads one request, writes one response, closes.
fn serve_one(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let deadline = now() + REQUEST_DEADLINE;
    let response = match read_head(&mut stream, deadline) {
        Ok(head) => respond(&head, metrics),
        Err(HeadError::TooLarge) => status(431, "Request Header Fields Too Large"),
        Err(HeadError::Incomplete) => status(400, "Bad Request"),
        // Timed out or reset: nobody is waiting for an answer.
        Err(HeadError::Io(e)) => return Err(e),
    };
    stream.set_write_timeout(Some(remaining(deadline)))?;
    stream.write_all(&response)?;
    stream.shutdown(Shutdown::Write)?;
    // Closing with unread input makes the kernel send RST, which can destroy the response in
    // flight; drain until the client closes (or the deadline) so it reads the whole answer.
    drain(&mut stream, deadline);
    Ok(())
}

#[derive(Debug)]
enum HeadError {
    /// More than [`MAX_REQUEST_HEAD`] bytes without the blank line.
    TooLarge,
    /// The client closed before the blank line.
    Incomplete,
    /// Read failed or timed out.
    Io(io::Error),
}

/// Reads up to and including the blank line that ends the head (RFC 9112 §2.1). Bytes after it
/// (a body or a pipelined request) are ignored: every response closes the connection.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(HeadError::Io(io::ErrorKind::TimedOut.into()));
        }
        // The timeout shrinks with every read, so trickling bytes cannot extend the deadline.
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Length of the head up to and including its blank line: CRLF CRLF, or a bare LF LF, which
/// RFC 9112 §2.2 lets a recipient accept.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The response to a complete request head.
fn respond(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let Ok(head) = std::str::from_utf8(head) else {
        return status(400, "Bad Request");
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return status(400, "Bad Request");
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return status(400, "Bad Request");
    }
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    let has_host = lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case("host"))
    });
    if version == "HTTP/1.1" && !has_host {
        return status(400, "Bad Request");
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path != "/metrics" {
        return status(404, "Not Found");
    }
    match method {
        "GET" => response(
            200,
            "OK",
            CONTENT_TYPE,
            &[],
            metrics.render().as_bytes(),
            true,
        ),
        // HEAD gets GET's headers, Content-Length included, without the body (RFC 9110 §9.3.2).
        "HEAD" => response(
            200,
            "OK",
            CONTENT_TYPE,
            &[],
            metrics.render().as_bytes(),
            false,
        ),
        _ => response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            &[("Allow", "GET, HEAD")],
            b"405 Method Not Allowed\n",
            true,
        ),
    }
}

/// A plain-text response whose body is the status line.
fn status(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        &[],
        body.as_bytes(),
        true,
    )
}

fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    with_body: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Date: {}\r\nConnection: close\r\n",
        body.len(),
        // An origin server with a clock MUST send Date (RFC 9110 §6.6.1).
        httpdate::fmt_http_date(wall()),
    )
    .into_bytes();
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

/// Reads and discards until EOF, an error, or the deadline; at most 64 KiB.
fn drain(stream: &mut TcpStream, deadline: Instant) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        let left = remaining(deadline);
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
    }
}
