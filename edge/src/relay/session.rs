//! One connection to one host: the client engine driven over the ring, with TLS when the
//! engine asks for it, carrying the destination's waiting attempts one after another.
//!
//! ```text
//!   Stream::recv ──► TlsPump::feed ──plain──► Client::handle_input ──► events:
//!     Ready → next attempt of the destination (up to relay.idle_secs for one; else QUIT) ·
//!     StartTls → handshake · SendBody → the spooled file in pieces ·
//!     Done → AttemptResult · Closed → end
//!   Stream::send_all ◄── TlsPump::seal ◄── Client::poll_transmit
//! ```

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use crate::clock;
use crate::protocol::client::{
    Cause, Client, ClientConfig, Event, Message, MessageId, Report, SessionEnd,
};
use crate::tls::TlsPump;
use crate::transport::{BufferPool, File, RecvBuf, Stream};

use super::dispatch::{DestKey, Shared};
use super::{outcome, Attempt, Peer};

/// Size of each read of the receive side and of the spooled content.
const CHUNK: usize = 64 * 1024;

/// How a session ended, for the connection task.
pub(super) enum Ended {
    /// The session carried mail (it reached [`Event::Ready`]); whatever it took is reported.
    Served,
    /// The session never became ready (greeting, EHLO, STARTTLS or AUTH failed, or the
    /// connection dropped first): the next host may do better. Nothing was taken.
    Unready(Cause),
    /// The TLS handshake after STARTTLS failed, before any mail: with opportunistic TLS the
    /// same host is worth a plaintext session.
    TlsFailed(Cause),
}

/// The attempt a message of the session carries.
struct InFlight {
    attempt: Attempt,
}

/// One session's state.
struct Session<'a> {
    shared: &'a Rc<Shared>,
    key: &'a DestKey,
    stream: Stream,
    client: Client,
    tls: Option<TlsPump>,
    peer: Peer,
    /// Plaintext commands from the engine, waiting to be sealed or sent.
    out: Vec<u8>,
    /// Octets for the socket.
    wire: Vec<u8>,
    /// Plaintext received and not yet consumed by the engine.
    input: Vec<u8>,
    in_flight: HashMap<MessageId, InFlight>,
    ready_once: bool,
    /// The STARTTLS handshake failed.
    tls_failed: bool,
    /// The receive buffer, `None` while a read is in flight.
    buf: Option<RecvBuf>,
    pool: BufferPool,
    /// The buffer content is read into, kept from message to message: a fresh 64 KiB one per
    /// message came from new pages (a fault and a zeroed page each).
    piece: Vec<u8>,
    /// The spool file the last message was read from, kept open for the next: messages queued
    /// together sit in the same log segment, and an open and a close per message cost more
    /// than the read. It holds a segment the queue has deleted at most until the session moves
    /// to another file or ends (after `relay.idle_secs` without mail).
    source: Option<(std::path::PathBuf, File)>,
}

/// Runs a session on `stream` to `peer` until it closes.
pub(super) async fn run(
    shared: &Rc<Shared>,
    key: &DestKey,
    stream: Stream,
    peer: Peer,
    cfg: ClientConfig,
) -> Ended {
    let pool = BufferPool::unregistered(CHUNK);
    let mut s = Session {
        shared,
        key,
        stream,
        client: Client::new(cfg, clock::now()),
        tls: None,
        peer,
        out: Vec::new(),
        wire: Vec::new(),
        input: Vec::new(),
        in_flight: HashMap::new(),
        ready_once: false,
        tls_failed: false,
        buf: Some(pool.take()),
        pool,
        piece: Vec::new(),
        source: None,
    };
    s.drive().await
}

