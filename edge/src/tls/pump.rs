//! [`TlsPump`]: a sans-IO adapter between the ring's buffers and a rustls connection: the
//! server side of our listeners, or the client side of the relay's STARTTLS.
//!
//! ```text
//!   socket bytes ──feed(cipher)──► TlsPump ──plain──► protocol::Connection::handle_input
//!   socket bytes ◄──────wire────── TlsPump ◄─seal(replies)── protocol::Connection::poll_transmit
//! ```
//!
//! The pump owns no socket and reads no clock. Every output is appended to a `Vec` the caller
//! owns: plaintext for the engine, and TLS records (handshake, alerts, tickets, sealed replies)
//! for the socket.

use std::io::{BufRead, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, HandshakeKind, ProtocolVersion, ServerConnection};

use super::TlsError;

/// Bound on each of rustls' outbound buffers for one session, in octets: replies sealed before
/// the handshake finishes, and records not yet moved to `wire`. The pump moves records to
/// `wire` after every step, so in practice only the first bound is ever approached; an SMTP
/// greeting is far below it.
///
/// Inbound memory is bounded by rustls itself: one record (at most 16 KiB of plaintext plus
/// overhead, [RFC 8446 §5.1]) or one handshake message (64 KiB) at a time, and the pump drains
/// the decrypted plaintext after every record batch.
///
/// [RFC 8446 §5.1]: https://www.rfc-editor.org/rfc/rfc8446#section-5.1
pub const MAX_BUFFERED: usize = 16 * 1024;

/// One TLS session (server or client side), driven by the caller's bytes.
///
/// Method kinds: [`feed`](Self::feed) takes ciphertext in; [`seal`](Self::seal) and
/// [`close`](Self::close) take plaintext or intent in; all three append records to `wire`, which
/// the caller must send in order. The getters ([`is_handshaking`](Self::is_handshaking),
/// [`peer_closed`](Self::peer_closed), [`info`](Self::info)) do no work.
///
/// Errors are sticky: after the first, every call returns [`TlsError::Poisoned`]. The failing
/// call has already appended any alert to `wire`; the caller sends it and closes the socket.
pub struct TlsPump {
    conn: Connection,
    poisoned: bool,
    peer_closed: bool,
}