impl Session<'_> {
    async fn drive(&mut self) -> Ended {
        loop {
            while let Some(event) = self.client.poll_event() {
                if let Some(end) = self.on_event(event).await {
                    return end;
                }
            }
            if !self.input.is_empty() {
                let used = self.client.handle_input(clock::now(), &self.input);
                self.input.drain(..used);
                if used > 0 {
                    continue;
                }
            }
            if self.flush().await.is_err() {
                self.client.handle_close();
                continue;
            }
            self.receive().await;
        }
    }

    async fn on_event(&mut self, event: Event) -> Option<Ended> {
        match event {
            Event::Ready => {
                self.ready_once = true;
                let next = self.shared.next_or_idle(self.key).await;
                // The wait may have been long: the engine's deadlines start from now.
                let now = clock::now();
                match next {
                    Some(attempt) => {
                        let message = Message {
                            from: attempt.from.clone(),
                            to: attempt.to.clone(),
                            size: Some(attempt.content.len),
                            eight_bit: attempt.eight_bit,
                            smtputf8: attempt.smtputf8,
                        };
                        let id = self.client.send_message(now, message);
                        self.in_flight.insert(id, InFlight { attempt });
                    }
                    None => self.client.quit(now),
                }
            }
            Event::StartTls => {
                if !self.start_tls().await {
                    self.tls_failed = true;
                    self.client.handle_close();
                } else {
                    self.client.handle_tls_established(clock::now());
                }
            }
            Event::SendBody(id) => {
                if !self.send_content(id).await {
                    // The server cannot get the rest: ending the connection without the
                    // final dot makes it discard the message; the engine defers it.
                    self.stream.abort();
                    self.client.handle_close();
                }
            }
            Event::Done(report) => self.report(report),
            Event::Closed(end) => {
                if let Some((_, file)) = self.source.take() {
                    let _ = file.close().await;
                }
                let _ = self.flush().await;
                if let Some(tls) = &mut self.tls {
                    tls.close(&mut self.wire);
                    let _ = self.send_wire().await;
                }
                self.stream.shutdown();
                return Some(match end {
                    SessionEnd::Failed(cause) if !self.ready_once && self.tls_failed => {
                        Ended::TlsFailed(cause)
                    }
                    SessionEnd::Failed(cause) if !self.ready_once => Ended::Unready(cause),
                    _ => Ended::Served,
                });
            }
        }
        None
    }

    fn report(&mut self, report: Report) {
        let Some(InFlight { attempt }) = self.in_flight.remove(&report.id) else {
            return;
        };
        let outcomes = report.outcomes.iter().map(outcome::from_engine).collect();
        self.shared
            .finish(self.key, &attempt, outcomes, Some(self.peer_now()));
    }

    /// The peer with the TLS the session has now.
    fn peer_now(&self) -> Peer {
        let mut peer = self.peer.clone();
        peer.tls = self.tls.as_ref().and_then(TlsPump::info);
        peer
    }

    /// Seals (under TLS) and sends what the engine has queued. An error means the
    /// connection is gone.
    async fn flush(&mut self) -> Result<(), ()> {
        if self.client.poll_transmit(&mut self.out) {
            match &mut self.tls {
                Some(tls) => {
                    let sealed = tls.seal(&self.out, &mut self.wire);
                    self.out.clear();
                    sealed.map_err(|_| ())?;
                }
                None => self.wire.append(&mut self.out),
            }
        }
        self.send_wire().await
    }

    async fn send_wire(&mut self) -> Result<(), ()> {
        if self.wire.is_empty() {
            return Ok(());
        }
        let wire = std::mem::take(&mut self.wire);
        let limit = self.shared.cfg().timeouts.data_block;
        match tokio::time::timeout(limit, self.stream.send_all(wire)).await {
            Ok((Ok(()), wire)) => {
                self.wire = wire;
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// Waits for input until the engine's next deadline; feeds what comes (decrypted under
    /// TLS) to [`Self::input`], or tells the engine the connection closed or time passed.
    async fn receive(&mut self) {
        let deadline = self.client.poll_timeout();
        let Some(cipher) = self.read(deadline).await else {
            return;
        };
        match cipher {
            Ok(bytes) => self.feed(&bytes),
            Err(()) => self.client.handle_close(),
        }
    }

    /// One read: `None` when the deadline passed first (the engine has been told), the
    /// octets read, or `Err` when the connection ended.
    async fn read(&mut self, deadline: Option<Instant>) -> Option<Result<Vec<u8>, ()>> {
        let buf = self.buf.take().unwrap_or_else(|| self.pool.take());
        let read = self.stream.recv(buf);
        let sleep = sleep_until(deadline);
        tokio::select! {
            (res, buf) = read => {
                let bytes = match res {
                    Ok(n) if n > 0 => Ok(buf.filled().to_vec()),
                    _ => Err(()),
                };
                self.buf = Some(buf);
                Some(bytes)
            }
            () = sleep => {
                // The read in flight is dropped with its buffer; a fresh one serves the next.
                self.client.handle_timeout(clock::now());
                None
            }
        }
    }

    fn feed(&mut self, cipher: &[u8]) {
        match &mut self.tls {
            None => self.input.extend_from_slice(cipher),
            Some(tls) => {
                let mut rest = cipher;
                while !rest.is_empty() {
                    match tls.feed(rest, &mut self.input, &mut self.wire) {
                        Ok(0) => break,
                        Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                        Err(_) => {
                            self.client.handle_close();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Runs the TLS handshake after the server's 220 to STARTTLS; false if it failed or timed
    /// out (the connection is then unusable).
    async fn start_tls(&mut self) -> bool {
        // The engine dropped anything the server sent in the clear after its 220.
        self.input.clear();
        let host = self.peer.host.clone();
        let ip = match self.peer.addr {
            Some(addr) => addr.ip(),
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let name = super::tls::server_name(&host, ip);
        let mut pump = match TlsPump::client(self.shared.tls.clone(), name) {
            Ok(pump) => pump,
            Err(_) => return false,
        };
        pump.flush_to(&mut self.wire);
        self.tls = Some(pump);
        let deadline = clock::now() + self.shared.cfg().timeouts.command;
        while self.tls.as_ref().is_some_and(TlsPump::is_handshaking) {
            if self.send_wire().await.is_err() {
                return false;
            }
            let buf = self.buf.take().unwrap_or_else(|| self.pool.take());
            let read = self.stream.recv(buf);
            let got = tokio::select! {
                (res, buf) = read => {
                    let bytes = match res {
                        Ok(n) if n > 0 => Some(buf.filled().to_vec()),
                        _ => None,
                    };
                    self.buf = Some(buf);
                    bytes
                }
                () = sleep_until(Some(deadline)) => None,
            };
            let Some(cipher) = got else {
                return false;
            };
            let Some(tls) = &mut self.tls else {
                return false;
            };
            let mut rest: &[u8] = &cipher;
            while !rest.is_empty() {
                match tls.feed(rest, &mut self.input, &mut self.wire) {
                    Ok(0) => break,
                    Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                    Err(_) => {
                        // The alert goes out; the connection is over.
                        let _ = self.send_wire().await;
                        return false;
                    }
                }
            }
        }
        // The client's Finished (TLS 1.3) and anything else queued.
        self.send_wire().await.is_ok()
    }

    /// Sends the content of message `id` from its spooled file, in pieces; false if the file
    /// could not be read or the connection broke.
    async fn send_content(&mut self, id: MessageId) -> bool {
        let Some(content) = self.in_flight.get(&id).map(|f| f.attempt.content.clone()) else {
            return false;
        };
        let file = match self.source.take() {
            Some((path, file)) if path == content.path => file,
            other => {
                if let Some((_, old)) = other {
                    let _ = old.close().await;
                }
                match File::open(&content.path).await {
                    Ok(file) => file,
                    Err(_) => return false,
                }
            }
        };
        let mut offset = content.offset;
        let end = content.offset.saturating_add(content.len);
        let mut piece = std::mem::take(&mut self.piece);
        piece.clear();
        piece.reserve(CHUNK);
        let mut ok = true;
        while ok && offset < end {
            let want = usize::try_from(end - offset).map_or(CHUNK, |n| n.min(CHUNK));
            let (res, got) = file.read_at(piece, offset).await;
            piece = got;
            match res {
                Ok(n) if n > 0 => {
                    let n = n.min(want);
                    self.client.send_body(clock::now(), &piece[..n]);
                    offset += n as u64;
                    // The last piece goes out with the final dot, in one write.
                    if offset < end {
                        ok = self.flush().await.is_ok();
                    }
                }
                // A file shorter than the queue said: never send a truncated message.
                _ => ok = false,
            }
        }
        self.piece = piece;
        if ok {
            self.client.end_body(clock::now());
            self.source = Some((content.path, file));
        } else {
            let _ = file.close().await;
        }
        ok
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