/// What the handshake settled, for logs, metrics and the `Received:` header ([RFC 8314 §4.4]).
///
/// [RFC 8314 §4.4]: https://www.rfc-editor.org/rfc/rfc8314#section-4.4
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The IANA-style rustls name of the cipher suite, such as `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher: &'static str,
    /// The name the client asked for (SNI, [RFC 6066 §3]), if it sent one; always `None` for
    /// a client session.
    ///
    /// [RFC 6066 §3]: https://www.rfc-editor.org/rfc/rfc6066#section-3
    pub sni: Option<String>,
    /// The key exchange group, such as `"X25519MLKEM768"`; `None` when rustls does not report
    /// one (a TLS 1.2 resumption).
    pub kx_group: Option<&'static str>,
    /// Whether the session was resumed (ticket or session id) rather than fully negotiated.
    pub resumed: bool,
}

impl TlsPump {
    /// A new session for `config`, waiting for the ClientHello. Its outbound buffers are
    /// bounded by [`MAX_BUFFERED`].
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsPump, TlsError> {
        Ok(TlsPump::with(ServerConnection::new(config)?.into()))
    }

    /// A client session for `config` to `name` (sent as SNI when it is a domain name), its
    /// ClientHello already queued: the first [`seal`](Self::seal) or [`feed`](Self::feed)
    /// (even of nothing) appends it to `wire`. Outbound buffers are bounded as for a server.
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsPump, TlsError> {
        Ok(TlsPump::with(ClientConnection::new(config, name)?.into()))
    }

    fn with(mut conn: Connection) -> TlsPump {
        conn.set_buffer_limit(Some(MAX_BUFFERED));
        TlsPump {
            conn,
            poisoned: false,
            peer_closed: false,
        }
    }

    /// Appends whatever rustls has queued to send (the ClientHello of a new client session) to
    /// `wire`.
    pub fn flush_to(&mut self, wire: &mut Vec<u8>) {
        self.flush(wire);
    }

    /// Consumes ciphertext from the peer: appends the decrypted plaintext to `plain` and any
    /// records to send (handshake flights, alerts, session tickets, replies sealed during the
    /// handshake) to `wire`. Returns how many octets of `cipher` were consumed.
    ///
    /// All of `cipher` is consumed unless the peer has sent `close_notify`
    /// ([`peer_closed`](Self::peer_closed)): rustls then reads nothing more, so part of
    /// `cipher` may be left unconsumed, and anything after the alert is never decrypted. The
    /// caller should stop reading. An empty `cipher` only flushes; a TCP end of stream is the
    /// caller's to act on (it is never passed in here).
    ///
    /// Garbage, truncated-then-corrupted, or oversized input is a [`TlsError::Rustls`], never a
    /// panic; `wire` then holds the alert to send, and the pump is poisoned.
    pub fn feed(
        &mut self,
        cipher: &[u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<usize, TlsError> {
        self.check()?;
        let mut consumed = 0;
        while consumed < cipher.len() {
            let mut rest = cipher.get(consumed..).unwrap_or_default();
            // Never called with an empty reader: rustls takes `Ok(0)` from it as TCP EOF.
            let n = match self.conn.read_tls(&mut rest) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e.into(), wire)),
            };
            if n == 0 {
                // close_notify was received: rustls reads nothing more.
                break;
            }
            consumed += n;
            match self.conn.process_new_packets() {
                Ok(state) => self.peer_closed |= state.peer_has_closed(),
                Err(e) => return Err(self.fail(e.into(), wire)),
            }
            self.drain_plaintext(plain, wire)?;
            self.flush(wire);
        }
        self.flush(wire);
        Ok(consumed)
    }

    /// Encrypts `plain` (SMTP replies) into records appended to `wire`.
    ///
    /// During the handshake rustls holds the plaintext (up to [`MAX_BUFFERED`] octets) and
    /// seals it as soon as the handshake completes, inside the [`feed`](Self::feed) call that
    /// completes it; beyond that bound this is [`TlsError::HandshakeBacklog`].
    pub fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), TlsError> {
        self.check()?;
        let mut rest = plain;
        while !rest.is_empty() {
            // Emptying rustls' record buffer first lets every write make progress after the
            // handshake: the bound applies to what is buffered, and that is now nothing.
            self.flush(wire);
            let n = match self.conn.writer().write(rest) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e.into(), wire)),
            };
            if n == 0 {
                let limit = MAX_BUFFERED;
                return Err(self.fail(TlsError::HandshakeBacklog { limit }, wire));
            }
            rest = rest.get(n..).unwrap_or_default();
        }
        self.flush(wire);
        Ok(())
    }

    /// Whether the handshake is still under way; until it ends, [`info`](Self::info) is `None`
    /// and plaintext from the peer cannot arrive.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer has sent `close_notify`: it will send nothing more, and all plaintext
    /// before the alert has been returned by [`feed`](Self::feed).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether an earlier call failed; every call now returns [`TlsError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Appends a `close_notify` alert to `wire` ([RFC 8446 §6.1]). Does nothing if one or a
    /// fatal alert was already sent, or if the pump is poisoned (its alert went out with the
    /// error).
    ///
    /// [RFC 8446 §6.1]: https://www.rfc-editor.org/rfc/rfc8446#section-6.1
    pub fn close(&mut self, wire: &mut Vec<u8>) {
        if self.poisoned {
            return;
        }
        self.conn.send_close_notify();
        self.flush(wire);
    }

    /// What the handshake settled; `None` until it has completed.
    pub fn info(&self) -> Option<TlsInfo> {
        if self.conn.is_handshaking() {
            return None;
        }
        let version = match self.conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            // The ServerConfig enables no other version.
            _ => "unknown",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()?
            .suite()
            .as_str()
            .unwrap_or("unknown");
        Some(TlsInfo {
            version,
            cipher,
            sni: match &self.conn {
                Connection::Server(server) => server.server_name().map(str::to_owned),
                Connection::Client(_) => None,
            },
            kx_group: self
                .conn
                .negotiated_key_exchange_group()
                .map(|g| g.name().as_str().unwrap_or("unknown")),
            resumed: self.conn.handshake_kind() == Some(HandshakeKind::Resumed),
        })
    }

    fn check(&self) -> Result<(), TlsError> {
        if self.poisoned {
            return Err(TlsError::Poisoned);
        }
        Ok(())
    }

    /// Poisons the pump and appends whatever rustls queued (the alert for `error`) to `wire`.
    fn fail(&mut self, error: TlsError, wire: &mut Vec<u8>) -> TlsError {
        self.poisoned = true;
        self.flush(wire);
        error
    }

    /// Moves every decrypted octet rustls holds to `plain`.
    fn drain_plaintext(&mut self, plain: &mut Vec<u8>, wire: &mut Vec<u8>) -> Result<(), TlsError> {
        let mut reader = self.conn.reader();
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                // Nothing more for now.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(self.fail(e.into(), wire)),
            };
            if chunk.is_empty() {
                // close_notify seen and everything before it read.
                return Ok(());
            }
            let n = chunk.len();
            plain.extend_from_slice(chunk);
            reader.consume(n);
        }
    }

    /// Moves every record rustls has queued to `wire`. Writing to a `Vec` cannot fail.
    fn flush(&mut self, wire: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(wire) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

impl std::fmt::Debug for TlsPump {
    /// State only: never keys, records or plaintext.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPump")
            .field("handshaking", &self.conn.is_handshaking())
            .field("poisoned", &self.poisoned)
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}
